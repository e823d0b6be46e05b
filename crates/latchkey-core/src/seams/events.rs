//! The events seam: facts that every latchkey process sharing a store must learn at once:
//! session revocations (each process drops the session from its hot-path cache), changes of a
//! browser session's login status (for its event stream) and pushes and transactions to
//! companion apps (for the app's event stream, which may be connected to another process than
//! the one provoking).
//!
//! [`LocalEvents`] is an in-process broadcast, right when this process is the store's only
//! user (SQLite). With PostgreSQL the store crate provides an implementation over
//! LISTEN/NOTIFY. A subscriber that may have missed events (a dropped listener connection)
//! receives [`Event::Resync`] and must forget what it cached.

use async_trait::async_trait;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::error::Result;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// These sessions were revoked (or ended): drop them from caches.
    SessionsRevoked(Vec<Uuid>),
    /// The login status of a family A browser session may have changed.
    BrowserChanged {
        server_id: String,
        nonce_hash: [u8; 32],
    },
    /// A login request was pushed to an account's app.
    PushRequested { account_id: i64, request_id: Uuid },
    /// A transaction was pushed to an account's app.
    TransactionRequested {
        account_id: i64,
        transaction_id: Uuid,
    },
    /// Events may have been lost: drop every cached session (and recheck what you watch).
    Resync,
}

#[async_trait]
pub trait Events: Send + Sync + 'static {
    /// Delivers `event` to every subscriber of every process (this one included).
    async fn publish(&self, event: Event) -> Result<()>;
    fn subscribe(&self) -> broadcast::Receiver<Event>;
}

/// Events within one process.
pub struct LocalEvents(broadcast::Sender<Event>);

impl LocalEvents {
    pub fn new() -> Self {
        Self(broadcast::channel(1024).0)
    }
}

impl Default for LocalEvents {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Events for LocalEvents {
    async fn publish(&self, event: Event) -> Result<()> {
        // No subscriber is not an error: nobody caches anything then.
        let _ = self.0.send(event);
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.0.subscribe()
    }
}
