//! The sessions checked by bearer token, read without writing anything another core reads.
//!
//! A cycled session check (a reverse proxy asking for each of thousands of browsers in turn)
//! finds its entry in memory the core has not touched since that session's last turn. A
//! sharded cache's read takes a shard lock and clones the entry's `Arc`, so the entry's memory
//! is written on every check and moves between the cores. Here the map is `papaya`'s: a read
//! pins the thread's epoch (a word of its own) and borrows the entry in place; removed entries
//! are freed once no read that could see them is left.
//!
//! papaya does not bound its size, so the bound is kept beside it: an index from session id to
//! token hash (which revocations, naming a session by id, need anyway) whose positions are the
//! ring of a second-chance ("CLOCK") eviction. When an insert takes the map past its capacity
//! the hand walks the ring: an entry active since the hand last passed it (its second of last
//! activity moved, which checks record once per session and second) is passed over, the first
//! one that was not is evicted; after [`MAX_SECOND_CHANCES`] passes the entry under the hand
//! goes anyway, so an insert's work is bounded. Every change to the map is made under the
//! index's lock, so the two always name the same entries (one token per session: a session
//! cached under a new token leaves under its old one); reads never take it.

use std::sync::{Arc, Mutex, MutexGuard};

use foldhash::fast::RandomState;
use indexmap::IndexMap;
use uuid::Uuid;

use crate::crypto::secret::SecretHash;

/// Entries passed over by one eviction before the one under the hand goes regardless.
const MAX_SECOND_CHANCES: usize = 32;
/// Entries a sweep removes per taking of the lock.
const SWEEP_BATCH: usize = 256;

/// What the cache needs of an entry: whose it is, and when it was last active.
pub(super) trait Tracked {
    fn session_id(&self) -> Uuid;
    /// Moves when the session is checked (at most once a second).
    fn last_active(&self) -> u32;
}

/// A cached token, by its session: the hash, and the entry's activity when the hand last
/// passed. `None` until it first passes: a new entry is passed over once, so an entry cached
/// moments ago (not yet checked again) is not the next to go.
struct Indexed {
    hash: SecretHash,
    seen: Option<u32>,
}

#[derive(Default)]
struct Index {
    by_session: IndexMap<Uuid, Indexed, RandomState>,
    hand: usize,
}

pub(super) struct TokenCache<V> {
    map: papaya::HashMap<SecretHash, Arc<V>, RandomState>,
    index: Mutex<Index>,
    capacity: usize,
}

impl<V: Tracked + Send + Sync> TokenCache<V> {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            map: papaya::HashMap::with_hasher(RandomState::default()),
            index: Mutex::default(),
            capacity: capacity.max(1),
        }
    }

    /// `read` of the entry cached under `hash`, borrowed: the lookup writes nothing shared.
    /// (papaya's guard is not `Send`, so the borrow cannot be held across an `.await`.)
    pub(super) fn read<R>(&self, hash: &SecretHash, read: impl FnOnce(&Arc<V>) -> R) -> Option<R> {
        self.map.pin().get(hash).map(read)
    }

    pub(super) fn get(&self, hash: &SecretHash) -> Option<Arc<V>> {
        self.read(hash, Arc::clone)
    }

    /// The entry a session is cached with, found through the index.
    pub(super) fn get_by_session(&self, id: Uuid) -> Option<Arc<V>> {
        let hash = self.lock().by_session.get(&id)?.hash;
        self.get(&hash)
    }

    pub(super) fn len(&self) -> usize {
        self.lock().by_session.len()
    }

    /// Caches `entry` under `hash`, in place of the session's entry under another token and of
    /// another entry under this one; evicts past the capacity.
    pub(super) fn insert(&self, hash: SecretHash, entry: Arc<V>) {
        let id = entry.session_id();
        let mut index = self.lock();
        let map = self.map.pin();
        if let Some(old) = index.by_session.insert(id, Indexed { hash, seen: None }) {
            if old.hash != hash {
                map.remove(&old.hash);
            }
        }
        if let Some(replaced) = map.insert(hash, entry) {
            // Another session under the same token hash (never, short of a SHA-256
            // collision): its index entry must not outlive it.
            let other = replaced.session_id();
            if other != id {
                index.by_session.swap_remove(&other);
            }
        }
        while index.by_session.len() > self.capacity {
            let Some(evicted) = index.evict(|hash| map.get(hash).map(|entry| entry.last_active()))
            else {
                break;
            };
            map.remove(&evicted);
        }
    }

    /// Removes a session's entry; answers whether there was one.
    pub(super) fn remove_session(&self, id: Uuid) -> bool {
        let mut index = self.lock();
        let Some(indexed) = index.by_session.swap_remove(&id) else {
            return false;
        };
        self.map.pin().remove(&indexed.hash);
        true
    }

    /// Keeps the entries `keep` accepts. The entries to drop are found without the lock (a
    /// pass over a million entries under it would hold admissions and revocations for its
    /// length) and removed under it [`SWEEP_BATCH`] at a time, each asked again: an entry
    /// cached meanwhile under the same token is judged for itself.
    pub(super) fn retain(&self, mut keep: impl FnMut(&V) -> bool) {
        let map = self.map.pin();
        let mut entries = map.iter();
        loop {
            let gone: Vec<(Uuid, SecretHash)> = entries
                .by_ref()
                .filter(|(_, entry)| !keep(entry))
                .map(|(hash, entry)| (entry.session_id(), *hash))
                .take(SWEEP_BATCH)
                .collect();
            if gone.is_empty() {
                return;
            }
            let mut index = self.lock();
            for (id, hash) in gone {
                let indexed = index.by_session.get(&id).is_some_and(|i| i.hash == hash);
                if indexed && map.get(&hash).is_some_and(|entry| !keep(entry)) {
                    index.by_session.swap_remove(&id);
                    map.remove(&hash);
                }
            }
        }
    }

    pub(super) fn clear(&self) {
        let mut index = self.lock();
        self.map.pin().clear();
        *index = Index::default();
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        // The index is only changed by code that cannot panic midway; a poisoned lock's
        // contents are whole.
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Index {
    /// Takes the entry the hand chooses out of the index (see the module documentation) and
    /// answers its hash, for the caller to remove from the map. `last_active` reads an entry's
    /// activity from the map.
    fn evict(&mut self, last_active: impl Fn(&SecretHash) -> Option<u32>) -> Option<SecretHash> {
        let len = self.by_session.len();
        if len == 0 {
            return None;
        }
        for _ in 0..MAX_SECOND_CHANCES {
            let at = self.hand % len;
            let (_, indexed) = self.by_session.get_index_mut(at)?;
            match last_active(&indexed.hash) {
                Some(active) if indexed.seen != Some(active) => indexed.seen = Some(active),
                _ => break,
            }
            self.hand = at + 1;
        }
        let at = self.hand % len;
        // The last entry (the newest, as like as not) takes the evicted one's place: the hand
        // moves past it, so it is the last the hand reaches, as a new entry should be.
        self.hand = at + 1;
        self.by_session
            .swap_remove_index(at)
            .map(|(_, indexed)| indexed.hash)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    struct Entry {
        id: Uuid,
        active: AtomicU32,
    }

    impl Tracked for Entry {
        fn session_id(&self) -> Uuid {
            self.id
        }

        fn last_active(&self) -> u32 {
            self.active.load(Ordering::Relaxed)
        }
    }

    fn entry(n: u8) -> (SecretHash, Arc<Entry>) {
        let id = Uuid::from_u128(u128::from(n) + 1);
        let entry = Arc::new(Entry {
            id,
            active: AtomicU32::new(0),
        });
        (SecretHash([n; 32]), entry)
    }

    fn cached(cache: &TokenCache<Entry>, n: u8) -> bool {
        cache.get(&entry(n).0).is_some()
    }

    #[test]
    fn the_bound_holds_and_entries_active_since_the_hand_passed_stay() {
        let cache = TokenCache::new(3);
        let entries: Vec<_> = (0..3).map(entry).collect();
        for (hash, e) in &entries {
            cache.insert(*hash, e.clone());
        }
        // Past the capacity: every entry is new (passed over once), then the hand is back at
        // the first, which was not active since.
        let (hash, e) = entry(3);
        cache.insert(hash, e);
        assert_eq!(cache.len(), 3);
        assert!(!cached(&cache, 0));
        // Entry 1 is active now; 2 and 3 are not: the next insert evicts 2.
        entries[1].1.active.store(7, Ordering::Relaxed);
        let (hash, e) = entry(4);
        cache.insert(hash, e);
        assert_eq!(cache.len(), 3);
        assert!(cached(&cache, 1) && !cached(&cache, 2));
        assert!(cached(&cache, 3) && cached(&cache, 4));
        // Many more inserts never take it past its capacity.
        for n in 5..100 {
            let (hash, e) = entry(n);
            cache.insert(hash, e);
            assert_eq!(cache.len(), 3);
        }
    }

    #[test]
    fn a_session_is_cached_under_one_token_and_removed_by_id() {
        let cache = TokenCache::new(10);
        let (old, e) = entry(1);
        cache.insert(old, e.clone());
        // The same session under a new token: the old one leaves.
        let new = SecretHash([9; 32]);
        cache.insert(new, e.clone());
        assert!(cache.get(&old).is_none());
        assert!(Arc::ptr_eq(&cache.get(&new).unwrap(), &e));
        assert!(Arc::ptr_eq(&cache.get_by_session(e.id).unwrap(), &e));
        assert!(cache.remove_session(e.id));
        assert!(cache.get(&new).is_none() && cache.get_by_session(e.id).is_none());
        assert!(!cache.remove_session(e.id));
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn retain_and_clear_keep_the_index_with_the_map() {
        let cache = TokenCache::new(10);
        for n in 0..6 {
            let (hash, e) = entry(n);
            cache.insert(hash, e);
        }
        cache.retain(|e| e.id.as_u128() % 2 == 0);
        assert_eq!(cache.len(), 3);
        for n in 0..6u8 {
            let kept = (u128::from(n) + 1) % 2 == 0;
            assert_eq!(cached(&cache, n), kept);
            let id = Uuid::from_u128(u128::from(n) + 1);
            assert_eq!(cache.get_by_session(id).is_some(), kept);
        }
        cache.clear();
        assert_eq!(cache.len(), 0);
        assert!((0..6).all(|n| !cached(&cache, n)));
    }

    #[test]
    fn a_sweep_of_more_than_a_batch_keeps_the_index_with_the_map() {
        let count = SWEEP_BATCH as u128 * 2 + 7;
        let cache = TokenCache::new(1000);
        let hash_of = |n: u128| SecretHash(key_bytes(n));
        for n in 0..count {
            let entry = Arc::new(Entry {
                id: Uuid::from_u128(n + 1),
                active: AtomicU32::new(0),
            });
            cache.insert(hash_of(n), entry);
        }
        cache.retain(|e| e.id.as_u128() % 3 == 0);
        for n in 0..count {
            let kept = (n + 1) % 3 == 0;
            assert_eq!(cache.get(&hash_of(n)).is_some(), kept, "{n}");
            assert_eq!(cache.get_by_session(Uuid::from_u128(n + 1)).is_some(), kept);
        }
        assert_eq!(cache.len(), (1..=count).filter(|n| n % 3 == 0).count());
    }

    /// 32 bytes of their own for each `n` (the cache reads a hash only as a key).
    fn key_bytes(n: u128) -> [u8; 32] {
        let mut bytes = [0u8; 32];
        bytes[..16].copy_from_slice(&n.to_le_bytes());
        bytes[16..].copy_from_slice(&(!n).to_le_bytes());
        bytes
    }
}
