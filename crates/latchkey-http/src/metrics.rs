//! Prometheus metrics, one registry per server instance (no globals, so tests can run several
//! servers in one process): requests and latencies per route, logins by method and outcome,
//! and gauges of active and cached sessions read at scrape time.
//!
//! Counting a request must not serialise the cores: a route's metrics are found through a map
//! read without a lock ([`ArcSwap`], replaced only when a route is first seen), latencies go
//! to [`LatencyHistogram`], whose buckets are atomics (prometheus-client's own histogram takes a
//! write lock per observation), and request counts to the route's own counters (the shared
//! family would hash the labels under its lock on every request).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
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

/// Upper bounds of the latency buckets: 100 µs, doubling, 16 of them (to ~3.3 s), then +Inf.
const LATENCY_BUCKETS: usize = 16;
const FIRST_BUCKET_MICROS: u64 = 100;

/// A latency histogram of atomics: observing is two relaxed additions, no lock (the count is
/// the buckets' sum, added up when rendered).
#[derive(Clone, Debug, Default)]
pub struct LatencyHistogram(Arc<LatencyCounts>);

#[derive(Debug, Default)]
struct LatencyCounts {
    /// Per bucket (the last is +Inf), not cumulative.
    buckets: [AtomicU64; LATENCY_BUCKETS + 1],
    sum_micros: AtomicU64,
}

impl LatencyHistogram {
    pub fn observe(&self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        // The first bucket whose bound (100 µs << i) is at least `micros`.
        let over = micros.saturating_sub(1) / FIRST_BUCKET_MICROS;
        let index = (u64::BITS - over.leading_zeros()) as usize;
        let counts = &self.0;
        counts.buckets[index.min(LATENCY_BUCKETS)].fetch_add(1, Ordering::Relaxed);
        counts.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }
}

#[cfg(test)]
impl LatencyHistogram {
    /// Observations and their sum in microseconds.
    pub fn totals(&self) -> (u64, u64) {
        let counts = &self.0;
        let observed = counts
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .sum();
        (observed, counts.sum_micros.load(Ordering::Relaxed))
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let counts = &self.0;
        let buckets: Vec<(f64, u64)> = (0..=LATENCY_BUCKETS)
            .map(|i| {
                let bound = if i == LATENCY_BUCKETS {
                    f64::MAX
                } else {
                    (FIRST_BUCKET_MICROS << i) as f64 / 1e6
                };
                (bound, counts.buckets[i].load(Ordering::Relaxed))
            })
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        encoder.encode_histogram::<()>(
            counts.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            count,
            &buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// One route's metrics: its interned template, its latency histogram (fed by the connection
/// when an answer ends) and its request counters (by the guard).
pub struct RouteMetrics {
    pub route: &'static str,
    pub latency: LatencyHistogram,
    /// This route's counters of `latchkey_http_requests` by method and status, read without a
    /// lock (a request does not hash its labels into the shared family); `adding` serialises
    /// the rare additions (a bounded set: standard methods times the statuses latchkey sends).
    counters: ArcSwap<Vec<(&'static str, u16, Counter)>>,
    adding: Mutex<()>,
    family: Family<RequestLabels, Counter>,
}

impl RouteMetrics {
    /// Counts one answered request.
    pub fn count(&self, method: &'static str, status: u16) {
        let counters = self.counters.load();
        if let Some(counter) = counter_of(&counters, method, status) {
            counter.inc();
            return;
        }
        let _adding = self.adding.lock().unwrap_or_else(|e| e.into_inner());
        let counters = self.counters.load_full();
        if let Some(counter) = counter_of(&counters, method, status) {
            counter.inc();
            return;
        }
        let labels = RequestLabels {
            method,
            route: self.route,
            status,
        };
        let counter = self.family.get_or_create(&labels).clone();
        counter.inc();
        let mut grown = Vec::clone(&counters);
        grown.push((method, status, counter));
        self.counters.store(Arc::new(grown));
    }
}

fn counter_of<'a>(
    counters: &'a [(&'static str, u16, Counter)],
    method: &str,
    status: u16,
) -> Option<&'a Counter> {
    counters
        .iter()
        .find(|(m, s, _)| *s == status && *m == method)
        .map(|(_, _, counter)| counter)
}

/// Route templates to their metrics, hashed with foldhash (the map is read on every request;
/// its keys come from the router, not from clients).
type RouteMap = HashMap<String, &'static RouteMetrics, foldhash::fast::FixedState>;

pub struct Metrics {
    registry: Registry,
    /// Matched route templates with their metrics, interned on first sight (a bounded set:
    /// the router's routes). Read without a lock; `intern` serialises the rare additions.
    routes: ArcSwap<RouteMap>,
    intern: Mutex<()>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, LatencyHistogram>,
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
        let latency = Family::<RouteLabels, LatencyHistogram>::default();
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
            routes: ArcSwap::default(),
            intern: Mutex::new(()),
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

    /// The metrics of a matched route template (`unmatched` for requests no route took).
    pub fn route(&self, template: &str) -> &'static RouteMetrics {
        if let Some(route) = self.routes.load().get(template) {
            return route;
        }
        let _adding = self.intern.lock().unwrap_or_else(|e| e.into_inner());
        let routes = self.routes.load_full();
        if let Some(route) = routes.get(template) {
            return route;
        }
        let name: &'static str = Box::leak(template.to_owned().into_boxed_str());
        let route: &'static RouteMetrics = Box::leak(Box::new(RouteMetrics {
            route: name,
            latency: self
                .latency
                .get_or_create(&RouteLabels { route: name })
                .clone(),
            counters: ArcSwap::default(),
            adding: Mutex::new(()),
            family: self.requests.clone(),
        }));
        let mut grown = RouteMap::clone(&routes);
        grown.insert(template.to_owned(), route);
        self.routes.store(Arc::new(grown));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_land_in_the_first_bucket_whose_bound_holds_them() {
        let histogram = LatencyHistogram::default();
        for micros in [
            0,
            100,
            101,
            200,
            201,
            400,
            401,
            3_276_800,
            3_276_801,
            u64::MAX,
        ] {
            histogram.observe(Duration::from_micros(micros));
        }
        let counts: Vec<u64> = histogram
            .0
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        // <=100 µs: 0, 100; <=200: 101, 200; <=400: 201, 400; <=800: 401; <=3.2768 s (the
        // 16th bound): 3 276 800; +Inf: the rest.
        let mut expected = vec![0; LATENCY_BUCKETS + 1];
        expected[0] = 2;
        expected[1] = 2;
        expected[2] = 2;
        expected[3] = 1;
        expected[LATENCY_BUCKETS - 1] = 1;
        expected[LATENCY_BUCKETS] = 2;
        assert_eq!(counts, expected);
    }

    #[test]
    fn a_route_is_interned_once_and_rendered_with_its_latencies() {
        let metrics = Metrics::new();
        let first = metrics.route("/session/keepalive");
        assert!(std::ptr::eq(first, metrics.route("/session/keepalive")));
        first.latency.observe(Duration::from_micros(150));
        first.latency.observe(Duration::from_micros(1_000_000));
        first.count("GET", 200);
        first.count("GET", 200);
        first.count("GET", 401);
        let text = metrics.render();
        for counted in [
            "latchkey_http_requests_total{method=\"GET\",route=\"/session/keepalive\",status=\"200\"} 2",
            "latchkey_http_requests_total{method=\"GET\",route=\"/session/keepalive\",status=\"401\"} 1",
        ] {
            assert!(text.contains(counted), "{counted} in {text}");
        }
        assert!(
            text.contains(
                "latchkey_http_request_duration_seconds_bucket{le=\"0.0002\",route=\"/session/keepalive\"} 1"
            ),
            "{text}"
        );
        // The count is the buckets' sum; the sum is in seconds.
        for rendered in [
            "latchkey_http_request_duration_seconds_count{route=\"/session/keepalive\"} 2",
            "latchkey_http_request_duration_seconds_sum{route=\"/session/keepalive\"} 1.00015",
        ] {
            assert!(text.contains(rendered), "{rendered} in {text}");
        }
    }
}
