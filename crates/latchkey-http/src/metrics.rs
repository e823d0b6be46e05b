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

/// Why latchkey closed a connection: `header_timeout`, `idle_timeout`, `stalled` (busy, no
/// byte moved), `evicted` (to make room at the cap), `refused` (at the cap with every
/// connection busy) or `shutdown` (no request in flight when the server stopped).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClosedLabels {
    pub reason: &'static str,
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
    /// Logins refused by the per-address rate limit (429), by route.
    pub rate_limited: Family<RouteLabels, Counter>,
    pub hashing: HashingMetrics,
    pub process: ProcessMetrics,
    pub open_connections: Gauge,
    pub connections_closed: Family<ClosedLabels, Counter>,
    pub open_event_streams: Gauge,
}

/// The hashing pool, read at scrape time.
#[derive(Default)]
pub struct HashingMetrics {
    pub workers: Gauge,
    pub queued: Gauge,
    /// Jobs refused since start because the queue was full (each a 503).
    pub rejected: Gauge,
}

/// The process itself, read from `/proc/self` at scrape time (absent elsewhere).
#[derive(Default)]
pub struct ProcessMetrics {
    pub resident_memory_bytes: Gauge,
    pub open_fds: Gauge,
    pub threads: Gauge,
}

impl ProcessMetrics {
    /// Reads `/proc/self/status` (VmRSS, Threads) and counts `/proc/self/fd`.
    pub fn refresh(&self) {
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            for line in status.lines() {
                let value = |line: &str| {
                    line.split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<i64>().ok())
                };
                if line.starts_with("VmRSS:") {
                    if let Some(kib) = value(line) {
                        self.resident_memory_bytes.set(kib * 1024);
                    }
                } else if line.starts_with("Threads:") {
                    if let Some(n) = value(line) {
                        self.threads.set(n);
                    }
                }
            }
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(fds.count() as i64);
        }
    }
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
        let rate_limited = Family::<RouteLabels, Counter>::default();
        registry.register(
            "login_rate_limited",
            "Logins refused by the per-address rate limit (429), by route",
            rate_limited.clone(),
        );
        let hashing = HashingMetrics::default();
        registry.register(
            "hashing_workers",
            "Password-hashing threads",
            hashing.workers.clone(),
        );
        registry.register(
            "hashing_queued",
            "Hashing jobs waiting for a worker",
            hashing.queued.clone(),
        );
        registry.register(
            "hashing_rejected",
            "Hashing jobs refused since start because the queue was full (503)",
            hashing.rejected.clone(),
        );
        let process = ProcessMetrics::default();
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory of the process",
            process.resident_memory_bytes.clone(),
        );
        registry.register(
            "process_open_fds",
            "Open file descriptors (sockets included)",
            process.open_fds.clone(),
        );
        registry.register(
            "process_threads",
            "Threads of the process",
            process.threads.clone(),
        );
        let open_connections = Gauge::default();
        registry.register(
            "open_connections",
            "Open HTTP connections",
            open_connections.clone(),
        );
        let connections_closed = Family::<ClosedLabels, Counter>::default();
        registry.register(
            "connections_closed",
            "Connections closed by latchkey, by reason (header_timeout, idle_timeout, stalled, evicted, refused, shutdown)",
            connections_closed.clone(),
        );
        let open_event_streams = Gauge::default();
        registry.register(
            "open_event_streams",
            "Open Server-Sent Event streams",
            open_event_streams.clone(),
        );
        Self {
            registry,
            routes: Default::default(),
            requests,
            latency,
            logins,
            active_sessions,
            cached_sessions,
            rate_limited,
            hashing,
            process,
            open_connections,
            connections_closed,
            open_event_streams,
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
