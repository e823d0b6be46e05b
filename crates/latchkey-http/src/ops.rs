//! latchkey's own operational endpoints: liveness, readiness, metrics and the OpenAPI document.
//! With `management_listen` set, `/metrics` moves to that listener (with `/healthz` and
//! `/readyz`, which stay on the public one too, for load balancers that probe it).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Json;
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use latchkey_core::Error;

use crate::error::{ApiError, Family};
use crate::openapi::ApiDoc;
use crate::routes::Routes;
use crate::state::AppState;

/// The public listener's share.
pub fn routes(with_metrics: bool) -> Routes {
    let routes = probes()
        .route("/openapi.json", get(openapi))
        .route("/.well-known/jwks.json", get(jwks));
    if with_metrics {
        routes.route("/metrics", get(metrics))
    } else {
        routes
    }
}

/// The management listener's routes.
pub fn management_routes() -> Routes {
    probes().route("/metrics", get(metrics))
}

fn probes() -> Routes {
    Routes::new()
        .direct_get("/healthz", None, healthz)
        .direct_get("/readyz", None, readyz)
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// "ok"
    pub status: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// "ok"
    pub status: &'static str,
    /// The store backend: "sqlite" or "postgres".
    pub database: &'static str,
}

/// Own error shape.
#[derive(Serialize, ToSchema)]
pub struct OwnError {
    /// snake_case machine code.
    pub error: String,
    pub message: String,
}

/// A JSON Web Key Set.
#[derive(Serialize, ToSchema)]
pub struct JwkSet {
    /// Ed25519 public keys (`kty` OKP, `crv` Ed25519, `alg` EdDSA) by `kid`.
    #[schema(value_type = Vec<Object>)]
    pub keys: Vec<latchkey_core::crypto::jwt::Jwk>,
}

/// The public keys that verify access JWTs offline. Retired keys stay until their tokens expire.
#[utoipa::path(get, operation_id = "getJwks", path = "/.well-known/jwks.json", tag = "operations",
    responses((status = 200, description = "JWKS", body = JwkSet)))]
pub async fn jwks(State(state): State<AppState>) -> Response {
    match state.core.jwks().await {
        Ok(keys) => (
            [(header::CACHE_CONTROL, "public, max-age=300")],
            Json(JwkSet { keys }),
        )
            .into_response(),
        Err(e) => ApiError::from_core(Family::Own, e).into_response(),
    }
}

/// The process is up.
#[utoipa::path(get, operation_id = "getHealth", path = "/healthz", tag = "operations",
    responses((status = 200, description = "Up", body = Health)))]
pub async fn healthz() -> ([(header::HeaderName, &'static str); 1], &'static str) {
    // What `Json(Health { status: "ok" })` writes, written once (a probe's answer serialises
    // nothing); the unit test below holds the two together.
    ([(header::CONTENT_TYPE, "application/json")], HEALTHY)
}

const HEALTHY: &str = r#"{"status":"ok"}"#;

/// The database is reachable and initialised, and the server is not shutting down (503 before
/// `latchkey init` and while draining, so a load balancer stops sending new requests).
#[utoipa::path(get, operation_id = "getReadiness", path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Database unreachable, not initialised, or draining", body = OwnError),
    ))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    if state.draining.load(std::sync::atomic::Ordering::Relaxed) {
        let mut e = ApiError::new(
            Family::Own,
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down: finishing the requests in flight",
        );
        e.code = "draining";
        return e.into_response();
    }
    match state.core.readiness().await {
        Ok(database) => Json(Readiness {
            status: "ok",
            database,
        })
        .into_response(),
        Err(Error::Unavailable(reason)) => {
            let mut e = ApiError::new(Family::Own, StatusCode::SERVICE_UNAVAILABLE, reason);
            e.code = "not_initialised";
            e.into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            let mut e = ApiError::new(
                Family::Own,
                StatusCode::SERVICE_UNAVAILABLE,
                "the database is unreachable",
            );
            e.code = "database_unreachable";
            e.into_response()
        }
    }
}

/// Prometheus metrics (OpenMetrics text).
#[utoipa::path(get, operation_id = "getMetrics", path = "/metrics", tag = "operations",
    responses((status = 200, description = "Metrics", content_type = "application/openmetrics-text", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    match state.core.session_gauges().await {
        Ok(gauges) => {
            state.metrics.active_sessions.set(gauges.active as i64);
            state.metrics.cached_sessions.set(gauges.cached as i64);
        }
        Err(e) => tracing::warn!(error = %e, "counting sessions failed"),
    }
    let hashing = state.core.hashing_gauges();
    state.metrics.hashing.workers.set(hashing.workers as i64);
    state.metrics.hashing.queued.set(hashing.queued as i64);
    state.metrics.hashing.rejected.set(hashing.rejected as i64);
    state.metrics.process.refresh();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// This document.
#[utoipa::path(get, operation_id = "getOpenApi", path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1 document", body = Object)))]
pub async fn openapi() -> Response {
    // Built once: the document never changes while the process runs.
    static DOCUMENT: std::sync::OnceLock<Result<String, String>> = std::sync::OnceLock::new();
    match DOCUMENT.get_or_init(|| ApiDoc::openapi().to_json().map_err(|e| e.to_string())) {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json.clone()).into_response(),
        Err(e) => ApiError::from_core(
            Family::Own,
            latchkey_core::Error::Internal(format!("openapi: {e}")),
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_health_answer_is_the_health_schema_serialised() {
        assert_eq!(
            serde_json::to_string(&Health { status: "ok" }).unwrap(),
            HEALTHY
        );
    }
}
