//! Family A's management of servers and access, path by path as the vendor's spec writes them
//! (docs/nextauth-management.md): API keys (each with a role of its own), servers and their
//! settings, the roles' permissions on a server, and a user's role.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use latchkey_core::model::Permissions;
use latchkey_core::services::access::Permission;
use latchkey_core::services::directory::{DEFAULT_LIMIT, MAX_LIMIT};
use latchkey_core::services::management::{acl, ServerInfo, ServerSettings};
use latchkey_core::ServerId;

use super::nextauth::{authorize, bad, query, Failure, NextAuthError, QueryMap};
use crate::extract::header_str;
use crate::routes::Routes;
use crate::state::AppState;

pub fn routes() -> Routes {
    Routes::new()
        .route("/apikeys/", get(api_keys).post(create_api_key))
        .route("/servers/", get(servers).post(create_server))
        .route("/servers/{serverid}/", get(get_server).put(update_server))
        .route("/servers/{serverid}/permissions/", get(all_permissions))
        .route(
            "/servers/{serverid}/permissions/{roleid}",
            get(permissions)
                .post(grant_permissions)
                .delete(revoke_permissions),
        )
        .route(
            "/servers/{serverid}/users/{userid}/role/",
            get(user_role).post(user_role_made),
        )
}

/// ApiKey: `apikey` is the key itself only in the answer that made it; listings name each
/// key by its id (latchkey keeps no key, only its hash).
#[derive(Serialize, ToSchema)]
pub struct NextAuthApiKey {
    pub apikey: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub role: String,
}

/// ApiKeys.
#[derive(Serialize, ToSchema)]
pub struct NextAuthApiKeys {
    pub apikeys: Vec<NextAuthApiKey>,
}

/// Server (the vendor's model; `owner` is not kept).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NextAuthServer {
    pub server_name: String,
    pub serverid: String,
    pub serverpk: String,
    pub logo: String,
    pub pin_timeout: i64,
    pub pin_trans_timeout: i64,
    pub ping_time: i64,
    pub server_flags: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub appname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub appandroid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub appios: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub appurl: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub siteurl: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wsurl: Option<String>,
    pub account_count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_login: Option<i64>,
}

impl From<ServerInfo> for NextAuthServer {
    fn from(s: ServerInfo) -> Self {
        let settings = s.settings;
        NextAuthServer {
            server_name: s.name,
            serverid: s.id.as_str().to_owned(),
            serverpk: s.public_key,
            logo: settings.logo,
            pin_timeout: settings.pin_timeout,
            pin_trans_timeout: settings.pin_trans_timeout,
            ping_time: settings.ping_time,
            server_flags: settings.server_flags,
            appname: settings.appname,
            appandroid: settings.appandroid,
            appios: settings.appios,
            appurl: settings.appurl,
            siteurl: settings.siteurl,
            wsurl: settings.wsurl,
            account_count: s.account_count,
            last_login: s.last_login,
        }
    }
}

/// Servers.
#[derive(Serialize, ToSchema)]
pub struct NextAuthServers {
    pub servers: Vec<NextAuthServer>,
    pub totalnumber: u64,
}

/// Permission: a role's ACL on a server.
#[derive(Serialize, ToSchema)]
pub struct NextAuthPermission {
    pub acl: String,
    pub role: String,
    pub server: String,
}

/// Permissions.
#[derive(Serialize, ToSchema)]
pub struct NextAuthPermissions {
    pub permissions: Vec<NextAuthPermission>,
}

/// Role.
#[derive(Serialize, ToSchema)]
pub struct NextAuthRole {
    pub role: String,
}

/// The body of createServer and updateServer: the vendor's Server model, of which the id,
/// key and activity are the server's own (ignored when sent).
#[derive(Deserialize)]
struct ServerBody {
    #[serde(rename = "serverName")]
    server_name: String,
    #[serde(flatten)]
    settings: ServerSettings,
}

fn server_body(body: &Bytes) -> Result<ServerBody, Failure> {
    serde_json::from_slice(body).map_err(|e| bad(format!("the body is not a Server: {e}")).into())
}

fn permission_view(server: &ServerId, role: String, p: &Permissions) -> NextAuthPermission {
    NextAuthPermission {
        acl: acl(p).join(","),
        role,
        server: server.as_str().to_owned(),
    }
}

async fn global_role(state: &AppState, headers: &HeaderMap) -> Result<String, Failure> {
    Ok(state
        .core
        .authorize_global(header_str(headers, "x-apikey"), header_str(headers, "x-su"))
        .await?)
}

/// The API keys made by the calling role (each named by its id).
#[utoipa::path(get, operation_id = "getApiKeys", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/apikeys/", tag = "family A: nextAuth",
    responses((status = 200, description = "ApiKeys", body = NextAuthApiKeys),
        (status = 403, description = "Not the root role (global servers)", body = NextAuthError)))]
pub async fn api_keys(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<NextAuthApiKeys>, Failure> {
    let role = global_role(&state, &headers).await?;
    let keys = state.core.api_keys_made_by(&role).await?;
    Ok(Json(NextAuthApiKeys {
        apikeys: keys
            .into_iter()
            .map(|k| NextAuthApiKey {
                apikey: k.key_id.to_string(),
                description: k.description,
                role: k.role_id,
            })
            .collect(),
    }))
}

/// A new API key with a new role of its own, described by `description`.
#[utoipa::path(post, operation_id = "createApiKey", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/apikeys/", tag = "family A: nextAuth",
    params(("description" = String, Query)),
    responses((status = 200, description = "The new key (shown once) and its role", body = NextAuthApiKey),
        (status = 400, description = "No description", body = NextAuthError),
        (status = 403, description = "Not the root role (global servers)", body = NextAuthError)))]
pub async fn create_api_key(
    State(state): State<AppState>,
    q: QueryMap,
    headers: HeaderMap,
) -> Result<Json<NextAuthApiKey>, Failure> {
    let role = global_role(&state, &headers).await?;
    let q = query(q)?;
    let description = q
        .get("description")
        .ok_or_else(|| bad("description is required"))?;
    let (token, role_id) = state
        .core
        .create_described_api_key(&role, description)
        .await?;
    Ok(Json(NextAuthApiKey {
        apikey: token.text,
        description: Some(description.trim().to_owned()),
        role: role_id,
    }))
}

/// The servers the calling role holds `servers` on, paged.
#[utoipa::path(get, operation_id = "getServers", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/servers/", tag = "family A: nextAuth",
    params(("limit" = Option<u64>, Query), ("marker" = Option<u64>, Query)),
    responses((status = 200, description = "Servers", body = NextAuthServers)))]
pub async fn servers(
    State(state): State<AppState>,
    q: QueryMap,
    headers: HeaderMap,
) -> Result<Json<NextAuthServers>, Failure> {
    let role = state
        .core
        .acting_role(
            header_str(&headers, "x-apikey"),
            header_str(&headers, "x-su"),
        )
        .await?;
    let q = query(q)?;
    let number = |name: &str| -> Result<Option<u64>, Failure> {
        q.get(name)
            .filter(|v| !v.is_empty())
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| bad(format!("{name} must be a whole number")).into())
            })
            .transpose()
    };
    let limit = number("limit")?.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(bad(format!("limit must be from 1 to {MAX_LIMIT}")).into());
    }
    let offset = number("marker")?.unwrap_or(0);
    let (page, total) = state.core.visible_servers(&role, limit, offset).await?;
    Ok(Json(NextAuthServers {
        servers: page.into_iter().map(NextAuthServer::from).collect(),
        totalnumber: total,
    }))
}

/// Creates a server (its id and key are made here).
#[utoipa::path(post, operation_id = "createServer", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/servers/", tag = "family A: nextAuth",
    request_body(content = Object, content_type = "application/json", description = "Server"),
    responses((status = 200, description = "The new server", body = NextAuthServer),
        (status = 400, description = "Not a Server", body = NextAuthError),
        (status = 403, description = "Not the root role (global createserver)", body = NextAuthError)))]
pub async fn create_server(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<NextAuthServer>, Failure> {
    global_role(&state, &headers).await?;
    let body = server_body(&body)?;
    let info = state
        .core
        .create_configured_server(&body.server_name, &body.settings)
        .await?;
    Ok(Json(info.into()))
}

/// One server.
#[utoipa::path(get, operation_id = "getServer", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/servers/{serverid}/", tag = "family A: nextAuth",
    params(("serverid" = String, Path)),
    responses((status = 200, description = "Server", body = NextAuthServer),
        (status = 404, description = "No such server", body = NextAuthError)))]
pub async fn get_server(
    State(state): State<AppState>,
    Path(server): Path<String>,
    headers: HeaderMap,
) -> Result<Json<NextAuthServer>, Failure> {
    let server = authorize(&state, &headers, &server, &[Permission::Servers]).await?;
    Ok(Json(state.core.server_info(&server).await?.into()))
}

/// Renames a server and replaces its settings.
#[utoipa::path(put, operation_id = "updateServer", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/servers/{serverid}/", tag = "family A: nextAuth",
    params(("serverid" = String, Path)),
    request_body(content = Object, content_type = "application/json", description = "Server"),
    responses((status = 200, description = "Server", body = NextAuthServer),
        (status = 400, description = "Not a Server", body = NextAuthError),
        (status = 403, description = "Not the root role (createserver)", body = NextAuthError),
        (status = 404, description = "No such server", body = NextAuthError)))]
pub async fn update_server(
    State(state): State<AppState>,
    Path(server): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<NextAuthServer>, Failure> {
    global_role(&state, &headers).await?;
    let id = ServerId::parse(&server).map_err(|_| not_found(&server))?;
    let body = server_body(&body)?;
    let info = state
        .core
        .update_server_settings(&id, &body.server_name, &body.settings)
        .await?;
    Ok(Json(info.into()))
}

fn not_found(server: &str) -> Failure {
    crate::error::ApiError::new(
        crate::error::Family::NextAuth,
        StatusCode::NOT_FOUND,
        format!("no server {server}"),
    )
    .into()
}

/// Every role's permissions on the server.
#[utoipa::path(get, operation_id = "getAllPermissions", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/servers/{serverid}/permissions/", tag = "family A: nextAuth",
    params(("serverid" = String, Path)),
    responses((status = 200, description = "Permissions", body = NextAuthPermissions),
        (status = 404, description = "No such server", body = NextAuthError)))]
pub async fn all_permissions(
    State(state): State<AppState>,
    Path(server): Path<String>,
    headers: HeaderMap,
) -> Result<Json<NextAuthPermissions>, Failure> {
    let server = authorize(&state, &headers, &server, &[Permission::Servers]).await?;
    let all = state.core.server_permissions(&server).await?;
    Ok(Json(NextAuthPermissions {
        permissions: all
            .into_iter()
            .map(|(role, p)| permission_view(&server, role, &p))
            .collect(),
    }))
}

/// One role's permissions on the server.
#[utoipa::path(get, operation_id = "getPermissions", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/servers/{serverid}/permissions/{roleid}", tag = "family A: nextAuth",
    params(("serverid" = String, Path), ("roleid" = String, Path)),
    responses((status = 200, description = "Permissions", body = NextAuthPermissions),
        (status = 404, description = "No such server or role", body = NextAuthError)))]
pub async fn permissions(
    State(state): State<AppState>,
    Path((server, role)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<NextAuthPermissions>, Failure> {
    let server = authorize(&state, &headers, &server, &[Permission::Servers]).await?;
    let p = state.core.role_permissions(&server, &role).await?;
    Ok(Json(NextAuthPermissions {
        permissions: vec![permission_view(&server, role, &p)],
    }))
}

/// Replaces a role's permissions on the server with the listed ones.
#[utoipa::path(post, operation_id = "grantPermissions", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/servers/{serverid}/permissions/{roleid}", tag = "family A: nextAuth",
    params(("serverid" = String, Path), ("roleid" = String, Path)),
    request_body(content = Vec<String>, content_type = "application/json"),
    responses((status = 200, description = "Set"),
        (status = 400, description = "Not a list of permission names", body = NextAuthError),
        (status = 403, description = "Not the root role", body = NextAuthError),
        (status = 404, description = "No such server or role", body = NextAuthError)))]
pub async fn grant_permissions(
    State(state): State<AppState>,
    Path((server, role)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, Failure> {
    global_role(&state, &headers).await?;
    let server = existing_server(&state, &server).await?;
    let names: Vec<String> = serde_json::from_slice(&body)
        .map_err(|_| bad("the body must be a JSON array of permission names"))?;
    state.core.grant_acl(&server, &role, &names).await?;
    Ok(StatusCode::OK)
}

/// Takes every permission of a role on the server away.
#[utoipa::path(delete, operation_id = "revokePermissions", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/servers/{serverid}/permissions/{roleid}", tag = "family A: nextAuth",
    params(("serverid" = String, Path), ("roleid" = String, Path)),
    responses((status = 200, description = "Revoked"),
        (status = 403, description = "Not the root role", body = NextAuthError),
        (status = 404, description = "No such server or role", body = NextAuthError)))]
pub async fn revoke_permissions(
    State(state): State<AppState>,
    Path((server, role)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, Failure> {
    global_role(&state, &headers).await?;
    let server = existing_server(&state, &server).await?;
    state.core.revoke_acl(&server, &role).await?;
    Ok(StatusCode::OK)
}

async fn existing_server(state: &AppState, server: &str) -> Result<ServerId, Failure> {
    let id = ServerId::parse(server).map_err(|_| not_found(server))?;
    state.core.server(&id).await?;
    Ok(id)
}

/// The role made for a user.
#[utoipa::path(get, operation_id = "getUserRole", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/servers/{serverid}/users/{userid}/role/", tag = "family A: nextAuth",
    params(("serverid" = String, Path), ("userid" = String, Path)),
    responses((status = 200, description = "Role", body = NextAuthRole),
        (status = 404, description = "No such user, or no role for them", body = NextAuthError)))]
pub async fn user_role(
    State(state): State<AppState>,
    Path((server, userid)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<NextAuthRole>, Failure> {
    let server = authorize(&state, &headers, &server, &[Permission::Users]).await?;
    let role = state.core.user_role(&server, &userid).await?;
    Ok(Json(NextAuthRole { role }))
}

/// The role of a user, made now when they have none.
#[utoipa::path(post, operation_id = "getOrCreateUserRole", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/servers/{serverid}/users/{userid}/role/", tag = "family A: nextAuth",
    params(("serverid" = String, Path), ("userid" = String, Path)),
    responses((status = 200, description = "Role", body = NextAuthRole),
        (status = 404, description = "No such user", body = NextAuthError)))]
pub async fn user_role_made(
    State(state): State<AppState>,
    Path((server, userid)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<NextAuthRole>, Failure> {
    let server = authorize(&state, &headers, &server, &[Permission::Users]).await?;
    let role = state.core.user_role_made(&server, &userid).await?;
    Ok(Json(NextAuthRole { role }))
}
