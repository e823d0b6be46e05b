//! The events seam for SQLite: one server process, but administrative commands (`latchkey
//! sessions revoke`, `user delete`, ...) run as other processes on the same file, and their
//! revocations must leave the server's hot-path cache. Revocations are therefore also written
//! to `event_log`, which every process polls each second for rows of other processes; other
//! events stay in-process (only the server has event streams). Rows older than an hour are
//! deleted by the poll.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use latchkey_core::seams::events::{Event, Events};
use latchkey_core::Error;
use sqlx::SqlitePool;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::SqliteStore;

const POLL_EVERY: Duration = Duration::from_secs(1);
const KEEP_ROWS: i64 = 3600;

pub struct SqliteEvents {
    pool: SqlitePool,
    origin: String,
    local: broadcast::Sender<Event>,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl SqliteEvents {
    /// Starts polling for other processes' revocations and answers the seam.
    pub async fn start(store: &SqliteStore) -> Result<Arc<Self>, Error> {
        let pool = store.pool.clone();
        let last: Option<i64> = sqlx::query_scalar("SELECT MAX(event_id) FROM event_log")
            .fetch_one(&pool)
            .await
            .map_err(|e| Error::Internal(format!("reading event_log: {e}")))?;
        let events = Arc::new(Self {
            pool,
            origin: Uuid::new_v4().to_string(),
            local: broadcast::channel(1024).0,
        });
        tokio::spawn(poll(Arc::downgrade(&events), last.unwrap_or(0)));
        Ok(events)
    }
}

/// Forwards other processes' revocations until the seam is dropped.
async fn poll(events: std::sync::Weak<SqliteEvents>, mut last: i64) {
    let mut tick = tokio::time::interval(POLL_EVERY);
    let mut polls: u64 = 0;
    loop {
        tick.tick().await;
        let Some(events) = events.upgrade() else {
            return;
        };
        polls += 1;
        let rows: Result<Vec<(i64, String, String)>, _> = sqlx::query_as(
            "SELECT event_id, origin, sessions FROM event_log WHERE event_id > ? ORDER BY event_id",
        )
        .bind(last)
        .fetch_all(&events.pool)
        .await;
        match rows {
            Ok(rows) => {
                for (id, origin, sessions) in rows {
                    last = id;
                    if origin == events.origin {
                        continue;
                    }
                    let ids: Vec<Uuid> = sessions
                        .split(',')
                        .filter_map(|s| Uuid::parse_str(s).ok())
                        .collect();
                    let _ = events.local.send(Event::SessionsRevoked(ids));
                }
            }
            Err(e) => tracing::warn!(error = %e, "polling event_log failed"),
        }
        if polls.is_multiple_of(600) {
            let _ = sqlx::query("DELETE FROM event_log WHERE at < ?")
                .bind(now() - KEEP_ROWS)
                .execute(&events.pool)
                .await;
        }
    }
}

#[async_trait]
impl Events for SqliteEvents {
    async fn publish(&self, event: Event) -> Result<(), Error> {
        if let Event::SessionsRevoked(ids) = &event {
            if !ids.is_empty() {
                let sessions: Vec<String> = ids.iter().map(Uuid::to_string).collect();
                sqlx::query("INSERT INTO event_log (origin, at, sessions) VALUES (?, ?, ?)")
                    .bind(&self.origin)
                    .bind(now())
                    .bind(sessions.join(","))
                    .execute(&self.pool)
                    .await
                    .map_err(|e| Error::Internal(format!("writing event_log: {e}")))?;
            }
        }
        let _ = self.local.send(event);
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.local.subscribe()
    }
}
