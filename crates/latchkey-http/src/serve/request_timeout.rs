//! The request timeout: a request (other than an event stream) whose answer is not ready within
//! `request_timeout` — reading its body included — is answered 503 with `Retry-After`, in the
//! family's error shape, and its handler is dropped.

use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::error::{quatrix_code, ApiError, Family};

/// The routes that stream their answer for as long as they live (bounded by their own
/// lifetime, `event_stream_max_lifetime`): they get no `limit`.
pub const EVENT_STREAMS: [&str; 2] = ["/servers/{serverid}/sessions/events", "/app/v1/events"];
/// What a client whose request timed out is told to wait.
const RETRY_AFTER_SECONDS: u64 = 1;

/// Answers `answer`, or 503 (in the family of `route`) when it is not ready within `limit`.
pub async fn within(
    limit: Option<Duration>,
    route: &str,
    answer: impl Future<Output = Response>,
) -> Response {
    let Some(limit) = limit else {
        return answer.await;
    };
    // Most answers (every cached session check) are ready at the first poll: they get no
    // timer, whose creation and removal touch the runtime's shared timer state.
    let mut answer = std::pin::pin!(answer);
    if let Poll::Ready(response) = futures_util::poll!(answer.as_mut()) {
        return response;
    }
    // Boxed: a timer is large, and the future of every request would carry its space.
    match Box::pin(tokio::time::timeout(limit, answer)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            Family::of(route),
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the request took longer than {} s: retry after {RETRY_AFTER_SECONDS} s",
                limit.as_secs_f64()
            ),
        )
        .with_codes("overloaded", quatrix_code::OVERLOADED)
        .with_header(header::RETRY_AFTER, &RETRY_AFTER_SECONDS.to_string())
        .into_response(),
    }
}
