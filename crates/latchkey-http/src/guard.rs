//! The middleware every route passes: request bounds (header values over 8 KiB: 431; bodies
//! declared over 64 KiB: 413; undeclared bodies are cut at the limit by the connection), the
//! per-address rate limit of login routes (429, before any hashing), the request timeout
//! ([`crate::serve::request_timeout`]), request metrics by matched route, and the optional
//! access log: one INFO line per request on target `latchkey::access` with the route's
//! template, never the raw path or query (they carry session ids, nonces and tokens).
//!
//! One middleware, not several: each layer costs every request a boxed service and future.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use tower::{Layer, Service};

use crate::error::{ApiError, Family};
use crate::metrics::RouteLabels;
use crate::state::AppState;

pub const MAX_BODY_BYTES: usize = 64 * 1024;
pub const MAX_HEADER_VALUE_BYTES: usize = 8 * 1024;

/// The guard as a layer of the router (see [`Guard`]).
#[derive(Clone)]
pub struct GuardLayer(pub AppState);

impl<S> Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Guard<S> {
        Guard {
            inner,
            state: self.0.clone(),
        }
    }
}

/// A plain tower service rather than `axum::middleware::from_fn`: its checks run before the
/// inner service is called, so the inner service is called in place (from_fn clones it, a
/// boxed service, for every request) and only the answer is awaited.
#[derive(Clone)]
pub struct Guard<S> {
    inner: S,
    state: AppState,
}

impl<S> Service<Request> for Guard<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let started = Instant::now();
        let state = self.state.clone();
        let metrics = state.metrics.route(
            request
                .extensions()
                .get::<MatchedPath>()
                .map_or("unmatched", MatchedPath::as_str),
        );
        let route = metrics.route;
        let method = method_label(request.method());
        let client = state.options.access_log.then(|| {
            crate::extract::client_address(request.headers(), request.extensions(), &state.options)
        });
        let answering =
            match check_bounds(&request).or_else(|| check_login_rate(&state, route, &request)) {
                Some(rejection) => Err(rejection),
                None => Ok(self.inner.call(request)),
            };
        Box::pin(async move {
            let response = match answering {
                Err(rejection) => rejection.into_response(),
                Ok(answer) => {
                    let answer = async {
                        match answer.await {
                            Ok(response) => response,
                            Err(never) => match never {},
                        }
                    };
                    crate::serve::request_timeout::within(&state, route, answer).await
                }
            };
            metrics.count(method, response.status().as_u16());
            metrics.latency.observe(started.elapsed());
            if let Some(client) = client {
                tracing::info!(
                    target: "latchkey::access",
                    client = client.map(|ip| ip.to_string()).as_deref().unwrap_or("-"),
                    method,
                    route,
                    status = response.status().as_u16(),
                    micros = started.elapsed().as_micros() as u64,
                );
            }
            Ok(response)
        })
    }
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

fn check_login_rate(state: &AppState, route: &'static str, request: &Request) -> Option<ApiError> {
    // GET /login only shows the sign-in page; its form posts are what judge credentials (the
    // CAPTCHA image costs a hashing job, and the account's changes recheck the password).
    if !LOGIN_ROUTES.contains(&route) || (route == "/login" && request.method() == Method::GET) {
        return None;
    }
    let address =
        crate::extract::client_address(request.headers(), request.extensions(), &state.options)?;
    let refused = state.core.admit_login(address).err()?;
    state
        .metrics
        .rate_limited
        .get_or_create(&RouteLabels { route })
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
    let family = Family::of(request.uri().path());
    if request
        .headers()
        .values()
        .any(|v| v.len() > MAX_HEADER_VALUE_BYTES)
    {
        return Some(ApiError::new(
            family,
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
            family,
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is over {MAX_BODY_BYTES} bytes"),
        ));
    }
    None
}
