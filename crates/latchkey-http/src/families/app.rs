//! The companion app protocol, `/app/v1/...` (docs/app-protocol.md): enrol, login from a QR
//! payload, one-time challenges, the event stream of pushed logins and transactions, and the
//! answers to both. Requests are
//! signed by the account key; errors are latchkey's own `{"error", "message"}`.

use std::convert::Infallible;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::routing::{get, post};
use axum::Json;
use futures_util::stream::Stream;
use uuid::Uuid;

use latchkey_core::model::TransactionStatus;
use latchkey_core::services::app::{PushView, Pushed};
use latchkey_core::services::transactions::TransactionView;
use latchkey_core::{Error, ServerId};
use latchkey_wire::{
    AnswerRequest, Answered, AppLoggedIn, AppLoginRequest, Challenge, ChallengeRequest,
    EnrolRequest, Enrolled, ErrorBody, ListenQuery, Push, TransactionAnswer, TransactionAnswered,
    TransactionPush, Transactions, TransactionsRequest,
};

use crate::error::{ApiError, Family, Renders};
use crate::extract::JsonBody;
use crate::routes::Routes;
use crate::serve::streams::HEARTBEAT;
use crate::state::AppState;

const FAMILY: Family = Family::Own;

pub fn routes() -> Routes {
    Routes::new()
        .route("/app/v1/enrol", post(enrol))
        .route("/app/v1/login", post(login))
        .route("/app/v1/challenge", post(challenge))
        .route("/app/v1/events", get(events))
        .route("/app/v1/push/{requestid}", post(answer))
        .route("/app/v1/transactions", post(transactions))
        .route("/app/v1/transactions/{tid}", post(answer_transaction))
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

/// The event stream's view of a transaction.
fn transaction(t: TransactionView) -> TransactionPush {
    TransactionPush {
        tid: t.tid,
        serverid: t.server_id.as_str().to_owned(),
        accountid: t.account_id,
        amount: t.amount,
        beneficiary: t.beneficiary,
        description: t.description,
        created: t.created,
        expires: t.expires,
        signature: t.signature,
    }
}

/// One event of the app's stream: `push` (a login) or `transaction`.
fn event_of(pushed: Pushed) -> SseEvent {
    let (name, data) = match pushed {
        Pushed::Login(p) => ("push", serde_json::to_string(&push(p))),
        Pushed::Transaction(t) => ("transaction", serde_json::to_string(&transaction(t))),
    };
    SseEvent::default()
        .event(name)
        .data(data.unwrap_or_default())
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

/// Server-Sent Events of the logins (`event: push`, a Push) and transactions (`event:
/// transaction`, a TransactionPush) pushed to an account.
#[utoipa::path(get, operation_id = "appEvents", path = "/app/v1/events", tag = "companion app",
    params(ListenQuery),
    responses(
        (status = 200, description = "text/event-stream of `push` and `transaction` events", content_type = "text/event-stream", body = Push),
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
            Some((Ok(event_of(next)), (watch, shutdown, slot)))
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

/// The account's pending transactions (a signed request over a fresh challenge).
#[utoipa::path(post, operation_id = "appTransactions", path = "/app/v1/transactions", tag = "companion app",
    request_body = TransactionsRequest,
    responses(
        (status = 200, description = "Pending transactions, oldest first", body = Transactions),
        (status = 401, description = "Bad signature, or unknown/expired/used challenge", body = ErrorBody),
        (status = 403, description = "Blocked account", body = ErrorBody),
        (status = 404, description = "Unknown server or account", body = ErrorBody),
    ))]
pub async fn transactions(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<TransactionsRequest>,
) -> Result<Json<Transactions>, Failure> {
    let server = server_id(&body.serverid)?;
    let pending = state
        .core
        .app_transactions(&server, body.accountid, &body.challenge, &body.signature)
        .await?;
    Ok(Json(Transactions {
        transactions: pending.into_iter().map(transaction).collect(),
    }))
}

/// Approves or declines a transaction; the signature covers its values and the verdict.
#[utoipa::path(post, operation_id = "appAnswerTransaction", path = "/app/v1/transactions/{tid}", tag = "companion app",
    params(("tid" = String, Path)),
    request_body = TransactionAnswer,
    responses(
        (status = 200, description = "Answered", body = TransactionAnswered),
        (status = 401, description = "Bad signature (or one over other values)", body = ErrorBody),
        (status = 403, description = "Blocked account", body = ErrorBody),
        (status = 404, description = "Unknown transaction", body = ErrorBody),
        (status = 409, description = "Already answered", body = ErrorBody),
        (status = 410, description = "Expired", body = ErrorBody),
    ))]
pub async fn answer_transaction(
    State(state): State<AppState>,
    Path(tid): Path<String>,
    JsonBody(body): JsonBody<TransactionAnswer>,
) -> Result<Json<TransactionAnswered>, Failure> {
    let server = server_id(&body.serverid)?;
    let status = state
        .core
        .answer_transaction(&server, body.accountid, &tid, body.approve, &body.signature)
        .await?;
    Ok(Json(TransactionAnswered {
        approved: status == TransactionStatus::Approved,
    }))
}
