//! `/admin`: the admin console (docs/admin-console.md). The same page stack as `/login` and
//! `/account` (the cookie session, CSRF-bound forms, the strict policy, no inline script), for
//! a person whose user role is root or holds permissions on a server
//! ([`latchkey_core::services::console`]). Every view and action calls the core operations the
//! APIs call, after checking the permission the vendor's API asks for the same operation:
//! `users` to look at users, revoke their sessions and reset their second factors, `accounts`
//! to block and unbind app accounts, `servers` for the audit log, root for API keys and roles.
//! After each change the view is shown again (a 303 to a fixed path with the server and the
//! subject as query values).

use askama::Template;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use latchkey_core::model::directory::{AccountColumn, Listing, UserColumn};
use latchkey_core::services::access::Permission;
use latchkey_core::services::console::ConsoleAccess;
use latchkey_core::services::directory::ListingParams;
use latchkey_core::services::management::acl;
use latchkey_core::store::AuditQuery;
use latchkey_core::{Error, ServerId, UserId};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use uuid::Uuid;

use super::account::{utc, SessionRow};
use super::Browser;
use crate::state::AppState;

/// Rows a console listing shows at most.
const SHOWN: u64 = 100;

/// The console's navigation: the server its links name, and whether the root-only page is
/// offered.
struct Nav {
    server: String,
    root: bool,
}

struct ServerRow {
    id: String,
    name: String,
    permissions: String,
    /// Shown with the `servers` permission only (the vendor's getServer asks for it).
    details: Option<ServerDetails>,
}

struct ServerDetails {
    accounts: u64,
    last_login: String,
    logins_last_minute: u64,
    settings: String,
}

#[derive(Template)]
#[template(path = "console_home.html")]
struct HomePage {
    nav: Nav,
    userid: String,
    root: bool,
    active_sessions: Option<u64>,
    servers: Vec<ServerRow>,
}

struct UserRow {
    userid: String,
    accounts: u64,
    last_login: String,
}

#[derive(Template)]
#[template(path = "console_users.html")]
struct UsersPage {
    nav: Nav,
    servers: Vec<(String, String)>,
    q: String,
    total: u64,
    users: Vec<UserRow>,
}

struct AccountRow {
    id: i64,
    description: String,
    userid: String,
    blocked: bool,
    last_login: String,
}

#[derive(Template)]
#[template(path = "console_user.html")]
struct UserPage {
    nav: Nav,
    csrf: String,
    userid: String,
    password: bool,
    totp: bool,
    pin: bool,
    sessions: Vec<SessionRow>,
    accounts: Vec<AccountRow>,
}

#[derive(Template)]
#[template(path = "console_accounts.html")]
struct AccountsPage {
    nav: Nav,
    csrf: String,
    total: u64,
    accounts: Vec<AccountRow>,
}

#[derive(Template)]
#[template(path = "console_server.html")]
struct ServerPage {
    nav: Nav,
    csrf: String,
    name: String,
    pin_timeout: i64,
    pin_trans_timeout: i64,
    ping_time: i64,
    appname: String,
    appurl: String,
    siteurl: String,
}

struct KeyRow {
    key_id: String,
    role: String,
    description: String,
}

struct PermissionRow {
    server: String,
    role: String,
    acl: String,
}

#[derive(Template)]
#[template(path = "console_keys.html")]
struct KeysPage {
    nav: Nav,
    csrf: String,
    servers: Vec<(String, String)>,
    keys: Vec<KeyRow>,
    permissions: Vec<PermissionRow>,
    /// A key just made: shown once.
    made: Option<MadeKey>,
}

struct MadeKey {
    key: String,
    role: String,
}

struct AuditRow {
    at: String,
    kind: String,
    userid: String,
    session: String,
    ip: String,
    detail: String,
}

#[derive(Template)]
#[template(path = "console_audit.html")]
struct AuditPage {
    nav: Nav,
    servers: Vec<(String, String)>,
    kind: String,
    userid: String,
    records: Vec<AuditRow>,
}

/// The query of a console view: which server, and the view's own values.
#[derive(Deserialize, Default)]
struct ViewQuery {
    #[serde(default)]
    server: String,
    #[serde(default)]
    q: String,
    #[serde(default)]
    userid: String,
    #[serde(default)]
    kind: String,
}

fn view_query(raw: Option<&str>) -> Result<ViewQuery, Error> {
    serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|e| Error::Invalid(format!("the address could not be read: {e}")))
}

/// The signed-in person's console access, or the answer already (to the sign-in page, or a
/// refusal page).
async fn admitted(
    state: &AppState,
    browser: Browser,
) -> Result<(Browser, ConsoleAccess), Response> {
    let Some(token) = browser.session.clone() else {
        return Err(browser.redirect("/login?return_to=/admin"));
    };
    match state.core.console_access(&token).await {
        Ok(access) => Ok((browser, access)),
        Err(Error::SessionInvalid) => Err(browser.redirect("/login?return_to=/admin")),
        Err(e) => Err(browser.error(e)),
    }
}

/// The opening every view of one server shares: the person's access, the view's query and
/// the server it names, once the person holds `needed` there; or the answer already.
async fn opened(
    state: &AppState,
    browser: Browser,
    raw: Option<&str>,
    needed: Permission,
) -> Result<(Browser, ConsoleAccess, ViewQuery, ServerId), Response> {
    let (browser, access) = admitted(state, browser).await?;
    let checked = view_query(raw).and_then(|query| {
        let server = chosen_server(&access, &query.server)?;
        access.require(&server, needed)?;
        Ok((query, server))
    });
    match checked {
        Ok((query, server)) => Ok((browser, access, query, server)),
        Err(e) => Err(browser.error(e)),
    }
}

/// The server a view names (the first managed one when it names none), once it is one the
/// person manages.
fn chosen_server(access: &ConsoleAccess, named: &str) -> Result<ServerId, Error> {
    let managed = |id: &ServerId| access.servers.iter().any(|(s, _)| &s.id == id);
    if named.is_empty() {
        return access
            .servers
            .first()
            .map(|(s, _)| s.id.clone())
            .ok_or_else(|| Error::NotFound("there is no server to manage yet".into()));
    }
    match ServerId::parse(named) {
        Ok(id) if managed(&id) => Ok(id),
        _ => Err(Error::NotFound("no such server among yours".into())),
    }
}

fn server_choices(access: &ConsoleAccess, chosen: &ServerId) -> Vec<(String, String)> {
    let mut choices: Vec<(String, String)> = access
        .servers
        .iter()
        .map(|(s, _)| (s.id.as_str().to_owned(), s.name.clone()))
        .collect();
    // The chosen server first, so the form's first option is the one shown.
    choices.sort_by_key(|(id, _)| id != chosen.as_str());
    choices
}

fn nav(access: &ConsoleAccess, server: &ServerId) -> Nav {
    Nav {
        server: server.as_str().to_owned(),
        root: access.root,
    }
}

fn listed_account(a: latchkey_core::model::directory::ListedAccount) -> AccountRow {
    AccountRow {
        id: a.account.id,
        description: a.account.description,
        userid: a.userid.map(|u| u.as_str().to_owned()).unwrap_or_default(),
        blocked: a.account.blocked,
        last_login: a.account.last_login.map_or_else(|| "never".into(), utc),
    }
}

async fn server_details(state: &AppState, server: &ServerId) -> Result<ServerDetails, Error> {
    let info = state.core.server_info(server).await?;
    let logins = state.core.logins_last_minute(server).await?;
    let s = &info.settings;
    Ok(ServerDetails {
        accounts: info.account_count,
        last_login: info.last_login.map_or_else(|| "never".into(), utc),
        logins_last_minute: logins,
        settings: format!(
            "PIN timeout {} min, transaction PIN timeout {} min, ping {} s{}",
            s.pin_timeout,
            s.pin_trans_timeout,
            s.ping_time,
            s.appname
                .as_deref()
                .map(|a| format!(", app {a}"))
                .unwrap_or_default()
        ),
    })
}

/// GET /admin: the servers you manage, with live counts.
pub async fn home(State(state): State<AppState>, browser: Browser) -> Response {
    let (browser, access) = match admitted(&state, browser).await {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    let mut servers = Vec::new();
    for (server, held) in &access.servers {
        let details = if held.servers {
            match server_details(&state, &server.id).await {
                Ok(details) => Some(details),
                Err(e) => return browser.error(e),
            }
        } else {
            None
        };
        servers.push(ServerRow {
            id: server.id.as_str().to_owned(),
            name: server.name.clone(),
            permissions: acl(held).join(", "),
            details,
        });
    }
    // The count of every server's sessions is the root role's to see.
    let active_sessions = if access.root {
        match state.core.session_gauges().await {
            Ok(g) => Some(g.active),
            Err(e) => return browser.error(e),
        }
    } else {
        None
    };
    let first = access.servers.first().map(|(s, _)| s.id.clone());
    browser.page(
        StatusCode::OK,
        HomePage {
            nav: Nav {
                server: first.map(|s| s.as_str().to_owned()).unwrap_or_default(),
                root: access.root,
            },
            userid: access.userid.as_str().to_owned(),
            root: access.root,
            active_sessions,
            servers,
        },
    )
}

/// GET /admin/console/users?server=&q=: find users (needs `users`).
pub async fn users(
    State(state): State<AppState>,
    browser: Browser,
    RawQuery(raw): RawQuery,
) -> Response {
    let opening = opened(&state, browser, raw.as_deref(), Permission::Users).await;
    let (browser, access, query, server) = match opening {
        Ok(opened) => opened,
        Err(answer) => return answer,
    };
    let limit = SHOWN.to_string();
    let found = async {
        let listing: Listing<UserColumn> = ListingParams {
            search: Some(query.q.as_str()),
            limit: Some(&limit),
            ..Default::default()
        }
        .parse(UserColumn::parse)?;
        state.core.list_users(&server, &listing).await
    }
    .await;
    let page = match found {
        Ok(found) => found,
        Err(e) => return browser.error(e),
    };
    let q = query.q;
    browser.page(
        StatusCode::OK,
        UsersPage {
            nav: nav(&access, &server),
            servers: server_choices(&access, &server),
            q,
            total: page.total,
            users: page
                .items
                .into_iter()
                .map(|u| UserRow {
                    userid: u.userid.as_str().to_owned(),
                    accounts: u.accounts,
                    last_login: u.last_login.map_or_else(|| "never".into(), utc),
                })
                .collect(),
        },
    )
}

/// GET /admin/console/user?server=&userid=: one user's credentials, sessions and app accounts
/// (needs `users`).
pub async fn user(
    State(state): State<AppState>,
    browser: Browser,
    RawQuery(raw): RawQuery,
) -> Response {
    let opening = opened(&state, browser, raw.as_deref(), Permission::Users).await;
    let (mut browser, access, query, server) = match opening {
        Ok(opened) => opened,
        Err(answer) => return answer,
    };
    let found = async {
        let userid = UserId::parse(&query.userid)?;
        let overview = state.core.user_overview(&server, &userid).await?;
        let sessions = state.core.sessions_of(&server, &userid, SHOWN).await?;
        let listing: Listing<AccountColumn> =
            ListingParams::default().parse(AccountColumn::parse)?;
        let accounts = state
            .core
            .accounts_of_user(&server, userid.as_str(), listing)
            .await?;
        Ok::<_, Error>((overview, sessions, accounts))
    }
    .await;
    let (overview, sessions, accounts) = match found {
        Ok(found) => found,
        Err(e) => return browser.error(e),
    };
    let csrf = browser.csrf_token();
    browser.page(
        StatusCode::OK,
        UserPage {
            nav: nav(&access, &server),
            csrf,
            userid: overview.user.userid.as_str().to_owned(),
            password: overview.password,
            totp: overview.totp,
            pin: overview.pin,
            sessions: sessions
                .into_iter()
                .map(|s| SessionRow::of(s, None))
                .collect(),
            accounts: accounts.items.into_iter().map(listed_account).collect(),
        },
    )
}

/// GET /admin/console/accounts?server=: the server's app accounts (needs `accounts`).
pub async fn accounts(
    State(state): State<AppState>,
    browser: Browser,
    RawQuery(raw): RawQuery,
) -> Response {
    let opening = opened(&state, browser, raw.as_deref(), Permission::Accounts).await;
    let (mut browser, access, _, server) = match opening {
        Ok(opened) => opened,
        Err(answer) => return answer,
    };
    let limit = SHOWN.to_string();
    let found = async {
        let listing: Listing<AccountColumn> = ListingParams {
            limit: Some(&limit),
            ..Default::default()
        }
        .parse(AccountColumn::parse)?;
        state.core.list_accounts(&server, &listing).await
    }
    .await;
    let page = match found {
        Ok(found) => found,
        Err(e) => return browser.error(e),
    };
    let csrf = browser.csrf_token();
    browser.page(
        StatusCode::OK,
        AccountsPage {
            nav: nav(&access, &server),
            csrf,
            total: page.total,
            accounts: page.items.into_iter().map(listed_account).collect(),
        },
    )
}

/// GET /admin/console/keys: the API keys your role made, every role's permissions on your
/// servers, and the forms to make a key and grant permissions (root).
pub async fn keys(
    State(state): State<AppState>,
    browser: Browser,
    RawQuery(raw): RawQuery,
) -> Response {
    keys_page(&state, browser, raw.as_deref(), None).await
}

async fn keys_page(
    state: &AppState,
    browser: Browser,
    raw: Option<&str>,
    made: Option<MadeKey>,
) -> Response {
    let (mut browser, access) = match admitted(state, browser).await {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    let found = async {
        access.require_root()?;
        let query = view_query(raw)?;
        let server = chosen_server(&access, &query.server)?;
        let keys = state.core.api_keys_made_by(&access.role_id).await?;
        let mut permissions = Vec::new();
        for (s, _) in &access.servers {
            for (role, held) in state.core.server_permissions(&s.id).await? {
                permissions.push(PermissionRow {
                    server: s.name.clone(),
                    role,
                    acl: acl(&held).join(", "),
                });
            }
        }
        Ok::<_, Error>((server, keys, permissions))
    }
    .await;
    let (server, keys, permissions) = match found {
        Ok(found) => found,
        Err(e) => return browser.error(e),
    };
    let csrf = browser.csrf_token();
    browser.page(
        StatusCode::OK,
        KeysPage {
            nav: nav(&access, &server),
            csrf,
            servers: server_choices(&access, &server),
            keys: keys
                .into_iter()
                .map(|k| KeyRow {
                    key_id: k.key_id.to_string(),
                    role: k.role_id,
                    description: k.description.unwrap_or_default(),
                })
                .collect(),
            permissions,
            made,
        },
    )
}

/// GET /admin/console/audit?server=&kind=&userid=: the newest audit records (needs
/// `servers`).
pub async fn audit(
    State(state): State<AppState>,
    browser: Browser,
    RawQuery(raw): RawQuery,
) -> Response {
    let opening = opened(&state, browser, raw.as_deref(), Permission::Servers).await;
    let (browser, access, query, server) = match opening {
        Ok(opened) => opened,
        Err(answer) => return answer,
    };
    let filter =
        |text: &str| Some(text.trim().to_owned()).filter(|t| !t.is_empty() && t.len() <= 256);
    let found = state
        .core
        .audit_events(
            &server,
            &AuditQuery {
                userid: filter(&query.userid),
                kind: filter(&query.kind),
                since: None,
                limit: SHOWN,
            },
        )
        .await;
    let records = match found {
        Ok(found) => found,
        Err(e) => return browser.error(e),
    };
    let text = |v: Option<String>| v.unwrap_or_default();
    browser.page(
        StatusCode::OK,
        AuditPage {
            nav: nav(&access, &server),
            servers: server_choices(&access, &server),
            kind: query.kind,
            userid: query.userid,
            records: records
                .into_iter()
                .map(|r| AuditRow {
                    at: utc(r.at),
                    kind: r.kind,
                    userid: text(r.userid),
                    session: r.session_id.map(|s| s.to_string()).unwrap_or_default(),
                    ip: text(r.ip),
                    detail: text(r.detail),
                })
                .collect(),
        },
    )
}

/// GET /admin/console/server?server=: a server's name and settings, to edit (root: the
/// vendor's updateServer needs the global permission).
pub async fn server(
    State(state): State<AppState>,
    browser: Browser,
    RawQuery(raw): RawQuery,
) -> Response {
    let opening = opened(&state, browser, raw.as_deref(), Permission::Servers).await;
    let (mut browser, access, _, server) = match opening {
        Ok(opened) => opened,
        Err(answer) => return answer,
    };
    if let Err(e) = access.require_root() {
        return browser.error(e);
    }
    let info = match state.core.server_info(&server).await {
        Ok(info) => info,
        Err(e) => return browser.error(e),
    };
    let csrf = browser.csrf_token();
    let text = |v: Option<String>| v.unwrap_or_default();
    let s = info.settings;
    browser.page(
        StatusCode::OK,
        ServerPage {
            nav: nav(&access, &server),
            csrf,
            name: info.name,
            pin_timeout: s.pin_timeout,
            pin_trans_timeout: s.pin_trans_timeout,
            ping_time: s.ping_time,
            appname: text(s.appname),
            appurl: text(s.appurl),
            siteurl: text(s.siteurl),
        },
    )
}

// --- actions ---

/// A console form post: its form and the person's access, or the answer already.
async fn admitted_form<T: DeserializeOwned>(
    state: &AppState,
    browser: Browser,
    body: &Bytes,
    csrf_of: impl Fn(&T) -> &str,
) -> Result<(Browser, ConsoleAccess, T), Response> {
    let (browser, form) = super::account::checked_form(browser, body, csrf_of)?;
    let (browser, access) = admitted(state, browser).await?;
    Ok((browser, access, form))
}

/// Where to go after an action on a user.
fn user_view(server: &ServerId, userid: &UserId) -> String {
    let query =
        serde_urlencoded::to_string([("server", server.as_str()), ("userid", userid.as_str())])
            .unwrap_or_default();
    format!("/admin/console/user?{query}")
}

#[derive(Deserialize)]
pub struct UserActionForm {
    #[serde(default)]
    csrf: String,
    server: String,
    userid: String,
    /// `session` (with `session_id`), `sessions` (all), `totp` or `pin`.
    action: String,
    #[serde(default)]
    session_id: String,
}

/// POST /admin/console/user: revoke a session or all of them, reset a second factor (needs
/// `users`).
pub async fn user_action(State(state): State<AppState>, browser: Browser, body: Bytes) -> Response {
    let (browser, access, form) =
        match admitted_form(&state, browser, &body, |f: &UserActionForm| &f.csrf).await {
            Ok(found) => found,
            Err(answer) => return answer,
        };
    let done = async {
        let server = chosen_server(&access, &form.server)?;
        access.require(&server, Permission::Users)?;
        let userid = UserId::parse(&form.userid)?;
        // The user must be this server's, and no administrator unless you are root.
        state
            .core
            .console_may_act_on(&access, &server, &userid)
            .await?;
        match form.action.as_str() {
            "session" => {
                let id = Uuid::parse_str(form.session_id.trim())
                    .map_err(|_| Error::Invalid("session_id is not a session id".into()))?;
                state.core.revoke_session_of(&server, &userid, id).await?;
            }
            "sessions" => {
                state
                    .core
                    .revoke_user_sessions_as_operator(&server, &userid)
                    .await?;
            }
            "totp" => {
                state.core.remove_totp(&server, &userid).await?;
            }
            "pin" => {
                state.core.remove_pin(&server, &userid).await?;
            }
            other => return Err(Error::Invalid(format!("unknown action {other:?}"))),
        }
        Ok::<_, Error>(user_view(&server, &userid))
    }
    .await;
    match done {
        Ok(to) => browser.redirect(&to),
        Err(e) => browser.error(e),
    }
}

#[derive(Deserialize)]
pub struct AccountActionForm {
    #[serde(default)]
    csrf: String,
    server: String,
    accountid: String,
    /// `block`, `unblock` or `unbind`.
    action: String,
    /// Where to go back to: `accounts`, or a user's view (`user`, with `userid`).
    #[serde(default)]
    back: String,
    #[serde(default)]
    userid: String,
}

/// POST /admin/console/account: block, unblock or unbind an app account (needs `accounts`).
pub async fn account_action(
    State(state): State<AppState>,
    browser: Browser,
    body: Bytes,
) -> Response {
    let (browser, access, form) =
        match admitted_form(&state, browser, &body, |f: &AccountActionForm| &f.csrf).await {
            Ok(found) => found,
            Err(answer) => return answer,
        };
    let done = async {
        let server = chosen_server(&access, &form.server)?;
        access.require(&server, Permission::Accounts)?;
        let account: i64 = form
            .accountid
            .trim()
            .parse()
            .map_err(|_| Error::Invalid("accountid must be a number".into()))?;
        match form.action.as_str() {
            "block" => {
                state
                    .core
                    .set_account_blocked(&server, account, true)
                    .await?;
            }
            "unblock" => {
                state
                    .core
                    .set_account_blocked(&server, account, false)
                    .await?;
            }
            "unbind" => state.core.unbind_account(&server, account).await?,
            other => return Err(Error::Invalid(format!("unknown action {other:?}"))),
        }
        Ok::<_, Error>(match (form.back.as_str(), UserId::parse(&form.userid)) {
            ("user", Ok(userid)) => user_view(&server, &userid),
            _ => format!("/admin/console/accounts?server={}", server.as_str()),
        })
    }
    .await;
    match done {
        Ok(to) => browser.redirect(&to),
        Err(e) => browser.error(e),
    }
}

#[derive(Deserialize)]
pub struct ServerForm {
    #[serde(default)]
    csrf: String,
    server: String,
    name: String,
    pin_timeout: String,
    pin_trans_timeout: String,
    ping_time: String,
    #[serde(default)]
    appname: String,
    #[serde(default)]
    appurl: String,
    #[serde(default)]
    siteurl: String,
}

/// POST /admin/console/server: renames a server and sets the settings the form shows; the
/// others (logo, flags, the app store links, wsurl) stay as they are (root only).
pub async fn update_server(
    State(state): State<AppState>,
    browser: Browser,
    body: Bytes,
) -> Response {
    let (browser, access, form) =
        match admitted_form(&state, browser, &body, |f: &ServerForm| &f.csrf).await {
            Ok(found) => found,
            Err(answer) => return answer,
        };
    let done = async {
        access.require_root()?;
        let server = chosen_server(&access, &form.server)?;
        let number = |name: &str, text: &str| {
            text.trim()
                .parse::<i64>()
                .map_err(|_| Error::Invalid(format!("{name} must be a whole number")))
        };
        let optional = |text: &str| Some(text.trim().to_owned()).filter(|t| !t.is_empty());
        let mut settings = state.core.server_info(&server).await?.settings;
        settings.pin_timeout = number("pinTimeout", &form.pin_timeout)?;
        settings.pin_trans_timeout = number("pinTransTimeout", &form.pin_trans_timeout)?;
        settings.ping_time = number("pingTime", &form.ping_time)?;
        settings.appname = optional(&form.appname);
        settings.appurl = optional(&form.appurl);
        settings.siteurl = optional(&form.siteurl);
        state
            .core
            .update_server_settings(&server, &form.name, &settings)
            .await?;
        Ok::<_, Error>(())
    }
    .await;
    match done {
        Ok(()) => browser.redirect("/admin"),
        Err(e) => browser.error(e),
    }
}

#[derive(Deserialize)]
pub struct NewKeyForm {
    #[serde(default)]
    csrf: String,
    description: String,
}

/// POST /admin/console/keys: a new API key with a role of its own (root only); the key is
/// shown once, on the answer's page.
pub async fn create_key(State(state): State<AppState>, browser: Browser, body: Bytes) -> Response {
    let (browser, access, form) =
        match admitted_form(&state, browser, &body, |f: &NewKeyForm| &f.csrf).await {
            Ok(found) => found,
            Err(answer) => return answer,
        };
    if let Err(e) = access.require_root() {
        return browser.error(e);
    }
    match state
        .core
        .create_described_api_key(&access.role_id, &form.description)
        .await
    {
        Ok((token, role)) => {
            let made = MadeKey {
                key: token.text,
                role,
            };
            keys_page(&state, browser, None, Some(made)).await
        }
        Err(e) => browser.error(e),
    }
}

#[derive(Deserialize)]
pub struct GrantForm {
    #[serde(default)]
    csrf: String,
    server: String,
    role: String,
    #[serde(default)]
    sessions: Option<String>,
    #[serde(default)]
    accounts: Option<String>,
    #[serde(default)]
    users: Option<String>,
    #[serde(default)]
    servers: Option<String>,
}

/// POST /admin/console/grant: sets a role's permissions on a server (root only).
pub async fn grant(State(state): State<AppState>, browser: Browser, body: Bytes) -> Response {
    let (browser, access, form) =
        match admitted_form(&state, browser, &body, |f: &GrantForm| &f.csrf).await {
            Ok(found) => found,
            Err(answer) => return answer,
        };
    let done = async {
        access.require_root()?;
        let server = chosen_server(&access, &form.server)?;
        let names: Vec<String> = [
            ("sessions", &form.sessions),
            ("accounts", &form.accounts),
            ("users", &form.users),
            ("servers", &form.servers),
        ]
        .into_iter()
        .filter(|(_, on)| on.is_some())
        .map(|(name, _)| name.to_owned())
        .collect();
        if names.is_empty() {
            state.core.revoke_acl(&server, form.role.trim()).await?;
        } else {
            state
                .core
                .grant_acl(&server, form.role.trim(), &names)
                .await?;
        }
        Ok::<_, Error>(format!("/admin/console/keys?server={}", server.as_str()))
    }
    .await;
    match done {
        Ok(to) => browser.redirect(&to),
        Err(e) => browser.error(e),
    }
}
