//! The request timeout: a request (other than an event stream) whose answer is not ready within
//! `request_timeout` — reading its body included — is answered 503 with `Retry-After`, in the
//! family's error shape, and its handler is dropped.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{quatrix_code, ApiError, Family};
use crate::state::AppState;

/// The routes that stream their answer for as long as they live (bounded by their own
/// lifetime, `event_stream_max_lifetime`).
const EVENT_STREAMS: [&str; 2] = ["/servers/{serverid}/sessions/events", "/app/v1/events"];
/// What a client whose request timed out is told to wait.
const RETRY_AFTER_SECONDS: u64 = 1;

pub async fn request_timeout(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let streams = request
        .extensions()
        .get::<MatchedPath>()
        .is_some_and(|path| EVENT_STREAMS.contains(&path.as_str()));
    if streams {
        return next.run(request).await;
    }
    let family = Family::of(request.uri().path());
    let limit = state.options.request_timeout;
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            family,
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
