//! latchkey's own pages for people in a browser (docs/browser.md): server-rendered HTML from
//! askama templates (`templates/`, checked at compile time), one stylesheet embedded in the
//! binary, and no script at all for the password, code and CAPTCHA steps.
//!
//! Passkeys are the one place a page runs a script (`assets/latchkey.js`, served from here:
//! the policy allows no inline script): the WebAuthn ceremony's options ride in the page as a
//! JSON data block, the browser's answer is posted back with an ordinary form.
//!
//! A sign-in runs family D's core flows ([`latchkey_core::services::quatrix`]: the same failure
//! counts, CAPTCHA rule, one-time codes and timing) and ends with cookie `latchkey_session`
//! holding the session's token: an ordinary session of the model, listed and revoked by
//! family C. While a sign-in waits for its second factor or CAPTCHA, the cookie holds the
//! pending session's token (it is refused everywhere until the step is done).
//!
//! Every form carries a CSRF token, compared in constant time: with a session cookie, a hash of
//! the session's token (domain-separated; only a holder of the HttpOnly cookie can know it);
//! before any session (the password form), a random value in cookie `latchkey_csrf` repeated in
//! the form (double submit). A post whose `Sec-Fetch-Site` says it came from another site —
//! a sibling subdomain included, which could toss cookies — is refused whatever its token.
//! Every page is sent with a strict Content-Security-Policy (nothing inline, nothing from
//! elsewhere; forms may post only here and redirect on to the allowed return origins),
//! `frame-ancestors 'none'` and `Cache-Control: no-store`.

mod account;
mod console;
pub mod forward_auth;
mod login;

use askama::Template;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use cookie::{Cookie, SameSite};
use latchkey_core::crypto::secret::{random_bytes, SecretHash};
use latchkey_core::services::passkeys::PasskeyChallenge;
use latchkey_core::Error;
use subtle::ConstantTimeEq;

use crate::error::{ApiError, Family};
use crate::extract::RequestOrigin;
use crate::routes::Routes;
use crate::state::AppState;

pub const SESSION_COOKIE: &str = "latchkey_session";
pub const CSRF_COOKIE: &str = "latchkey_csrf";
/// The nonce of this browser's family A browser session (the sign-in page's login QR code).
pub const QR_COOKIE: &str = "latchkey_qr";

/// The name a browser-bound cookie has: with the `__Host-` prefix whenever cookies are
/// `Secure`, so that no other host (a sibling subdomain) can plant one the browser would send.
fn host_cookie(name: &'static str, secure: bool) -> &'static str {
    match (name, secure) {
        (CSRF_COOKIE, true) => "__Host-latchkey_csrf",
        (QR_COOKIE, true) => "__Host-latchkey_qr",
        (name, _) => name,
    }
}

const STYLESHEET: &str = include_str!("../../assets/latchkey.css");
const SCRIPT: &str = include_str!("../../assets/latchkey.js");

pub fn routes() -> Routes {
    Routes::new()
        .route("/login", get(login::page).post(login::password))
        .route("/login/code", post(login::code))
        .route("/login/captcha", post(login::captcha))
        .route("/login/captcha.png", get(login::captcha_image))
        .route("/login/qr.png", get(login::qr_image))
        .route("/login/app", post(login::app_sign_in))
        .route("/login/passkey", post(login::passkey_sign_in))
        .route("/login/passkey/second", post(login::passkey_second_factor))
        .route("/logout", post(account::sign_out))
        .route("/account", get(account::page))
        .route("/account/sessions/revoke", post(account::revoke))
        .route(
            "/account/sessions/revoke-others",
            post(account::revoke_others),
        )
        .route("/account/password", post(account::change_password))
        .route("/account/pin", post(account::set_pin))
        .route("/account/pin/remove", post(account::remove_pin))
        .route("/account/totp/start", post(account::start_totp))
        .route("/account/totp/confirm", post(account::confirm_totp))
        .route("/account/totp/remove", post(account::remove_totp))
        .route("/account/passkeys/start", post(account::start_passkey))
        .route("/account/passkeys/finish", post(account::finish_passkey))
        .route("/account/passkeys/rename", post(account::rename_passkey))
        .route("/account/passkeys/remove", post(account::remove_passkey))
        .route("/admin", get(console::home))
        .route("/admin/console/users", get(console::users))
        .route(
            "/admin/console/user",
            get(console::user).post(console::user_action),
        )
        .route("/admin/console/accounts", get(console::accounts))
        .route("/admin/console/account", post(console::account_action))
        .route(
            "/admin/console/keys",
            get(console::keys).post(console::create_key),
        )
        .route("/admin/console/grant", post(console::grant))
        .route(
            "/admin/console/server",
            get(console::server).post(console::update_server),
        )
        .route("/admin/console/audit", get(console::audit))
        .direct_get(
            "/forward-auth",
            Some(forward_auth::check_now),
            forward_auth::check,
        )
        .route("/assets/latchkey.css", get(stylesheet))
        .route("/assets/latchkey.js", get(script))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", STYLESHEET)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// A passkey ceremony as a page shows it (`templates/passkey_form.html`).
pub struct Ceremony {
    /// The form's id; its options are in the element `{form_id}-options`.
    form_id: &'static str,
    action: &'static str,
    /// `create` (registration) or `get` (sign-in).
    mode: &'static str,
    /// Offered in the user name field's autofill too (conditional mediation).
    autofill: bool,
    label: &'static str,
    ticket: String,
    /// JSON for a `<script type="application/json">` block: `<` is escaped, so no text in it
    /// can close the element.
    options: String,
}

impl Ceremony {
    fn new(challenge: PasskeyChallenge, form_id: &'static str, action: &'static str) -> Self {
        Ceremony {
            form_id,
            action,
            mode: "get",
            autofill: false,
            label: "Use a passkey",
            ticket: challenge.ticket,
            options: challenge.options.replace('<', "\\u003c"),
        }
    }
}

/// What a page request brings: its cookies, and whether cookies must be `Secure`.
pub struct Browser {
    /// The `latchkey_session` cookie's value.
    pub session: Option<String>,
    /// The `latchkey_csrf` cookie's value.
    csrf: Option<String>,
    /// The `latchkey_qr` cookie's value.
    qr: Option<String>,
    /// The public URL is https (configured, served over TLS, or said by a trusted proxy).
    secure: bool,
    domain: Option<String>,
    /// `Sec-Fetch-Site` as the browser sent it.
    fetch_site: Option<String>,
    /// The pages' Content-Security-Policy (`form-action` names the allowed return origins: a
    /// form post's redirect is held to it too).
    policy: String,
    /// Cookies to set with the answer.
    set: Vec<String>,
}

impl FromRequestParts<AppState> for Browser {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let session = cookie(&parts.headers, SESSION_COOKIE).map(str::to_owned);
        let secure = match &state.core.settings.public_url {
            Some(url) => url.starts_with("https://"),
            None => {
                state.options.tls.is_some()
                    || RequestOrigin::of(&parts.headers, &state.options)
                        .proto
                        .is_some_and(|p| p.eq_ignore_ascii_case("https"))
            }
        };
        // A browser sending two of these has had one planted: it gets neither.
        let csrf = cookie_once(&parts.headers, host_cookie(CSRF_COOKIE, secure));
        let qr = cookie_once(&parts.headers, host_cookie(QR_COOKIE, secure));
        let mut form_action = "'self'".to_owned();
        for origin in &state.options.allowed_return_origins {
            form_action.push(' ');
            form_action.push_str(origin);
        }
        Ok(Browser {
            session,
            csrf: csrf.filter(|c| c.len() == 43),
            qr: qr.filter(|c| c.len() == 43),
            secure,
            domain: state.options.cookie_domain.clone(),
            fetch_site: crate::extract::header_str(&parts.headers, "sec-fetch-site")
                .map(str::to_ascii_lowercase),
            policy: format!(
                "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; \
                 img-src 'self'; form-action {form_action}; frame-ancestors 'none'; \
                 base-uri 'none'"
            ),
            set: Vec::new(),
        })
    }
}

impl Browser {
    /// The CSRF token for this page's forms: bound to the session when there is one, else the
    /// browser's `latchkey_csrf` cookie (set now when it has none).
    pub fn csrf_token(&mut self) -> String {
        if let Some(session) = &self.session {
            return session_bound(session);
        }
        if let Some(token) = &self.csrf {
            return token.clone();
        }
        let token = URL_SAFE_NO_PAD.encode(random_bytes::<32>());
        let cookie = Cookie::build((host_cookie(CSRF_COOKIE, self.secure), token.clone()))
            .http_only(true)
            .secure(self.secure)
            .same_site(SameSite::Strict)
            .path("/");
        self.set.push(cookie.to_string());
        self.csrf = Some(token.clone());
        token
    }

    /// The nonce naming this browser's family A browser session (its login QR code): the
    /// `latchkey_qr` cookie, set now when the browser has none. Only this browser knows it.
    pub fn qr_nonce(&mut self) -> String {
        if let Some(nonce) = &self.qr {
            return nonce.clone();
        }
        let nonce = URL_SAFE_NO_PAD.encode(random_bytes::<32>());
        let cookie = Cookie::build((host_cookie(QR_COOKIE, self.secure), nonce.clone()))
            .http_only(true)
            .secure(self.secure)
            .same_site(SameSite::Lax)
            .path("/");
        self.set.push(cookie.to_string());
        self.qr = Some(nonce.clone());
        nonce
    }

    /// The nonce of the `latchkey_qr` cookie, when the browser sent one.
    pub fn sent_qr_nonce(&self) -> Option<&str> {
        self.qr.as_deref()
    }

    /// Takes the `latchkey_qr` cookie away (its browser session was signed in with).
    pub fn clear_qr(&mut self) {
        let cookie = Cookie::build((host_cookie(QR_COOKIE, self.secure), ""))
            .http_only(true)
            .secure(self.secure)
            .same_site(SameSite::Lax)
            .path("/")
            .max_age(cookie::time::Duration::ZERO);
        self.qr = None;
        self.set.push(cookie.to_string());
    }

    /// Is `sent` (a form's hidden field) this browser's CSRF token, from a page of this site?
    pub fn csrf_matches(&self, sent: &str) -> bool {
        if self
            .fetch_site
            .as_deref()
            .is_some_and(|site| site != "same-origin" && site != "none")
        {
            return false;
        }
        let expected = match &self.session {
            Some(session) => session_bound(session),
            None => match &self.csrf {
                Some(token) => token.clone(),
                None => return false,
            },
        };
        bool::from(expected.as_bytes().ct_eq(sent.as_bytes()))
    }

    /// Gives the browser a session token (the sign-in's, pending or done).
    pub fn set_session(&mut self, token: &str) {
        let mut cookie = Cookie::build((SESSION_COOKIE, token.to_owned()))
            .http_only(true)
            .secure(self.secure)
            .same_site(SameSite::Lax)
            .path("/");
        if let Some(domain) = &self.domain {
            cookie = cookie.domain(domain.clone());
        }
        self.session = Some(token.to_owned());
        self.set.push(cookie.to_string());
    }

    /// Takes the session cookie away.
    pub fn clear_session(&mut self) {
        let mut cookie = Cookie::build((SESSION_COOKIE, ""))
            .http_only(true)
            .secure(self.secure)
            .same_site(SameSite::Lax)
            .path("/")
            .max_age(cookie::time::Duration::ZERO);
        if let Some(domain) = &self.domain {
            cookie = cookie.domain(domain.clone());
        }
        self.session = None;
        self.set.push(cookie.to_string());
    }

    /// A page, with this browser's new cookies and the pages' security headers.
    pub fn page(self, status: StatusCode, page: impl Template) -> Response {
        match page.render() {
            Ok(html) => {
                let mut response = (status, html).into_response();
                let headers = response.headers_mut();
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                );
                self.finish(headers);
                response
            }
            Err(e) => {
                tracing::error!(error = %e, "rendering a page failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
            }
        }
    }

    /// A 303 to `to` (after a form post), with this browser's new cookies.
    pub fn redirect(self, to: &str) -> Response {
        let mut response = Redirect::to(to).into_response();
        self.finish(response.headers_mut());
        response
    }

    /// A page telling what went wrong (a domain error, in words for people).
    pub fn error(self, e: Error) -> Response {
        let api = ApiError::from_core(Family::Own, e);
        let message = match api.status {
            StatusCode::UNAUTHORIZED => {
                "Your sign-in has expired or was ended. Sign in again.".to_owned()
            }
            _ => api.message.clone(),
        };
        let mut response = self.page(
            api.status,
            Message {
                title: "Something went wrong",
                message,
            },
        );
        for (name, value) in api.headers {
            response.headers_mut().insert(name, value);
        }
        response
    }

    /// The answer to a form post without the browser's CSRF token.
    pub fn csrf_refused(self) -> Response {
        self.page(
            StatusCode::FORBIDDEN,
            Message {
                title: "This form has expired",
                message: "The form was not sent from this site's current page. Go back, reload \
                          the page and try again."
                    .to_owned(),
            },
        )
    }

    fn finish(self, headers: &mut HeaderMap) {
        for cookie in self.set {
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                headers.append(header::SET_COOKIE, value);
            }
        }
        security_headers(headers, &self.policy);
    }
}

/// The security headers of every page.
fn security_headers(headers: &mut HeaderMap, policy: &str) {
    if let Ok(policy) = HeaderValue::from_str(policy) {
        headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// A page for an answer made before any page handler ran (the guard's 429, 413 and 431, the
/// request timeout's 503, a panic's 500, an unknown page's 404): the page routes answer in
/// HTML whatever stopped them.
pub fn status_page(status: StatusCode, message: String) -> Response {
    let title = match status {
        StatusCode::TOO_MANY_REQUESTS => "Too many attempts",
        StatusCode::SERVICE_UNAVAILABLE => "Busy: try again shortly",
        StatusCode::NOT_FOUND => "No such page",
        _ => "Something went wrong",
    };
    let html = match (Message { title, message }).render() {
        Ok(html) => html,
        Err(e) => {
            tracing::error!(error = %e, "rendering a page failed");
            return (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response();
        }
    };
    let mut response = (status, html).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    security_headers(
        headers,
        "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; \
         base-uri 'none'",
    );
    response
}

/// The values of every cookie `name` the request carries, in order, as bytes. Read in place,
/// as the cookie crate's `Cookie::split_parse` reads them (each `Cookie` header split at `;`,
/// each pair at its first `=`, name and value trimmed, no decoding) without building each
/// cookie: `/forward-auth` reads the session cookie on every request it is asked, so the
/// separators are found by memchr (a word at a time) and only ASCII whitespace is trimmed.
fn cookie_bytes<'h>(headers: &'h HeaderMap, name: &'h str) -> impl Iterator<Item = &'h [u8]> {
    headers
        .get_all(header::COOKIE)
        .into_iter()
        .flat_map(|value| {
            let value = value.as_bytes();
            let mut start = 0;
            memchr::memchr_iter(b';', value)
                .chain(std::iter::once(value.len()))
                .map(move |end| {
                    let pair = &value[start..end];
                    start = end + 1;
                    pair
                })
        })
        .filter_map(move |pair| {
            let equals = memchr::memchr(b'=', pair)?;
            (pair[..equals].trim_ascii() == name.as_bytes())
                .then(|| pair[equals + 1..].trim_ascii())
        })
}

/// [`cookie_bytes`] as text: a value that is not UTF-8 is skipped (no cookie of latchkey's is).
fn cookie_values<'h>(headers: &'h HeaderMap, name: &'h str) -> impl Iterator<Item = &'h str> {
    cookie_bytes(headers, name).filter_map(|value| std::str::from_utf8(value).ok())
}

/// Whether a cookie value is one latchkey reads: 1 to 256 bytes.
fn usable(value: &[u8]) -> bool {
    !value.is_empty() && value.len() <= 256
}

/// The value of cookie `name` when the request carries exactly one, of 1 to 256 bytes.
fn cookie_once(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut values = cookie_values(headers, name);
    let value = values.next()?;
    values
        .next()
        .is_none()
        .then_some(value)
        .filter(|value| usable(value.as_bytes()))
        .map(str::to_owned)
}

/// The value of cookie `name` when it is 1 to 256 bytes (of several with that name, the last).
pub fn cookie<'h>(headers: &'h HeaderMap, name: &'h str) -> Option<&'h str> {
    cookie_values(headers, name)
        .last()
        .filter(|value| usable(value.as_bytes()))
}

/// [`cookie`] as bytes, for a value that is only compared (a session token is hashed): of
/// several with that name the last, UTF-8 or not.
pub fn cookie_raw<'h>(headers: &'h HeaderMap, name: &'h str) -> Option<&'h [u8]> {
    cookie_bytes(headers, name)
        .last()
        .filter(|value| usable(value))
}

/// The CSRF token of a session: a domain-separated hash of its token.
fn session_bound(session_token: &str) -> String {
    let hash = SecretHash::of(format!("latchkey-csrf:{session_token}").as_bytes());
    URL_SAFE_NO_PAD.encode(hash.0)
}

/// A page with one message.
#[derive(Template)]
#[template(path = "message.html")]
struct Message {
    title: &'static str,
    message: String,
}

/// `return_to` when its origin is allowed (config `allowed_return_origins`), else `None`.
pub fn allowed_return(state: &AppState, return_to: Option<&str>) -> Option<String> {
    // latchkey's own console: a fixed path, never a way elsewhere.
    if return_to?.trim() == "/admin" {
        return Some("/admin".to_owned());
    }
    let url = url::Url::parse(return_to?.trim()).ok()?;
    if !matches!(url.scheme(), "http" | "https") || !url.username().is_empty() {
        return None;
    }
    let origin = url.origin().ascii_serialization();
    state
        .options
        .allowed_return_origins
        .iter()
        .any(|allowed| allowed.eq_ignore_ascii_case(&origin))
        .then(|| url.to_string())
}

/// Where a finished sign-in goes: the allowed `return_to`, else the account page.
pub fn after_sign_in(state: &AppState, return_to: Option<&str>) -> String {
    allowed_return(state, return_to).unwrap_or_else(|| "/account".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.append(header::COOKIE, value);
            }
        }
        headers
    }

    /// What the cookie crate finds for `name` in the same headers.
    fn by_the_cookie_crate(values: &[&str], name: &str) -> Vec<String> {
        values
            .iter()
            .flat_map(|value| Cookie::split_parse(*value).flatten())
            .filter(|c| c.name() == name)
            .map(|c| c.value().to_owned())
            .collect()
    }

    #[test]
    fn cookies_are_read_as_the_cookie_crate_reads_them() {
        let cases: &[&[&str]] = &[
            &[],
            &[""],
            &[";;"],
            &["latchkey_session=abc"],
            &["  latchkey_session = abc  ; other=1"],
            &["other=1; latchkey_session=abc=def; x"],
            &["=abc; latchkey_session"],
            &["latchkey_session=; latchkey_session=two"],
            &["latchkey_session=one", "a=b; latchkey_session=\"two\""],
            &["latchkey_sessionx=1; xlatchkey_session=2; Latchkey_Session=3"],
            &["latchkey_session=%20encoded%3D"],
        ];
        for values in cases {
            let headers = headers(values);
            let found: Vec<&str> = cookie_values(&headers, SESSION_COOKIE).collect();
            assert_eq!(
                found,
                by_the_cookie_crate(values, SESSION_COOKIE),
                "{values:?}"
            );
        }
    }

    #[test]
    fn the_last_usable_value_is_the_cookie_and_exactly_one_is_the_cookie_once() {
        let long = format!("latchkey_session={}", "a".repeat(257));
        assert_eq!(
            cookie(
                &headers(&["latchkey_session=one; latchkey_session=two"]),
                SESSION_COOKIE
            ),
            Some("two")
        );
        assert_eq!(
            cookie(&headers(&["latchkey_session="]), SESSION_COOKIE),
            None
        );
        assert_eq!(cookie(&headers(&[&long]), SESSION_COOKIE), None);
        assert_eq!(cookie_raw(&headers(&[&long]), SESSION_COOKIE), None);
        assert_eq!(
            cookie_raw(
                &headers(&["latchkey_session=one; x=1; latchkey_session= two "]),
                SESSION_COOKIE
            ),
            Some(&b"two"[..])
        );
        assert_eq!(
            cookie_once(
                &headers(&["latchkey_session=one; latchkey_session=two"]),
                SESSION_COOKIE
            ),
            None
        );
        assert_eq!(
            cookie_once(&headers(&["a=1", "latchkey_session=one"]), SESSION_COOKIE),
            Some("one".to_owned())
        );
    }
}
