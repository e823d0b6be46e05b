//! The companion app protocol, `/app/v1/...` (docs/app-protocol.md): enrol, login from a QR
//! payload, one-time challenges, the push event stream and answers to pushes. Requests are
//! signed by the account key; errors are latchkey's own `{"error", "message"}`.

use std::convert::Infallible;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::Stream;
use uuid::Uuid;

use latchkey_core::services::app::PushView;
use latchkey_core::{Error, ServerId};
use latchkey_wire::{
    AnswerRequest, Answered, AppLoggedIn, AppLoginRequest, Challenge, ChallengeRequest,
    EnrolRequest, Enrolled, ErrorBody, ListenQuery, Push,
};

use crate::error::{ApiError, Family, Renders};
use crate::extract::JsonBody;
use crate::serve::streams::HEARTBEAT;
use crate::state::AppState;

const FAMILY: Family = Family::Own;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/app/v1/enrol", post(enrol))
        .route("/app/v1/login", post(login))
        .route("/app/v1/challenge", post(challenge))
        .route("/app/v1/events", get(events))
        .route("/app/v1/push/{requestid}", post(answer))
}

/// How companion app protocol renders the core's errors; its handlers use `?` on core calls.
pub enum Api {}

impl Renders for Api {
    const FAMILY: Family = FAMILY;

    fn render(e: Error) -> ApiError {
        match e {
            Error::BadCredentials => ApiError::new(
                FAMILY,
                StatusCode::UNAUTHORIZED,
                "bad signature, or unknown, expired or used challenge",
            ),
            other => ApiError::from_core(FAMILY, other),
        }
    }
}

type Failure = crate::error::Failure<Api>;

fn server_id(raw: &str) -> Result<ServerId, ApiError> {
    ServerId::parse(raw).map_err(|_| ApiError::new(FAMILY, StatusCode::NOT_FOUND, "no such server"))
}

/// The event stream's view of a pushed login.
fn push(p: PushView) -> Push {
    Push {
        requestid: p.request_id.to_string(),
        serverid: p.server_id.as_str().to_owned(),
        accountid: p.account_id,
        usercontext: p.user_context,
        expires: p.expires,
    }
}

/// Enrols an app key pair from an enrol QR payload.
#[utoipa::path(post, operation_id = "appEnrol", path = "/app/v1/enrol", tag = "companion app",
    request_body = EnrolRequest,
    responses(
        (status = 200, description = "Enrolled", body = Enrolled),
        (status = 400, description = "Malformed, or a payload not signed by this server", body = ErrorBody),
        (status = 401, description = "Bad signature, or unknown/expired/used challenge", body = ErrorBody),
        (status = 409, description = "Key already enrolled", body = ErrorBody),
    ))]
pub async fn enrol(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<EnrolRequest>,
) -> Result<Json<Enrolled>, Failure> {
    let done = state
        .core
        .app_enrol(
            &body.payload,
            &body.publickey,
            &body.signature,
            body.client_version.as_deref(),
        )
        .await?;
    Ok(Json(Enrolled {
        accountid: done.account_id,
        serverid: done.server_id.as_str().to_owned(),
        userid: done.userid,
    }))
}

/// Logs in the browser session of a login QR payload.
#[utoipa::path(post, operation_id = "appLogin", path = "/app/v1/login", tag = "companion app",
    request_body = AppLoginRequest,
    responses(
        (status = 200, description = "Logged in", body = AppLoggedIn),
        (status = 401, description = "Bad signature, or unknown/expired/used challenge", body = ErrorBody),
        (status = 403, description = "Blocked account", body = ErrorBody),
        (status = 404, description = "Unknown account", body = ErrorBody),
    ))]
pub async fn login(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<AppLoginRequest>,
) -> Result<Json<AppLoggedIn>, Failure> {
    match state
        .core
        .app_login(&body.payload, body.accountid, &body.signature)
        .await
    {
        Ok(done) => {
            state.metrics.login("app_qr", "success");
            Ok(Json(AppLoggedIn {
                serverid: done.server_id.as_str().to_owned(),
                accountid: done.account_id,
                userid: done.userid,
            }))
        }
        Err(e) => {
            state.metrics.login("app_qr", "failure");
            Err(e.into())
        }
    }
}

/// A fresh one-time value to sign (listen requests).
#[utoipa::path(post, operation_id = "appChallenge", path = "/app/v1/challenge", tag = "companion app",
    request_body = ChallengeRequest,
    responses(
        (status = 200, description = "Challenge", body = Challenge),
        (status = 404, description = "Unknown server or account", body = ErrorBody),
    ))]
pub async fn challenge(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<ChallengeRequest>,
) -> Result<Json<Challenge>, Failure> {
    let server = server_id(&body.serverid)?;
    let (challenge, expires) = state.core.app_challenge(&server, body.accountid).await?;
    Ok(Json(Challenge { challenge, expires }))
}

/// Server-Sent Events of the logins pushed to an account (`event: push`).
#[utoipa::path(get, operation_id = "appEvents", path = "/app/v1/events", tag = "companion app",
    params(ListenQuery),
    responses(
        (status = 200, description = "text/event-stream of `push` events", content_type = "text/event-stream", body = Push),
        (status = 401, description = "Bad signature, or unknown/expired/used challenge", body = ErrorBody),
        (status = 403, description = "Blocked account", body = ErrorBody),
    ))]
pub async fn events(
    State(state): State<AppState>,
    query: Result<Query<ListenQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, Failure> {
    let Query(q) =
        query.map_err(|e| ApiError::new(FAMILY, StatusCode::BAD_REQUEST, e.body_text()))?;
    let server = server_id(&q.serverid)?;
    // Taken before the core call, so a refused stream costs nothing (no challenge used).
    let slot = state.event_stream_slot(FAMILY)?;
    let watch = state
        .core
        .watch_pushes(&server, q.accountid, &q.challenge, &q.signature)
        .await?;
    let shutdown = state.shutdown.clone();
    // Ends at shutdown and after its lifetime (the slot), and frees the slot when dropped.
    let stream = futures_util::stream::unfold(
        (watch, shutdown, slot),
        |(mut watch, mut shutdown, slot)| async move {
            let next = tokio::select! {
                next = watch.next() => next?,
                _ = shutdown.wait_for(|stop| *stop) => return None,
                _ = slot.expired() => return None,
            };
            let data = serde_json::to_string(&push(next)).unwrap_or_default();
            Some((
                Ok(SseEvent::default().event("push").data(data)),
                (watch, shutdown, slot),
            ))
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(HEARTBEAT)))
}

/// Approves or denies a pushed login.
#[utoipa::path(post, operation_id = "appAnswerPush", path = "/app/v1/push/{requestid}", tag = "companion app",
    params(("requestid" = String, Path)),
    request_body = AnswerRequest,
    responses(
        (status = 200, description = "Answered", body = Answered),
        (status = 401, description = "Bad signature", body = ErrorBody),
        (status = 403, description = "Blocked account", body = ErrorBody),
        (status = 404, description = "Unknown request", body = ErrorBody),
        (status = 409, description = "Already answered", body = ErrorBody),
        (status = 410, description = "Expired", body = ErrorBody),
    ))]
pub async fn answer(
    State(state): State<AppState>,
    Path(request): Path<String>,
    JsonBody(body): JsonBody<AnswerRequest>,
) -> Result<Json<Answered>, Failure> {
    let server = server_id(&body.serverid)?;
    let request = Uuid::parse_str(&request)
        .map_err(|_| ApiError::new(FAMILY, StatusCode::NOT_FOUND, "no such push request"))?;
    let loggedin = state
        .core
        .answer_push(
            &server,
            body.accountid,
            request,
            body.approve,
            &body.signature,
        )
        .await?;
    state
        .metrics
        .login("app_push", if loggedin { "success" } else { "denied" });
    Ok(Json(Answered { loggedin }))
}
