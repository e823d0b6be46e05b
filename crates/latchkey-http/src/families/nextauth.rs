//! Family A (nextAuth v2.2 compatible), `/servers/{serverid}/...`: browser sessions named by
//! the web site's `X-nonce`, logged in by the companion app (QR scan or pushed login). Every
//! call but the event stream needs `X-apikey` (optionally `X-su`) with the listed permission on
//! that server. Errors are `{"error": "<code>", "message": "<text>"}`.

use std::collections::HashMap;
use std::convert::Infallible;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use latchkey_core::model::Account;
use latchkey_core::services::access::Permission;
use latchkey_core::services::nextauth::{parse_user_context, LoginStatus};
use latchkey_core::{Error, Nonce, ServerId};

use crate::error::{ApiError, Family, Renders};
use crate::extract::{header_str, RequestOrigin};
use crate::routes::Routes;
use crate::serve::streams::HEARTBEAT;
use crate::state::AppState;

const FAMILY: Family = Family::NextAuth;

pub fn routes() -> Routes {
    Routes::new()
        .route("/servers/{serverid}/sessions", get(login_status))
        .route("/servers/{serverid}/sessions/", get(login_status))
        .route("/servers/{serverid}/sessions/qr/login", get(qr_login))
        .route("/servers/{serverid}/sessions/logout", post(logout))
        .route("/servers/{serverid}/sessions/provokelogin", post(provoke))
        .route(
            "/servers/{serverid}/accounts/{accountid}/provokelogin",
            post(provoke_account),
        )
        .route(
            "/servers/{serverid}/users/{userid}/provokelogin",
            post(provoke_user),
        )
        .route("/servers/{serverid}/sessions/qr/enrol", get(qr_enrol))
        .route("/servers/{serverid}/vash", get(vash))
        .route(
            "/servers/{serverid}/sessions/registeruser",
            post(register_user),
        )
        .route(
            "/servers/{serverid}/accounts/{accountid}/user",
            put(account_user),
        )
        .route(
            "/servers/{serverid}/accounts/{accountid}/blocked",
            put(account_blocked),
        )
        .route("/servers/{serverid}/sessions/events", get(events))
}

/// How family A (nextAuth) renders the core's errors; its handlers use `?` on core calls.
pub enum Api {}

impl Renders for Api {
    const FAMILY: Family = FAMILY;

    fn render(e: Error) -> ApiError {
        ApiError::from_core(FAMILY, e)
    }
}

pub(super) type Failure = crate::error::Failure<Api>;

pub(super) fn err(e: Error) -> ApiError {
    Api::render(e)
}

pub(super) fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(FAMILY, StatusCode::BAD_REQUEST, message)
}

/// LoginStatus.
#[derive(Serialize, ToSchema)]
pub struct LoginStatusView {
    pub loggedin: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub userid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accountid: Option<i64>,
    /// Base64 public key of the app account logged in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pk: Option<String>,
    pub canprovoke: bool,
    /// Base64 of the login QR payload (absent in the event stream).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loginqrdata: Option<String>,
    /// Opens the login status event stream of this browser session.
    pub hsid: String,
}

impl From<LoginStatus> for LoginStatusView {
    fn from(s: LoginStatus) -> Self {
        LoginStatusView {
            loggedin: s.loggedin,
            userid: s.userid,
            accountid: s.accountid,
            pk: s.pk,
            canprovoke: s.canprovoke,
            loginqrdata: s.loginqrdata,
            hsid: s.hsid,
        }
    }
}

/// Account.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccountView {
    pub id: i64,
    pub description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub userid: Option<String>,
    pub blocked: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_version: Option<String>,
    pub created: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lastlogin: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lastprovoke: Option<i64>,
}

/// Family A error.
#[derive(Serialize, ToSchema)]
pub struct NextAuthError {
    pub error: String,
    pub message: String,
}

/// UserContext (optional JSON body): shown to the person in the app before they confirm.
#[derive(Serialize, ToSchema)]
pub struct UserContext {
    #[schema(value_type = Option<Object>)]
    pub announceinfo: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    pub sessioninfo: Option<serde_json::Value>,
}

/// Checks `X-apikey`/`X-su` for one of `perms` on the path's server.
pub(super) async fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    server: &str,
    perms: &[Permission],
) -> Result<ServerId, ApiError> {
    state
        .core
        .authorize(
            header_str(headers, "x-apikey"),
            header_str(headers, "x-su"),
            server,
            perms,
        )
        .await
        .map(|a| a.into_server())
        .map_err(|e| match e {
            Error::BadCredentials => ApiError::new(
                FAMILY,
                StatusCode::UNAUTHORIZED,
                "missing or unknown X-apikey",
            ),
            other => err(other),
        })
}

pub(super) fn nonce(headers: &HeaderMap) -> Result<Nonce, ApiError> {
    let raw = header_str(headers, "x-nonce").ok_or_else(|| bad("missing X-nonce header"))?;
    Nonce::parse(raw).map_err(err)
}

/// Where the app reaches this server: `public_url`, else the scheme and host a trusted proxy
/// forwarded, else the request's own Host over http.
pub(crate) fn base_url_of(
    state: &AppState,
    headers: &HeaderMap,
    origin: &RequestOrigin,
) -> Result<String, ApiError> {
    if let Some(url) = &state.core.settings.public_url {
        return Ok(url.trim_end_matches('/').to_owned());
    }
    let host = origin
        .host
        .as_deref()
        .or_else(|| header_str(headers, header::HOST.as_str()))
        .filter(|h| !h.is_empty() && h.len() <= 255 && !h.contains(['/', ' ', '@']))
        .ok_or_else(|| bad("a Host header is needed (or configure public_url)"))?;
    Ok(format!(
        "{}://{host}",
        origin.proto.as_deref().unwrap_or("http")
    ))
}

pub(super) fn user_context(body: &Bytes) -> Result<Option<String>, ApiError> {
    parse_user_context(body).map_err(err)
}

/// The `img` and `s` query parameters of the QR calls: answers the PNG size when a PNG is asked.
fn image_size(query: &HashMap<String, String>) -> Result<Option<u32>, ApiError> {
    match query.get("img").map(String::as_str) {
        None | Some("") => Ok(None),
        Some("png") => {
            let size = match query.get("s") {
                None => 500,
                Some(s) => s
                    .parse::<u32>()
                    .ok()
                    .filter(|s| (64..=2000).contains(s))
                    .ok_or_else(|| bad("s must be a number of pixels from 64 to 2000"))?,
            };
            Ok(Some(size))
        }
        Some(_) => Err(bad("img must be \"png\" or absent")),
    }
}

fn qr_answer(payload: String, size: Option<u32>) -> Result<Response, ApiError> {
    let body = match size {
        Some(size) => latchkey_core::crypto::qr::qr_png(payload.as_bytes(), size).map_err(err)?,
        None => payload.into_bytes(),
    };
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response())
}

pub(super) type QueryMap =
    Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>;

pub(super) fn query(q: QueryMap) -> Result<HashMap<String, String>, ApiError> {
    q.map(|Query(q)| q).map_err(|e| bad(e.body_text()))
}

/// The login status of the browser session named by `X-nonce` (created on first sight).
#[utoipa::path(get, operation_id = "getSession", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/servers/{serverid}/sessions/", tag = "family A: nextAuth",
    params(("serverid" = String, Path), ("X-nonce" = String, Header)),
    responses(
        (status = 200, description = "LoginStatus", body = LoginStatusView),
        (status = 400, description = "Bad X-nonce", body = NextAuthError),
        (status = 401, description = "Missing or unknown API key", body = NextAuthError),
        (status = 403, description = "No sessions permission", body = NextAuthError),
        (status = 404, description = "Unknown server", body = NextAuthError),
    ))]
pub async fn login_status(
    State(state): State<AppState>,
    Path(server): Path<String>,
    headers: HeaderMap,
    origin: RequestOrigin,
) -> Result<Json<LoginStatusView>, Failure> {
    let server = authorize(&state, &headers, &server, &[Permission::Sessions]).await?;
    let nonce = nonce(&headers)?;
    let base = base_url_of(&state, &headers, &origin)?;
    let status = state.core.login_status(&server, &nonce, &base).await?;
    Ok(Json(status.into()))
}

/// The login QR payload (raw bytes) or a PNG of its QR code (`img=png`, `s` pixels).
#[utoipa::path(get, operation_id = "getQrLogin", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/servers/{serverid}/sessions/qr/login", tag = "family A: nextAuth",
    params(("serverid" = String, Path), ("X-nonce" = String, Header),
        ("img" = Option<String>, Query, description = "\"png\" for an image"),
        ("s" = Option<u32>, Query, description = "PNG size in pixels, 64..2000 (default 500)")),
    request_body(content = Option<UserContext>, description = "Shown in the app; kept as the session's device info"),
    responses(
        (status = 200, description = "QR payload, or a PNG with img=png",
            content((Vec<u8> = "application/octet-stream"), (Vec<u8> = "image/png"))),
        (status = 400, description = "Bad X-nonce, img, s or body", body = NextAuthError),
        (status = 401, description = "Missing or unknown API key", body = NextAuthError),
        (status = 403, description = "No sessions permission", body = NextAuthError),
        (status = 404, description = "Unknown server", body = NextAuthError),
    ))]
pub async fn qr_login(
    State(state): State<AppState>,
    Path(server): Path<String>,
    q: QueryMap,
    headers: HeaderMap,
    origin: RequestOrigin,
    body: Bytes,
) -> Result<Response, Failure> {
    let size = image_size(&query(q)?)?;
    let (_, _, payload) = login_payload(&state, &server, &headers, &origin, &body).await?;
    Ok(qr_answer(payload, size)?)
}

/// The current login QR payload of the browser session a call names (`X-nonce`), once the
/// caller holds `sessions` on the server; a UserContext body is kept for the login.
pub(super) async fn login_payload(
    state: &AppState,
    server: &str,
    headers: &HeaderMap,
    origin: &RequestOrigin,
    body: &Bytes,
) -> Result<(ServerId, Nonce, String), Failure> {
    let server = authorize(state, headers, server, &[Permission::Sessions]).await?;
    let nonce = nonce(headers)?;
    let context = user_context(body)?;
    let base = base_url_of(state, headers, origin)?;
    let payload = state.core.login_qr(&server, &nonce, &base, context).await?;
    Ok((server, nonce, payload))
}

/// Logs the browser session out (idempotent).
#[utoipa::path(post, operation_id = "logout", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/servers/{serverid}/sessions/logout", tag = "family A: nextAuth",
    params(("serverid" = String, Path), ("X-nonce" = String, Header)),
    responses(
        (status = 200, description = "Logged out"),
        (status = 400, description = "Bad X-nonce", body = NextAuthError),
        (status = 401, description = "Missing or unknown API key", body = NextAuthError),
        (status = 403, description = "No sessions permission", body = NextAuthError),
        (status = 404, description = "Unknown server", body = NextAuthError),
    ))]
pub async fn logout(
    State(state): State<AppState>,
    Path(server): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, Failure> {
    let server = authorize(&state, &headers, &server, &[Permission::Sessions]).await?;
    let nonce = nonce(&headers)?;
    state.core.browser_logout(&server, &nonce).await?;
    Ok(StatusCode::OK)
}

/// Pushes a login request to the app of the account that last logged in on this nonce.
#[utoipa::path(post, operation_id = "provokeLogin", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/servers/{serverid}/sessions/provokelogin", tag = "family A: nextAuth",
    params(("serverid" = String, Path), ("X-nonce" = String, Header)),
    request_body(content = Option<UserContext>),
    responses(
        (status = 200, description = "Pushed"),
        (status = 409, description = "No account to ask (canprovoke was false)", body = NextAuthError),
    ))]
pub async fn provoke(
    State(state): State<AppState>,
    Path(server): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, Failure> {
    let server = authorize(&state, &headers, &server, &[Permission::Sessions]).await?;
    let nonce = nonce(&headers)?;
    let context = user_context(&body)?;
    state.core.provoke_login(&server, &nonce, context).await?;
    Ok(StatusCode::OK)
}

/// Pushes a login request to one account.
#[utoipa::path(post, operation_id = "provokeLoginOnAccount", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/servers/{serverid}/accounts/{accountid}/provokelogin", tag = "family A: nextAuth",
    params(("serverid" = String, Path), ("accountid" = i64, Path), ("X-nonce" = String, Header)),
    request_body(content = Option<UserContext>),
    responses(
        (status = 200, description = "Pushed"),
        (status = 403, description = "Account blocked, or no permission", body = NextAuthError),
        (status = 404, description = "No such account", body = NextAuthError),
    ))]
pub async fn provoke_account(
    State(state): State<AppState>,
    Path((server, account)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, Failure> {
    let server = authorize(
        &state,
        &headers,
        &server,
        &[Permission::Sessions, Permission::Accounts],
    )
    .await?;
    let nonce = nonce(&headers)?;
    let account = account_id(&account)?;
    let context = user_context(&body)?;
    state
        .core
        .provoke_account(&server, &nonce, account, context)
        .await?;
    Ok(StatusCode::OK)
}

pub(super) fn account_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .map_err(|_| bad("accountid must be an integer"))
}

/// Pushes a login request to every unblocked account of a user.
#[utoipa::path(post, operation_id = "provokeLoginOnUser", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/servers/{serverid}/users/{userid}/provokelogin", tag = "family A: nextAuth",
    params(("serverid" = String, Path), ("userid" = String, Path), ("X-nonce" = String, Header)),
    request_body(content = Option<UserContext>),
    responses(
        (status = 200, description = "Pushed"),
        (status = 404, description = "The user has no unblocked account", body = NextAuthError),
    ))]
pub async fn provoke_user(
    State(state): State<AppState>,
    Path((server, userid)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, Failure> {
    let server = authorize(
        &state,
        &headers,
        &server,
        &[Permission::Sessions, Permission::Users],
    )
    .await?;
    let nonce = nonce(&headers)?;
    let context = user_context(&body)?;
    state
        .core
        .provoke_user(&server, &nonce, &userid, context)
        .await?;
    Ok(StatusCode::OK)
}

/// An enrol QR payload (raw bytes) or PNG for a new app account.
#[utoipa::path(get, operation_id = "getQrEnrol", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/servers/{serverid}/sessions/qr/enrol", tag = "family A: nextAuth",
    params(("serverid" = String, Path), ("X-nonce" = String, Header),
        ("name" = String, Query, description = "Account description"),
        ("userid" = Option<String>, Query, description = "User the account is bound to"),
        ("img" = Option<String>, Query), ("s" = Option<u32>, Query)),
    responses(
        (status = 200, description = "Enrol payload, or a PNG with img=png",
            content((Vec<u8> = "application/octet-stream"), (Vec<u8> = "image/png"))),
        (status = 400, description = "Missing name, bad userid, img or s", body = NextAuthError),
    ))]
pub async fn qr_enrol(
    State(state): State<AppState>,
    Path(server): Path<String>,
    q: QueryMap,
    headers: HeaderMap,
    origin: RequestOrigin,
) -> Result<Response, Failure> {
    let server = authorize(&state, &headers, &server, &[Permission::Sessions]).await?;
    nonce(&headers)?;
    let q = query(q)?;
    let size = image_size(&q)?;
    let name = q.get("name").ok_or_else(|| bad("name is required"))?;
    let base = base_url_of(&state, &headers, &origin)?;
    let payload = state
        .core
        .enrol_qr(&server, name, q.get("userid").map(String::as_str), &base)
        .await?;
    Ok(qr_answer(payload, size)?)
}

/// The visual hash of the server's public key, to compare with the app's at enrol.
#[utoipa::path(get, operation_id = "getServerVash", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/servers/{serverid}/vash", tag = "family A: nextAuth",
    params(("serverid" = String, Path)),
    responses(
        (status = 200, description = "PNG", content_type = "image/png", body = Vec<u8>),
        (status = 404, description = "Unknown server", body = NextAuthError),
    ))]
pub async fn vash(
    State(state): State<AppState>,
    Path(server): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    let server = authorize(
        &state,
        &headers,
        &server,
        &[Permission::Sessions, Permission::Servers],
    )
    .await?;
    let key = state.core.server_public_key(&server).await?;
    let png = latchkey_core::crypto::vash::png(&key, 256)?;
    Ok(([(header::CONTENT_TYPE, "image/png")], png).into_response())
}

/// Binds a user to the account logged in on this nonce.
#[utoipa::path(post, operation_id = "registerUser", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/servers/{serverid}/sessions/registeruser", tag = "family A: nextAuth",
    params(("serverid" = String, Path), ("X-nonce" = String, Header),
        ("userid" = String, Query)),
    responses(
        (status = 200, description = "Bound"),
        (status = 403, description = "Invalid user name, or no users permission", body = NextAuthError),
        (status = 409, description = "No account logged in on this nonce", body = NextAuthError),
    ))]
pub async fn register_user(
    State(state): State<AppState>,
    Path(server): Path<String>,
    q: QueryMap,
    headers: HeaderMap,
) -> Result<StatusCode, Failure> {
    let server = authorize(&state, &headers, &server, &[Permission::Users]).await?;
    let nonce = nonce(&headers)?;
    let q = query(q)?;
    let userid = q.get("userid").ok_or_else(|| bad("userid is required"))?;
    state.core.register_user(&server, &nonce, userid).await?;
    Ok(StatusCode::OK)
}

pub(super) async fn account_view(
    state: &AppState,
    account: Account,
) -> Result<AccountView, ApiError> {
    let userid = state.core.userid_of(&account).await.map_err(err)?;
    Ok(AccountView {
        id: account.id,
        description: account.description,
        userid,
        blocked: account.blocked,
        client_version: account.client_version,
        created: account.created_at,
        lastlogin: account.last_login,
        lastprovoke: account.last_provoke,
    })
}

/// Moves an account to a user.
#[utoipa::path(put, operation_id = "updateAccountUser", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/servers/{serverid}/accounts/{accountid}/user", tag = "family A: nextAuth",
    params(("serverid" = String, Path), ("accountid" = i64, Path),
        ("userid" = String, Query)),
    responses(
        (status = 200, description = "The account", body = AccountView),
        (status = 403, description = "Invalid user name, or no accounts permission", body = NextAuthError),
        (status = 404, description = "No such account", body = NextAuthError),
    ))]
pub async fn account_user(
    State(state): State<AppState>,
    Path((server, account)): Path<(String, String)>,
    q: QueryMap,
    headers: HeaderMap,
) -> Result<Json<AccountView>, Failure> {
    let server = authorize(&state, &headers, &server, &[Permission::Accounts]).await?;
    let account = account_id(&account)?;
    let q = query(q)?;
    let userid = q.get("userid").ok_or_else(|| bad("userid is required"))?;
    let account = state
        .core
        .set_account_user(&server, account, userid)
        .await?;
    Ok(Json(account_view(&state, account).await?))
}

/// Blocks (`blocked=true`) or unblocks an account (latchkey extension).
#[utoipa::path(put, operation_id = "updateAccountBlocked", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/servers/{serverid}/accounts/{accountid}/blocked", tag = "family A: nextAuth",
    params(("serverid" = String, Path), ("accountid" = i64, Path),
        ("blocked" = bool, Query)),
    responses(
        (status = 200, description = "The account", body = AccountView),
        (status = 404, description = "No such account", body = NextAuthError),
    ))]
pub async fn account_blocked(
    State(state): State<AppState>,
    Path((server, account)): Path<(String, String)>,
    q: QueryMap,
    headers: HeaderMap,
) -> Result<Json<AccountView>, Failure> {
    let server = authorize(&state, &headers, &server, &[Permission::Accounts]).await?;
    let account = account_id(&account)?;
    let blocked = match query(q)?.get("blocked").map(String::as_str) {
        Some("true") => true,
        Some("false") => false,
        _ => return Err(bad("blocked must be true or false").into()),
    };
    let account = state
        .core
        .set_account_blocked(&server, account, blocked)
        .await?;
    Ok(Json(account_view(&state, account).await?))
}

/// Server-Sent Events: the LoginStatus (without `loginqrdata`) each time it changes. The `hsid`
/// of LoginStatus is the credential, so a browser may open it directly.
#[utoipa::path(get, operation_id = "getSessionEvents", path = "/servers/{serverid}/sessions/events", tag = "family A: nextAuth",
    params(("serverid" = String, Path), ("hsid" = String, Query)),
    responses(
        (status = 200, description = "text/event-stream of `status` events with LoginStatus data", content_type = "text/event-stream", body = String),
        (status = 404, description = "Unknown server or hsid", body = NextAuthError),
    ))]
pub async fn events(
    State(state): State<AppState>,
    Path(server): Path<String>,
    q: QueryMap,
) -> Result<Response, Failure> {
    let q = query(q)?;
    let hsid = q
        .get("hsid")
        .ok_or_else(|| bad("hsid is required"))?
        .clone();
    let server = ServerId::parse(&server)
        .map_err(|_| ApiError::new(FAMILY, StatusCode::NOT_FOUND, "no such server"))?;
    // Taken before the core call, so a refused stream costs no store read.
    let slot = state.event_stream_slot(FAMILY)?;
    let watch = state.core.watch_login_status(&server, &hsid).await?;
    let shutdown = state.shutdown.clone();
    // Ends at shutdown and after its lifetime (the slot), and frees the slot when dropped.
    let stream = futures_util::stream::unfold(
        (watch, shutdown, slot),
        |(mut watch, mut shutdown, slot)| async move {
            let status = tokio::select! {
                status = watch.next() => status?,
                _ = shutdown.wait_for(|stop| *stop) => return None,
                _ = slot.expired() => return None,
            };
            let json = serde_json::to_string(&LoginStatusView::from(status)).ok()?;
            Some((
                Ok::<_, Infallible>(SseEvent::default().event("status").data(json)),
                (watch, shutdown, slot),
            ))
        },
    );
    // The hsid is the credential (no cookie is read): any site may watch its own sessions,
    // as the footer script of the HTML blocks does from the site's pages.
    Ok((
        [(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")],
        Sse::new(stream).keep_alive(KeepAlive::new().interval(HEARTBEAT)),
    )
        .into_response())
}
