//! latchkey's own admin API, `/admin/...`: servers, API keys and their roles' permissions,
//! users and their credentials, signing key rotation. Only a key of the `root` role may call it
//! (`X-apikey`); errors are `{"error": "<code>", "message": "<text>"}`.

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use latchkey_core::model::Permissions;
use latchkey_core::services::access::RootKey;
use latchkey_core::{Error, ServerId, UserId};

use crate::error::{ApiError, Family, Renders};
use crate::extract::{header_str, JsonBody};
use crate::routes::Routes;
use crate::state::AppState;

const FAMILY: Family = Family::Own;

pub fn routes() -> Routes {
    Routes::new()
        .route("/admin/servers", get(list_servers).post(create_server))
        .route("/admin/apikeys", post(create_api_key))
        .route(
            "/admin/servers/{serverid}/permissions/{roleid}",
            put(set_permissions),
        )
        .route("/admin/servers/{serverid}/users", post(create_user))
        .route(
            "/admin/servers/{serverid}/users/{userid}",
            axum::routing::delete(delete_user),
        )
        .route(
            "/admin/servers/{serverid}/users/{userid}/password",
            put(set_password),
        )
        .route(
            "/admin/servers/{serverid}/users/{userid}/totp",
            post(enable_totp),
        )
        .route("/admin/servers/{serverid}/users/{userid}/pin", put(set_pin))
        .route("/admin/signing-keys/rotate", post(rotate_keys))
}

/// How Own admin API renders the core's errors; its handlers use `?` on core calls.
pub enum Api {}

impl Renders for Api {
    const FAMILY: Family = FAMILY;

    fn render(e: Error) -> ApiError {
        match e {
            Error::BadCredentials => ApiError::new(
                FAMILY,
                StatusCode::UNAUTHORIZED,
                "missing or unknown X-apikey",
            ),
            other => ApiError::from_core(FAMILY, other),
        }
    }
}

type Failure = crate::error::Failure<Api>;

fn err(e: Error) -> ApiError {
    Api::render(e)
}

/// Proof that the caller holds a root key (the core's capability, made by its check).
pub struct Root(#[allow(dead_code)] RootKey);

impl FromRequestParts<AppState> for Root {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let key = header_str(&parts.headers, "x-apikey");
        Ok(Root(state.core.authorize_root(key).await.map_err(err)?))
    }
}

async fn server(state: &AppState, raw: &str) -> Result<ServerId, ApiError> {
    let id = ServerId::parse(raw)
        .map_err(|_| ApiError::new(FAMILY, StatusCode::NOT_FOUND, format!("no server {raw}")))?;
    state.core.server(&id).await.map_err(err)?;
    Ok(id)
}

fn userid(raw: &str) -> Result<UserId, ApiError> {
    UserId::parse(raw).map_err(err)
}

#[derive(Deserialize, ToSchema)]
pub struct NewServer {
    pub name: String,
}

#[derive(Serialize, ToSchema)]
pub struct ServerView {
    pub serverid: String,
    pub name: String,
    /// base64url Ed25519 identity public key.
    pub publickey: String,
    pub created: i64,
}

#[derive(Deserialize, ToSchema)]
pub struct NewApiKey {
    /// The role the key belongs to (created, without permissions, when new; `root` is allowed).
    pub role: String,
}

#[derive(Serialize, ToSchema)]
pub struct ApiKeyView {
    /// The key: shown once, stored only as a hash.
    pub apikey: String,
    pub role: String,
}

#[derive(Deserialize, Serialize, ToSchema, Default)]
pub struct PermissionSet {
    #[serde(default)]
    pub sessions: bool,
    #[serde(default)]
    pub accounts: bool,
    #[serde(default)]
    pub users: bool,
    #[serde(default)]
    pub servers: bool,
}

#[derive(Deserialize, ToSchema)]
pub struct NewUser {
    pub userid: String,
    pub password: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct UserView {
    pub userid: String,
    pub created: i64,
}

#[derive(Deserialize, ToSchema)]
pub struct NewPassword {
    pub password: String,
}

#[derive(Deserialize, ToSchema)]
pub struct NewPin {
    pub pin: String,
}

#[derive(Serialize, ToSchema)]
pub struct TotpView {
    /// Scan this with an authenticator app (shown once).
    pub otpauth: String,
    /// The same secret in base32, for typing in.
    pub secret: String,
}

#[derive(Serialize, ToSchema)]
pub struct RotatedKey {
    pub kid: String,
}

/// Every server.
#[utoipa::path(get, operation_id = "adminListServers", security(("api_key" = [])), path = "/admin/servers", tag = "admin",
    responses((status = 200, body = Vec<ServerView>), (status = 401), (status = 403)))]
pub async fn list_servers(
    State(state): State<AppState>,
    _: Root,
) -> Result<Json<Vec<ServerView>>, Failure> {
    let servers = state.core.servers().await?;
    Ok(Json(
        servers
            .into_iter()
            .map(|s| ServerView {
                serverid: s.id.as_str().to_owned(),
                name: s.name,
                publickey: URL_SAFE_NO_PAD.encode(s.public_key),
                created: s.created_at,
            })
            .collect(),
    ))
}

/// Creates a server (tenant) with a fresh identity key.
#[utoipa::path(post, operation_id = "adminCreateServer", security(("api_key" = [])), path = "/admin/servers", tag = "admin", request_body = NewServer,
    responses((status = 201, body = ServerView), (status = 400), (status = 401), (status = 403)))]
pub async fn create_server(
    State(state): State<AppState>,
    _: Root,
    JsonBody(body): JsonBody<NewServer>,
) -> Result<(StatusCode, Json<ServerView>), Failure> {
    let s = state.core.create_server(&body.name).await?;
    Ok((
        StatusCode::CREATED,
        Json(ServerView {
            serverid: s.id.as_str().to_owned(),
            name: s.name,
            publickey: URL_SAFE_NO_PAD.encode(s.public_key),
            created: s.created_at,
        }),
    ))
}

/// Creates an API key for a role.
#[utoipa::path(post, operation_id = "adminCreateApiKey", security(("api_key" = [])), path = "/admin/apikeys", tag = "admin", request_body = NewApiKey,
    responses((status = 201, body = ApiKeyView), (status = 400), (status = 401), (status = 403)))]
pub async fn create_api_key(
    State(state): State<AppState>,
    _: Root,
    JsonBody(body): JsonBody<NewApiKey>,
) -> Result<(StatusCode, Json<ApiKeyView>), Failure> {
    let role = body.role.trim();
    if role.is_empty()
        || role.len() > 64
        || !role
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(ApiError::new(
            FAMILY,
            StatusCode::BAD_REQUEST,
            "role must be 1 to 64 characters of [A-Za-z0-9._-]",
        )
        .into());
    }
    state.core.ensure_role(role).await?;
    let key = state.core.create_api_key(role).await?;
    Ok((
        StatusCode::CREATED,
        Json(ApiKeyView {
            apikey: key.text,
            role: role.to_owned(),
        }),
    ))
}

/// Sets (replaces) a role's permissions on a server.
#[utoipa::path(put, operation_id = "adminSetPermissions", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/admin/servers/{serverid}/permissions/{roleid}", tag = "admin",
    params(("serverid" = String, Path), ("roleid" = String, Path)),
    request_body = PermissionSet,
    responses((status = 200, body = PermissionSet), (status = 404, description = "Unknown server or role")))]
pub async fn set_permissions(
    State(state): State<AppState>,
    _: Root,
    Path((server_raw, role)): Path<(String, String)>,
    JsonBody(body): JsonBody<PermissionSet>,
) -> Result<Json<PermissionSet>, Failure> {
    let server = server(&state, &server_raw).await?;
    let permissions = Permissions {
        sessions: body.sessions,
        accounts: body.accounts,
        users: body.users,
        servers: body.servers,
    };
    state
        .core
        .set_role_permissions(&role, &server, permissions)
        .await?;
    Ok(Json(body))
}

/// Creates a user, with a password when one is given.
#[utoipa::path(post, operation_id = "adminCreateUser", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/admin/servers/{serverid}/users", tag = "admin",
    params(("serverid" = String, Path)), request_body = NewUser,
    responses((status = 201, body = UserView), (status = 400), (status = 404), (status = 409, description = "The user exists")))]
pub async fn create_user(
    State(state): State<AppState>,
    _: Root,
    Path(server_raw): Path<String>,
    JsonBody(body): JsonBody<NewUser>,
) -> Result<(StatusCode, Json<UserView>), Failure> {
    let server = server(&state, &server_raw).await?;
    let user = state
        .core
        .add_user(&server, &userid(&body.userid)?, body.password.as_deref())
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(UserView {
            userid: user.userid.as_str().to_owned(),
            created: user.created_at,
        }),
    ))
}

/// Deletes a user and all its sessions.
#[utoipa::path(delete, operation_id = "adminDeleteUser", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/admin/servers/{serverid}/users/{userid}", tag = "admin",
    params(("serverid" = String, Path), ("userid" = String, Path)),
    responses((status = 204), (status = 404)))]
pub async fn delete_user(
    State(state): State<AppState>,
    _: Root,
    Path((server_raw, user)): Path<(String, String)>,
) -> Result<StatusCode, Failure> {
    let server = server(&state, &server_raw).await?;
    state.core.delete_user(&server, &userid(&user)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sets a user's password (argon2id hash and SCRAM verifier).
#[utoipa::path(put, operation_id = "adminSetPassword", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/admin/servers/{serverid}/users/{userid}/password", tag = "admin",
    params(("serverid" = String, Path), ("userid" = String, Path)),
    request_body = NewPassword, responses((status = 204), (status = 400), (status = 404)))]
pub async fn set_password(
    State(state): State<AppState>,
    _: Root,
    Path((server_raw, user)): Path<(String, String)>,
    JsonBody(body): JsonBody<NewPassword>,
) -> Result<StatusCode, Failure> {
    let server = server(&state, &server_raw).await?;
    state
        .core
        .set_password(&server, &userid(&user)?, &body.password)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Enables TOTP with a fresh secret; answers the otpauth URI once.
#[utoipa::path(post, operation_id = "adminEnableTotp", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/admin/servers/{serverid}/users/{userid}/totp", tag = "admin",
    params(("serverid" = String, Path), ("userid" = String, Path)),
    responses((status = 200, body = TotpView), (status = 404)))]
pub async fn enable_totp(
    State(state): State<AppState>,
    _: Root,
    Path((server_raw, user)): Path<(String, String)>,
) -> Result<Json<TotpView>, Failure> {
    let server = server(&state, &server_raw).await?;
    let enrolment = state.core.enable_totp(&server, &userid(&user)?).await?;
    Ok(Json(TotpView {
        otpauth: enrolment.otpauth_uri,
        secret: enrolment.secret_base32,
    }))
}

/// Sets a user's PIN (4 to 16 digits).
#[utoipa::path(put, operation_id = "adminSetPin", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/admin/servers/{serverid}/users/{userid}/pin", tag = "admin",
    params(("serverid" = String, Path), ("userid" = String, Path)),
    request_body = NewPin, responses((status = 204), (status = 400), (status = 404)))]
pub async fn set_pin(
    State(state): State<AppState>,
    _: Root,
    Path((server_raw, user)): Path<(String, String)>,
    JsonBody(body): JsonBody<NewPin>,
) -> Result<StatusCode, Failure> {
    let server = server(&state, &server_raw).await?;
    state
        .core
        .set_pin(&server, &userid(&user)?, &body.pin)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Makes a new JWT signing key active (older keys stay published until their tokens expire).
#[utoipa::path(post, operation_id = "adminRotateSigningKeys", security(("api_key" = [])), path = "/admin/signing-keys/rotate", tag = "admin", responses((status = 200, body = RotatedKey)))]
pub async fn rotate_keys(
    State(state): State<AppState>,
    _: Root,
) -> Result<Json<RotatedKey>, Failure> {
    let kid = state.core.rotate_signing_key().await?;
    Ok(Json(RotatedKey { kid }))
}
