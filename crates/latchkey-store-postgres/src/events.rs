//! The events seam over PostgreSQL LISTEN/NOTIFY: every latchkey process sharing the database
//! listens on one channel, so a session revoked by one process leaves the caches of all. The
//! listener reconnects by itself; after a gap it tells its subscribers to resync (forget their
//! caches), since notifications sent meanwhile are lost.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use latchkey_core::seams::events::{Event, Events};
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

/// Payloads: `revoked:<id>,<id>...`, `browser:<server id>:<hex nonce hash>`,
/// `push:<account id>:<request id>`, `transaction:<account id>:<transaction id>`.
fn encode(ids: &[Uuid]) -> String {
    let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    format!("revoked:{}", ids.join(","))
}

fn encode_event(event: &Event) -> Option<String> {
    match event {
        Event::SessionsRevoked(ids) => Some(encode(ids)),
        Event::BrowserChanged {
            server_id,
            nonce_hash,
        } => Some(format!("browser:{server_id}:{}", hex(nonce_hash))),
        Event::PushRequested {
            account_id,
            request_id,
        } => Some(format!("push:{account_id}:{request_id}")),
        Event::TransactionRequested {
            account_id,
            transaction_id,
        } => Some(format!("transaction:{account_id}:{transaction_id}")),
        Event::Resync => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

fn decode(payload: &str) -> Option<Event> {
    let event = decode_known(payload);
    if event.is_none() {
        tracing::warn!("ignoring a malformed event notification");
    }
    event
}

fn decode_known(payload: &str) -> Option<Event> {
    let (kind, rest) = payload.split_once(':')?;
    match kind {
        "revoked" => {
            let ids: Result<Vec<Uuid>, _> = rest.split(',').map(Uuid::parse_str).collect();
            ids.ok().map(Event::SessionsRevoked)
        }
        "browser" => {
            let (server_id, nonce_hash) = rest.rsplit_once(':')?;
            Some(Event::BrowserChanged {
                server_id: server_id.to_owned(),
                nonce_hash: unhex(nonce_hash)?,
            })
        }
        "push" => {
            let (account_id, request_id) = rest.split_once(':')?;
            Some(Event::PushRequested {
                account_id: account_id.parse().ok()?,
                request_id: Uuid::parse_str(request_id).ok()?,
            })
        }
        "transaction" => {
            let (account_id, transaction_id) = rest.split_once(':')?;
            Some(Event::TransactionRequested {
                account_id: account_id.parse().ok()?,
                transaction_id: Uuid::parse_str(transaction_id).ok()?,
            })
        }
        _ => None,
    }
}

async fn notify(pool: &PgPool, payload: &str) -> Result<(), Error> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(payload)
        .execute(pool)
        .await
        .map_err(|e| Error::Internal(format!("NOTIFY: {e}")))?;
    Ok(())
}

#[async_trait]
impl Events for PgEvents {
    async fn publish(&self, event: Event) -> Result<(), Error> {
        match event {
            Event::SessionsRevoked(ids) => {
                for chunk in ids.chunks(IDS_PER_NOTIFICATION) {
                    notify(&self.pool, &encode(chunk)).await?;
                }
                Ok(())
            }
            // A resync concerns this process only.
            Event::Resync => {
                let _ = self.local.send(Event::Resync);
                Ok(())
            }
            other => {
                if let Some(payload) = encode_event(&other) {
                    notify(&self.pool, &payload).await?;
                }
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
        for event in [
            Event::BrowserChanged {
                server_id: "a:b".into(),
                nonce_hash: [7u8; 32],
            },
            Event::PushRequested {
                account_id: 42,
                request_id: Uuid::new_v4(),
            },
            Event::TransactionRequested {
                account_id: 43,
                transaction_id: Uuid::new_v4(),
            },
        ] {
            assert_eq!(decode(&encode_event(&event).unwrap()), Some(event));
        }
        assert_eq!(decode("other"), None);
        let many: Vec<Uuid> = (0..IDS_PER_NOTIFICATION).map(|_| Uuid::new_v4()).collect();
        assert!(encode(&many).len() < 8000);
    }
}
