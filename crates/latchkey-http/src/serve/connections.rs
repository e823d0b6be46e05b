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

use crate::metrics::LatencyHistogram;

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
/// flag; a request's start and end take the entry's own (uncontended) lock. Two clocks are
/// read per request (a head's first byte, an answer's end), which also time the request for
/// its route's latency histogram ([`Busy`]), and no task is woken. The expiry task notices
/// changes by itself instead: it wakes at least every [`Timeouts::shortest`], and no change
/// can bring a deadline closer than that to the moment it happens, so none is missed.
pub struct Entry {
    id: u64,
    state: Mutex<State>,
    /// Reads and writes that moved bytes, so far: a busy connection whose count stands still
    /// for `stall` is stalled (counted from when the expiry task saw the count move, so
    /// between `stall` and `stall` + [`Timeouts::shortest`] after the last byte). Bumped by
    /// [`Entry::moved_bytes`] only.
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
    /// The first byte read while idle, until a request takes it as its start.
    request_since: Option<Instant>,
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
                request_since: None,
                evicted: false,
                forced: false,
                stopping_since: None,
                finish_told: false,
            }),
            moved: AtomicU64::new(0),
            // The first byte starts the first request (the header clock runs from the start).
            awaiting_head: AtomicBool::new(true),
            changed: Notify::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state is plain data, consistent after any single assignment: a panic elsewhere
        // cannot leave it half-changed.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes were read: when idle, the first of them starts the header clock and the request.
    pub fn on_read(&self) {
        self.moved_bytes();
        if self.awaiting_head.load(Ordering::Relaxed)
            && self.awaiting_head.swap(false, Ordering::Relaxed)
        {
            let mut state = self.state();
            if state.in_flight == 0 {
                let now = Instant::now();
                state.head_since.get_or_insert(now);
                state.request_since = Some(now);
            }
        }
    }

    /// Counts a move. Only the connection's own task reads, writes and begins requests (for
    /// HTTP/2 too: hyper's connection future does the IO and calls the service), so the count
    /// has one writer and is bumped by a load and a store, not a locked read-modify-write;
    /// the expiry task and the registry only read it.
    fn moved_bytes(&self) {
        let moved = self.moved.load(Ordering::Relaxed);
        self.moved.store(moved.wrapping_add(1), Ordering::Relaxed);
    }

    /// Bytes were written.
    pub fn on_write(&self) {
        self.moved_bytes();
    }

    /// A request head is complete and the request is being answered, until the guard (held by
    /// the response body) is dropped; `latency` gets its time then.
    pub fn begin_request(self: &Arc<Self>, latency: &'static LatencyHistogram) -> Busy {
        self.moved_bytes();
        let mut state = self.state();
        state.in_flight += 1;
        state.head_since = None;
        // A request whose head was read with another in flight (HTTP/2 streams, pipelining)
        // starts now.
        let since = state.request_since.take().unwrap_or_else(Instant::now);
        Busy {
            entry: self.clone(),
            latency,
            since,
        }
    }

    /// Ends a request; answers when.
    fn end_request(&self) -> Instant {
        let now = Instant::now();
        let mut state = self.state();
        state.in_flight = state.in_flight.saturating_sub(1);
        if state.in_flight == 0 {
            state.idle_since = now;
            state.head_since = None;
            self.awaiting_head.store(true, Ordering::Relaxed);
        }
        now
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

/// A request in flight on a connection; dropping it (its answer was sent, or dropped) ends the
/// request and puts its time in its route's latency histogram: from the first byte of its head
/// read while the connection was idle (when the head was read beside another request: from
/// when it began) to the end of its answer, as nginx's `$request_time` counts.
pub struct Busy {
    entry: Arc<Entry>,
    latency: &'static LatencyHistogram,
    since: Instant,
}

impl Drop for Busy {
    fn drop(&mut self) {
        let end = self.entry.end_request();
        self.latency
            .observe(end.saturating_duration_since(self.since));
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

    /// A latency histogram of its own for each test.
    fn latency() -> &'static LatencyHistogram {
        Box::leak(Box::new(LatencyHistogram::default()))
    }

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
        let _busy = (
            second.begin_request(latency()),
            third.begin_request(latency()),
        );
        assert!(registry.admit().is_none());
        assert!(!registry.evict_one());
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_is_timed_from_its_first_byte_after_idling_to_the_end_of_its_answer() {
        let registry = Registry::new(4);
        let entry = admitted(&registry);
        let route = latency();
        // The first request: from its first byte, not from the connection's start.
        tokio::time::advance(Duration::from_millis(100)).await;
        entry.on_read();
        tokio::time::advance(Duration::from_millis(3)).await;
        let busy = entry.begin_request(route);
        tokio::time::advance(Duration::from_millis(5)).await;
        drop(busy);
        assert_eq!(route.totals(), (1, 8_000));
        // The next, after an idle spell: from its own first byte (more reads of the same head
        // do not move it).
        tokio::time::advance(Duration::from_secs(1)).await;
        entry.on_read();
        tokio::time::advance(Duration::from_millis(2)).await;
        entry.on_read();
        let busy = entry.begin_request(route);
        // A head read while that one is in flight (HTTP/2): from when it began.
        tokio::time::advance(Duration::from_millis(1)).await;
        entry.on_read();
        let beside = entry.begin_request(route);
        tokio::time::advance(Duration::from_millis(4)).await;
        drop(beside);
        drop(busy);
        assert_eq!(route.totals(), (3, 8_000 + 7_000 + 4_000));
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
        drop(entry.begin_request(latency()));
        let idle = Instant::now();
        assert_eq!(
            entry.expiry(timeouts).await,
            Wake::Close(CloseReason::IdleTimeout)
        );
        assert_eq!(idle.elapsed(), Duration::from_secs(10));

        let entry = admitted(&registry);
        drop(entry.begin_request(latency()));
        tokio::time::advance(Duration::from_secs(5)).await;
        entry.on_read();
        let first_byte = Instant::now();
        assert_eq!(
            entry.expiry(timeouts).await,
            Wake::Close(CloseReason::HeaderTimeout)
        );
        assert_eq!(first_byte.elapsed(), Duration::from_secs(2));

        let entry = admitted(&registry);
        let busy = entry.begin_request(latency());
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
