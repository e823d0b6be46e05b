//! `/login`: the password step, then the second factor or the CAPTCHA when the rules ask for
//! them — family D's flows, driven by plain HTML forms — and passkeys, as the first factor
//! (a button, and the user name field's autofill) or in place of the code — and the login QR
//! code of this browser: the companion app's login on it (family A, default server) becomes
//! this browser's session, the page learning of it over Server-Sent Events.

use askama::Template;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use latchkey_core::model::ids::Nonce;
use latchkey_core::model::MfaKind;
use latchkey_core::Error;
use serde::Deserialize;

use super::{after_sign_in, allowed_return, Browser, Ceremony};
use crate::extract::{Client, RequestOrigin};
use crate::families::nextauth::base_url_of;
use crate::state::AppState;

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    csrf: String,
    return_to: String,
    username: String,
    error: Option<String>,
    passkey: Option<Ceremony>,
    qr: Option<QrSignIn>,
}

/// The login QR code of this browser, and where its status is watched.
struct QrSignIn {
    events: String,
}

#[derive(Template)]
#[template(path = "code.html")]
struct CodePage {
    csrf: String,
    return_to: String,
    label: &'static str,
    hint: &'static str,
    error: Option<String>,
    passkey: Option<Ceremony>,
}

#[derive(Template)]
#[template(path = "captcha.html")]
struct CaptchaPage {
    csrf: String,
    return_to: String,
    error: Option<String>,
}

#[derive(Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    csrf: String,
    username: String,
    password: String,
    #[serde(default)]
    return_to: String,
}

#[derive(Deserialize)]
pub struct CodeForm {
    #[serde(default)]
    csrf: String,
    code: String,
    #[serde(default)]
    return_to: String,
}

#[derive(Deserialize)]
pub struct PasskeyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    ticket: String,
    #[serde(default)]
    credential: String,
    #[serde(default)]
    return_to: String,
}

#[derive(Deserialize)]
pub struct CaptchaForm {
    #[serde(default)]
    csrf: String,
    answer: String,
    #[serde(default)]
    return_to: String,
}

/// A form body, or the page saying it was malformed.
fn form<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Error> {
    serde_urlencoded::from_bytes(body)
        .map_err(|e| Error::Invalid(format!("the form could not be read: {e}")))
}

/// GET /login: straight on when the browser is signed in already.
pub async fn page(
    State(state): State<AppState>,
    browser: Browser,
    RawQuery(query): RawQuery,
) -> Response {
    let return_to = query.as_deref().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "return_to")
            .map(|(_, v)| v.into_owned())
    });
    if let Some(token) = browser.session.clone() {
        if state.core.browser_session(&token).await.is_ok() {
            return browser.redirect(&after_sign_in(&state, return_to.as_deref()));
        }
    }
    let return_to = allowed_return(&state, return_to.as_deref()).unwrap_or_default();
    login_page(
        &state,
        browser,
        StatusCode::OK,
        return_to,
        String::new(),
        None,
    )
    .await
}

/// The sign-in form, with a passkey ceremony when passkeys are offered.
async fn login_page(
    state: &AppState,
    mut browser: Browser,
    status: StatusCode,
    return_to: String,
    username: String,
    error: Option<String>,
) -> Response {
    let passkey = if state.core.passkeys_enabled() {
        match state.core.start_passkey_sign_in().await {
            Ok(challenge) => Some(Ceremony {
                autofill: true,
                label: "Sign in with a passkey",
                ..Ceremony::new(challenge, "passkey-sign-in", "/login/passkey")
            }),
            Err(e) => return browser.error(e),
        }
    } else {
        None
    };
    let server = match state.core.default_server().await {
        Ok(server) => server,
        Err(e) => return browser.error(e),
    };
    let qr = match Nonce::parse(&browser.qr_nonce()) {
        Ok(nonce) => match state.core.browser_hsid(&server, &nonce).await {
            Ok(hsid) => Some(QrSignIn {
                events: format!("/servers/{server}/sessions/events?hsid={hsid}"),
            }),
            Err(e) => return browser.error(e),
        },
        Err(_) => None,
    };
    let page = LoginPage {
        csrf: browser.csrf_token(),
        return_to,
        username,
        error,
        passkey,
        qr,
    };
    browser.page(status, page)
}

/// GET /login/qr.png: this browser's login QR code (its family A browser session is made on
/// first sight; the code is the same until used or expired). The app is shown this browser's
/// address and user agent before the person confirms.
pub async fn qr_image(
    State(state): State<AppState>,
    browser: Browser,
    headers: HeaderMap,
    origin: RequestOrigin,
    Client(client): Client,
) -> Response {
    let Some(nonce) = browser.sent_qr_nonce().and_then(|n| Nonce::parse(n).ok()) else {
        return browser.error(Error::NotFound("open the sign-in page first".into()));
    };
    let server = match state.core.default_server().await {
        Ok(server) => server,
        Err(e) => return browser.error(e),
    };
    let base = match base_url_of(&state, &headers, &origin) {
        Ok(base) => base,
        Err(e) => return browser.error(Error::Invalid(e.message)),
    };
    let context = serde_json::json!({
        "sessioninfo": { "ip": client.ip, "useragent": client.user_agent }
    })
    .to_string();
    let png = match state
        .core
        .login_qr(&server, &nonce, &base, Some(context))
        .await
        .and_then(|payload| latchkey_core::crypto::qr::qr_png(payload.as_bytes(), 480))
    {
        Ok(png) => png,
        Err(e) => return browser.error(e),
    };
    (
        [
            (header::CONTENT_TYPE, "image/png"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        png,
    )
        .into_response()
}

#[derive(Deserialize)]
pub struct ContinueForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    return_to: String,
}

/// POST /login/app: the companion app confirmed this browser's login QR code; the page's
/// script posts this by itself when the status stream says so (or the person clicks).
pub async fn app_sign_in(
    State(state): State<AppState>,
    mut browser: Browser,
    Client(client): Client,
    body: Bytes,
) -> Response {
    let form: ContinueForm = match form(&body) {
        Ok(form) => form,
        Err(e) => return browser.error(e),
    };
    if !browser.csrf_matches(&form.csrf) {
        return browser.csrf_refused();
    }
    let return_to = allowed_return(&state, Some(&form.return_to)).unwrap_or_default();
    let server = match state.core.default_server().await {
        Ok(server) => server,
        Err(e) => return browser.error(e),
    };
    let claimed = match browser.sent_qr_nonce().map(Nonce::parse) {
        Some(Ok(nonce)) => state.core.claim_app_sign_in(&server, &nonce, client).await,
        _ => Err(Error::WrongState(
            "no login QR code was shown to this browser",
        )),
    };
    let (status, error) = match claimed {
        Ok(started) => {
            browser.set_session(&started.token);
            browser.clear_qr();
            return browser.redirect(&after_sign_in(&state, Some(&return_to)));
        }
        Err(Error::WrongState(_)) => (
            StatusCode::CONFLICT,
            "The app has not confirmed this sign-in yet: scan the code with it, confirm there, \
             then continue."
                .to_owned(),
        ),
        Err(Error::Invalid(message)) => (StatusCode::BAD_REQUEST, message),
        Err(e) => return browser.error(e),
    };
    login_page(
        &state,
        browser,
        status,
        return_to,
        String::new(),
        Some(error),
    )
    .await
}

/// POST /login: the password step.
pub async fn password(
    State(state): State<AppState>,
    mut browser: Browser,
    Client(client): Client,
    body: Bytes,
) -> Response {
    let form: PasswordForm = match form(&body) {
        Ok(form) => form,
        Err(e) => return browser.error(e),
    };
    if !browser.csrf_matches(&form.csrf) {
        return browser.csrf_refused();
    }
    let server = match state.core.default_server().await {
        Ok(server) => server,
        Err(e) => return browser.error(e),
    };
    let return_to = allowed_return(&state, Some(&form.return_to)).unwrap_or_default();
    let (status, error) = match state
        .core
        .password_login(&server, &form.username, &form.password, client)
        .await
    {
        Ok(started) => {
            browser.set_session(&started.token);
            return match started.mfa {
                None => browser.redirect(&after_sign_in(&state, Some(&return_to))),
                Some(kind) => {
                    let step = Step::new(&started.token, kind, return_to);
                    code_page(&state, browser, step, StatusCode::OK, None).await
                }
            };
        }
        Err(Error::CaptchaRequired { token, .. }) => {
            browser.set_session(&token);
            return captcha_page(browser, StatusCode::OK, return_to, None);
        }
        Err(Error::BadCredentials) => (
            StatusCode::UNAUTHORIZED,
            "The user name or password is wrong.".to_owned(),
        ),
        Err(Error::Invalid(message)) => (StatusCode::BAD_REQUEST, message),
        Err(e) => return browser.error(e),
    };
    login_page(
        &state,
        browser,
        status,
        return_to,
        form.username.clone(),
        Some(error),
    )
    .await
}

/// POST /login/passkey: a sign-in with a passkey alone (no user name typed).
pub async fn passkey_sign_in(
    State(state): State<AppState>,
    mut browser: Browser,
    Client(client): Client,
    body: Bytes,
) -> Response {
    let form: PasskeyForm = match form(&body) {
        Ok(form) => form,
        Err(e) => return browser.error(e),
    };
    if !browser.csrf_matches(&form.csrf) {
        return browser.csrf_refused();
    }
    let return_to = allowed_return(&state, Some(&form.return_to)).unwrap_or_default();
    let (status, error) = match state
        .core
        .finish_passkey_sign_in(&form.ticket, &form.credential, client)
        .await
    {
        Ok(started) => {
            browser.set_session(&started.token);
            return browser.redirect(&after_sign_in(&state, Some(&return_to)));
        }
        Err(Error::BadCredentials) => (
            StatusCode::UNAUTHORIZED,
            "That passkey is not one of an account here.".to_owned(),
        ),
        Err(Error::Invalid(message)) => (StatusCode::BAD_REQUEST, message),
        Err(e) => return browser.error(e),
    };
    login_page(
        &state,
        browser,
        status,
        return_to,
        String::new(),
        Some(error),
    )
    .await
}

/// A form post of a sign-in under way: its form, the pending session's token and the allowed
/// `return_to` it carries, or the answer already (malformed, CSRF refused, no sign-in).
// The error is the page to answer, made once per request: boxing it would buy nothing.
#[allow(clippy::result_large_err)]
fn step_form<T: serde::de::DeserializeOwned>(
    state: &AppState,
    browser: Browser,
    body: &Bytes,
    fields: impl Fn(&T) -> (&str, &str),
) -> Result<(Browser, T, String, String), Response> {
    let form: T = match form(body) {
        Ok(form) => form,
        Err(e) => return Err(browser.error(e)),
    };
    let (csrf, return_to) = fields(&form);
    if !browser.csrf_matches(csrf) {
        return Err(browser.csrf_refused());
    }
    let return_to = allowed_return(state, Some(return_to)).unwrap_or_default();
    match browser.session.clone() {
        Some(token) => Ok((browser, form, token, return_to)),
        None => Err(browser.error(Error::SessionInvalid)),
    }
}

/// A form post of a sign-in pending its second factor: [`step_form`]'s answer and the factor
/// the sign-in waits for.
// The error is the page to answer, made once per request: boxing it would buy nothing.
#[allow(clippy::result_large_err)]
async fn pending_step_form<T: serde::de::DeserializeOwned>(
    state: &AppState,
    browser: Browser,
    body: &Bytes,
    fields: impl Fn(&T) -> (&str, &str),
) -> Result<(Browser, T, String, MfaKind, String), Response> {
    let (browser, form, token, return_to) = step_form(state, browser, body, fields)?;
    match state.core.pending_second_factor(&token).await {
        Ok(kind) => Ok((browser, form, token, kind, return_to)),
        Err(e) => Err(browser.error(e)),
    }
}

/// POST /login/code: the TOTP code or PIN of a sign-in pending its second factor.
pub async fn code(State(state): State<AppState>, browser: Browser, body: Bytes) -> Response {
    let (mut browser, form, token, kind, return_to) =
        match pending_step_form(&state, browser, &body, |f: &CodeForm| {
            (&f.csrf, &f.return_to)
        })
        .await
        {
            Ok(found) => found,
            Err(answer) => return answer,
        };
    let step = Step::new(&token, kind, return_to);
    match state
        .core
        .second_factor(&token, kind, form.code.trim())
        .await
    {
        Ok(_) => browser.redirect(&after_sign_in(&state, Some(&step.return_to))),
        Err(Error::BadCredentials) => {
            // The last allowed wrong code ended the sign-in: start again.
            if state.core.pending_second_factor(&token).await.is_err() {
                browser.clear_session();
                return browser.error(Error::SessionInvalid);
            }
            let message = "That code is wrong.".to_owned();
            code_page(
                &state,
                browser,
                step,
                StatusCode::UNAUTHORIZED,
                Some(message),
            )
            .await
        }
        Err(Error::Invalid(message)) => {
            code_page(
                &state,
                browser,
                step,
                StatusCode::BAD_REQUEST,
                Some(message),
            )
            .await
        }
        Err(e) => browser.error(e),
    }
}

/// POST /login/passkey/second: a passkey in place of the code of a sign-in pending its second
/// factor.
pub async fn passkey_second_factor(
    State(state): State<AppState>,
    browser: Browser,
    body: Bytes,
) -> Response {
    let (browser, form, token, kind, return_to) =
        match pending_step_form(&state, browser, &body, |f: &PasskeyForm| {
            (&f.csrf, &f.return_to)
        })
        .await
        {
            Ok(found) => found,
            Err(answer) => return answer,
        };
    let step = Step::new(&token, kind, return_to);
    let (status, message) = match state
        .core
        .finish_passkey_second_factor(&token, &form.ticket, &form.credential)
        .await
    {
        Ok(_) => return browser.redirect(&after_sign_in(&state, Some(&step.return_to))),
        Err(Error::BadCredentials) => (
            StatusCode::UNAUTHORIZED,
            "That passkey is not one of this account.".to_owned(),
        ),
        Err(Error::Invalid(message)) => (StatusCode::BAD_REQUEST, message),
        Err(e) => return browser.error(e),
    };
    code_page(&state, browser, step, status, Some(message)).await
}

/// POST /login/captcha: the CAPTCHA answer of a sign-in the CAPTCHA rule holds.
pub async fn captcha(State(state): State<AppState>, browser: Browser, body: Bytes) -> Response {
    let (mut browser, form, token, return_to) =
        match step_form(&state, browser, &body, |f: &CaptchaForm| {
            (&f.csrf, &f.return_to)
        }) {
            Ok(found) => found,
            Err(answer) => return answer,
        };
    match state.core.unblock_captcha(&token, &form.answer).await {
        Ok(unblocked) => match unblocked.mfa {
            None => browser.redirect(&after_sign_in(&state, Some(&return_to))),
            Some(kind) => {
                let step = Step::new(&token, kind, return_to);
                code_page(&state, browser, step, StatusCode::OK, None).await
            }
        },
        Err(Error::BadCredentials) => {
            if state.core.captcha_pending(&token).await {
                let message = "That answer is wrong: try the new image.".to_owned();
                return captcha_page(browser, StatusCode::UNAUTHORIZED, return_to, Some(message));
            }
            // A wrong password kept with the session, or the last allowed answer: the sign-in
            // ended, without telling which part was wrong.
            browser.clear_session();
            let error = "The user name, password or CAPTCHA answer was wrong. Sign in again.";
            login_page(
                &state,
                browser,
                StatusCode::UNAUTHORIZED,
                return_to,
                String::new(),
                Some(error.into()),
            )
            .await
        }
        Err(Error::Invalid(message)) => {
            captcha_page(browser, StatusCode::BAD_REQUEST, return_to, Some(message))
        }
        Err(e) => browser.error(e),
    }
}

/// GET /login/captcha.png: a new challenge for the sign-in the CAPTCHA rule holds.
pub async fn captcha_image(State(state): State<AppState>, browser: Browser) -> Response {
    let Some(token) = browser.session.clone() else {
        return browser.error(Error::SessionInvalid);
    };
    match state.core.captcha_image(&token).await {
        Ok(png) => (
            [
                (header::CONTENT_TYPE, "image/png"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            png,
        )
            .into_response(),
        Err(e) => browser.error(e),
    }
}

/// A sign-in waiting for its second factor, as the code page needs it.
struct Step<'a> {
    token: &'a str,
    kind: MfaKind,
    return_to: String,
}

impl<'a> Step<'a> {
    fn new(token: &'a str, kind: MfaKind, return_to: String) -> Self {
        Step {
            token,
            kind,
            return_to,
        }
    }
}

/// The second step's page: the code field, and a passkey in its place when the user has one.
async fn code_page(
    state: &AppState,
    mut browser: Browser,
    step: Step<'_>,
    status: StatusCode,
    error: Option<String>,
) -> Response {
    let (label, hint) = match step.kind {
        MfaKind::Totp => (
            "Code from your authenticator app",
            "The 6 digits your authenticator app shows for this account now.",
        ),
        MfaKind::Pin => ("PIN", "The PIN you set for this account."),
    };
    let passkey = match state.core.start_passkey_second_factor(step.token).await {
        Ok(challenge) => {
            challenge.map(|c| Ceremony::new(c, "passkey-second-factor", "/login/passkey/second"))
        }
        Err(e) => return browser.error(e),
    };
    let page = CodePage {
        csrf: browser.csrf_token(),
        return_to: step.return_to,
        label,
        hint,
        error,
        passkey,
    };
    browser.page(status, page)
}

fn captcha_page(
    mut browser: Browser,
    status: StatusCode,
    return_to: String,
    error: Option<String>,
) -> Response {
    let page = CaptchaPage {
        csrf: browser.csrf_token(),
        return_to,
        error,
    };
    browser.page(status, page)
}
