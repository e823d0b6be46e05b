//! Family B (Polario compatible): SCRAM-SHA-256 login in two JSON messages, access JWT in the
//! `Session` response header, rotating refresh tokens (416 when refused), logout by JWT.
//! Errors are `{"error": "<text>"}`.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use latchkey_core::services::polario::{DeviceFacts, TokenGrant};
use latchkey_core::Error;

use crate::error::{ApiError, Family, Renders};
use crate::extract::{header_str, Client, JsonBody};
use crate::routes::Routes;
use crate::state::AppState;

const FAMILY: Family = Family::Polario;
const SESSION: HeaderName = HeaderName::from_static("session");

pub fn routes() -> Routes {
    Routes::new()
        .route("/auth/auth", post(scram_first))
        .route("/auth/login", post(scram_final))
        .route("/auth/logout", get(logout))
        .route("/auth/session", post(refresh))
}

/// How family B (Polario) renders the core's errors; its handlers use `?` on core calls.
pub enum Api {}

impl Renders for Api {
    const FAMILY: Family = FAMILY;

    fn render(e: Error) -> ApiError {
        match e {
            Error::SessionInvalid => ApiError::new(FAMILY, StatusCode::UNAUTHORIZED, "invalid JWT"),
            other => ApiError::from_core(FAMILY, other),
        }
    }
}

type Failure = crate::error::Failure<Api>;

fn err(e: Error) -> ApiError {
    Api::render(e)
}

/// SCRAM client-first message.
#[derive(Deserialize, ToSchema)]
pub struct AuthRequest {
    /// The user's e-mail address (SCRAM `n=`).
    pub email: String,
    /// The client nonce (SCRAM `r=`).
    pub nonce: String,
}

/// SCRAM server-first message.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthResponse {
    /// Client nonce + server nonce.
    pub nonce: String,
    /// Base64 salt.
    pub salt: String,
    pub iteration_count: u32,
    /// Unix time the handshake dies.
    pub expires: i64,
}

/// SCRAM client-final message (AuthLoginRequest).
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthLoginRequest {
    pub email: String,
    /// The combined nonce of the server-first message.
    pub nonce: String,
    /// Base64 ClientProof.
    pub proof: String,
    pub browser: Option<String>,
    pub device_name: Option<String>,
    pub os: Option<String>,
    pub os_version: Option<String>,
}

/// AuthLoginResponse.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthLoginResponse {
    /// The session id.
    pub device_id: Uuid,
    pub refresh_token: String,
    /// Base64 ServerSignature: verify it to know the server holds your verifier.
    pub signature: String,
    #[schema(value_type = Option<String>)]
    pub redirect_project_id: Option<()>,
    #[schema(value_type = Option<String>)]
    pub sendbird_session_token: Option<()>,
}

/// AuthRefreshRequest.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthRefreshRequest {
    pub refresh_token: String,
}

/// AuthRefreshResponse.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthRefreshResponse {
    pub device_id: Uuid,
    #[schema(value_type = Option<String>)]
    pub sendbird_session_token: Option<()>,
    /// The next refresh token (the one sent is now used up).
    pub refresh_token: String,
}

/// ModelSwagStatusOk.
#[derive(Serialize, ToSchema)]
pub struct StatusOk {
    /// "ok"
    pub status: &'static str,
}

/// Family B error.
#[derive(Serialize, ToSchema)]
pub struct PolarioError {
    pub error: String,
}

fn platform(headers: &HeaderMap) -> Option<&str> {
    header_str(headers, "platform")
}

fn with_session_header(mut response: Response, grant: &TokenGrant) -> Response {
    if let Ok(v) = HeaderValue::from_str(&grant.access_token) {
        response.headers_mut().insert(SESSION, v);
    }
    response
}

/// SCRAM first message.
#[utoipa::path(post, operation_id = "scramFirst", path = "/auth/auth", tag = "family B: SCRAM and JWT",
    params(("Platform" = Option<String>, Header, description = "The client platform; the final message must repeat it")),
    request_body = AuthRequest,
    responses(
        (status = 200, description = "Server-first message", body = AuthResponse),
        (status = 400, description = "Malformed", body = PolarioError),
    ))]
pub async fn scram_first(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<AuthRequest>,
) -> Result<Json<AuthResponse>, Failure> {
    let server = state.core.default_server().await?;
    let challenge = state
        .core
        .scram_first(&server, &body.email, &body.nonce, platform(&headers))
        .await?;
    Ok(Json(AuthResponse {
        nonce: challenge.nonce,
        salt: STANDARD.encode(&challenge.salt),
        iteration_count: challenge.iterations,
        expires: challenge.expires,
    }))
}

/// SCRAM final message: logs in. The access JWT is in the `Session` response header.
#[utoipa::path(post, operation_id = "scramFinal", path = "/auth/login", tag = "family B: SCRAM and JWT",
    params(("Platform" = Option<String>, Header, description = "Must equal the first message's")),
    request_body = AuthLoginRequest,
    responses(
        (status = 200, description = "Logged in", body = AuthLoginResponse,
            headers(("Session" = String, description = "The access JWT (EdDSA)"))),
        (status = 400, description = "Malformed, or unknown/expired/used handshake, or Platform mismatch", body = PolarioError),
        (status = 401, description = "Wrong proof", body = PolarioError),
        (status = 403, description = "CAPTCHA or second factor required (reason in the text)", body = PolarioError),
    ))]
pub async fn scram_final(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    JsonBody(body): JsonBody<AuthLoginRequest>,
) -> Result<Response, Failure> {
    let server = state.core.default_server().await?;
    let device = DeviceFacts {
        browser: body.browser,
        device_name: body.device_name,
        os: body.os,
        os_version: body.os_version,
    };
    let result = state
        .core
        .scram_final(
            &server,
            &body.email,
            &body.nonce,
            &body.proof,
            platform(&headers),
            device,
            client,
        )
        .await;
    let grant = match result {
        Ok(grant) => {
            state.metrics.login("scram", "success");
            grant
        }
        Err(e) => {
            state.metrics.login(
                "scram",
                match &e {
                    Error::BadCredentials => "failure",
                    Error::Forbidden(_) => "refused",
                    Error::Invalid(_) => "invalid",
                    _ => "error",
                },
            );
            return Err(e.into());
        }
    };
    let signature = grant
        .server_signature
        .map(|s| STANDARD.encode(s))
        .unwrap_or_default();
    let response = Json(AuthLoginResponse {
        device_id: grant.session_id,
        refresh_token: grant.refresh_token.clone(),
        signature,
        redirect_project_id: None,
        sendbird_session_token: None,
    })
    .into_response();
    Ok(with_session_header(response, &grant))
}

/// Log out: the session of the JWT and all its refresh tokens are revoked.
#[utoipa::path(get, operation_id = "tokenLogout", security(("session_jwt" = [])), path = "/auth/logout", tag = "family B: SCRAM and JWT",
    responses(
        (status = 200, description = "Logged out", body = StatusOk),
        (status = 401, description = "Invalid JWT", body = PolarioError),
    ))]
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<StatusOk>, Failure> {
    let jwt = header_str(&headers, "session").ok_or_else(|| err(Error::SessionInvalid))?;
    state.core.token_logout(jwt).await?;
    Ok(Json(StatusOk { status: "ok" }))
}

/// Refresh: answers a new access JWT (header `Session`) and the next refresh token. A refresh
/// token works once; presenting a used one revokes the session.
#[utoipa::path(post, operation_id = "tokenRefresh", path = "/auth/session", tag = "family B: SCRAM and JWT",
    request_body = AuthRefreshRequest,
    responses(
        (status = 200, description = "Refreshed", body = AuthRefreshResponse,
            headers(("Session" = String, description = "The new access JWT"))),
        (status = 400, description = "Malformed body", body = PolarioError),
        (status = 416, description = "Refresh token invalid, expired, reused or revoked", body = PolarioError),
    ))]
pub async fn refresh(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<AuthRefreshRequest>,
) -> Result<Response, Failure> {
    let grant = state.core.refresh(&body.refresh_token).await?;
    let response = Json(AuthRefreshResponse {
        device_id: grant.session_id,
        sendbird_session_token: None,
        refresh_token: grant.refresh_token.clone(),
    })
    .into_response();
    Ok(with_session_header(response, &grant))
}
