//! `/account`: the signed-in person's sessions (revoke one, revoke all others) and signing out.

use askama::Template;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use latchkey_core::cache::sessions::ActiveSession;
use latchkey_core::Error;
use serde::Deserialize;
use time::OffsetDateTime;
use uuid::Uuid;

use super::Browser;
use crate::state::AppState;

/// Sessions shown at most (newest activity first).
const SESSIONS_SHOWN: u64 = 50;

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    csrf: String,
    userid: String,
    sessions: Vec<SessionRow>,
}

struct SessionRow {
    id: String,
    device: String,
    address: String,
    last_active: String,
    current: bool,
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

#[derive(Deserialize)]
pub struct RevokeForm {
    #[serde(default)]
    csrf: String,
    session_id: String,
}

/// GET /account; without a signed-in browser, to the sign-in page (and back here after).
pub async fn page(State(state): State<AppState>, mut browser: Browser) -> Response {
    let Some(token) = browser.session.clone() else {
        return browser.redirect("/login");
    };
    let identity = match state.core.identity_of(&token).await {
        Ok(identity) => identity,
        Err(Error::SessionInvalid) => return browser.redirect("/login"),
        Err(e) => return browser.error(e),
    };
    let caller = ActiveSession {
        id: identity.session_id,
        user_id: identity.user_id,
    };
    let sessions = match state.core.own_sessions(caller, SESSIONS_SHOWN).await {
        Ok(sessions) => sessions,
        Err(e) => return browser.error(e),
    };
    let mut rows: Vec<SessionRow> = sessions
        .into_iter()
        .map(|s| SessionRow {
            id: s.id.to_string(),
            device: s
                .client
                .device_name
                .or(s.client.user_agent)
                .unwrap_or_else(|| "unknown device".into()),
            address: s.client.ip.unwrap_or_else(|| "unknown".into()),
            last_active: utc(s.last_active_at),
            current: s.id == caller.id,
        })
        .collect();
    // This browser's session first, then the others by activity.
    rows.sort_by_key(|row| !row.current);
    let csrf = browser.csrf_token();
    browser.page(
        StatusCode::OK,
        AccountPage {
            csrf,
            userid: identity.userid.as_str().to_owned(),
            sessions: rows,
        },
    )
}

/// POST /account/sessions/revoke: one of the person's sessions.
pub async fn revoke(State(state): State<AppState>, browser: Browser, body: Bytes) -> Response {
    let form: RevokeForm = match serde_urlencoded::from_bytes(&body) {
        Ok(form) => form,
        Err(e) => return browser.error(Error::Invalid(format!("the form could not be read: {e}"))),
    };
    if !browser.csrf_matches(&form.csrf) {
        return browser.csrf_refused();
    }
    let caller = match signed_in(&state, &browser).await {
        Ok(caller) => caller,
        Err(e) => return browser.error(e),
    };
    let Ok(id) = Uuid::parse_str(form.session_id.trim()) else {
        return browser.error(Error::Invalid("session_id is not a session id".into()));
    };
    match state.core.revoke_own_session(caller, id).await {
        Ok(()) if id == caller.id => browser.redirect("/login"),
        Ok(()) => browser.redirect("/account"),
        Err(e) => browser.error(e),
    }
}

/// POST /account/sessions/revoke-others: every session of the person but this one.
pub async fn revoke_others(
    State(state): State<AppState>,
    browser: Browser,
    body: Bytes,
) -> Response {
    if !csrf_form_ok(&browser, &body) {
        return browser.csrf_refused();
    }
    let caller = match signed_in(&state, &browser).await {
        Ok(caller) => caller,
        Err(e) => return browser.error(e),
    };
    match state.core.revoke_other_sessions(caller).await {
        Ok(_) => browser.redirect("/account"),
        Err(e) => browser.error(e),
    }
}

/// POST /logout: ends this browser's session (whatever its state) and takes the cookie away.
pub async fn sign_out(
    State(state): State<AppState>,
    mut browser: Browser,
    body: Bytes,
) -> Response {
    if !csrf_form_ok(&browser, &body) {
        return browser.csrf_refused();
    }
    if let Some(token) = browser.session.clone() {
        match state.core.logout(&token).await {
            Ok(_) | Err(Error::SessionInvalid) => {}
            Err(e) => return browser.error(e),
        }
    }
    browser.clear_session();
    browser.redirect("/login")
}

fn csrf_form_ok(browser: &Browser, body: &Bytes) -> bool {
    serde_urlencoded::from_bytes::<CsrfForm>(body)
        .is_ok_and(|form| browser.csrf_matches(&form.csrf))
}

async fn signed_in(state: &AppState, browser: &Browser) -> Result<ActiveSession, Error> {
    let token = browser.session.as_deref().ok_or(Error::SessionInvalid)?;
    state.core.browser_session(token).await
}

/// `2026-11-30 08:15 UTC`.
fn utc(unix: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(format).ok())
        .unwrap_or_else(|| "unknown".into())
}
