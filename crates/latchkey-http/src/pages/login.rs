//! `/login`: the password step, then the second factor or the CAPTCHA when the rules ask for
//! them — family D's flows, driven by plain HTML forms — and passkeys, as the first factor
//! (a button, and the user name field's autofill) or in place of the code.

use askama::Template;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use latchkey_core::model::MfaKind;
use latchkey_core::Error;
use serde::Deserialize;

use super::{after_sign_in, allowed_return, Browser, Ceremony};
use crate::extract::Client;
use crate::state::AppState;

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    csrf: String,
    return_to: String,
    username: String,
    error: Option<String>,
    passkey: Option<Ceremony>,
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
    let page = LoginPage {
        csrf: browser.csrf_token(),
        return_to,
        username,
        error,
        passkey,
    };
    browser.page(status, page)
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

/// POST /login/code: the TOTP code or PIN of a sign-in pending its second factor.
pub async fn code(State(state): State<AppState>, browser: Browser, body: Bytes) -> Response {
    let (mut browser, form, token, return_to) =
        match step_form(&state, browser, &body, |f: &CodeForm| {
            (&f.csrf, &f.return_to)
        }) {
            Ok(found) => found,
            Err(answer) => return answer,
        };
    let kind = match state.core.pending_second_factor(&token).await {
        Ok(kind) => kind,
        Err(e) => return browser.error(e),
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
    let (browser, form, token, return_to) =
        match step_form(&state, browser, &body, |f: &PasskeyForm| {
            (&f.csrf, &f.return_to)
        }) {
            Ok(found) => found,
            Err(answer) => return answer,
        };
    let kind = match state.core.pending_second_factor(&token).await {
        Ok(kind) => kind,
        Err(e) => return browser.error(e),
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
