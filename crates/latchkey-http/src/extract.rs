//! Extractors that parse requests at the edge into typed values and reject in the family's
//! own error shape: JSON bodies, the client's address and user agent, bearer-ish headers.

use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use latchkey_core::model::ClientInfo;

use crate::error::{ApiError, Family};
use crate::state::AppState;

/// Longest user agent kept with a session.
const MAX_USER_AGENT: usize = 512;

/// A JSON body whose rejections (malformed JSON, wrong content type, too large) are rendered in
/// the family of the request's path.
pub struct JsonBody<T>(pub T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let family = Family::of(req.uri().path());
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(JsonBody(value)),
            Err(rejection) => {
                let status = rejection.status();
                let status = if status == StatusCode::PAYLOAD_TOO_LARGE {
                    status
                } else {
                    StatusCode::BAD_REQUEST
                };
                Err(ApiError::new(family, status, rejection.body_text()))
            }
        }
    }
}

/// Who is calling: address (the peer, or through trusted proxies the rightmost forwarded
/// address that is not a proxy), user agent and device name.
pub struct Client(pub ClientInfo);

impl<S> FromRequestParts<S> for Client
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let user_agent = header_str(&parts.headers, header::USER_AGENT.as_str())
            .map(|ua| truncate(ua, MAX_USER_AGENT));
        Ok(Client(ClientInfo {
            ip: client_address(&parts.headers, &state.options).map(|ip| ip.to_string()),
            user_agent,
            device_name: None,
        }))
    }
}

/// Where a request comes from (see [`crate::proxies`]): the client's address, and the scheme
/// and host it asked for when a trusted proxy says so. Worked out only by the handlers and
/// checks that need it, never on the session hot path.
#[derive(Clone, Debug, Default)]
pub struct RequestOrigin {
    pub client: Option<std::net::IpAddr>,
    pub proto: Option<String>,
    pub host: Option<String>,
}

impl RequestOrigin {
    pub fn of(headers: &HeaderMap, options: &crate::state::HttpOptions) -> Self {
        let Some(peer) = crate::serve::peer().map(|peer| peer.ip()) else {
            return Self::default();
        };
        let (proto, host) = options.trusted_proxies.forwarded_origin(peer, headers);
        Self {
            client: Some(options.trusted_proxies.client(peer, headers)),
            proto,
            host,
        }
    }
}

impl<S> FromRequestParts<S> for RequestOrigin
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        Ok(Self::of(&parts.headers, &state.options))
    }
}

/// The client's address (see [`RequestOrigin`]); `None` outside a served request.
pub fn client_address(
    headers: &HeaderMap,
    options: &crate::state::HttpOptions,
) -> Option<std::net::IpAddr> {
    let peer = crate::serve::peer()?.ip();
    Some(options.trusted_proxies.client(peer, headers))
}

pub fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The last segment of a path, percent-decoded as axum decodes path parameters: the one
/// parameter of a direct route (crate::routes), which the router does not fill. `None` when it
/// is empty or does not decode to UTF-8.
pub fn last_segment(uri: &axum::http::Uri) -> Option<std::borrow::Cow<'_, str>> {
    // memchr's searches: a word at a time (the path of a session check is read per request).
    let path = uri.path();
    let segment = &path[memchr::memrchr(b'/', path.as_bytes())? + 1..];
    if segment.is_empty() {
        return None;
    }
    if memchr::memchr(b'%', segment.as_bytes()).is_none() {
        return Some(std::borrow::Cow::Borrowed(segment));
    }
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_last_segment_of_a_path_is_percent_decoded() {
        let segment = |uri: &str| last_segment(&uri.parse().unwrap()).map(|s| s.into_owned());
        assert_eq!(segment("/sessions/validate/abc").as_deref(), Some("abc"));
        assert_eq!(
            segment("/sessions/validate/a%2Db?x=1").as_deref(),
            Some("a-b")
        );
        assert_eq!(segment("/sessions/validate/"), None);
        assert_eq!(segment("/sessions/validate/%FF"), None);
    }
}
