//! What every handler can reach: the core, the metrics and the HTTP options.

use std::sync::Arc;

use latchkey_core::Latchkey;

use crate::metrics::Metrics;

/// Options of the HTTP layer itself.
#[derive(Clone, Debug, Default)]
pub struct HttpOptions {
    /// Take the client address from the first `X-Forwarded-For` hop (only behind a proxy that
    /// sets it; otherwise clients could choose their own address and dodge the per-address
    /// CAPTCHA rule).
    pub trust_forwarded_for: bool,
}

/// One reference-counted handle, cloned by every extractor of every request: one atomic
/// increment, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub core: Arc<Latchkey>,
    pub metrics: Metrics,
    pub options: HttpOptions,
    /// Turns true when the server shuts down, so long-lived event streams end.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
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
