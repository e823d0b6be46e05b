//! What every request passes, before and around the router: request bounds (header values
//! over 8 KiB: 431; bodies declared over 64 KiB: 413; undeclared bodies are cut at the limit
//! by the connection), the per-address rate limit of login routes (429, before any hashing),
//! the request timeout ([`crate::serve::request_timeout`]), a 500 for a handler that panicked,
//! request counts by route (their latency is timed by the connection, which reads the clock
//! anyway: [`crate::serve`]'s `Busy`), and the optional access log: one INFO line per request
//! on target `latchkey::access` with the route's template, never the raw path or query (they
//! carry session ids, nonces and tokens).
//!
//! The guard wraps the whole router once ([`Guarded`]) rather than being a layer around each
//! route: it finds a request's route in its own [`RouteTable`], built from the templates the
//! router was given ([`crate::routes::Routes`]) and matched by the same matcher axum uses
//! (matchit), so the two agree on every path. A layer would cost each request a boxed route
//! clone, two boxed futures and three mapping services, and a copy of the shared state. For
//! the `GET` of a direct route (the session checks, [`Routes::direct_get`]) the guard calls the
//! handler itself instead of the router, after the route's [`crate::routes::AnswerNow`]: a
//! check that memory settles is answered within the call ([`Answered::Now`]).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures_util::FutureExt;
use tower::Service;

use crate::error::{ApiError, Family};
use crate::metrics::{Metrics, RouteLabels, RouteMetrics};
use crate::routes::{Answer, Direct, Routes};
use crate::serve::request_timeout::{self, EVENT_STREAMS};
use crate::state::AppState;

pub const MAX_BODY_BYTES: usize = 64 * 1024;
pub const MAX_HEADER_VALUE_BYTES: usize = 8 * 1024;

/// What the guard knows of a route before the router runs.
#[derive(Clone)]
pub struct RouteInfo {
    /// The route's metrics, with its template (`unmatched` for a path no route has).
    pub metrics: &'static RouteMetrics,
    /// Judges a credential: takes one login from the client address's rate limit.
    login: bool,
    /// Streams its answer for as long as it lives: not held to `request_timeout`.
    event_stream: bool,
    /// Its `GET` handler, called without the router ([`Routes::direct_get`]).
    direct: Option<Direct>,
}

impl RouteInfo {
    fn of(template: &str, direct: Option<Direct>, metrics: &Metrics) -> Self {
        Self {
            metrics: metrics.route(template),
            login: LOGIN_ROUTES.contains(&template),
            event_stream: EVENT_STREAMS.contains(&template),
            direct,
        }
    }

    pub fn template(&self) -> &'static str {
        self.metrics.route
    }
}

/// The router's templates, matched as axum matches them (same matcher, same templates).
pub struct RouteTable {
    matcher: matchit::Router<RouteInfo>,
    unmatched: RouteInfo,
}

impl RouteTable {
    /// A template given twice (methods added apart) is one route. axum's router has accepted
    /// every template (it panics on one matchit refuses), so none is refused here; the unit
    /// test below holds every template of the application to its own route.
    pub fn new(templates: &[(&'static str, Option<Direct>)], metrics: &Metrics) -> Self {
        let mut matcher = matchit::Router::new();
        let mut seen = std::collections::HashSet::new();
        for (template, _) in templates.iter().filter(|(t, _)| seen.insert(*t)) {
            let direct = templates
                .iter()
                .find_map(|(t, direct)| direct.as_ref().filter(|_| t == template));
            let info = RouteInfo::of(template, direct.cloned(), metrics);
            if let Err(e) = matcher.insert(*template, info) {
                tracing::error!(template, error = %e, "a route the router took is not matched");
            }
        }
        Self {
            matcher,
            unmatched: RouteInfo::of("unmatched", None, metrics),
        }
    }

    pub fn route(&self, path: &str) -> &RouteInfo {
        self.matcher
            .at(path)
            .map_or(&self.unmatched, |found| found.value)
    }
}

/// A request's answer, as [`Guarded::answer`] gives it.
pub enum Answered<F> {
    /// Made in the call: a check that memory settled, or a request the guard refused.
    Now(Response),
    /// To be awaited: a handler's.
    Later(F),
}

/// The router behind its guard: what a connection asks for each request.
pub struct Guarded {
    router: Router,
    routes: RouteTable,
    state: AppState,
}

impl Guarded {
    /// `routes` with `fallbacks` (404 and 405 answers) applied to its router.
    pub fn new(
        routes: Routes,
        state: AppState,
        fallbacks: impl FnOnce(Router<AppState>) -> Router<AppState>,
    ) -> Self {
        let (router, templates) = routes.into_parts();
        Self {
            routes: RouteTable::new(&templates, &state.metrics),
            router: fallbacks(router).with_state(state.clone()),
            state,
        }
    }

    /// The route of a request to `path` (`unmatched` for a path no route has).
    pub fn route(&self, path: &str) -> &RouteInfo {
        self.routes.route(path)
    }

    /// Answers `request` from `peer` on its `route` (found by [`Guarded::route`] for the
    /// request's own path: another route's would run its handler): its checks run now,
    /// and a direct route's answer from memory; else the handler, in the future returned,
    /// which holds no reference to the shared state. (Handlers read the peer from
    /// [`crate::serve::peer`]; the checks here are given it.)
    pub fn answer(
        &self,
        route: &RouteInfo,
        request: Request,
        peer: SocketAddr,
    ) -> Answered<impl Future<Output = Response> + Send + 'static> {
        let state = &self.state;
        let metrics = route.metrics;
        let method = method_label(request.method());
        let client = || {
            let headers = request.headers();
            state.options.trusted_proxies.client(peer.ip(), headers)
        };
        let logged = state.options.access_log.then(|| (client(), Instant::now()));
        let direct = route
            .direct
            .as_ref()
            .filter(|_| request.method() == Method::GET);
        let now = match check_bounds(&request)
            .or_else(|| check_login_rate(state, route, &request, client))
        {
            Some(rejection) => Some(rejection.into_response()),
            None => direct
                .and_then(|direct| direct.now)
                .and_then(|now| answer_now(now, &request, state, metrics.route)),
        };
        if let Some(response) = now {
            answered(metrics, method, &response, logged);
            return Answered::Now(response);
        }
        // Every answer is one boxed future (16 bytes): the future returned here is moved (and
        // boxed by the connection) on every request, so it must stay small.
        let answer: Answer =
            match direct {
                Some(direct) => (direct.handler)(request, state.clone()),
                // The router is always ready; its clone is one reference count.
                None => Box::pin(self.router.clone().call(request).map(
                    |answered| match answered {
                        Ok(response) => response,
                        Err(never) => match never {},
                    },
                )),
            };
        let limit = (!route.event_stream).then_some(state.options.request_timeout);
        Answered::Later(async move {
            let response = bounded(answer, metrics.route, limit).await;
            answered(metrics, method, &response, logged);
            response
        })
    }
}

/// Counts an answer on its route, and logs it when the access log is on (`logged`: the
/// client's address and when the request came).
fn answered(
    metrics: &RouteMetrics,
    method: &'static str,
    response: &Response,
    logged: Option<(IpAddr, Instant)>,
) {
    metrics.count(method, response.status().as_u16());
    if let Some((client, started)) = logged {
        tracing::info!(
            target: "latchkey::access",
            client = client.to_string().as_str(),
            method,
            route = metrics.route,
            status = response.status().as_u16(),
            micros = started.elapsed().as_micros() as u64,
        );
    }
}

/// A direct route's answer from memory ([`crate::routes::AnswerNow`]); a panic in it is
/// answered 500, as a handler's is.
fn answer_now<S>(
    now: fn(&Request, &S) -> Option<Response>,
    request: &Request,
    state: &S,
    route: &str,
) -> Option<Response> {
    std::panic::catch_unwind(AssertUnwindSafe(|| now(request, state)))
        .unwrap_or_else(|_| Some(internal_error(route)))
}

/// The answer to a request whose handler panicked (the panic itself was logged by the panic
/// hook; the connection and the process go on), in the family of `route`.
fn internal_error(route: &str) -> Response {
    ApiError::new(
        Family::of(route),
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal error".to_owned(),
    )
    .into_response()
}

/// The handler's answer; 500 if it panicked ([`internal_error`]), 503 if it is not ready
/// within `limit`. Both in the family of `route`.
async fn bounded(
    answer: impl Future<Output = Response>,
    route: &str,
    limit: Option<Duration>,
) -> Response {
    let answer = AssertUnwindSafe(answer)
        .catch_unwind()
        .map(|answered| answered.unwrap_or_else(|_| internal_error(route)));
    request_timeout::within(limit, route, answer).await
}

/// The routes that judge a credential (a password, a code, a CAPTCHA answer, an app login):
/// each takes one login from the client address's rate limit.
pub const LOGIN_ROUTES: &[&str] = &[
    "/session/login",
    "/session/unblock-captcha",
    "/auth/auth",
    "/auth/login",
    "/app/v1/login",
    "/login",
    "/login/code",
    "/login/captcha",
    "/login/captcha.png",
    "/account/password",
    "/account/pin",
    "/account/pin/remove",
    "/account/totp/confirm",
    "/account/totp/remove",
    "/login/qr.png",
    "/login/app",
    "/login/passkey",
    "/login/passkey/second",
    "/account/passkeys/start",
    "/account/passkeys/remove",
];

fn check_login_rate(
    state: &AppState,
    route: &RouteInfo,
    request: &Request,
    client: impl FnOnce() -> IpAddr,
) -> Option<ApiError> {
    // GET /login only shows the sign-in page; its form posts are what judge credentials (the
    // CAPTCHA image costs a hashing job, and the account's changes recheck the password).
    if !route.login || (route.template() == "/login" && request.method() == Method::GET) {
        return None;
    }
    let refused = state.core.admit_login(client()).err()?;
    state
        .metrics
        .rate_limited
        .get_or_create(&RouteLabels {
            route: route.template(),
        })
        .inc();
    Some(ApiError::from_core(
        Family::of(request.uri().path()),
        refused,
    ))
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

fn check_bounds(request: &Request) -> Option<ApiError> {
    let family = || Family::of(request.uri().path());
    if request
        .headers()
        .values()
        .any(|v| v.len() > MAX_HEADER_VALUE_BYTES)
    {
        return Some(ApiError::new(
            family(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("a header value is over {MAX_HEADER_VALUE_BYTES} bytes"),
        ));
    }
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Some(ApiError::new(
            family(),
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is over {MAX_BODY_BYTES} bytes"),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::panic, clippy::unwrap_used)]

    use super::*;

    async fn body_of(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn a_panicking_handler_is_answered_500_in_its_family_and_a_slow_one_503() {
        let panicking = async { panic!("a handler bug") };
        let response = bounded(panicking, "/sessions", None).await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        // Family C's error shape.
        assert_eq!(body_of(response).await["statusCode"], 500);

        let slow = async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::OK.into_response()
        };
        let response = bounded(slow, "/session/keepalive", Some(Duration::from_millis(10))).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response
            .headers()
            .contains_key(axum::http::header::RETRY_AFTER));

        let ready = async { StatusCode::NO_CONTENT.into_response() };
        let response = bounded(ready, "/healthz", Some(Duration::from_millis(10))).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }

    #[tokio::test]
    async fn an_answer_from_memory_that_panics_is_answered_500_in_its_family() {
        let request = || Request::new(axum::body::Body::empty());
        let panicking: fn(&Request, &()) -> Option<Response> = |_, _| panic!("a check bug");
        let response = answer_now(panicking, &request(), &(), "/forward-auth").unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        // latchkey's own error shape.
        assert_eq!(body_of(response).await["message"], "internal error");

        let unsettled: fn(&Request, &()) -> Option<Response> = |_, _| None;
        assert!(answer_now(unsettled, &request(), &(), "/forward-auth").is_none());
    }

    #[test]
    fn every_route_of_the_application_is_found_by_its_own_template() {
        let (_, templates) = crate::all_routes(true).into_parts();
        assert!(templates.len() > 50, "{}", templates.len());
        let table = RouteTable::new(&templates, &Metrics::new());
        for (template, _) in &templates {
            // A template is also a path its route matches ({param} as the value).
            assert_eq!(table.route(template).template(), *template);
        }
        assert_eq!(table.route("/no/such/route").template(), "unmatched");
        assert_eq!(
            table.route("/sessions/validate/1234").template(),
            "/sessions/validate/{session_id}"
        );
        assert!(table.route("/auth/login").login);
        assert!(!table.route("/session/keepalive").login);
        assert!(table.route("/app/v1/events").event_stream);
        assert!(!table.route("/healthz").event_stream);
        // The session checks' GETs skip the router (crate::routes); nothing else does.
        for direct in [
            "/healthz",
            "/session/keepalive",
            "/sessions/validate/x",
            "/forward-auth",
        ] {
            assert!(table.route(direct).direct.is_some(), "{direct}");
        }
        assert!(table.route("/sessions").direct.is_none());
        assert!(table.route("/no/such/route").direct.is_none());
    }
}
