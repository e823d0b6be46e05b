//! The load generator: C keep-alive HTTP/1.1 connections driven by hyper's low-level client
//! (`hyper::client::conn::http1`), one task per connection, each sending its next request as
//! soon as the previous response body has been read (closed loop, no pipelining).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Body;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// What a response must be to count as a success.
#[derive(Clone, Copy, Debug)]
pub enum Expect {
    /// Status 200.
    Ok,
    /// Status 200 and a body containing these bytes.
    OkContaining(&'static [u8]),
}

/// The requests of one target. Request `i` of a connection uses `uris[i % len]` and, when there
/// is a header, `values[i % len]`; each connection starts at its own offset so connections
/// spread over the sample.
#[derive(Clone)]
pub struct Plan {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub uris: Arc<[Uri]>,
    pub header: Option<(HeaderName, Arc<[HeaderValue]>)>,
    pub expect: Expect,
}

impl Plan {
    /// How many distinct requests the plan cycles through.
    fn len(&self) -> usize {
        let headers = self.header.as_ref().map_or(1, |(_, v)| v.len());
        self.uris.len().max(headers).max(1)
    }

    fn request(&self, i: usize, host: &HeaderValue) -> anyhow::Result<Request<Empty<Bytes>>> {
        let uri = self
            .uris
            .get(i % self.uris.len().max(1))
            .cloned()
            .ok_or_else(|| anyhow!("plan {} has no URI", self.name))?;
        let mut builder = Request::builder()
            .method(Method::GET)
            .uri(uri)
            .header(HOST, host.clone());
        if let Some((name, values)) = &self.header {
            if let Some(value) = values.get(i % values.len().max(1)) {
                builder = builder.header(name.clone(), value.clone());
            }
        }
        Ok(builder.body(Empty::new())?)
    }
}

/// The result of one timed run of a plan.
#[derive(Clone, Debug)]
pub struct Measured {
    /// Successful responses completed inside the measurement window.
    pub requests: u64,
    /// Failed requests (wrong status, wrong body, connection errors), warm-up included.
    pub errors: u64,
    pub seconds: f64,
    pub rps: f64,
    pub p50_us: u32,
    pub p99_us: u32,
    pub max_us: u32,
    /// The first failure seen, to tell what went wrong.
    pub first_error: Option<String>,
}

/// The result of a sweep (each request of the plan sent once).
#[derive(Clone, Debug)]
pub struct Swept {
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    pub first_error: Option<String>,
}

#[derive(Default)]
struct ConnStats {
    ok: u64,
    errors: u64,
    latencies_us: Vec<u32>,
    first_error: Option<String>,
}

impl ConnStats {
    fn fail(&mut self, what: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(what);
        }
    }
}

/// One keep-alive connection; reconnects after a connection error.
struct Conn {
    addr: SocketAddr,
    host: HeaderValue,
    sender: Option<SendRequest<Empty<Bytes>>>,
}

impl Conn {
    fn new(addr: SocketAddr) -> anyhow::Result<Self> {
        Ok(Self {
            addr,
            host: HeaderValue::from_str(&addr.to_string())?,
            sender: None,
        })
    }

    /// Sends request `i` of the plan and reads the whole response. `Err` is a failure to
    /// report (the connection is dropped and reopened on the next call).
    async fn send(&mut self, plan: &Plan, i: usize) -> Result<(), String> {
        let sender = match &mut self.sender {
            Some(sender) => sender,
            None => {
                let sender = handshake::<Empty<Bytes>>(self.addr)
                    .await
                    .map_err(|e| format!("connect: {e:#}"))?;
                self.sender.insert(sender)
            }
        };
        let request = plan.request(i, &self.host).map_err(|e| format!("{e:#}"))?;
        let outcome = async {
            sender
                .ready()
                .await
                .map_err(|e| format!("connection: {e}"))?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| format!("request: {e}"))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("body: {e}"))?
                .to_bytes();
            Ok::<_, String>((status, body))
        }
        .await;
        let (status, body) = match outcome {
            Ok(answer) => answer,
            Err(e) => {
                self.sender = None;
                return Err(e);
            }
        };
        let body_ok = match plan.expect {
            Expect::Ok => true,
            Expect::OkContaining(needle) => body.windows(needle.len()).any(|w| w == needle),
        };
        if status == StatusCode::OK && body_ok {
            Ok(())
        } else {
            Err(format!(
                "status {status}, body {:?}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ))
        }
    }
}

/// Opens a connection and spawns its driver on the current runtime.
async fn handshake<B>(addr: SocketAddr) -> anyhow::Result<SendRequest<B>>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// Runs `plan` over `connections` connections: `warmup` unmeasured, then `measure` during which
/// every response is counted and timed.
pub async fn measure(
    plan: &Plan,
    connections: usize,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<Measured> {
    let connections = connections.max(1);
    let start = Instant::now();
    let window_start = start + warmup;
    let end = window_start + measure;
    let stride = (plan.len() / connections).max(1);
    let mut tasks = Vec::with_capacity(connections);
    for c in 0..connections {
        let plan = plan.clone();
        let mut conn = Conn::new(plan.addr)?;
        tasks.push(tokio::spawn(async move {
            let mut stats = ConnStats {
                latencies_us: Vec::with_capacity(1 << 16),
                ..ConnStats::default()
            };
            let mut i = c * stride;
            while Instant::now() < end {
                let t0 = Instant::now();
                let outcome = conn.send(&plan, i).await;
                let t1 = Instant::now();
                i = i.wrapping_add(1);
                match outcome {
                    Ok(()) if t1 >= window_start && t1 < end => {
                        stats.ok += 1;
                        let us = t1.duration_since(t0).as_micros();
                        stats
                            .latencies_us
                            .push(u32::try_from(us).unwrap_or(u32::MAX));
                    }
                    Ok(()) => {}
                    Err(e) => {
                        stats.fail(e);
                        if conn.sender.is_none() {
                            // Do not spin on a refused connection.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            }
            stats
        }));
    }
    let mut total = ConnStats::default();
    for task in tasks {
        let stats = task.await?;
        total.ok += stats.ok;
        total.errors += stats.errors;
        total.latencies_us.extend(stats.latencies_us);
        if total.first_error.is_none() {
            total.first_error = stats.first_error;
        }
    }
    let mut latencies = total.latencies_us;
    latencies.sort_unstable();
    let seconds = measure.as_secs_f64();
    Ok(Measured {
        requests: total.ok,
        errors: total.errors,
        seconds,
        rps: total.ok as f64 / seconds,
        p50_us: percentile(&latencies, 0.50),
        p99_us: percentile(&latencies, 0.99),
        max_us: latencies.last().copied().unwrap_or(0),
        first_error: total.first_error,
    })
}

/// Sends every request of `plan` exactly once, spread over `connections` connections (used to
/// load each sampled session into the cache through the real hot path). Reports progress on
/// stderr when `progress`.
pub async fn sweep(plan: &Plan, connections: usize, progress: bool) -> anyhow::Result<Swept> {
    let connections = connections.max(1);
    let len = plan.len();
    let start = Instant::now();
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let reporter = progress.then(|| {
        let done = done.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            tick.tick().await;
            loop {
                tick.tick().await;
                let n = done.load(std::sync::atomic::Ordering::Relaxed);
                let rate = n as f64 / start.elapsed().as_secs_f64();
                eprintln!("    primed {n}/{len} ({rate:.0}/s)");
            }
        })
    });
    let mut tasks = Vec::with_capacity(connections);
    for c in 0..connections {
        let plan = plan.clone();
        let done = done.clone();
        let mut conn = Conn::new(plan.addr)?;
        tasks.push(tokio::spawn(async move {
            let mut stats = ConnStats::default();
            for i in (c..len).step_by(connections) {
                match conn.send(&plan, i).await {
                    Ok(()) => stats.ok += 1,
                    Err(e) => stats.fail(e),
                }
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            stats
        }));
    }
    let mut total = ConnStats::default();
    for task in tasks {
        let stats = task.await?;
        total.ok += stats.ok;
        total.errors += stats.errors;
        if total.first_error.is_none() {
            total.first_error = stats.first_error;
        }
    }
    if let Some(reporter) = reporter {
        reporter.abort();
    }
    Ok(Swept {
        requests: total.ok,
        errors: total.errors,
        seconds: start.elapsed().as_secs_f64(),
        first_error: total.first_error,
    })
}

fn percentile(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() as f64) * q).ceil() as usize;
    sorted
        .get(rank.saturating_sub(1).min(sorted.len() - 1))
        .copied()
        .unwrap_or(0)
}

/// A one-off POST of a JSON body on its own connection (login set-up, not measured). Answers
/// the status, the headers and the body.
pub async fn post_json(
    addr: SocketAddr,
    path: &str,
    body: &serde_json::Value,
) -> anyhow::Result<(StatusCode, HeaderMap, Bytes)> {
    let mut sender = handshake::<Full<Bytes>>(addr).await?;
    let request = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(HOST, addr.to_string())
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(body)?)))?;
    sender.ready().await?;
    let response = sender
        .send_request(request)
        .await
        .with_context(|| format!("POST {path}"))?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok((parts.status, parts.headers, body))
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.50), 50);
        assert_eq!(percentile(&v, 0.99), 99);
        assert_eq!(percentile(&v, 1.0), 100);
        assert_eq!(percentile(&[], 0.5), 0);
        assert_eq!(percentile(&[7], 0.99), 7);
    }
}
