//! `/account`: the signed-in person's sessions (revoke one, revoke all others), second factors
//! (TOTP enrolled with a QR code and confirmed with a first code, removed; PIN set or removed),
//! passkeys (added through the browser's WebAuthn ceremony, renamed, removed), password change
//! (the current one asked), and signing out. After each change the page is
//! shown again with a fixed notice (`?done=...`: never text from the request).

use askama::Template;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use latchkey_core::cache::sessions::ActiveSession;
use latchkey_core::model::{MfaKind, Session};
use latchkey_core::Error;
use serde::Deserialize;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Browser, Ceremony};
use crate::state::AppState;

/// Sessions shown at most (newest activity first).
const SESSIONS_SHOWN: u64 = 50;

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    csrf: String,
    userid: String,
    sessions: Vec<SessionRow>,
    totp: bool,
    pin: bool,
    passkeys_enabled: bool,
    passkeys: Vec<PasskeyRow>,
    notice: Option<&'static str>,
    error: Option<String>,
}

struct PasskeyRow {
    id: String,
    name: String,
    created: String,
    last_used: String,
    backed_up: bool,
}

#[derive(Template)]
#[template(path = "passkey.html")]
struct PasskeyPage {
    csrf: String,
    /// The ceremony form's (unused) return field.
    return_to: String,
    name: String,
    ceremony: Ceremony,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "totp.html")]
struct TotpPage {
    csrf: String,
    secret: String,
    qr_svg: String,
    error: Option<String>,
}

/// One session as the account page and the console list it.
pub(super) struct SessionRow {
    pub(super) id: String,
    pub(super) device: String,
    pub(super) address: String,
    pub(super) last_active: String,
    /// The browser's own session (the account page marks it).
    pub(super) current: bool,
}

impl SessionRow {
    /// The row of `session`: its device (its name, else its browser), address and last
    /// activity; `current` when it is `viewer`'s.
    pub(super) fn of(session: Session, viewer: Option<Uuid>) -> Self {
        let client = session.client;
        SessionRow {
            id: session.id.to_string(),
            device: client
                .device_name
                .or(client.user_agent)
                .unwrap_or_else(|| "unknown device".into()),
            address: client.ip.unwrap_or_else(|| "unknown".into()),
            last_active: utc(session.last_active_at),
            current: viewer == Some(session.id),
        }
    }
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

/// GET /account; without a signed-in browser, to the sign-in page.
pub async fn page(
    State(state): State<AppState>,
    browser: Browser,
    RawQuery(query): RawQuery,
) -> Response {
    let notice = query.as_deref().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "done")
            .and_then(|(_, v)| {
                NOTICES
                    .iter()
                    .find(|(key, _)| *key == v)
                    .map(|(_, text)| *text)
            })
    });
    account_page(&state, browser, StatusCode::OK, notice, None).await
}

/// The account page again, with what went wrong.
async fn account_error(
    state: &AppState,
    browser: Browser,
    status: StatusCode,
    error: String,
) -> Response {
    account_page(state, browser, status, None, Some(error)).await
}

/// The fixed notices `?done=` may ask for.
const NOTICES: &[(&str, &str)] = &[
    ("password", "Your password was changed."),
    ("pin", "Your PIN was set."),
    ("pin-removed", "Your PIN was removed."),
    (
        "totp",
        "Your authenticator app is set up: sign-ins now ask for its code.",
    ),
    ("totp-removed", "The authenticator app was removed."),
    ("others", "Every other session was revoked."),
    (
        "passkey",
        "Your passkey was added: you can sign in with it.",
    ),
    ("passkey-renamed", "The passkey was renamed."),
    ("passkey-removed", "The passkey was removed."),
];

async fn account_page(
    state: &AppState,
    mut browser: Browser,
    status: StatusCode,
    notice: Option<&'static str>,
    error: Option<String>,
) -> Response {
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
    let (sessions, factors, passkeys) = match tokio::try_join!(
        state.core.own_sessions(caller, SESSIONS_SHOWN),
        state.core.own_second_factors(caller),
        state.core.own_passkeys(caller)
    ) {
        Ok(found) => found,
        Err(e) => return browser.error(e),
    };
    let mut rows: Vec<SessionRow> = sessions
        .into_iter()
        .map(|s| SessionRow::of(s, Some(caller.id)))
        .collect();
    // This browser's session first, then the others by activity.
    rows.sort_by_key(|row| !row.current);
    let csrf = browser.csrf_token();
    browser.page(
        status,
        AccountPage {
            csrf,
            userid: identity.userid.as_str().to_owned(),
            sessions: rows,
            totp: factors.0,
            pin: factors.1,
            passkeys_enabled: state.core.passkeys_enabled(),
            passkeys: passkeys
                .into_iter()
                .map(|p| PasskeyRow {
                    id: p.id,
                    name: p.name,
                    created: utc(p.created_at),
                    last_used: p.last_used_at.map_or_else(|| "never".into(), utc),
                    backed_up: p.backed_up,
                })
                .collect(),
            notice,
            error,
        },
    )
}

/// POST /account/sessions/revoke: one of the person's sessions.
pub async fn revoke(State(state): State<AppState>, browser: Browser, body: Bytes) -> Response {
    let (browser, caller, form) =
        match signed_in_form(&state, browser, &body, |f: &RevokeForm| &f.csrf).await {
            Ok(found) => found,
            Err(answer) => return answer,
        };
    let Ok(id) = Uuid::parse_str(form.session_id.trim()) else {
        return browser.error(Error::Invalid("session_id is not a session id".into()));
    };
    let mut browser = browser;
    match state.core.revoke_own_session(caller, id).await {
        Ok(()) if id == caller.id => {
            browser.clear_session();
            browser.redirect("/login")
        }
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
    let (browser, caller, _) =
        match signed_in_form(&state, browser, &body, |f: &CsrfForm| &f.csrf).await {
            Ok(found) => found,
            Err(answer) => return answer,
        };
    match state.core.revoke_other_sessions(caller).await {
        Ok(_) => browser.redirect("/account?done=others"),
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

#[derive(Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    csrf: String,
    current: String,
    new: String,
    confirm: String,
}

#[derive(Deserialize)]
pub struct PinForm {
    #[serde(default)]
    csrf: String,
    current: String,
    pin: String,
}

#[derive(Deserialize)]
pub struct RecheckForm {
    #[serde(default)]
    csrf: String,
    current: String,
}

#[derive(Deserialize)]
pub struct TotpForm {
    #[serde(default)]
    csrf: String,
    current: String,
    secret: String,
    code: String,
}

/// A form post of a signed-in browser: its form and who signed in, or the answer already.
async fn signed_in_form<T: serde::de::DeserializeOwned>(
    state: &AppState,
    browser: Browser,
    body: &Bytes,
    csrf_of: impl Fn(&T) -> &str,
) -> Result<(Browser, ActiveSession, T), Response> {
    let (browser, form) = checked_form(browser, body, csrf_of)?;
    match signed_in(state, &browser).await {
        Ok(caller) => Ok((browser, caller, form)),
        Err(Error::SessionInvalid) => Err(browser.redirect("/login")),
        Err(e) => Err(browser.error(e)),
    }
}

/// POST /account/password: the current password, then the new one twice.
pub async fn change_password(
    State(state): State<AppState>,
    browser: Browser,
    body: Bytes,
) -> Response {
    let (browser, caller, form) =
        match signed_in_form(&state, browser, &body, |f: &PasswordForm| &f.csrf).await {
            Ok(found) => found,
            Err(answer) => return answer,
        };
    if form.new != form.confirm {
        let error = "The two new passwords differ.".to_owned();
        return account_error(&state, browser, StatusCode::BAD_REQUEST, error).await;
    }
    match state
        .core
        .change_own_password(caller, &form.current, &form.new)
        .await
    {
        Ok(()) => browser.redirect("/account?done=password"),
        Err(Error::BadCredentials) => wrong_password(&state, browser).await,
        Err(Error::Invalid(message)) => {
            account_error(&state, browser, StatusCode::BAD_REQUEST, message).await
        }
        Err(e) => browser.error(e),
    }
}

/// POST /account/pin: sets or replaces the PIN.
pub async fn set_pin(State(state): State<AppState>, browser: Browser, body: Bytes) -> Response {
    let (browser, caller, form) =
        match signed_in_form(&state, browser, &body, |f: &PinForm| &f.csrf).await {
            Ok(found) => found,
            Err(answer) => return answer,
        };
    match state
        .core
        .set_own_pin(caller, &form.current, form.pin.trim())
        .await
    {
        Ok(()) => browser.redirect("/account?done=pin"),
        Err(Error::BadCredentials) => wrong_password(&state, browser).await,
        Err(Error::Invalid(message)) => {
            account_error(&state, browser, StatusCode::BAD_REQUEST, message).await
        }
        Err(e) => browser.error(e),
    }
}

/// POST /account/pin/remove and /account/totp/remove.
async fn remove_factor(state: AppState, browser: Browser, body: Bytes, kind: MfaKind) -> Response {
    let (browser, caller, form) =
        match signed_in_form(&state, browser, &body, |f: &RecheckForm| &f.csrf).await {
            Ok(found) => found,
            Err(answer) => return answer,
        };
    match state
        .core
        .remove_own_second_factor(caller, &form.current, kind)
        .await
    {
        Ok(_) => browser.redirect(match kind {
            MfaKind::Pin => "/account?done=pin-removed",
            MfaKind::Totp => "/account?done=totp-removed",
        }),
        Err(Error::BadCredentials) => wrong_password(&state, browser).await,
        Err(e) => browser.error(e),
    }
}

async fn wrong_password(state: &AppState, browser: Browser) -> Response {
    let error = "The current password is wrong.".to_owned();
    account_error(state, browser, StatusCode::UNAUTHORIZED, error).await
}

pub async fn remove_pin(State(state): State<AppState>, browser: Browser, body: Bytes) -> Response {
    remove_factor(state, browser, body, MfaKind::Pin).await
}

pub async fn remove_totp(State(state): State<AppState>, browser: Browser, body: Bytes) -> Response {
    remove_factor(state, browser, body, MfaKind::Totp).await
}

/// POST /account/totp/start: a new secret to scan (stored only once confirmed).
pub async fn start_totp(State(state): State<AppState>, browser: Browser, body: Bytes) -> Response {
    let (browser, caller, _) =
        match signed_in_form(&state, browser, &body, |f: &CsrfForm| &f.csrf).await {
            Ok(found) => found,
            Err(answer) => return answer,
        };
    totp_page(&state, browser, caller, None, StatusCode::OK, None).await
}

/// POST /account/totp/confirm: the scanned secret and its current code.
pub async fn confirm_totp(
    State(state): State<AppState>,
    browser: Browser,
    body: Bytes,
) -> Response {
    let (browser, caller, form) =
        match signed_in_form(&state, browser, &body, |f: &TotpForm| &f.csrf).await {
            Ok(found) => found,
            Err(answer) => return answer,
        };
    match state
        .core
        .confirm_own_totp(caller, &form.current, &form.secret, &form.code)
        .await
    {
        Ok(()) => browser.redirect("/account?done=totp"),
        Err(Error::BadCredentials) => {
            let error =
                "The password or the code is wrong: type the code your app shows now.".to_owned();
            let secret = Some(form.secret.as_str());
            totp_page(
                &state,
                browser,
                caller,
                secret,
                StatusCode::UNAUTHORIZED,
                Some(error),
            )
            .await
        }
        Err(e) => browser.error(e),
    }
}

/// The TOTP set-up page: the QR code (inline SVG: the page's policy allows no `data:` images)
/// and the secret as text, with the form that confirms a first code.
async fn totp_page(
    state: &AppState,
    mut browser: Browser,
    caller: ActiveSession,
    secret: Option<&str>,
    status: StatusCode,
    error: Option<String>,
) -> Response {
    let enrolment = match state.core.own_totp_enrolment(caller, secret).await {
        Ok(enrolment) => enrolment,
        Err(e) => return browser.error(e),
    };
    let qr_svg = match qrcode::QrCode::new(enrolment.otpauth_uri.as_bytes()) {
        Ok(code) => code
            .render::<qrcode::render::svg::Color>()
            .min_dimensions(220, 220)
            .build(),
        Err(e) => return browser.error(Error::Internal(format!("QR code: {e}"))),
    };
    let csrf = browser.csrf_token();
    browser.page(
        status,
        TotpPage {
            csrf,
            secret: enrolment.secret_base32,
            qr_svg,
            error,
        },
    )
}

#[derive(Deserialize)]
pub struct PasskeyStartForm {
    #[serde(default)]
    csrf: String,
    current: String,
    name: String,
}

#[derive(Deserialize)]
pub struct PasskeyFinishForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    ticket: String,
    #[serde(default)]
    credential: String,
}

#[derive(Deserialize)]
pub struct PasskeyRenameForm {
    #[serde(default)]
    csrf: String,
    id: String,
    name: String,
}

#[derive(Deserialize)]
pub struct PasskeyRemoveForm {
    #[serde(default)]
    csrf: String,
    id: String,
    current: String,
}

/// POST /account/passkeys/start: the current password and a name, then the page whose script
/// asks the browser to make the passkey.
pub async fn start_passkey(
    State(state): State<AppState>,
    browser: Browser,
    body: Bytes,
) -> Response {
    let (mut browser, caller, form) =
        match signed_in_form(&state, browser, &body, |f: &PasskeyStartForm| &f.csrf).await {
            Ok(found) => found,
            Err(answer) => return answer,
        };
    match state
        .core
        .start_passkey_registration(caller, &form.current, &form.name)
        .await
    {
        Ok(challenge) => {
            let page = PasskeyPage {
                csrf: browser.csrf_token(),
                return_to: String::new(),
                name: form.name.trim().to_owned(),
                ceremony: Ceremony {
                    mode: "create",
                    label: "Create the passkey",
                    ..Ceremony::new(challenge, "passkey-create", "/account/passkeys/finish")
                },
                error: None,
            };
            browser.page(StatusCode::OK, page)
        }
        Err(Error::BadCredentials) => wrong_password(&state, browser).await,
        Err(Error::Invalid(message)) => {
            account_error(&state, browser, StatusCode::BAD_REQUEST, message).await
        }
        Err(e) => browser.error(e),
    }
}

/// POST /account/passkeys/finish: the passkey the browser made.
pub async fn finish_passkey(
    State(state): State<AppState>,
    browser: Browser,
    body: Bytes,
) -> Response {
    let (browser, caller, form) =
        match signed_in_form(&state, browser, &body, |f: &PasskeyFinishForm| &f.csrf).await {
            Ok(found) => found,
            Err(answer) => return answer,
        };
    let (status, message) = match state
        .core
        .finish_passkey_registration(caller, &form.ticket, &form.credential)
        .await
    {
        Ok(_) => return browser.redirect("/account?done=passkey"),
        Err(Error::BadCredentials) => (
            StatusCode::BAD_REQUEST,
            "The browser's passkey could not be verified: nothing was added.".to_owned(),
        ),
        Err(Error::Invalid(message)) => (StatusCode::BAD_REQUEST, message),
        Err(Error::Conflict(message)) => (StatusCode::CONFLICT, message),
        Err(e) => return browser.error(e),
    };
    account_error(&state, browser, status, message).await
}

/// POST /account/passkeys/rename.
pub async fn rename_passkey(
    State(state): State<AppState>,
    browser: Browser,
    body: Bytes,
) -> Response {
    let (browser, caller, form) =
        match signed_in_form(&state, browser, &body, |f: &PasskeyRenameForm| &f.csrf).await {
            Ok(found) => found,
            Err(answer) => return answer,
        };
    let (status, message) = match state
        .core
        .rename_own_passkey(caller, &form.id, &form.name)
        .await
    {
        Ok(()) => return browser.redirect("/account?done=passkey-renamed"),
        Err(Error::Invalid(message)) => (StatusCode::BAD_REQUEST, message),
        Err(Error::NotFound(message)) => (StatusCode::NOT_FOUND, message),
        Err(e) => return browser.error(e),
    };
    account_error(&state, browser, status, message).await
}

/// POST /account/passkeys/remove: refused when it is the account's last way to sign in.
pub async fn remove_passkey(
    State(state): State<AppState>,
    browser: Browser,
    body: Bytes,
) -> Response {
    let (browser, caller, form) =
        match signed_in_form(&state, browser, &body, |f: &PasskeyRemoveForm| &f.csrf).await {
            Ok(found) => found,
            Err(answer) => return answer,
        };
    let (status, message) = match state
        .core
        .remove_own_passkey(caller, &form.current, &form.id)
        .await
    {
        Ok(()) => return browser.redirect("/account?done=passkey-removed"),
        Err(Error::BadCredentials) => return wrong_password(&state, browser).await,
        Err(Error::Invalid(message)) => (StatusCode::BAD_REQUEST, message),
        Err(Error::NotFound(message)) => (StatusCode::NOT_FOUND, message),
        Err(Error::Conflict(message)) => (StatusCode::CONFLICT, message),
        Err(e) => return browser.error(e),
    };
    account_error(&state, browser, status, message).await
}

/// A form post read, with this browser's CSRF token in it; or the answer already (refused
/// without the token, a page naming what could not be read with it).
// The error is the page answered as it is, once per refused post: not worth a box.
#[allow(clippy::result_large_err)]
pub(super) fn checked_form<T: serde::de::DeserializeOwned>(
    browser: Browser,
    body: &Bytes,
    csrf_of: impl Fn(&T) -> &str,
) -> Result<(Browser, T), Response> {
    let form: T = match serde_urlencoded::from_bytes(body) {
        Ok(form) => form,
        Err(e) if csrf_form_ok(&browser, body) => {
            return Err(browser.error(Error::Invalid(format!("the form could not be read: {e}"))))
        }
        Err(_) => return Err(browser.csrf_refused()),
    };
    if !browser.csrf_matches(csrf_of(&form)) {
        return Err(browser.csrf_refused());
    }
    Ok((browser, form))
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
pub(super) fn utc(unix: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(format).ok())
        .unwrap_or_else(|| "unknown".into())
}
