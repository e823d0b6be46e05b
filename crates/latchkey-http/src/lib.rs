//! latchkey's HTTP layer: the four API families of API.md and latchkey's own endpoints on one
//! axum router, with per-family error shapes, request bounds and metrics.
//!
//! Start-up is split so tests can bind port 0: [`build`] binds and reports the address,
//! [`Server::run`] serves until the shutdown future resolves (then flushes session activity).

pub mod error;
pub mod extract;
pub mod families;
pub mod guard;
pub mod metrics;
pub mod openapi;
pub mod ops;
pub mod state;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Router;
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use latchkey_core::Latchkey;

pub use error::{ApiError, Family};
pub use state::{AppState, HttpOptions};

/// How often coalesced session activity is written to the store.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// How often signing keys are reloaded (to follow a rotation made by another process).
const RELOAD_KEYS_EVERY: Duration = Duration::from_secs(60);
/// How often dead sessions and old failure counts are purged.
const PURGE_EVERY: Duration = Duration::from_secs(600);

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(families::quatrix::routes())
        .merge(families::polario::routes())
        .merge(families::nestjs::routes())
        .merge(families::nextauth::routes())
        .merge(families::app::routes())
        .merge(families::admin::routes())
        .merge(ops::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::guard,
        ))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(guard::MAX_BODY_BYTES))
        .layer(TraceLayer::new_for_http())
        .layer(CatchPanicLayer::new())
        .with_state(state)
}

async fn not_found(request: Request) -> impl IntoResponse {
    let path = request.uri().path();
    ApiError::new(
        Family::of(path),
        StatusCode::NOT_FOUND,
        format!("no route for {path}"),
    )
}

async fn method_not_allowed(request: Request) -> impl IntoResponse {
    ApiError::new(
        Family::of(request.uri().path()),
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} is not allowed here", request.method()),
    )
}

/// A bound, not yet serving, server.
pub struct Server {
    listener: TcpListener,
    state: AppState,
    shutdown: tokio::sync::watch::Sender<bool>,
}

/// Binds `listen` (use port 0 in tests) and prepares the application.
pub async fn build(
    core: Arc<Latchkey>,
    options: HttpOptions,
    listen: &str,
) -> std::io::Result<Server> {
    let listener = TcpListener::bind(listen).await?;
    let (shutdown, watch) = tokio::sync::watch::channel(false);
    Ok(Server {
        listener,
        state: AppState::new(state::Shared {
            core,
            metrics: metrics::Metrics::new(),
            options,
            shutdown: watch,
        }),
        shutdown,
    })
}

impl Server {
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then writes pending session activity.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let core = self.state.core.clone();
        let background = tokio::spawn(background_work(core.clone()));
        let events = {
            let core = core.clone();
            tokio::spawn(async move { core.follow_events().await })
        };
        let app = router(self.state).into_make_service_with_connect_info::<SocketAddr>();
        let stop_streams = self.shutdown;
        let served = axum::serve(self.listener, app)
            .with_graceful_shutdown(async move {
                shutdown.await;
                // Event streams never end by themselves: tell them, so shutdown can finish.
                let _ = stop_streams.send(true);
            })
            .await;
        background.abort();
        events.abort();
        if let Err(e) = core.housekeeping().flush_activity().await {
            tracing::error!(error = %e, "final flush of session activity failed");
        }
        served
    }
}

/// Periodic work off the request path: flushing session activity, purging dead rows.
async fn background_work(core: Arc<Latchkey>) {
    let mut flush = tokio::time::interval(FLUSH_EVERY);
    let mut purge = tokio::time::interval(PURGE_EVERY);
    let mut keys = tokio::time::interval(RELOAD_KEYS_EVERY);
    loop {
        tokio::select! {
            _ = keys.tick() => {
                if let Err(e) = core.housekeeping().reload_keys().await {
                    tracing::error!(error = %e, "reloading signing keys failed");
                }
            }
            _ = flush.tick() => {
                if let Err(e) = core.housekeeping().flush_activity().await {
                    tracing::error!(error = %e, "flushing session activity failed");
                }
            }
            _ = purge.tick() => {
                match core.housekeeping().purge().await {
                    Ok(n) if n > 0 => tracing::info!(rows = n, "purged dead sessions and old failures"),
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "purge failed"),
                }
            }
        }
    }
}
