//! Family A's management of accounts, users and attributes, path by path as the vendor's spec
//! writes them (docs/nextauth-management.md). Listings answer `{accounts|users, totalnumber}`;
//! attribute reads answer `text/plain` holding one JSON object; attribute writes take a JSON
//! object (POST replaces the whole set, PUT merges the given keys).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use latchkey_core::model::directory::{
    AccountColumn, AttributeScope, ListedAccount, Page, UserColumn,
};
use latchkey_core::services::access::Permission;
use latchkey_core::services::directory::ListingParams;
use latchkey_core::{ServerId, UserId};

use super::nextauth::{
    account_id, authorize, query, AccountView, Failure, NextAuthError, QueryMap,
};
use crate::extract::header_str;
use crate::routes::Routes;
use crate::state::AppState;

pub fn routes() -> Routes {
    Routes::new()
        .route("/servers/{serverid}/accounts/", get(list_accounts))
        .route(
            "/servers/{serverid}/accounts/{accountid}/",
            get(get_account).put(update_account).delete(delete_account),
        )
        .route("/servers/{serverid}/users/", get(list_users))
        .route("/servers/{serverid}/users/{userid}/", delete(delete_user))
        .route(
            "/servers/{serverid}/users/{userid}/accounts",
            get(user_accounts).delete(delete_user_accounts),
        )
        .route(
            "/servers/{serverid}/users/{userid}/attributes/",
            get(get_user_attributes)
                .post(set_user_attributes)
                .put(update_user_attributes)
                .delete(delete_user_attributes),
        )
        .route(
            "/servers/{serverid}/users/{userid}/attributes/{attributekey}",
            delete(delete_user_attribute),
        )
        .route(
            "/servers/{serverid}/attributes/",
            get(get_server_attributes)
                .post(set_server_attributes)
                .put(update_server_attributes)
                .delete(delete_server_attributes),
        )
        .route(
            "/servers/{serverid}/attributes/{attributekey}",
            delete(delete_server_attribute),
        )
        .route(
            "/servers/{serverid}/privilegedattributes/",
            get(get_privileged_attributes)
                .post(set_privileged_attributes)
                .put(update_privileged_attributes)
                .delete(delete_privileged_attributes),
        )
        .route(
            "/servers/{serverid}/privilegedattributes/{attributekey}",
            delete(delete_privileged_attribute),
        )
        .route(
            "/attributes/",
            get(get_global_attributes)
                .post(set_global_attributes)
                .put(update_global_attributes)
                .delete(delete_global_attributes),
        )
        .route(
            "/attributes/{attributekey}",
            delete(delete_global_attribute),
        )
}

/// Accounts.
#[derive(Serialize, ToSchema)]
pub struct NextAuthAccounts {
    pub accounts: Vec<AccountView>,
    pub totalnumber: u64,
}

/// User.
#[derive(Serialize, ToSchema)]
pub struct NextAuthUser {
    pub userid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lastlogin: Option<i64>,
    pub numberaccounts: u64,
}

/// Users.
#[derive(Serialize, ToSchema)]
pub struct NextAuthUsers {
    pub users: Vec<NextAuthUser>,
    pub totalnumber: u64,
}

fn accounts_view(page: Page<ListedAccount>) -> NextAuthAccounts {
    NextAuthAccounts {
        accounts: page
            .items
            .into_iter()
            .map(|listed| {
                let a = listed.account;
                AccountView {
                    id: a.id,
                    description: a.description,
                    userid: listed.userid.map(|u| u.as_str().to_owned()),
                    blocked: a.blocked,
                    client_version: a.client_version,
                    created: a.created_at,
                    lastlogin: a.last_login,
                    lastprovoke: a.last_provoke,
                }
            })
            .collect(),
        totalnumber: page.total,
    }
}

fn params(q: &std::collections::HashMap<String, String>) -> ListingParams<'_> {
    let get = |name: &str| q.get(name).map(String::as_str);
    ListingParams {
        filter: get("filter"),
        search: get("search"),
        sort: get("sort"),
        limit: get("limit"),
        marker: get("marker"),
    }
}

/// Every account of the server, filtered by their users' attributes, sorted and paged.
#[utoipa::path(get, operation_id = "getAllAccounts", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/servers/{serverid}/accounts/", tag = "family A: nextAuth",
    params(("serverid" = String, Path), ("filter" = Option<String>, Query), ("limit" = Option<u64>, Query),
        ("marker" = Option<u64>, Query), ("sort" = Option<String>, Query)),
    responses(
        (status = 200, description = "Accounts", body = NextAuthAccounts),
        (status = 403, description = "No accounts permission", body = NextAuthError),
    ))]
pub async fn list_accounts(
    State(state): State<AppState>,
    Path(server): Path<String>,
    q: QueryMap,
    headers: HeaderMap,
) -> Result<Json<NextAuthAccounts>, Failure> {
    let server = authorize(&state, &headers, &server, &[Permission::Accounts]).await?;
    let q = query(q)?;
    let listing = params(&q).parse(AccountColumn::parse)?;
    let page = state.core.list_accounts(&server, &listing).await?;
    Ok(Json(accounts_view(page)))
}

/// One account.
#[utoipa::path(get, operation_id = "getAccount", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/servers/{serverid}/accounts/{accountid}/", tag = "family A: nextAuth",
    params(("serverid" = String, Path), ("accountid" = i64, Path)),
    responses(
        (status = 200, description = "Account", body = AccountView),
        (status = 404, description = "No such account", body = NextAuthError),
    ))]
pub async fn get_account(
    State(state): State<AppState>,
    Path((server, account)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<AccountView>, Failure> {
    let server = authorize(
        &state,
        &headers,
        &server,
        &[Permission::Sessions, Permission::Accounts],
    )
    .await?;
    let account = state.core.account(&server, account_id(&account)?).await?;
    Ok(Json(super::nextauth::account_view(&state, account).await?))
}

/// Blocks or unblocks an account (`blocked`, required).
#[utoipa::path(put, operation_id = "updateAccount", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/servers/{serverid}/accounts/{accountid}/", tag = "family A: nextAuth",
    params(("serverid" = String, Path), ("accountid" = i64, Path), ("blocked" = bool, Query)),
    responses(
        (status = 200, description = "The account after the change", body = AccountView),
        (status = 404, description = "No such account", body = NextAuthError),
    ))]
pub async fn update_account(
    state: State<AppState>,
    path: Path<(String, String)>,
    q: QueryMap,
    headers: HeaderMap,
) -> Result<Json<AccountView>, Failure> {
    super::nextauth::account_blocked(state, path, q, headers).await
}

/// Deletes an account.
#[utoipa::path(delete, operation_id = "deleteAccount", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/servers/{serverid}/accounts/{accountid}/", tag = "family A: nextAuth",
    params(("serverid" = String, Path), ("accountid" = i64, Path)),
    responses(
        (status = 200, description = "Deleted"),
        (status = 404, description = "No such account", body = NextAuthError),
    ))]
pub async fn delete_account(
    State(state): State<AppState>,
    Path((server, account)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, Failure> {
    let server = authorize(&state, &headers, &server, &[Permission::Accounts]).await?;
    state
        .core
        .delete_account(&server, account_id(&account)?)
        .await?;
    Ok(StatusCode::OK)
}

/// Every user of the server with their accounts aggregated, filtered, searched, sorted, paged.
#[utoipa::path(get, operation_id = "getUsers", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/servers/{serverid}/users/", tag = "family A: nextAuth",
    params(("serverid" = String, Path), ("filter" = Option<String>, Query), ("search" = Option<String>, Query),
        ("limit" = Option<u64>, Query), ("marker" = Option<u64>, Query), ("sort" = Option<String>, Query)),
    responses(
        (status = 200, description = "Users", body = NextAuthUsers),
        (status = 403, description = "No users permission", body = NextAuthError),
    ))]
pub async fn list_users(
    State(state): State<AppState>,
    Path(server): Path<String>,
    q: QueryMap,
    headers: HeaderMap,
) -> Result<Json<NextAuthUsers>, Failure> {
    let server = authorize(&state, &headers, &server, &[Permission::Users]).await?;
    let q = query(q)?;
    let listing = params(&q).parse(UserColumn::parse)?;
    let page = state.core.list_users(&server, &listing).await?;
    Ok(Json(NextAuthUsers {
        users: page
            .items
            .into_iter()
            .map(|u| NextAuthUser {
                userid: u.userid.as_str().to_owned(),
                lastlogin: u.last_login,
                numberaccounts: u.accounts,
            })
            .collect(),
        totalnumber: page.total,
    }))
}

/// Deletes a user (their sessions end; their accounts stay, unbound).
#[utoipa::path(delete, operation_id = "deleteUser", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/servers/{serverid}/users/{userid}/", tag = "family A: nextAuth",
    params(("serverid" = String, Path), ("userid" = String, Path)),
    responses(
        (status = 200, description = "Deleted"),
        (status = 404, description = "No such user", body = NextAuthError),
    ))]
pub async fn delete_user(
    State(state): State<AppState>,
    Path((server, userid)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, Failure> {
    let server = authorize(&state, &headers, &server, &[Permission::Users]).await?;
    let userid = UserId::parse(&userid).map_err(|_| not_found_user(&userid))?;
    state.core.delete_user(&server, &userid).await?;
    Ok(StatusCode::OK)
}

fn not_found_user(userid: &str) -> crate::error::ApiError {
    crate::error::ApiError::new(
        crate::error::Family::NextAuth,
        StatusCode::NOT_FOUND,
        format!("no user {userid}"),
    )
}

/// A user's accounts, sorted and paged.
#[utoipa::path(get, operation_id = "getUser", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/servers/{serverid}/users/{userid}/accounts", tag = "family A: nextAuth",
    params(("serverid" = String, Path), ("userid" = String, Path), ("limit" = Option<u64>, Query),
        ("marker" = Option<u64>, Query), ("sort" = Option<String>, Query)),
    responses(
        (status = 200, description = "Accounts", body = NextAuthAccounts),
        (status = 404, description = "No such user", body = NextAuthError),
    ))]
pub async fn user_accounts(
    State(state): State<AppState>,
    Path((server, userid)): Path<(String, String)>,
    q: QueryMap,
    headers: HeaderMap,
) -> Result<Json<NextAuthAccounts>, Failure> {
    let server = authorize(
        &state,
        &headers,
        &server,
        &[Permission::Sessions, Permission::Users],
    )
    .await?;
    let q = query(q)?;
    let listing = params(&q).parse(AccountColumn::parse)?;
    let page = state
        .core
        .accounts_of_user(&server, &userid, listing)
        .await?;
    Ok(Json(accounts_view(page)))
}

/// Deletes every account of a user; the user stays.
#[utoipa::path(delete, operation_id = "deleteUserAccounts", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/servers/{serverid}/users/{userid}/accounts", tag = "family A: nextAuth",
    params(("serverid" = String, Path), ("userid" = String, Path)),
    responses(
        (status = 200, description = "Deleted"),
        (status = 404, description = "No such user", body = NextAuthError),
    ))]
pub async fn delete_user_accounts(
    State(state): State<AppState>,
    Path((server, userid)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, Failure> {
    let server = authorize(
        &state,
        &headers,
        &server,
        &[Permission::Accounts, Permission::Users],
    )
    .await?;
    state.core.delete_user_accounts(&server, &userid).await?;
    Ok(StatusCode::OK)
}

// --- attributes ---

/// An attribute read: `text/plain` holding one JSON object.
fn attributes_answer(json: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], json).into_response()
}

/// What an attribute call acts on, once the caller may.
enum Which {
    User { create: bool, read: bool },
    Server,
    Privileged,
    Global,
}

async fn scope(
    state: &AppState,
    headers: &HeaderMap,
    server: Option<&str>,
    userid: Option<&str>,
    which: Which,
) -> Result<AttributeScope, Failure> {
    let server_id = |s: Option<&str>| s.unwrap_or_default().to_owned();
    match which {
        Which::User { create, read } => {
            let perms: &[Permission] = if read {
                &[Permission::Sessions, Permission::Users]
            } else {
                &[Permission::Users]
            };
            let server = authorize(state, headers, &server_id(server), perms).await?;
            Ok(state
                .core
                .user_attribute_scope(&server, userid.unwrap_or_default(), create)
                .await?)
        }
        Which::Server => {
            let server =
                authorize(state, headers, &server_id(server), &[Permission::Servers]).await?;
            Ok(AttributeScope::Server(server))
        }
        Which::Privileged => {
            state
                .core
                .authorize_global(header_str(headers, "x-apikey"), header_str(headers, "x-su"))
                .await?;
            let unknown = || bad_server(&server_id(server));
            let id = ServerId::parse(&server_id(server)).map_err(|_| unknown())?;
            state.core.server(&id).await?;
            Ok(AttributeScope::Privileged(id))
        }
        Which::Global => {
            state
                .core
                .authorize_global(header_str(headers, "x-apikey"), header_str(headers, "x-su"))
                .await?;
            Ok(AttributeScope::Global)
        }
    }
}

fn bad_server(server: &str) -> Failure {
    crate::error::ApiError::new(
        crate::error::Family::NextAuth,
        StatusCode::NOT_FOUND,
        format!("no server {server}"),
    )
    .into()
}

/// One attribute operation.
enum Op {
    Read,
    Replace(Bytes),
    Merge(Bytes),
    DeleteAll,
    DeleteOne(String),
}

/// Runs `op` on the attributes `which` names (a user's: set creates the user, reads need
/// `sessions` or `users`, the rest `users`).
async fn attributes(
    state: &AppState,
    headers: &HeaderMap,
    server: Option<&str>,
    userid: Option<&str>,
    which: fn(&Op) -> Which,
    op: Op,
) -> Result<Response, Failure> {
    // A body that is not attributes changes nothing: not even the user a set would make.
    if let Op::Replace(body) | Op::Merge(body) = &op {
        latchkey_core::services::directory::parse_attributes(body)?;
    }
    let scope = scope(state, headers, server, userid, which(&op)).await?;
    let core = &state.core;
    match op {
        Op::Read => return Ok(attributes_answer(core.attributes(&scope).await?)),
        Op::Replace(body) => core.set_attributes(&scope, &body).await?,
        Op::Merge(body) => core.update_attributes(&scope, &body).await?,
        Op::DeleteAll => core.delete_attributes(&scope).await?,
        Op::DeleteOne(key) => core.delete_attribute(&scope, &key).await?,
    }
    Ok(StatusCode::OK.into_response())
}

fn user(op: &Op) -> Which {
    Which::User {
        create: matches!(op, Op::Replace(_)),
        read: matches!(op, Op::Read),
    }
}

fn server(_: &Op) -> Which {
    Which::Server
}

fn privileged(_: &Op) -> Which {
    Which::Privileged
}

fn global(_: &Op) -> Which {
    Which::Global
}

type UserPath = Path<(String, String)>;
type UserKeyPath = Path<(String, String, String)>;
type ServerKeyPath = Path<(String, String)>;

#[utoipa::path(get, operation_id = "getUserAttributes", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/servers/{serverid}/users/{userid}/attributes/", tag = "family A: nextAuth",
    params(("serverid" = String, Path), ("userid" = String, Path)),
    responses((status = 200, description = "One JSON object", content_type = "text/plain", body = String),
        (status = 404, description = "No such user", body = NextAuthError)))]
pub async fn get_user_attributes(
    State(state): State<AppState>,
    Path((s, u)): UserPath,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    attributes(&state, &headers, Some(&s), Some(&u), user, Op::Read).await
}

#[utoipa::path(post, operation_id = "setUserAttributes", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/servers/{serverid}/users/{userid}/attributes/", tag = "family A: nextAuth",
    params(("serverid" = String, Path), ("userid" = String, Path)), request_body(content = Object, content_type = "application/json"),
    responses((status = 200, description = "Set (the user is made when missing)"), (status = 400, description = "Not a JSON object of attributes", body = NextAuthError)))]
pub async fn set_user_attributes(
    State(state): State<AppState>,
    Path((s, u)): UserPath,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Failure> {
    attributes(
        &state,
        &headers,
        Some(&s),
        Some(&u),
        user,
        Op::Replace(body),
    )
    .await
}

#[utoipa::path(put, operation_id = "updateUserAttributes", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/servers/{serverid}/users/{userid}/attributes/", tag = "family A: nextAuth",
    params(("serverid" = String, Path), ("userid" = String, Path)), request_body(content = Object, content_type = "application/json"),
    responses((status = 200, description = "Merged"), (status = 400, description = "Not a JSON object of attributes", body = NextAuthError),
        (status = 404, description = "No such user", body = NextAuthError)))]
pub async fn update_user_attributes(
    State(state): State<AppState>,
    Path((s, u)): UserPath,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Failure> {
    attributes(&state, &headers, Some(&s), Some(&u), user, Op::Merge(body)).await
}

#[utoipa::path(delete, operation_id = "deleteUserAttributes", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/servers/{serverid}/users/{userid}/attributes/", tag = "family A: nextAuth",
    params(("serverid" = String, Path), ("userid" = String, Path)),
    responses((status = 200, description = "Deleted"), (status = 404, description = "No such user", body = NextAuthError)))]
pub async fn delete_user_attributes(
    State(state): State<AppState>,
    Path((s, u)): UserPath,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    attributes(&state, &headers, Some(&s), Some(&u), user, Op::DeleteAll).await
}

#[utoipa::path(delete, operation_id = "deleteUserAttribute", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/servers/{serverid}/users/{userid}/attributes/{attributekey}", tag = "family A: nextAuth",
    params(("serverid" = String, Path), ("userid" = String, Path), ("attributekey" = String, Path)),
    responses((status = 200, description = "Deleted"), (status = 404, description = "No such user or attribute", body = NextAuthError)))]
pub async fn delete_user_attribute(
    State(state): State<AppState>,
    Path((s, u, key)): UserKeyPath,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    attributes(
        &state,
        &headers,
        Some(&s),
        Some(&u),
        user,
        Op::DeleteOne(key),
    )
    .await
}

#[utoipa::path(get, operation_id = "getServerAttributes", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/servers/{serverid}/attributes/", tag = "family A: nextAuth",
    params(("serverid" = String, Path)),
    responses((status = 200, description = "One JSON object", content_type = "text/plain", body = String),
        (status = 404, description = "No such server", body = NextAuthError)))]
pub async fn get_server_attributes(
    State(state): State<AppState>,
    Path(s): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    attributes(&state, &headers, Some(&s), None, server, Op::Read).await
}

#[utoipa::path(post, operation_id = "setServerAttributes", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/servers/{serverid}/attributes/", tag = "family A: nextAuth",
    params(("serverid" = String, Path)), request_body(content = Object, content_type = "application/json"),
    responses((status = 200, description = "Set"), (status = 400, description = "Not a JSON object of attributes", body = NextAuthError),
        (status = 404, description = "No such server", body = NextAuthError)))]
pub async fn set_server_attributes(
    State(state): State<AppState>,
    Path(s): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Failure> {
    attributes(&state, &headers, Some(&s), None, server, Op::Replace(body)).await
}

#[utoipa::path(put, operation_id = "updateServerAttributes", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/servers/{serverid}/attributes/", tag = "family A: nextAuth",
    params(("serverid" = String, Path)), request_body(content = Object, content_type = "application/json"),
    responses((status = 200, description = "Merged"), (status = 400, description = "Not a JSON object of attributes", body = NextAuthError),
        (status = 404, description = "No such server", body = NextAuthError)))]
pub async fn update_server_attributes(
    State(state): State<AppState>,
    Path(s): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Failure> {
    attributes(&state, &headers, Some(&s), None, server, Op::Merge(body)).await
}

#[utoipa::path(delete, operation_id = "deleteServerAttributes", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/servers/{serverid}/attributes/", tag = "family A: nextAuth",
    params(("serverid" = String, Path)),
    responses((status = 200, description = "Deleted"), (status = 404, description = "No such server", body = NextAuthError)))]
pub async fn delete_server_attributes(
    State(state): State<AppState>,
    Path(s): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    attributes(&state, &headers, Some(&s), None, server, Op::DeleteAll).await
}

#[utoipa::path(delete, operation_id = "deleteServerAttribute", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/servers/{serverid}/attributes/{attributekey}", tag = "family A: nextAuth",
    params(("serverid" = String, Path), ("attributekey" = String, Path)),
    responses((status = 200, description = "Deleted"), (status = 404, description = "No such server or attribute", body = NextAuthError)))]
pub async fn delete_server_attribute(
    State(state): State<AppState>,
    Path((s, key)): ServerKeyPath,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    attributes(&state, &headers, Some(&s), None, server, Op::DeleteOne(key)).await
}

#[utoipa::path(get, operation_id = "getServerPrivilegedAttributes", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/servers/{serverid}/privilegedattributes/", tag = "family A: nextAuth",
    params(("serverid" = String, Path)),
    responses((status = 200, description = "One JSON object", content_type = "text/plain", body = String),
        (status = 403, description = "Not the root role", body = NextAuthError), (status = 404, description = "No such server", body = NextAuthError)))]
pub async fn get_privileged_attributes(
    State(state): State<AppState>,
    Path(s): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    attributes(&state, &headers, Some(&s), None, privileged, Op::Read).await
}

#[utoipa::path(post, operation_id = "setServerPrivilegedAttributes", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/servers/{serverid}/privilegedattributes/", tag = "family A: nextAuth",
    params(("serverid" = String, Path)), request_body(content = Object, content_type = "application/json"),
    responses((status = 200, description = "Set"), (status = 400, description = "Not a JSON object of attributes", body = NextAuthError),
        (status = 403, description = "Not the root role", body = NextAuthError), (status = 404, description = "No such server", body = NextAuthError)))]
pub async fn set_privileged_attributes(
    State(state): State<AppState>,
    Path(s): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Failure> {
    attributes(
        &state,
        &headers,
        Some(&s),
        None,
        privileged,
        Op::Replace(body),
    )
    .await
}

#[utoipa::path(put, operation_id = "updateServerPrivilegedAttributes", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/servers/{serverid}/privilegedattributes/", tag = "family A: nextAuth",
    params(("serverid" = String, Path)), request_body(content = Object, content_type = "application/json"),
    responses((status = 200, description = "Merged"), (status = 400, description = "Not a JSON object of attributes", body = NextAuthError),
        (status = 403, description = "Not the root role", body = NextAuthError), (status = 404, description = "No such server", body = NextAuthError)))]
pub async fn update_privileged_attributes(
    State(state): State<AppState>,
    Path(s): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Failure> {
    attributes(
        &state,
        &headers,
        Some(&s),
        None,
        privileged,
        Op::Merge(body),
    )
    .await
}

#[utoipa::path(delete, operation_id = "deleteServerPrivilegedAttributes", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/servers/{serverid}/privilegedattributes/", tag = "family A: nextAuth",
    params(("serverid" = String, Path)),
    responses((status = 200, description = "Deleted"), (status = 403, description = "Not the root role", body = NextAuthError),
        (status = 404, description = "No such server", body = NextAuthError)))]
pub async fn delete_privileged_attributes(
    State(state): State<AppState>,
    Path(s): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    attributes(&state, &headers, Some(&s), None, privileged, Op::DeleteAll).await
}

#[utoipa::path(delete, operation_id = "deleteServerPrivilegedAttribute", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/servers/{serverid}/privilegedattributes/{attributekey}", tag = "family A: nextAuth",
    params(("serverid" = String, Path), ("attributekey" = String, Path)),
    responses((status = 200, description = "Deleted"), (status = 403, description = "Not the root role", body = NextAuthError),
        (status = 404, description = "No such server or attribute", body = NextAuthError)))]
pub async fn delete_privileged_attribute(
    State(state): State<AppState>,
    Path((s, key)): ServerKeyPath,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    attributes(
        &state,
        &headers,
        Some(&s),
        None,
        privileged,
        Op::DeleteOne(key),
    )
    .await
}

#[utoipa::path(get, operation_id = "getGlobalAttributes", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/attributes/", tag = "family A: nextAuth",
    responses((status = 200, description = "One JSON object", content_type = "text/plain", body = String),
        (status = 403, description = "Not the root role", body = NextAuthError)))]
pub async fn get_global_attributes(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    attributes(&state, &headers, None, None, global, Op::Read).await
}

#[utoipa::path(post, operation_id = "setGlobalAttributes", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/attributes/", tag = "family A: nextAuth",
    request_body(content = Object, content_type = "application/json"),
    responses((status = 200, description = "Set"), (status = 400, description = "Not a JSON object of attributes", body = NextAuthError),
        (status = 403, description = "Not the root role", body = NextAuthError)))]
pub async fn set_global_attributes(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Failure> {
    attributes(&state, &headers, None, None, global, Op::Replace(body)).await
}

#[utoipa::path(put, operation_id = "updateGlobalAttributes", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/attributes/", tag = "family A: nextAuth",
    request_body(content = Object, content_type = "application/json"),
    responses((status = 200, description = "Merged"), (status = 400, description = "Not a JSON object of attributes", body = NextAuthError),
        (status = 403, description = "Not the root role", body = NextAuthError)))]
pub async fn update_global_attributes(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Failure> {
    attributes(&state, &headers, None, None, global, Op::Merge(body)).await
}

#[utoipa::path(delete, operation_id = "deleteGlobalAttributes", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/attributes/", tag = "family A: nextAuth",
    responses((status = 200, description = "Deleted"), (status = 403, description = "Not the root role", body = NextAuthError)))]
pub async fn delete_global_attributes(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    attributes(&state, &headers, None, None, global, Op::DeleteAll).await
}

#[utoipa::path(delete, operation_id = "deleteGlobalAttribute", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/attributes/{attributekey}", tag = "family A: nextAuth",
    params(("attributekey" = String, Path)),
    responses((status = 200, description = "Deleted"), (status = 403, description = "Not the root role", body = NextAuthError),
        (status = 404, description = "No such attribute", body = NextAuthError)))]
pub async fn delete_global_attribute(
    State(state): State<AppState>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    attributes(&state, &headers, None, None, global, Op::DeleteOne(key)).await
}
