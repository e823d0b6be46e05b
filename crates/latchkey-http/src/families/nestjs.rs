//! Family C (NestJS-style session management): list, count, revoke one or all, validate, over
//! the sessions of every login method. `Authorization: Bearer` takes an access JWT (family B)
//! or an opaque session token (families A and D). Errors are `{statusCode, message, error}`.

use std::collections::HashMap;

use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::Json;
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use latchkey_core::cache::sessions::ActiveSession;
use latchkey_core::model::Session;
use latchkey_core::services::nestjs::DEFAULT_PAGE_SIZE;
use latchkey_core::Error;

use crate::error::{ApiError, Family, Renders};
use crate::routes::Routes;
use crate::state::AppState;

const FAMILY: Family = Family::Nestjs;

pub fn routes() -> Routes {
    Routes::new()
        .route("/sessions", get(list).delete(revoke_all))
        .route("/sessions/count", get(count))
        .route("/sessions/{session_id}", delete(revoke))
        .direct_get(
            "/sessions/validate/{session_id}",
            Some(validate_now),
            validate,
        )
}

/// How family C (NestJS) renders the core's errors; its handlers use `?` on core calls.
pub enum Api {}

impl Renders for Api {
    const FAMILY: Family = FAMILY;

    fn render(e: Error) -> ApiError {
        match e {
            Error::SessionInvalid => {
                ApiError::new(FAMILY, StatusCode::UNAUTHORIZED, "Unauthorized")
            }
            other => ApiError::from_core(FAMILY, other),
        }
    }
}

type Failure = crate::error::Failure<Api>;

fn err(e: Error) -> ApiError {
    Api::render(e)
}

/// The caller, authenticated by `Authorization: Bearer <JWT or session token>`.
pub struct Caller(pub ActiveSession);

/// The scheme of an `Authorization` header with a token, and the space after it.
const BEARER: &[u8] = b"bearer ";

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers).ok_or_else(|| err(Error::SessionInvalid))?;
        let caller = state.core.authenticate_bearer(token).await.map_err(err)?;
        Ok(Caller(caller))
    }
}

/// The token of an `Authorization: Bearer` header, as bytes: a verified JWT is found by its
/// bytes (a JWT's 400 bytes are checked as UTF-8 only when it is not known yet).
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?;
    let (scheme, token) = value.as_bytes().split_at_checked(BEARER.len())?;
    scheme
        .eq_ignore_ascii_case(BEARER)
        .then(|| token.trim_ascii())
}

/// One session as family C shows it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionView {
    pub id: Uuid,
    /// The device name given at login, else the user agent.
    pub device_info: Option<String>,
    pub ip_address: Option<String>,
    /// Always null (latchkey does no address geolocation).
    #[schema(value_type = Option<String>)]
    pub location: Option<()>,
    /// ISO 8601.
    pub last_active_at: Option<String>,
    /// ISO 8601.
    pub created_at: Option<String>,
    pub is_current: bool,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionList {
    pub sessions: Vec<SessionView>,
    pub total: u64,
    pub page: u64,
    pub limit: u64,
    pub total_pages: u64,
}

#[derive(Serialize, ToSchema)]
pub struct SessionCount {
    pub count: u64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevokeAllResult {
    pub success: bool,
    pub message: String,
    pub revoked_count: usize,
}

#[derive(Serialize, ToSchema)]
pub struct RevokeResult {
    pub success: bool,
    pub message: String,
}

#[derive(Serialize, ToSchema)]
pub struct Validation {
    pub valid: bool,
    pub message: String,
}

/// Family C error.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NestError {
    pub status_code: u16,
    pub message: String,
    pub error: String,
}

fn iso(t: i64) -> Option<String> {
    OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
}

fn view(session: &Session, current: Uuid) -> SessionView {
    SessionView {
        id: session.id,
        device_info: session
            .client
            .device_name
            .clone()
            .or_else(|| session.client.user_agent.clone()),
        ip_address: session.client.ip.clone(),
        location: None,
        last_active_at: iso(session.last_active_at),
        created_at: iso(session.created_at),
        is_current: session.id == current,
    }
}

/// An optional integer query parameter; anything else is 400.
fn number(query: &HashMap<String, String>, name: &str, default: i64) -> Result<i64, ApiError> {
    match query.get(name).map(|v| v.trim()) {
        None | Some("") => Ok(default),
        Some(v) => v.parse::<i64>().map_err(|_| {
            ApiError::new(
                FAMILY,
                StatusCode::BAD_REQUEST,
                format!("{name} must be an integer"),
            )
        }),
    }
}

/// The caller's active sessions from every family, newest activity first.
#[utoipa::path(get, operation_id = "getActiveSessions", path = "/sessions", tag = "family C: session management",
    security(("bearer" = [])),
    params(
        ("currentSessionId" = Option<String>, Query, description = "Marked isCurrent (default: the caller's own session)"),
        ("page" = Option<u32>, Query, minimum = 1, description = "Page number from 1 (default 1)"),
        ("limit" = Option<u32>, Query, minimum = 1, description = "Page size, clamped to 1..50 (default 10)"),
    ),
    responses(
        (status = 200, description = "List of active sessions with pagination", body = SessionList),
        (status = 400, description = "page or limit is not a number", body = NestError),
        (status = 401, description = "Unauthorized", body = NestError),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    query: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<SessionList>, Failure> {
    let Query(query) =
        query.map_err(|e| ApiError::new(FAMILY, StatusCode::BAD_REQUEST, e.body_text()))?;
    let page = number(&query, "page", 1)?;
    let limit = number(&query, "limit", DEFAULT_PAGE_SIZE)?;
    let current = match query.get("currentSessionId").map(|v| v.trim()) {
        None | Some("") => caller.id,
        Some(v) => Uuid::parse_str(v).unwrap_or(Uuid::nil()),
    };
    let listed = state.core.list_sessions(caller, page, limit).await?;
    Ok(Json(SessionList {
        sessions: listed.sessions.iter().map(|s| view(s, current)).collect(),
        total: listed.total,
        page: listed.page,
        limit: listed.limit,
        total_pages: listed.total_pages,
    }))
}

/// How many active sessions the caller's user has.
#[utoipa::path(get, operation_id = "getSessionCount", path = "/sessions/count", tag = "family C: session management",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Session count", body = SessionCount),
        (status = 401, description = "Unauthorized", body = NestError),
    ))]
pub async fn count(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<SessionCount>, Failure> {
    let count = state.core.count_sessions(caller).await?;
    Ok(Json(SessionCount { count }))
}

/// Revoke every session of the caller's user (logout from all devices, this one included).
#[utoipa::path(delete, operation_id = "revokeAllSessions", path = "/sessions", tag = "family C: session management",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "All sessions revoked", body = RevokeAllResult),
        (status = 401, description = "Unauthorized", body = NestError),
    ))]
pub async fn revoke_all(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<RevokeAllResult>, Failure> {
    let n = state.core.revoke_all_sessions(caller).await?;
    Ok(Json(RevokeAllResult {
        success: true,
        message: format!("Logged out from {n} device(s)"),
        revoked_count: n,
    }))
}

/// Revoke one of the caller's sessions.
#[utoipa::path(delete, operation_id = "revokeSession", path = "/sessions/{sessionId}", tag = "family C: session management",
    security(("bearer" = [])),
    params(("sessionId" = String, Path, description = "The session id")),
    responses(
        (status = 200, description = "Revoked", body = RevokeResult),
        (status = 401, description = "Unauthorized", body = NestError),
        (status = 403, description = "Another user's session", body = NestError),
        (status = 404, description = "No such live session", body = NestError),
    ))]
pub async fn revoke(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(session_id): Path<String>,
) -> Result<Json<RevokeResult>, Failure> {
    let id = Uuid::parse_str(&session_id)
        .map_err(|_| ApiError::new(FAMILY, StatusCode::NOT_FOUND, "Session not found"))?;
    state.core.revoke_own_session(caller, id).await?;
    Ok(Json(RevokeResult {
        success: true,
        message: "Session revoked successfully".into(),
    }))
}

/// Is this session still active? (Another user's session is reported as not active.)
#[utoipa::path(get, operation_id = "validateSession", path = "/sessions/validate/{sessionId}", tag = "family C: session management",
    security(("bearer" = [])),
    params(("sessionId" = String, Path, description = "The session id")),
    responses(
        (status = 200, description = "Validation result", body = Validation),
        (status = 401, description = "Unauthorized", body = NestError),
    ))]
pub async fn validate(
    State(state): State<AppState>,
    Caller(caller): Caller,
    uri: Uri,
) -> Result<Response, Failure> {
    let valid = match validated_id(&uri) {
        Some(id) => state.core.validate_session(caller, id).await?,
        None => false,
    };
    Ok(validation(valid))
}

/// [`validate`] when memory settles it (crate::routes): the caller's session and the one
/// validated are cached.
fn validate_now(request: &Request, state: &AppState) -> Option<Response> {
    let caller = state
        .core
        .authenticate_bearer_now(bearer(request.headers())?)?;
    let valid = match validated_id(request.uri()) {
        Some(id) => state.core.validate_session_now(caller, id)?,
        None => false,
    };
    Some(validation(valid))
}

/// The session id to validate. The route is direct (crate::routes): its parameter is the
/// path's last segment.
fn validated_id(uri: &Uri) -> Option<Uuid> {
    crate::extract::last_segment(uri).and_then(|id| Uuid::parse_str(&id).ok())
}

/// The two possible answers, serialised once (a hot path); a unit test checks them against
/// `Validation`.
fn validation(valid: bool) -> Response {
    let body = if valid { VALID } else { NOT_VALID };
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// [`Validation`] of an active session, as JSON.
const VALID: &str = r#"{"valid":true,"message":"Session is active"}"#;
/// [`Validation`] of any other, as JSON.
const NOT_VALID: &str =
    r#"{"valid":false,"message":"Session is expired, revoked, or does not exist"}"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_validation_answers_are_validations() {
        for (body, valid, message) in [
            (VALID, true, "Session is active"),
            (
                NOT_VALID,
                false,
                "Session is expired, revoked, or does not exist",
            ),
        ] {
            let expected = serde_json::to_string(&Validation {
                valid,
                message: message.to_owned(),
            });
            assert_eq!(expected.ok().as_deref(), Some(body));
        }
    }
}
