//! latchkey's HTTP layer: the four API families of docs/api.md and latchkey's own endpoints on one
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
pub mod proxies;
pub mod serve;
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
use tower_http::trace::{DefaultOnFailure, TraceLayer};

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
        // A request (other than an event stream) that outlasts `request_timeout`: 503.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            serve::request_timeout::request_timeout,
        ))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Every request passes the guard, routed or not: bounds (431, 413) hold on every path.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::guard,
        ))
        .layer(DefaultBodyLimit::max(guard::MAX_BODY_BYTES))
        // A 5xx answer is not logged per request: under a flood every refused login (503) would
        // become an ERROR line. Internal errors are logged where they happen, with context.
        .layer(
            TraceLayer::new_for_http()
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
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
    let options = resolve(options);
    let event_streams = options
        .max_event_streams
        .unwrap_or(0)
        .min(tokio::sync::Semaphore::MAX_PERMITS);
    tracing::info!(
        max_connections = options.max_connections,
        max_event_streams = event_streams,
        "connection limits"
    );
    Ok(Server {
        listener,
        state: AppState::new(state::Shared {
            core,
            metrics: metrics::Metrics::new(),
            options,
            shutdown: watch,
            event_streams: Arc::new(tokio::sync::Semaphore::new(event_streams)),
        }),
        shutdown,
    })
}

/// The options with their derived defaults filled in (`max_connections` from the open-file
/// limit, `max_event_streams` half of it) and durations bounded by [`serve::LONGEST`].
fn resolve(mut options: HttpOptions) -> HttpOptions {
    let connections = options
        .max_connections
        .unwrap_or_else(serve::default_max_connections)
        .max(1);
    options.max_connections = Some(connections);
    options.max_event_streams = Some(
        options
            .max_event_streams
            .unwrap_or((connections / 2).max(1)),
    );
    for duration in [
        &mut options.header_read_timeout,
        &mut options.idle_timeout,
        &mut options.request_timeout,
        &mut options.event_stream_max_lifetime,
    ] {
        *duration = (*duration).min(serve::LONGEST);
    }
    options
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
        let app = router(self.state.clone());
        let stop = self.shutdown;
        serve::serve(self.listener, self.state, app, async move {
            shutdown.await;
            // Connections finish their requests and close; event streams, which never end by
            // themselves, end now.
            let _ = stop.send(true);
        })
        .await;
        background.abort();
        events.abort();
        if let Err(e) = core.housekeeping().flush_activity().await {
            tracing::error!(error = %e, "final flush of session activity failed");
        }
        Ok(())
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
