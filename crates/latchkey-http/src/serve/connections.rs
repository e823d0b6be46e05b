//! The registry of open connections and the clock of each.
//!
//! Every accepted connection has an [`Entry`]: how many requests it has in flight, since when it
//! has been idle, since when it has been sending a request head, and when it last moved a byte.
//! Its task races the connection against [`Entry::expiry`], which resolves when one of the
//! connection's deadlines passes (or when the registry evicted it); the task then drops the
//! connection, which closes the socket.
//!
//! At the cap, [`Registry::admit`] closes the longest-idle connection (none of its requests in
//! flight) to make room, so idle or trickling sockets can never lock the server out; only when
//! every connection is busy is the newcomer refused.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Share of the soft open-file limit that connections may use by default; the rest is left
/// for the database, its files and the process's own.
const DEFAULT_SHARE_NUMERATOR: u64 = 3;
const DEFAULT_SHARE_DENOMINATOR: u64 = 4;
/// Open-file limit assumed where it cannot be read.
const ASSUMED_OPEN_FILES: u64 = 1024;
/// Ceiling of the derived cap (an unlimited open-file limit must not mean an unlimited cap).
const DERIVED_CAP_CEILING: u64 = 1 << 20;

/// The connection cap used when none is configured: three quarters of the soft open-file limit
/// (`ulimit -n`), at least 1.
pub fn default_max_connections() -> usize {
    let open_files = soft_open_file_limit().unwrap_or(ASSUMED_OPEN_FILES);
    let cap = (open_files.min(DERIVED_CAP_CEILING) * DEFAULT_SHARE_NUMERATOR
        / DEFAULT_SHARE_DENOMINATOR)
        .max(1);
    usize::try_from(cap).unwrap_or(usize::MAX)
}

#[cfg(unix)]
fn soft_open_file_limit() -> Option<u64> {
    rlimit::getrlimit(rlimit::Resource::NOFILE)
        .ok()
        .map(|(soft, _hard)| soft)
}

#[cfg(not(unix))]
fn soft_open_file_limit() -> Option<u64> {
    None
}

/// The deadlines every connection is held to.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// From the connection's start, or from the first byte of a request head after an idle
    /// spell, until the head is complete.
    pub header: Duration,
    /// From the end of the last answer until the first byte of the next request.
    pub idle: Duration,
    /// A connection with a request in flight that moved no byte either way this long.
    pub stall: Duration,
    /// Once the server shuts down, a connection without a request in flight (a head still
    /// being sent, say) is closed this long after being asked to finish.
    pub shutdown_grace: Duration,
}

/// Why latchkey closed a connection (the `reason` label of `latchkey_connections_closed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    HeaderTimeout,
    IdleTimeout,
    Stalled,
    Evicted,
    Refused,
    Shutdown,
    FinishTimeout,
}

impl CloseReason {
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::HeaderTimeout => "header_timeout",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::Stalled => "stalled",
            CloseReason::Evicted => "evicted",
            CloseReason::Refused => "refused",
            CloseReason::Shutdown => "shutdown",
            CloseReason::FinishTimeout => "finish_timeout",
        }
    }
}

/// One open connection.
///
/// The request path only counts and flips flags: a read or write bumps `moved` and reads one
/// flag; a request's start and end take the entry's own (uncontended) lock. No clock is read
/// and no task is woken per request. The expiry task notices changes by itself instead: it
/// wakes at least every [`Timeouts::shortest`], and no change can bring a deadline closer than
/// that to the moment it happens, so none is missed.
pub struct Entry {
    id: u64,
    state: Mutex<State>,
    /// Reads and writes that moved bytes, so far: a busy connection whose count stands still
    /// for `stall` is stalled (counted from when the expiry task saw the count move, so
    /// between `stall` and `stall` + [`Timeouts::shortest`] after the last byte).
    moved: AtomicU64,
    /// Set when the connection falls idle, cleared by the first byte read after it (which
    /// starts the header clock): the only thing a read has to look at.
    awaiting_head: AtomicBool,
    /// Woken when the server stops, and on eviction.
    changed: Notify,
}

struct State {
    in_flight: usize,
    /// When the connection last became idle (opened, or its last answer ended).
    idle_since: Instant,
    /// When the request head now being read started: the connection's start, then the first
    /// byte read while idle. `None` while idle without a byte, and while busy.
    head_since: Option<Instant>,
    evicted: bool,
    /// Closed at the finish timeout of a shutdown, busy or not.
    forced: bool,
    /// When the server asked the connection to finish.
    stopping_since: Option<Instant>,
    /// Whether [`Entry::expiry`] has answered [`Wake::Finish`] yet.
    finish_told: bool,
}

/// Why [`Entry::expiry`] woke its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// The server stops: finish the request in flight (if any) and close (answered once).
    Finish,
    /// Close now.
    Close(CloseReason),
}

impl Timeouts {
    /// The longest the expiry task sleeps without looking at the connection again.
    fn shortest(&self) -> Duration {
        self.header.min(self.idle).min(self.stall)
    }
}

impl Entry {
    fn new(id: u64) -> Self {
        let now = Instant::now();
        Self {
            id,
            state: Mutex::new(State {
                in_flight: 0,
                idle_since: now,
                head_since: Some(now),
                evicted: false,
                forced: false,
                stopping_since: None,
                finish_told: false,
            }),
            moved: AtomicU64::new(0),
            awaiting_head: AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state is plain data, consistent after any single assignment: a panic elsewhere
        // cannot leave it half-changed.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes were read: when idle, the first of them starts the header clock.
    pub fn on_read(&self) {
        self.moved.fetch_add(1, Ordering::Relaxed);
        if self.awaiting_head.load(Ordering::Relaxed)
            && self.awaiting_head.swap(false, Ordering::Relaxed)
        {
            let mut state = self.state();
            if state.in_flight == 0 && state.head_since.is_none() {
                state.head_since = Some(Instant::now());
            }
        }
    }

    /// Bytes were written.
    pub fn on_write(&self) {
        self.moved.fetch_add(1, Ordering::Relaxed);
    }

    /// A request head is complete and the request is being answered, until the guard (held by
    /// the response body) is dropped.
    pub fn begin_request(self: &Arc<Self>) -> Busy {
        self.moved.fetch_add(1, Ordering::Relaxed);
        let mut state = self.state();
        state.in_flight += 1;
        state.head_since = None;
        Busy(self.clone())
    }

    fn end_request(&self) {
        let mut state = self.state();
        state.in_flight = state.in_flight.saturating_sub(1);
        if state.in_flight == 0 {
            state.idle_since = Instant::now();
            state.head_since = None;
            self.awaiting_head.store(true, Ordering::Relaxed);
        }
    }

    /// The server shuts down: unless busy, the connection closes after the grace.
    pub fn stop(&self) {
        let mut state = self.state();
        if state.stopping_since.is_none() {
            state.stopping_since = Some(Instant::now());
            drop(state);
            self.changed.notify_one();
        }
    }

    /// The shutdown's finish timeout passed: close now, even with a request in flight.
    fn force_close(&self) {
        self.state().forced = true;
        self.changed.notify_one();
    }

    /// Idle since when, if it may be evicted.
    fn evictable_since(&self) -> Option<Instant> {
        let state = self.state();
        (state.in_flight == 0 && !state.evicted).then_some(state.idle_since)
    }

    /// Marks the connection for closing if it is still idle.
    fn try_evict(&self) -> bool {
        let mut state = self.state();
        if state.in_flight > 0 || state.evicted {
            return false;
        }
        state.evicted = true;
        drop(state);
        self.changed.notify_one();
        true
    }

    /// Resolves when the connection must finish (once, when the server stops) or be closed.
    pub async fn expiry(&self, timeouts: Timeouts) -> Wake {
        // Bytes moved as last seen, and since when that count has stood still.
        let mut moved = self.moved.load(Ordering::Relaxed);
        let mut still_since = Instant::now();
        loop {
            let now = Instant::now();
            let seen = self.moved.load(Ordering::Relaxed);
            if seen != moved {
                (moved, still_since) = (seen, now);
            }
            let (deadline, reason) = {
                let mut state = self.state();
                if state.forced {
                    return Wake::Close(CloseReason::FinishTimeout);
                }
                if state.evicted {
                    return Wake::Close(CloseReason::Evicted);
                }
                if state.stopping_since.is_some() && !state.finish_told {
                    state.finish_told = true;
                    return Wake::Finish;
                }
                if state.in_flight > 0 {
                    (still_since + timeouts.stall, CloseReason::Stalled)
                } else {
                    let clock = match state.head_since {
                        Some(since) => (since + timeouts.header, CloseReason::HeaderTimeout),
                        None => (state.idle_since + timeouts.idle, CloseReason::IdleTimeout),
                    };
                    match state.stopping_since {
                        Some(since) if since + timeouts.shutdown_grace < clock.0 => {
                            (since + timeouts.shutdown_grace, CloseReason::Shutdown)
                        }
                        _ => clock,
                    }
                }
            };
            if now >= deadline {
                return Wake::Close(reason);
            }
            // Changes made by the request path are found on waking (see [`Entry`]); a stop or
            // an eviction notifies.
            tokio::select! {
                _ = tokio::time::sleep_until(deadline.min(now + timeouts.shortest())) => {}
                _ = self.changed.notified() => {}
            }
        }
    }
}

/// A request in flight on a connection; dropping it ends the request.
pub struct Busy(Arc<Entry>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.end_request();
    }
}

/// The open connections.
pub struct Registry {
    cap: usize,
    next_id: AtomicU64,
    entries: Mutex<HashMap<u64, Arc<Entry>>>,
}

impl Registry {
    pub fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            next_id: AtomicU64::new(0),
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<u64, Arc<Entry>>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a new connection, closing the longest-idle one at the cap (its task counts
    /// it); `None`: at the cap with every connection busy.
    pub fn admit(&self) -> Option<Arc<Entry>> {
        let mut entries = self.entries();
        if entries.len() >= self.cap && !Self::evict_longest_idle(&mut entries) {
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(Entry::new(id));
        entries.insert(id, entry.clone());
        Some(entry)
    }

    /// Closes the longest-idle connection, if any is idle (to free a file descriptor).
    pub fn evict_one(&self) -> bool {
        Self::evict_longest_idle(&mut self.entries())
    }

    fn evict_longest_idle(entries: &mut HashMap<u64, Arc<Entry>>) -> bool {
        // A candidate may start a request between the scan and the eviction: then look again.
        loop {
            let Some(victim) = entries
                .values()
                .filter_map(|e| e.evictable_since().map(|since| (since, e.id)))
                .min()
                .map(|(_, id)| id)
            else {
                return false;
            };
            if let Some(entry) = entries.get(&victim) {
                if entry.try_evict() {
                    entries.remove(&victim);
                    return true;
                }
            }
        }
    }

    /// Asks every open connection to finish (the server stops).
    pub fn stop_all(&self) {
        for entry in self.entries().values() {
            entry.stop();
        }
    }

    /// Closes every open connection, busy or not; answers how many there were.
    pub fn close_all(&self) -> usize {
        let entries = self.entries();
        for entry in entries.values() {
            entry.force_close();
        }
        entries.len()
    }

    /// Forgets a connection that has closed.
    pub fn remove(&self, entry: &Entry) {
        self.entries().remove(&entry.id);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::panic)]

    use super::*;

    fn admitted(registry: &Registry) -> Arc<Entry> {
        match registry.admit() {
            Some(entry) => entry,
            None => panic!("refused"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_cap_the_longest_idle_connection_makes_room_and_busy_ones_never_do() {
        let registry = Registry::new(2);
        let first = admitted(&registry);
        tokio::time::advance(Duration::from_secs(1)).await;
        let second = admitted(&registry);
        let third = admitted(&registry);
        assert!(first.state().evicted && !second.state().evicted);
        let _busy = (second.begin_request(), third.begin_request());
        assert!(registry.admit().is_none());
        assert!(!registry.evict_one());
    }

    #[tokio::test(start_paused = true)]
    async fn the_header_clock_runs_from_the_start_then_from_the_first_byte_after_idling() {
        let timeouts = Timeouts {
            header: Duration::from_secs(2),
            idle: Duration::from_secs(10),
            stall: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(1),
        };
        let registry = Registry::new(4);
        let entry = admitted(&registry);
        let started = Instant::now();
        assert_eq!(
            entry.expiry(timeouts).await,
            Wake::Close(CloseReason::HeaderTimeout)
        );
        assert_eq!(started.elapsed(), Duration::from_secs(2));

        let entry = admitted(&registry);
        drop(entry.begin_request());
        let idle = Instant::now();
        assert_eq!(
            entry.expiry(timeouts).await,
            Wake::Close(CloseReason::IdleTimeout)
        );
        assert_eq!(idle.elapsed(), Duration::from_secs(10));

        let entry = admitted(&registry);
        drop(entry.begin_request());
        tokio::time::advance(Duration::from_secs(5)).await;
        entry.on_read();
        let first_byte = Instant::now();
        assert_eq!(
            entry.expiry(timeouts).await,
            Wake::Close(CloseReason::HeaderTimeout)
        );
        assert_eq!(first_byte.elapsed(), Duration::from_secs(2));

        let entry = admitted(&registry);
        let busy = entry.begin_request();
        let quiet = Instant::now();
        assert_eq!(
            entry.expiry(timeouts).await,
            Wake::Close(CloseReason::Stalled)
        );
        assert_eq!(quiet.elapsed(), Duration::from_secs(30));

        // At shutdown, a busy connection is told to finish its request; then it has the grace.
        entry.stop();
        assert_eq!(entry.expiry(timeouts).await, Wake::Finish);
        tokio::time::advance(Duration::from_secs(5)).await;
        entry.on_write();
        drop(busy);
        let answered = Instant::now();
        assert_eq!(
            entry.expiry(timeouts).await,
            Wake::Close(CloseReason::Shutdown)
        );
        assert_eq!(answered.elapsed(), Duration::ZERO);
    }
}
