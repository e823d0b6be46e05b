//! What every handler can reach: the core, the metrics and the HTTP options.

use std::sync::Arc;
use std::time::Duration;

use latchkey_core::Latchkey;

use crate::metrics::Metrics;
use crate::proxies::TrustedProxies;
use crate::serve::tls::TlsFiles;

/// Options of the HTTP layer itself.
#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// Serve HTTPS with these files (reloaded by [`crate::Server::tls`]); `None`: plain HTTP.
    pub tls: Option<TlsFiles>,
    /// A second, plain-HTTP listener for `/metrics`, `/healthz` and `/readyz`; with it,
    /// `/metrics` is not served on the public listener.
    pub management_listen: Option<String>,
    /// At shutdown, how long `/readyz` answers 503 while everything else is still served, so
    /// that load balancers stop sending new requests before the listener closes.
    pub drain_timeout: Duration,
    /// Log one line per request (target `latchkey::access`).
    pub access_log: bool,
    /// The reverse proxies whose forwarding headers are believed (see [`crate::proxies`]);
    /// empty: the TCP peer is the client.
    pub trusted_proxies: TrustedProxies,
    /// A connection that has not sent a complete request head this long after it opened (or,
    /// kept alive, after the first byte of its next request) is closed.
    pub header_read_timeout: Duration,
    /// A keep-alive connection idle this long between requests is closed.
    pub idle_timeout: Duration,
    /// Open connections at most; at the cap, the longest-idle connection is closed to admit a
    /// new one. `None`: derived from the open-file limit.
    pub max_connections: Option<usize>,
    /// A request (other than an event stream) that takes longer is answered 503.
    pub request_timeout: Duration,
    /// Open Server-Sent Event streams at most (beyond: 503). `None`: half the connection cap.
    pub max_event_streams: Option<usize>,
    /// An event stream ends after this long (clients reconnect).
    pub event_stream_max_lifetime: Duration,
    /// The `Domain` of the `latchkey_session` cookie; `None`: the cookie is host-only.
    pub cookie_domain: Option<String>,
    /// Origins (`https://app.example.com`) a browser sign-in may send the person back to.
    pub allowed_return_origins: Vec<String>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            tls: None,
            management_listen: None,
            drain_timeout: Duration::from_secs(5),
            access_log: false,
            trusted_proxies: TrustedProxies::default(),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: None,
            request_timeout: Duration::from_secs(30),
            max_event_streams: None,
            event_stream_max_lifetime: Duration::from_secs(3600),
            cookie_domain: None,
            allowed_return_origins: Vec::new(),
        }
    }
}

/// One reference-counted handle, cloned by every extractor of every request: one atomic
/// increment, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub core: Arc<Latchkey>,
    pub metrics: Metrics,
    pub options: HttpOptions,
    /// True from the shutdown signal on: `/readyz` answers 503.
    pub draining: std::sync::atomic::AtomicBool,
    /// Turns true when the listener closes at the end of the drain: connections finish their
    /// requests and close, long-lived event streams end.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// One permit per open Server-Sent Event stream (`options.max_event_streams`).
    pub event_streams: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}
