//! Each thread's small table of sessions it checked recently by id (their keys), in front of
//! the shared id cache; sessions checked by token are read in place ([`super::by_token`]). A
//! hit in the shared cache clones the entry's `Arc`: two locked writes to the entry's memory
//! per check, so when both cores check one session (an API client's calls) its cache line
//! moves between the cores every time. A hit here borrows the entry from memory only this
//! thread writes, and the entry, read by both cores and written by neither, stays in both
//! cores' caches.
//!
//! The table is small on purpose: it keeps what a thread checks again within moments. One
//! large enough for thousands of sessions cycled in turn (4 096 slots, 128 KiB per thread) is
//! itself memory no core holds by the time it is read again, and measured slower than none
//! (docs/benchmarks.md, session 15).
//!
//! A slot is believed only while nothing has left the id cache since it was filled: it
//! records [`Sessions`]' count of departures read before the shared lookup that filled it,
//! and every removal (revocation, eviction, replacement, sweep, resync) moves that count once
//! the entry is out. So a slot that is believed holds an entry the id cache still holds,
//! and a check that starts after a revocation has removed its entry finds it in no front. A
//! slot not believed keeps its entry's memory until it is filled again (at most 64 entries per
//! front and thread). The entry's own deadlines are checked on every hit, as on every shared
//! hit.
//!
//! [`Sessions`]: super::sessions::Sessions

use std::cell::RefCell;

use thread_local::ThreadLocal;

/// Slots per thread, in sets of [`WAYS`] (32 bytes each: 2 KiB per front and thread).
const SLOTS: usize = 64;
/// Slots a key may take: a set is filled newest first, and its oldest filling makes room
/// (hits do not reorder it: a hit writes nothing).
const WAYS: usize = 4;

struct Slot<V> {
    key: u128,
    epoch: u64,
    value: Option<V>,
}

impl<V> Default for Slot<V> {
    fn default() -> Self {
        Self {
            key: 0,
            epoch: 0,
            value: None,
        }
    }
}

pub(super) struct Front<V: Send> {
    tables: ThreadLocal<RefCell<Box<[Slot<V>]>>>,
}

impl<V: Send> Front<V> {
    pub(super) fn new() -> Self {
        Self {
            tables: ThreadLocal::new(),
        }
    }

    /// `read` of the value this thread keeps for `key`, filled while the epoch was `epoch`.
    /// `None`: none kept, or `read` found it no longer good.
    pub(super) fn read<R>(
        &self,
        key: u128,
        epoch: u64,
        read: impl FnOnce(&V) -> Option<R>,
    ) -> Option<R> {
        let table = self.tables.get()?.try_borrow().ok()?;
        table[set_of(key)]
            .iter()
            .find(|slot| slot.key == key && slot.epoch == epoch)
            .and_then(|slot| slot.value.as_ref())
            .and_then(read)
    }

    /// Keeps `value` for `key` in this thread's table, taken from the shared caches while the
    /// epoch was `epoch`. The set's oldest slot makes room.
    pub(super) fn fill(&self, key: u128, epoch: u64, value: V) {
        let table = self
            .tables
            .get_or(|| RefCell::new((0..SLOTS).map(|_| Slot::default()).collect()));
        let Ok(mut table) = table.try_borrow_mut() else {
            return;
        };
        let set = &mut table[set_of(key)];
        let at = set
            .iter()
            .position(|slot| slot.key == key)
            .unwrap_or(WAYS - 1);
        set[..=at].rotate_right(1);
        set[0] = Slot {
            key,
            epoch,
            value: Some(value),
        };
    }
}

/// The slots `key` may take (keys are uniformly random in their low bits).
fn set_of(key: u128) -> std::ops::Range<usize> {
    let start = (key as usize % (SLOTS / WAYS)) * WAYS;
    start..start + WAYS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_found_by_its_key_and_epoch_only() {
        let front = Front::new();
        assert_eq!(front.read(7, 0, |v: &u32| Some(*v)), None);
        front.fill(7, 3, 70);
        assert_eq!(front.read(7, 3, |v| Some(*v)), Some(70));
        // A later epoch: something left the shared caches since the filling.
        assert_eq!(front.read(7, 4, |v| Some(*v)), None);
        assert_eq!(front.read(8, 3, |v| Some(*v)), None);
        // The reader may still refuse what it finds.
        assert_eq!(front.read(7, 3, |_| None::<u32>), None);
        // Refilled: the new value and epoch replace the old.
        front.fill(7, 4, 71);
        assert_eq!(front.read(7, 4, |v| Some(*v)), Some(71));
        assert_eq!(front.read(7, 3, |v| Some(*v)), None);
    }

    #[test]
    fn a_full_set_gives_up_its_oldest_and_threads_keep_their_own() {
        let front = Front::new();
        let sets = (SLOTS / WAYS) as u128;
        // WAYS + 1 keys of the same set: the first one filled goes.
        for i in 0..=WAYS as u128 {
            front.fill(5 + i * sets, 0, i);
        }
        assert_eq!(front.read(5, 0, |v| Some(*v)), None);
        for i in 1..=WAYS as u128 {
            assert_eq!(front.read(5 + i * sets, 0, |v| Some(*v)), Some(i));
        }
        std::thread::scope(|scope| {
            scope.spawn(|| assert_eq!(front.read(5 + sets, 0, |v| Some(*v)), None));
        });
    }
}
