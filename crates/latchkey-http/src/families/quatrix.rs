//! Family D (Quatrix compatible): password login over HTTP Basic, second factor (TOTP or PIN),
//! keepalive, logout, CAPTCHA image and unblock. The session token travels in `X-Auth-Token`;
//! the session id (a UUID) is shown, never used as a credential. Errors are ErrorModel.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use latchkey_core::model::MfaKind;
use latchkey_core::Error;

use crate::error::{quatrix_code, ApiError, Family, Renders};
use crate::extract::{Client, JsonBody};
use crate::routes::Routes;
use crate::state::AppState;

const FAMILY: Family = Family::Quatrix;
const AUTH_TOKEN: HeaderName = HeaderName::from_static("x-auth-token");
const MFA_CODE: HeaderName = HeaderName::from_static("mfa-code");
/// Longest session token looked up (issued ones are 43 characters).
const MAX_TOKEN_LEN: usize = 128;

pub fn routes() -> Routes {
    Routes::new()
        .route("/session/login", get(login).post(login_mfa))
        .direct_get("/session/keepalive", Some(keepalive_now), keepalive)
        .route("/session/logout", get(logout))
        .route("/session/captcha", get(captcha))
        .route("/session/unblock-captcha", post(unblock_captcha))
}

/// How family D (Quatrix) renders the core's errors; its handlers use `?` on core calls.
pub enum Api {}

impl Renders for Api {
    const FAMILY: Family = FAMILY;

    fn render(e: Error) -> ApiError {
        ApiError::from_core(FAMILY, e)
    }
}

type Failure = crate::error::Failure<Api>;

fn err(e: Error) -> ApiError {
    Api::render(e)
}

/// SessionLoginResp.
#[derive(Serialize, ToSchema)]
pub struct SessionLoginResp {
    /// The session id (a UUID; not a credential).
    pub session_id: Uuid,
}

/// SessionLoginPostResp: the second factor.
#[derive(Deserialize, ToSchema)]
pub struct MfaLoginReq {
    /// "2FA" (TOTP) or "PIN".
    pub auth_type: String,
    /// The code: 6 TOTP digits or the PIN (a string; a JSON number is accepted too).
    #[schema(value_type = String)]
    pub code: Value,
}

/// UnblockCaptchaReq.
#[derive(Deserialize, ToSchema)]
pub struct UnblockCaptchaReq {
    /// The CAPTCHA answer as read from the image.
    pub token: String,
}

/// SessionUnblockCaptchaResp.
#[derive(Serialize, ToSchema)]
pub struct UnblockCaptchaResp {
    pub valid: bool,
}

/// ErrorModel.
#[derive(Serialize, ToSchema)]
pub struct ErrorModel {
    pub msg: String,
    /// 1 invalid request, 2 wrong credentials, 3 session invalid, 4 wrong session state,
    /// 11 CAPTCHA required, 13 body too large, 14 header too large (see docs/api.md).
    pub code: i64,
    #[schema(value_type = Object)]
    pub details: Value,
}

/// The `X-Auth-Token` of a request; missing or absurd: 401.
pub struct AuthToken(HeaderToken);

/// A token read from a header, kept as the header's value: no copy (a hot path).
pub struct HeaderToken(HeaderValue);

impl std::ops::Deref for HeaderToken {
    type Target = str;

    fn deref(&self) -> &str {
        // Checked to be visible ASCII when it was extracted.
        self.0.to_str().unwrap_or_default()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AuthToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match parts.headers.get(&AUTH_TOKEN) {
            Some(value) => match plausible_token(value) {
                Some(_) => Ok(AuthToken(HeaderToken(value.clone()))),
                None => Err(err(Error::SessionInvalid)),
            },
            None => Err(ApiError::new(
                FAMILY,
                StatusCode::UNAUTHORIZED,
                "missing X-Auth-Token header",
            )
            .with_codes("session_invalid", quatrix_code::SESSION_INVALID)),
        }
    }
}

/// An `X-Auth-Token` value that could be a token latchkey issued: visible ASCII, 1 to
/// `MAX_TOKEN_LEN` bytes.
fn plausible_token(value: &HeaderValue) -> Option<&str> {
    let token = value.to_str().ok()?;
    (!token.is_empty() && token.len() <= MAX_TOKEN_LEN).then_some(token)
}

fn session_answer(status: StatusCode, session_id: Uuid, token: Option<&str>) -> Response {
    let mut response = (status, Json(SessionLoginResp { session_id })).into_response();
    if let Some(Ok(v)) = token.map(HeaderValue::from_str) {
        response.headers_mut().insert(AUTH_TOKEN, v);
    }
    response
}

fn with_mfa_code(mut response: Response, mfa: Option<MfaKind>) -> Response {
    if let Some(kind) = mfa {
        response
            .headers_mut()
            .insert(MFA_CODE, HeaderValue::from(u16::from(kind.code())));
    }
    response
}

/// Parses `Authorization: Basic base64(userid:password)`.
fn basic_credentials(headers: &HeaderMap) -> Result<(String, String), ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::new(
            FAMILY,
            StatusCode::UNAUTHORIZED,
            "missing Basic credentials",
        ));
    };
    let malformed = |why: &str| {
        ApiError::new(
            FAMILY,
            StatusCode::BAD_REQUEST,
            format!("malformed Basic credentials: {why}"),
        )
    };
    let value = value
        .to_str()
        .map_err(|_| malformed("the header is not ASCII"))?;
    let (scheme, encoded) = value
        .split_once(' ')
        .ok_or_else(|| malformed("expected \"Basic <base64>\""))?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(malformed("the scheme is not Basic"));
    }
    let encoded = encoded.trim();
    let decoded = STANDARD
        .decode(encoded)
        .or_else(|_| STANDARD_NO_PAD.decode(encoded))
        .map_err(|_| malformed("not base64"))?;
    let text = String::from_utf8(decoded).map_err(|_| malformed("not UTF-8"))?;
    let (user, password) = text
        .split_once(':')
        .ok_or_else(|| malformed("no ':' between user name and password"))?;
    Ok((user.to_owned(), password.to_owned()))
}

/// Log in with HTTP Basic.
///
/// 200: logged in. 207: a second factor is needed (`Mfa-Code` 1 = 2FA, 2 = PIN; post it to
/// POST /session/login with the returned `X-Auth-Token`). 403 code 11: a CAPTCHA must be solved
/// first, whatever the password (the `X-Auth-Token` names the blocked session).
#[utoipa::path(get, operation_id = "sessionLogin", path = "/session/login", tag = "family D: password login",
    security(("basicAuth" = [])),
    responses(
        (status = 200, description = "Logged in", body = SessionLoginResp,
            headers(("X-Auth-Token" = String, description = "The session token"))),
        (status = 207, description = "Password right; second factor needed", body = SessionLoginResp,
            headers(("X-Auth-Token" = String, description = "Token of the session pending MFA"),
                    ("Mfa-Code" = i32, description = "1 = 2FA (TOTP), 2 = PIN"))),
        (status = 400, description = "Malformed credentials", body = ErrorModel),
        (status = 401, description = "Wrong credentials", body = ErrorModel),
        (status = 403, description = "CAPTCHA required (code 11)", body = ErrorModel,
            headers(("X-Auth-Token" = String, description = "Token of the session blocked on CAPTCHA"))),
    ))]
pub async fn login(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    let metrics = &state.metrics;
    let (user, password) = basic_credentials(&headers).inspect_err(|_| {
        metrics.login("password", "invalid");
    })?;
    let server = state.core.default_server().await?;
    match state
        .core
        .password_login(&server, &user, &password, client)
        .await
    {
        Ok(started) => {
            metrics.login(
                "password",
                if started.mfa.is_some() {
                    "mfa_pending"
                } else {
                    "success"
                },
            );
            let status = if started.mfa.is_some() {
                StatusCode::MULTI_STATUS
            } else {
                StatusCode::OK
            };
            Ok(with_mfa_code(
                session_answer(status, started.session_id, Some(&started.token)),
                started.mfa,
            ))
        }
        Err(e) => {
            metrics.login(
                "password",
                match &e {
                    Error::CaptchaRequired { .. } => "captcha_required",
                    Error::BadCredentials => "failure",
                    Error::Invalid(_) => "invalid",
                    _ => "error",
                },
            );
            Err(e.into())
        }
    }
}

/// Complete a login with the second factor.
#[utoipa::path(post, operation_id = "sessionLoginMfa", security(("auth_token" = [])), path = "/session/login", tag = "family D: password login",
    request_body = MfaLoginReq,
    responses(
        (status = 200, description = "Logged in", body = SessionLoginResp),
        (status = 400, description = "Malformed body or wrong auth_type", body = ErrorModel),
        (status = 401, description = "Wrong code (5 end the session), or session invalid", body = ErrorModel),
    ))]
pub async fn login_mfa(
    State(state): State<AppState>,
    AuthToken(token): AuthToken,
    JsonBody(body): JsonBody<MfaLoginReq>,
) -> Result<Response, Failure> {
    let kind = match body.auth_type.as_str() {
        "2FA" => MfaKind::Totp,
        "PIN" => MfaKind::Pin,
        _ => {
            return Err(ApiError::new(
                FAMILY,
                StatusCode::BAD_REQUEST,
                "auth_type must be \"2FA\" or \"PIN\"",
            )
            .into())
        }
    };
    let code = match body.code {
        Value::String(s) => s,
        Value::Number(n) if n.is_u64() => n.to_string(),
        _ => {
            return Err(ApiError::new(
                FAMILY,
                StatusCode::BAD_REQUEST,
                "code must be a string of digits",
            )
            .into())
        }
    };
    let method = match kind {
        MfaKind::Totp => "totp",
        MfaKind::Pin => "pin",
    };
    match state.core.second_factor(&token, kind, &code).await {
        Ok(session_id) => {
            state.metrics.login(method, "success");
            Ok(session_answer(StatusCode::OK, session_id, None))
        }
        Err(e) => {
            state.metrics.login(method, "failure");
            Err(e.into())
        }
    }
}

/// Keep the session alive: moves its idle deadline (15 minutes without calls by default).
#[utoipa::path(get, operation_id = "sessionKeepalive", security(("auth_token" = [])), path = "/session/keepalive", tag = "family D: password login",
    responses(
        (status = 200, description = "Kept alive (empty body)"),
        (status = 401, description = "Session expired, revoked or unknown", body = ErrorModel),
    ))]
pub async fn keepalive(
    State(state): State<AppState>,
    AuthToken(token): AuthToken,
) -> Result<StatusCode, Failure> {
    state.core.keepalive(&token).await?;
    Ok(StatusCode::OK)
}

/// [`keepalive`] when memory settles it (crate::routes): the session is cached.
fn keepalive_now(request: &Request, state: &AppState) -> Option<Response> {
    let token = plausible_token(request.headers().get(&AUTH_TOKEN)?)?;
    state.core.keepalive_now(token)?;
    Some(StatusCode::OK.into_response())
}

/// Close the session.
#[utoipa::path(get, operation_id = "sessionLogout", security(("auth_token" = [])), path = "/session/logout", tag = "family D: password login",
    responses(
        (status = 200, description = "Logged out (empty body)"),
        (status = 401, description = "Session expired, revoked or unknown", body = ErrorModel),
    ))]
pub async fn logout(
    State(state): State<AppState>,
    AuthToken(token): AuthToken,
) -> Result<StatusCode, Failure> {
    state.core.logout(&token).await?;
    Ok(StatusCode::OK)
}

/// A fresh CAPTCHA image for a session blocked on CAPTCHA (each image takes one answer).
#[utoipa::path(get, operation_id = "getCaptcha", security(("auth_token" = [])), path = "/session/captcha", tag = "family D: password login",
    responses(
        (status = 200, description = "PNG image of distorted text", content_type = "image/png", body = Vec<u8>),
        (status = 401, description = "Session invalid or not blocked on CAPTCHA", body = ErrorModel),
    ))]
pub async fn captcha(
    State(state): State<AppState>,
    AuthToken(token): AuthToken,
) -> Result<Response, Failure> {
    let png = state.core.captcha_image(&token).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/png"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        png,
    )
        .into_response())
}

/// Answer the CAPTCHA. 200 `{valid: true}` when the answer is right and the password of the
/// login was right (with `Mfa-Code` when a second factor is next); 401 `{valid: false}`
/// otherwise, without telling which.
#[utoipa::path(post, operation_id = "unblockCaptcha", security(("auth_token" = [])), path = "/session/unblock-captcha", tag = "family D: password login",
    request_body = UnblockCaptchaReq,
    responses(
        (status = 200, description = "Unblocked", body = UnblockCaptchaResp,
            headers(("Mfa-Code" = i32, description = "Present when a second factor is next"))),
        (status = 400, description = "Malformed body", body = ErrorModel),
        (status = 401, description = "Wrong answer or wrong password", body = UnblockCaptchaResp),
    ))]
pub async fn unblock_captcha(
    State(state): State<AppState>,
    AuthToken(token): AuthToken,
    JsonBody(body): JsonBody<UnblockCaptchaReq>,
) -> Result<Response, Failure> {
    match state.core.unblock_captcha(&token, &body.token).await {
        Ok(unblocked) => {
            state.metrics.login("captcha", "success");
            Ok(with_mfa_code(
                Json(UnblockCaptchaResp { valid: true }).into_response(),
                unblocked.mfa,
            ))
        }
        Err(Error::BadCredentials) => {
            state.metrics.login("captcha", "failure");
            Ok((
                StatusCode::UNAUTHORIZED,
                Json(UnblockCaptchaResp { valid: false }),
            )
                .into_response())
        }
        Err(e) => Err(e.into()),
    }
}
