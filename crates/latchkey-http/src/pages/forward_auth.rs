//! `/forward-auth`, for reverse proxies (nginx `auth_request`, Traefik ForwardAuth, Caddy
//! `forward_auth`): 200 with `Remote-User`, `Remote-Session` and `Remote-Amr` for a browser
//! with a live `latchkey_session` cookie, else 401 — or, asked with `rd=1` by a trusted proxy
//! that forwarded the original request's scheme, host and URI, 302 to `/login` with that URL as
//! `return_to`. A hot path: the session check and the identity come from memory once known.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use latchkey_core::model::{AuthMethod, Identity, Methods};
use latchkey_core::Error;

use super::{cookie_raw, SESSION_COOKIE};
use crate::error::{ApiError, Family};
use crate::extract::header_str;
use crate::state::AppState;

/// The headers of a signed-in answer (named once: a name given as text is parsed per request).
const REMOTE_USER: HeaderName = HeaderName::from_static("remote-user");
const REMOTE_SESSION: HeaderName = HeaderName::from_static("remote-session");
const REMOTE_AMR: HeaderName = HeaderName::from_static("remote-amr");

/// The identity headers' values (`Remote-User`, `Remote-Session`, `Remote-Amr`) of a session;
/// `None`: a value that is not a header's. Made for each answer from the identity the core
/// keeps with the cached session: copies of a few bytes, where values shared between answers
/// (reference-counted) cost a write to memory another core last touched on every answer.
fn identity_values(identity: &Identity) -> [Option<HeaderValue>; 3] {
    let mut session = Uuid::encode_buffer();
    [
        HeaderValue::from_str(identity.userid.as_str()).ok(),
        HeaderValue::from_str(identity.session_id.hyphenated().encode_lower(&mut session)).ok(),
        amr(identity.methods),
    ]
}

/// `Remote-Amr`: the methods, comma-separated (one method: a fixed value, nothing copied).
fn amr(methods: Methods) -> Option<HeaderValue> {
    let mut used = methods.iter();
    match (used.next(), used.next()) {
        (Some(method), None) => Some(HeaderValue::from_static(method.as_str())),
        _ => HeaderValue::from_str(&AuthMethod::join(methods.iter())).ok(),
    }
}

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
pub async fn check(State(state): State<AppState>, request: Request) -> Response {
    // Only the session cookie is read (a hot path: no page machinery, and the request is
    // read in place rather than its headers copied).
    let headers = request.headers();
    if let Some(token) = cookie_raw(headers, SESSION_COOKIE) {
        match state.core.browser_identity(token, identity_values).await {
            Ok(values) => return signed_in(values),
            Err(Error::SessionInvalid) => {}
            // Not initialised, overloaded, the store unreachable: not the client's fault.
            Err(e) => return ApiError::from_core(Family::Own, e).into_response(),
        }
    }
    let wants_redirect = request.uri().query().is_some_and(|q| {
        url::form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "rd" && v == "1")
    });
    // The peer address is read only here (a signed-in answer does not need it).
    let peer = crate::serve::peer().map(|peer| peer.ip());
    if wants_redirect && peer.is_some_and(|ip| state.options.trusted_proxies.trusts(ip)) {
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

/// [`check`] when memory settles it (crate::routes): the session is cached with its identity.
pub fn check_now(request: &Request, state: &AppState) -> Option<Response> {
    let token = cookie_raw(request.headers(), SESSION_COOKIE)?;
    let values = state.core.browser_identity_now(token, identity_values)?;
    Some(signed_in(values))
}

/// The answer for a signed-in browser: its identity's headers.
fn signed_in(values: [Option<HeaderValue>; 3]) -> Response {
    let mut response = StatusCode::OK.into_response();
    let out = response.headers_mut();
    for (name, value) in [REMOTE_USER, REMOTE_SESSION, REMOTE_AMR]
        .into_iter()
        .zip(values)
    {
        if let Some(value) = value {
            out.append(name, value);
        }
    }
    out.append(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use latchkey_core::model::ids::UserId;

    #[test]
    fn an_identity_is_rendered_into_its_three_header_values() {
        let session_id = Uuid::new_v4();
        let mut identity = Identity {
            session_id,
            user_id: Uuid::new_v4(),
            userid: UserId::parse("josé@example.com").unwrap(),
            methods: [AuthMethod::Pwd, AuthMethod::Otp].into_iter().collect(),
        };
        let values = |identity: &Identity| -> Vec<Vec<u8>> {
            identity_values(identity)
                .iter()
                .map(|v| v.as_ref().unwrap().as_bytes().to_vec())
                .collect()
        };
        assert_eq!(
            values(&identity),
            [
                "josé@example.com".as_bytes().to_vec(),
                session_id.hyphenated().to_string().into_bytes(),
                b"pwd,otp".to_vec(),
            ]
        );
        identity.methods = [AuthMethod::Hwk].into_iter().collect();
        assert_eq!(values(&identity)[2], b"hwk");
    }
}
