//! `/forward-auth`, for reverse proxies (nginx `auth_request`, Traefik ForwardAuth, Caddy
//! `forward_auth`): 200 with `Remote-User`, `Remote-Session` and `Remote-Amr` for a browser
//! with a live `latchkey_session` cookie, else 401 — or, asked with `rd=1` by a trusted proxy
//! that forwarded the original request's scheme, host and URI, 302 to `/login` with that URL as
//! `return_to`. A hot path: the session check and the identity come from memory once known.

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use uuid::Uuid;

use latchkey_core::Error;

use super::{cookie, SESSION_COOKIE};
use crate::error::{ApiError, Family};
use crate::extract::header_str;
use crate::state::AppState;

/// The headers of a signed-in answer (named once: a name given as text is parsed per request).
const REMOTE_USER: HeaderName = HeaderName::from_static("remote-user");
const REMOTE_SESSION: HeaderName = HeaderName::from_static("remote-session");
const REMOTE_AMR: HeaderName = HeaderName::from_static("remote-amr");

#[utoipa::path(get, operation_id = "forwardAuth", path = "/forward-auth", tag = "browser sign-in",
    security(("session_cookie" = [])),
    params(("rd" = Option<String>, Query,
        description = "`1`: answer 302 to /login (with the original URL as return_to) when a trusted proxy forwarded it")),
    responses(
        (status = 200, description = "Signed in: the identity, for the proxy to pass on",
            headers(
                ("Remote-User" = String, description = "The user id"),
                ("Remote-Session" = String, description = "The session id"),
                ("Remote-Amr" = String, description = "The methods used, comma-separated (pwd, otp, pin, hwk)"),
            )),
        (status = 302, description = "Not signed in, and a trusted proxy asked for the redirect",
            headers(("Location" = String, description = "/login?return_to=<original URL>"))),
        (status = 401, description = "Not signed in (no body)"),
    ))]
pub async fn check(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    // Only the session cookie is read (a hot path: no page machinery, and the request is
    // read in place rather than its headers copied).
    let headers = request.headers();
    if let Some(token) = cookie(headers, SESSION_COOKIE) {
        let found = match state.core.identity_of(token).await {
            Ok(identity) => Some(identity),
            Err(Error::SessionInvalid) => None,
            // Not initialised, overloaded, the store unreachable: not the client's fault.
            Err(e) => return ApiError::from_core(Family::Own, e).into_response(),
        };
        if let Some(identity) = found {
            let mut amr = String::new();
            for method in &identity.methods {
                if !amr.is_empty() {
                    amr.push(',');
                }
                amr.push_str(method.as_str());
            }
            let mut session = Uuid::encode_buffer();
            let mut response = StatusCode::OK.into_response();
            let out = response.headers_mut();
            for (name, value) in [
                (REMOTE_USER, identity.userid.as_str()),
                (
                    REMOTE_SESSION,
                    identity.session_id.hyphenated().encode_lower(&mut session),
                ),
                (REMOTE_AMR, amr.as_str()),
            ] {
                if let Ok(value) = HeaderValue::from_str(value) {
                    out.insert(name, value);
                }
            }
            out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            return response;
        }
    }
    let wants_redirect = request.uri().query().is_some_and(|q| {
        url::form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "rd" && v == "1")
    });
    if wants_redirect && state.options.trusted_proxies.trusts(peer.ip()) {
        if let Some(original) = original_url(headers) {
            let login = match &state.core.settings.public_url {
                Some(base) => format!("{base}/login"),
                None => "/login".to_owned(),
            };
            let location = format!(
                "{login}?return_to={}",
                url::form_urlencoded::byte_serialize(original.as_bytes()).collect::<String>()
            );
            if let Ok(location) = HeaderValue::from_str(&location) {
                let mut response = StatusCode::FOUND.into_response();
                response.headers_mut().insert(header::LOCATION, location);
                response
                    .headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                return response;
            }
        }
    }
    let mut response = StatusCode::UNAUTHORIZED.into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The URL the proxy was asked for: `X-Forwarded-Proto://X-Forwarded-Host` + `X-Forwarded-Uri`
/// (the caller checked that the proxy is trusted).
fn original_url(headers: &HeaderMap) -> Option<String> {
    let proto = header_str(headers, "x-forwarded-proto")?.trim();
    let host = header_str(headers, "x-forwarded-host")?.trim();
    let uri = header_str(headers, "x-forwarded-uri").unwrap_or("/").trim();
    let url = url::Url::parse(&format!("{proto}://{host}{uri}")).ok()?;
    matches!(url.scheme(), "http" | "https").then(|| url.to_string())
}
