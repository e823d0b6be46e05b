//! Bounds of the Server-Sent Event streams: how many may be open (a semaphore in the state;
//! beyond it 503 in the family's shape), how long one lives, how often it sends a heartbeat.

use std::time::Duration;

use axum::http::{header, StatusCode};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use crate::error::{quatrix_code, ApiError, Family};
use crate::state::AppState;

/// A comment line this often keeps proxies from closing a quiet stream (and shows a dead
/// client to the server).
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// What a client refused for the stream cap is told to wait.
const RETRY_AFTER_SECONDS: u64 = 5;

/// One of the open event streams: held by the stream, released when it ends.
pub struct EventStreamSlot {
    _permit: OwnedSemaphorePermit,
    open: Gauge,
    ends_at: Instant,
}

impl EventStreamSlot {
    /// Resolves when the stream has lived its maximum lifetime (the client reconnects).
    pub async fn expired(&self) {
        tokio::time::sleep_until(self.ends_at).await;
    }
}

impl Drop for EventStreamSlot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl AppState {
    /// A slot for a new event stream, or 503 (in `family`'s shape) when all are taken.
    pub fn event_stream_slot(&self, family: Family) -> Result<EventStreamSlot, ApiError> {
        let permit = self
            .event_streams
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                ApiError::new(
                    family,
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("too many open event streams: retry after {RETRY_AFTER_SECONDS} s"),
                )
                .with_codes("overloaded", quatrix_code::OVERLOADED)
                .with_header(header::RETRY_AFTER, &RETRY_AFTER_SECONDS.to_string())
            })?;
        let open = self.metrics.open_event_streams.clone();
        open.inc();
        Ok(EventStreamSlot {
            _permit: permit,
            open,
            // Options are bounded at start-up (`serve::LONGEST`), so this cannot overflow.
            ends_at: Instant::now() + self.options.event_stream_max_lifetime,
        })
    }
}
