//! latchkey's HTTP layer: the four API families of docs/api.md and latchkey's own endpoints on one
//! axum router, with per-family error shapes, request bounds and metrics.
//!
//! Start-up is split so tests can bind port 0: [`build`] binds (and loads the TLS files) and
//! reports the addresses, [`Server::run`] serves until the shutdown future resolves, drains,
//! then flushes session activity. Shutdown: `/readyz` turns 503 while everything is still
//! served for `drain_timeout` (load balancers take the process out of rotation); then the
//! public listener closes, requests in flight finish (within `request_timeout`, after which
//! their connections are closed), event streams end, and the management listener closes last.

pub mod error;
pub mod extract;
pub mod families;
pub mod guard;
pub mod metrics;
pub mod openapi;
pub mod ops;
pub mod pages;
pub mod proxies;
pub mod routes;
pub mod serve;
pub mod state;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Router;
use tokio::net::TcpListener;

use latchkey_core::Latchkey;

pub use error::{ApiError, Family};
pub use routes::Routes;
pub use serve::tls::{Tls, TlsError, TlsFiles};
pub use state::{AppState, HttpOptions};

/// How often coalesced session activity is written to the store.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// How often signing keys are reloaded (to follow a rotation made by another process).
const RELOAD_KEYS_EVERY: Duration = Duration::from_secs(60);
/// How often expired entries leave the hot-path caches.
const SWEEP_CACHES_EVERY: Duration = Duration::from_secs(60);
/// How often dead sessions and old failure counts are purged.
const PURGE_EVERY: Duration = Duration::from_secs(600);
/// Open connections at most on the management listener (probes and scrapes).
const MANAGEMENT_CONNECTIONS: usize = 64;
/// How long the management listener's last scrapes may take once the public one has closed.
const MANAGEMENT_FINISH: Duration = Duration::from_secs(1);
/// Beyond `request_timeout`, how long requests in flight at shutdown may take to be answered.
const FINISH_GRACE: Duration = Duration::from_secs(1);

/// The whole HTTP application, behind its guard.
pub fn router(state: AppState) -> guard::Guarded {
    let routes = all_routes(state.options.management_listen.is_none());
    // Every request passes the guard, routed or not: bounds (431, 413) hold on every path,
    // a request (other than an event stream) that outlasts `request_timeout` gets 503, and a
    // handler that panics 500. No per-request span or log line (they cost the hot path even
    // when filtered out): internal errors are logged where they happen, with context, and the
    // guard writes the access log when it is on. The body limit is the connection's service's
    // (serve::PerConnection).
    guard::Guarded::new(routes, state, with_fallbacks)
}

/// Every route of the public listener (`/metrics` too, unless a management listener has it).
fn all_routes(with_metrics: bool) -> Routes {
    Routes::new()
        .merge(families::quatrix::routes())
        .merge(families::polario::routes())
        .merge(families::nestjs::routes())
        .merge(families::nextauth::routes())
        .merge(families::nextauth_directory::routes())
        .merge(families::nextauth_management::routes())
        .merge(families::nextauth_transactions::routes())
        .merge(families::nextauth_html::routes())
        .merge(families::app::routes())
        .merge(families::admin::routes())
        .merge(pages::routes())
        .merge(ops::routes(with_metrics))
}

/// 404 for a path no route has, 405 for a method its route does not answer.
fn with_fallbacks(router: Router<AppState>) -> Router<AppState> {
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
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

/// The management listener's application: probes and metrics, guarded like the public one.
fn management_router(state: AppState) -> guard::Guarded {
    guard::Guarded::new(ops::management_routes(), state, with_fallbacks)
}

/// A bound, not yet serving, server.
pub struct Server {
    listener: TcpListener,
    management: Option<TcpListener>,
    tls: Option<Arc<Tls>>,
    state: AppState,
    shutdown: tokio::sync::watch::Sender<bool>,
}

/// Why the server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("binding {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Binds `listen` (use port 0 in tests) and the management listener if any, loads the TLS
/// files if any, and prepares the application.
pub async fn build(
    core: Arc<Latchkey>,
    options: HttpOptions,
    listen: &str,
) -> Result<Server, StartError> {
    let bind = |address: &str| {
        let address = address.to_owned();
        async move {
            TcpListener::bind(&address)
                .await
                .map_err(|source| StartError::Bind { address, source })
        }
    };
    let tls = match &options.tls {
        Some(files) => Some(Arc::new(Tls::load(files.clone())?)),
        None => None,
    };
    let listener = bind(listen).await?;
    let management = match &options.management_listen {
        Some(address) => Some(bind(address).await?),
        None => None,
    };
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
        management,
        tls,
        state: AppState::new(state::Shared {
            core,
            metrics: metrics::Metrics::new(),
            options,
            draining: std::sync::atomic::AtomicBool::new(false),
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

    /// The management listener's address, when there is one.
    pub fn management_addr(&self) -> Option<SocketAddr> {
        self.management.as_ref()?.local_addr().ok()
    }

    /// The TLS configuration in use, to reload (on SIGHUP) while serving.
    pub fn tls(&self) -> Option<Arc<Tls>> {
        self.tls.clone()
    }

    /// Serves until `shutdown` resolves, drains, then writes pending session activity.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let core = self.state.core.clone();
        let options = &self.state.options;
        let background = tokio::spawn(background_work(core.clone()));
        let events = {
            let core = core.clone();
            tokio::spawn(async move { core.follow_events().await })
        };
        let (stop_management, management_stop) = tokio::sync::watch::channel(false);
        let management = self.management.map(|tcp| {
            let listener = serve::Listener {
                tcp,
                app: Arc::new(management_router(self.state.clone())),
                tls: None,
                max_connections: MANAGEMENT_CONNECTIONS,
                stop: management_stop,
                finish_timeout: MANAGEMENT_FINISH,
            };
            tokio::spawn(serve::serve(listener, self.state.clone()))
        });
        let public = serve::Listener {
            tcp: self.listener,
            app: Arc::new(router(self.state.clone())),
            tls: self.tls,
            max_connections: options.max_connections.unwrap_or(1),
            stop: self.state.shutdown.clone(),
            finish_timeout: options.request_timeout + FINISH_GRACE,
        };
        let stop = self.shutdown;
        let state = self.state.clone();
        tokio::spawn(async move {
            shutdown.await;
            let drain = state.options.drain_timeout;
            tracing::info!(
                seconds = drain.as_secs(),
                "shutting down: /readyz answers 503"
            );
            state
                .draining
                .store(true, std::sync::atomic::Ordering::Relaxed);
            tokio::time::sleep(drain).await;
            tracing::info!("closing the listener; requests in flight finish");
            // Connections finish their requests and close; event streams, which never end by
            // themselves, end now.
            let _ = stop.send(true);
        });
        serve::serve(public, self.state.clone()).await;
        let _ = stop_management.send(true);
        if let Some(management) = management {
            let _ = management.await;
        }
        background.abort();
        events.abort();
        if let Err(e) = core.housekeeping().flush_activity().await {
            tracing::error!(error = %e, "final flush of session activity failed");
        }
    }
}

/// Periodic work off the request path: flushing session activity, sweeping the caches,
/// purging dead rows.
async fn background_work(core: Arc<Latchkey>) {
    let mut flush = tokio::time::interval(FLUSH_EVERY);
    let mut purge = tokio::time::interval(PURGE_EVERY);
    let mut keys = tokio::time::interval(RELOAD_KEYS_EVERY);
    let mut sweep = tokio::time::interval(SWEEP_CACHES_EVERY);
    loop {
        tokio::select! {
            _ = sweep.tick() => core.housekeeping().sweep_caches(),
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
