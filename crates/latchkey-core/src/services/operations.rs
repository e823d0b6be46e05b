//! What running latchkey needs of its core besides the API families: readiness, gauges, the
//! periodic housekeeping (activity flush, purge, signing-key reload) and following the events
//! seam. The HTTP layer schedules these; the core decides what they do.

use crate::error::Result;
use crate::seams::events::Event;
use crate::services::hashing::HashingGauges;
use crate::services::Latchkey;

/// Dead sessions stay this long (seconds) for audit and family C, then go.
pub const KEEP_DEAD_SESSIONS: i64 = 7 * 86_400;

/// Session counts for the metrics gauges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionGauges {
    /// Active, unexpired sessions in the store, all processes together.
    pub active: u64,
    /// Sessions in this process's hot-path cache.
    pub cached: u64,
}

/// The background work of one latchkey process, borrowed from [`Latchkey::housekeeping`].
pub struct Housekeeping<'a> {
    core: &'a Latchkey,
}

impl Housekeeping<'_> {
    /// Writes coalesced session activity; answers how many sessions were written.
    pub async fn flush_activity(&self) -> Result<usize> {
        self.core.sessions.flush().await
    }

    /// Deletes what has died: old failure counters, handshakes, challenges, pushes, and
    /// sessions dead for [`KEEP_DEAD_SESSIONS`]; forgets the login rate limits of addresses
    /// at rest. Answers the rows removed.
    pub async fn purge(&self) -> Result<u64> {
        self.core.login_limiter.forget_idle();
        let now = self.core.now();
        let mut purged = self
            .core
            .store
            .purge(
                now - self.core.settings.failure_window,
                now - KEEP_DEAD_SESSIONS,
            )
            .await?;
        let retention = i64::from(self.core.settings.audit_retention_days) * 24 * 3600;
        if retention > 0 {
            purged += self.core.store.purge_audit(now - retention).await?;
        }
        Ok(purged)
    }

    /// Drops expired entries from the hot-path caches (they would otherwise hold memory until
    /// evicted by newer ones; an expired entry is never believed either way).
    pub fn sweep_caches(&self) {
        let now = self.core.now();
        self.core.sessions.sweep(now);
        self.core.verified_tokens.sweep(now);
    }

    /// Reloads the JWT signing keys (another process may have rotated them).
    pub async fn reload_keys(&self) -> Result<()> {
        self.core.load_signing_keys().await.map(|_| ())
    }
}

impl Latchkey {
    /// Is the database reachable, and initialised? Answers the backend's name;
    /// `Unavailable` before `latchkey init` (every family would answer 503 then).
    pub async fn readiness(&self) -> Result<&'static str> {
        self.store.ping().await?;
        self.default_server().await?;
        Ok(self.store.backend())
    }

    pub async fn session_gauges(&self) -> Result<SessionGauges> {
        Ok(SessionGauges {
            active: self.store.count_active_sessions(self.now()).await?,
            cached: self.cached_sessions() as u64,
        })
    }

    /// Sessions in this process's hot-path cache.
    pub fn cached_sessions(&self) -> usize {
        self.sessions.cached()
    }

    /// The hashing pool's workers, queue depth and refusals.
    pub fn hashing_gauges(&self) -> HashingGauges {
        self.hashing.gauges()
    }

    pub fn housekeeping(&self) -> Housekeeping<'_> {
        Housekeeping { core: self }
    }

    /// Applies the events of every process to this one's caches until the seam closes. Run
    /// once per process, beside the server.
    pub async fn follow_events(&self) {
        self.sessions.follow_events().await
    }

    /// Subscribes to the events seam (streams that watch browser sessions or pushes).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.sessions.subscribe()
    }
}
