//! `/forward-auth`, for reverse proxies (nginx `auth_request`, Traefik ForwardAuth, Caddy
//! `forward_auth`): 200 with `Remote-User`, `Remote-Session` and `Remote-Amr` for a browser
//! with a live `latchkey_session` cookie, else 401 — or, asked with `rd=1` by a trusted proxy
//! that forwarded the original request's scheme, host and URI, 302 to `/login` with that URL as
//! `return_to`. A hot path: the session check and the identity come from memory once known.

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use quick_cache::sync::Cache;
use std::net::SocketAddr;
use std::sync::Arc;
use uuid::Uuid;

use latchkey_core::model::Identity;
use latchkey_core::Error;

use super::{cookie, SESSION_COOKIE};
use crate::error::{ApiError, Family};
use crate::extract::header_str;
use crate::state::AppState;

/// The headers of a signed-in answer (named once: a name given as text is parsed per request).
const REMOTE_USER: HeaderName = HeaderName::from_static("remote-user");
const REMOTE_SESSION: HeaderName = HeaderName::from_static("remote-session");
const REMOTE_AMR: HeaderName = HeaderName::from_static("remote-amr");

/// Sessions whose answer is kept, at most (about 120 bytes each).
const CAPACITY: usize = 100_000;

/// The identity headers' values of one session (`Remote-User`, `Remote-Session`, `Remote-Amr`)
/// rendered once into one text, with where the second and third start. An answer copies them
/// into its own header values: sharing them instead (reference-counted header values) cost a
/// write to memory another core last touched on every answer, which measured as more than the
/// three small copies.
#[derive(Clone)]
struct ProxyIdentity {
    text: Arc<str>,
    starts: [usize; 2],
}

impl ProxyIdentity {
    fn of(identity: &Identity) -> Self {
        let amr: Vec<&str> = identity.methods.iter().map(|m| m.as_str()).collect();
        let user = identity.userid.as_str();
        let session = identity.session_id.hyphenated().to_string();
        let text = [user, &session, &amr.join(",")].concat();
        Self {
            text: text.into(),
            starts: [user.len(), user.len() + session.len()],
        }
    }

    /// The three values, in order; `None`: a value that is not a header's.
    fn values(&self) -> [Option<HeaderValue>; 3] {
        let [session, amr] = self.starts;
        [
            &self.text[..session],
            &self.text[session..amr],
            &self.text[amr..],
        ]
        .map(|value| HeaderValue::from_str(value).ok())
    }
}

/// What `/forward-auth` answers for each session, kept once known: a session's identity never
/// changes, and its liveness is checked on every request before its entry is used (an entry
/// of a revoked session is never used, and is evicted in time). Bounded (quick_cache: when
/// full, the least useful entries go).
pub struct ProxyIdentities(Cache<Uuid, ProxyIdentity>);

impl ProxyIdentities {
    pub fn new() -> Self {
        Self(Cache::new(CAPACITY))
    }
}

impl Default for ProxyIdentities {
    fn default() -> Self {
        Self::new()
    }
}

/// The identity headers of the session a browser's cookie names, counted as activity; `None`
/// when it names no active session. The identity is read from the store once per session.
async fn identity_headers(state: &AppState, token: &str) -> Result<Option<ProxyIdentity>, Error> {
    let active = match state.core.browser_session(token).await {
        Ok(active) => active,
        Err(Error::SessionInvalid) => return Ok(None),
        Err(e) => return Err(e),
    };
    if let Some(known) = state.proxy_identities.0.get(&active.id) {
        return Ok(Some(known));
    }
    let identity = match state.core.identity(active).await {
        Ok(identity) => identity,
        Err(Error::SessionInvalid) => return Ok(None),
        Err(e) => return Err(e),
    };
    let rendered = ProxyIdentity::of(&identity);
    state.proxy_identities.0.insert(active.id, rendered.clone());
    Ok(Some(rendered))
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
    if let Some(token) = cookie(headers, SESSION_COOKIE) {
        match identity_headers(&state, token).await {
            Ok(Some(identity)) => {
                let mut response = StatusCode::OK.into_response();
                let out = response.headers_mut();
                for (name, value) in [REMOTE_USER, REMOTE_SESSION, REMOTE_AMR]
                    .into_iter()
                    .zip(identity.values())
                {
                    if let Some(value) = value {
                        out.insert(name, value);
                    }
                }
                out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                return response;
            }
            Ok(None) => {}
            // Not initialised, overloaded, the store unreachable: not the client's fault.
            Err(e) => return ApiError::from_core(Family::Own, e).into_response(),
        }
    }
    let wants_redirect = request.uri().query().is_some_and(|q| {
        url::form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "rd" && v == "1")
    });
    // The peer address is read only here (a signed-in answer does not need it).
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip());
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
    use latchkey_core::model::AuthMethod;

    #[test]
    fn an_identity_is_rendered_into_its_three_header_values() {
        let session_id = Uuid::new_v4();
        let identity = Identity {
            session_id,
            user_id: Uuid::new_v4(),
            userid: UserId::parse("josé@example.com").unwrap(),
            methods: vec![AuthMethod::Pwd, AuthMethod::Otp],
        };
        let values: Vec<Vec<u8>> = ProxyIdentity::of(&identity)
            .values()
            .iter()
            .map(|v| v.as_ref().unwrap().as_bytes().to_vec())
            .collect();
        assert_eq!(
            values,
            [
                "josé@example.com".as_bytes().to_vec(),
                session_id.hyphenated().to_string().into_bytes(),
                b"pwd,otp".to_vec(),
            ]
        );
    }
}
