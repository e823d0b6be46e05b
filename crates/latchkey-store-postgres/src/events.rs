//! The events seam over PostgreSQL LISTEN/NOTIFY: every latchkey process sharing the database
//! listens on one channel, so a session revoked by one process leaves the caches of all. The
//! listener reconnects by itself; after a gap it tells its subscribers to resync (forget their
//! caches), since notifications sent meanwhile are lost.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use latchkey_core::events::{Event, Events};
use latchkey_core::Error;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::PgStore;

const CHANNEL: &str = "latchkey_events";
/// Session ids per notification (PostgreSQL payloads are limited to 8000 bytes).
const IDS_PER_NOTIFICATION: usize = 150;

pub struct PgEvents {
    pool: PgPool,
    local: broadcast::Sender<Event>,
}

impl PgEvents {
    /// Starts listening (one dedicated connection) and answers the seam.
    pub async fn start(store: &PgStore) -> Result<Arc<Self>, Error> {
        let pool = store.pool.clone();
        let mut listener = PgListener::connect_with(&pool)
            .await
            .map_err(|e| Error::Internal(format!("LISTEN connection: {e}")))?;
        listener
            .listen(CHANNEL)
            .await
            .map_err(|e| Error::Internal(format!("LISTEN {CHANNEL}: {e}")))?;
        let local = broadcast::channel(1024).0;
        tokio::spawn(forward(listener, local.clone()));
        Ok(Arc::new(Self { pool, local }))
    }
}

/// Moves notifications into the local broadcast until nobody can listen any more.
async fn forward(mut listener: PgListener, local: broadcast::Sender<Event>) {
    loop {
        match listener.try_recv().await {
            Ok(Some(notification)) => {
                if let Some(event) = decode(notification.payload()) {
                    let _ = local.send(event);
                }
            }
            Ok(None) => {
                // The connection dropped; sqlx reconnects (and re-listens) on the next call.
                tracing::warn!("event listener reconnecting; caches resync");
                let _ = local.send(Event::Resync);
            }
            Err(e) => {
                tracing::error!(error = %e, "event listener failed; retrying");
                let _ = local.send(Event::Resync);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

fn encode(ids: &[Uuid]) -> String {
    let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    format!("revoked:{}", ids.join(","))
}

fn decode(payload: &str) -> Option<Event> {
    let ids = payload.strip_prefix("revoked:")?;
    let ids: Result<Vec<Uuid>, _> = ids.split(',').map(Uuid::parse_str).collect();
    match ids {
        Ok(ids) => Some(Event::SessionsRevoked(ids)),
        Err(_) => {
            tracing::warn!("ignoring a malformed event notification");
            None
        }
    }
}

#[async_trait]
impl Events for PgEvents {
    async fn publish(&self, event: Event) -> Result<(), Error> {
        match event {
            Event::SessionsRevoked(ids) => {
                for chunk in ids.chunks(IDS_PER_NOTIFICATION) {
                    sqlx::query("SELECT pg_notify($1, $2)")
                        .bind(CHANNEL)
                        .bind(encode(chunk))
                        .execute(&self.pool)
                        .await
                        .map_err(|e| Error::Internal(format!("NOTIFY: {e}")))?;
                }
                Ok(())
            }
            // A resync concerns this process only.
            Event::Resync => {
                let _ = self.local.send(Event::Resync);
                Ok(())
            }
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.local.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocations_survive_the_notification_encoding() {
        let ids = vec![Uuid::new_v4(), Uuid::new_v4()];
        assert_eq!(decode(&encode(&ids)), Some(Event::SessionsRevoked(ids)));
        assert_eq!(decode("revoked:nope"), None);
        assert_eq!(decode("other"), None);
        let many: Vec<Uuid> = (0..IDS_PER_NOTIFICATION).map(|_| Uuid::new_v4()).collect();
        assert!(encode(&many).len() < 8000);
    }
}
