//! Prometheus metrics, one registry per server instance (no globals, so tests can run several
//! servers in one process): requests and latencies per route, logins by method and outcome,
//! and gauges of active and cached sessions read at scrape time.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels are `&'static str` so that counting a request allocates nothing: methods are the
/// standard ones and routes are interned once (the router has a fixed set).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: &'static str,
    pub route: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoginLabels {
    pub method: &'static str,
    pub outcome: &'static str,
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~3.3 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    /// Matched route templates, interned on first sight (a bounded set: the router's routes).
    routes: std::sync::RwLock<std::collections::HashMap<String, &'static str>>,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub logins: Family<LoginLabels, Counter>,
    pub active_sessions: Gauge,
    pub cached_sessions: Gauge,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("latchkey");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let logins = Family::<LoginLabels, Counter>::default();
        let active_sessions = Gauge::default();
        let cached_sessions = Gauge::default();
        registry.register(
            "http_requests",
            "HTTP requests by method, route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            latency.clone(),
        );
        registry.register(
            "logins",
            "Login attempts by method and outcome",
            logins.clone(),
        );
        registry.register(
            "active_sessions",
            "Active, unexpired sessions in the store",
            active_sessions.clone(),
        );
        registry.register(
            "cached_sessions",
            "Sessions held in this process's hot-path cache",
            cached_sessions.clone(),
        );
        Self {
            registry,
            routes: Default::default(),
            requests,
            latency,
            logins,
            active_sessions,
            cached_sessions,
        }
    }

    pub fn login(&self, method: &'static str, outcome: &'static str) {
        self.logins
            .get_or_create(&LoginLabels { method, outcome })
            .inc();
    }

    /// The interned form of a matched route template.
    pub fn route(&self, template: &str) -> &'static str {
        if let Some(route) = self
            .routes
            .read()
            .ok()
            .and_then(|r| r.get(template).copied())
        {
            return route;
        }
        let Ok(mut routes) = self.routes.write() else {
            return "unknown";
        };
        if let Some(route) = routes.get(template) {
            return route;
        }
        let route: &'static str = Box::leak(template.to_owned().into_boxed_str());
        routes.insert(template.to_owned(), route);
        route
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            tracing::error!("metrics encoding failed");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
