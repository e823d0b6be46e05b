//! Time is injected: every service reads "now" from a [`Clock`], so tests move time forward
//! with a [`ManualClock`] instead of sleeping. Times are unix seconds throughout the core.

use std::sync::atomic::{AtomicI64, Ordering};
#[cfg(not(target_os = "linux"))]
use std::time::{SystemTime, UNIX_EPOCH};

pub trait Clock: Send + Sync + 'static {
    /// Current unix time in seconds.
    fn now(&self) -> i64;
}

/// The wall clock. On Linux it reads `CLOCK_REALTIME_COARSE`: the time of the last clock tick
/// (a few milliseconds old at most), which the kernel keeps in memory, so reading it costs a
/// fraction of a precise read (a session check reads the time twice, and at the second the
/// precision is the same).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[cfg(target_os = "linux")]
    fn now(&self) -> i64 {
        rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse).tv_sec
    }

    #[cfg(not(target_os = "linux"))]
    fn now(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to; for tests.
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(start: i64) -> Self {
        Self(AtomicI64::new(start))
    }

    pub fn advance(&self, seconds: i64) {
        self.0.fetch_add(seconds, Ordering::SeqCst);
    }

    pub fn set(&self, now: i64) {
        self.0.store(now, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_clock_reads_the_wall_clock_to_the_second() {
        let precise = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
        };
        let before = precise();
        let now = SystemClock.now();
        let after = precise();
        // The coarse clock is at most one tick (milliseconds) behind: at a second's turn it
        // may still read the second before.
        assert!(before - 1 <= now && now <= after, "{before} {now} {after}");
    }
}
