//! A small HTTP/1.1 client for what wrk cannot do: keep-alive connections over hyper's
//! low-level client (`hyper::client::conn::http1`), one task per connection, each sending its
//! next request as soon as the previous answer has been read (closed loop, no pipelining).

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderMap, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The address of a base URL such as `http://127.0.0.1:8080`.
pub fn address(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("{url}: only http:// URLs"))?;
    rest.trim_end_matches('/')
        .parse()
        .with_context(|| format!("{url}: expected http://<ip>:<port>"))
}

/// One keep-alive connection; reopened after an error.
pub struct Connection {
    addr: SocketAddr,
    sender: Option<SendRequest<Full<Bytes>>>,
}

/// An answer: status, headers, whole body.
pub type Answer = (StatusCode, HeaderMap, Bytes);

impl Connection {
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr, sender: None }
    }

    /// Sends one request and reads the whole answer.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&serde_json::Value>,
    ) -> anyhow::Result<Answer> {
        let sender = match &mut self.sender {
            Some(sender) => sender,
            None => {
                let stream = TcpStream::connect(self.addr)
                    .await
                    .with_context(|| format!("connecting to {}", self.addr))?;
                stream.set_nodelay(true)?;
                let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                self.sender.insert(sender)
            }
        };
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.addr.to_string());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = match body {
            Some(json) => request
                .header(CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(serde_json::to_vec(json)?)))?,
            None => request.body(Full::new(Bytes::new()))?,
        };
        let answer = async {
            sender.ready().await?;
            let response = sender.send_request(request).await?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, anyhow::Error>((parts.status, parts.headers, body))
        }
        .await;
        if answer.is_err() {
            self.sender = None;
        }
        answer.with_context(|| path.to_owned())
    }
}

/// What a closed loop measured.
pub struct Measured {
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub p50_us: u32,
    pub p99_us: u32,
}

/// Runs `step` on `connections` connections, each step once its previous one is done, counting
/// and timing those that end inside `[warmup, warmup + measure)`.
pub async fn closed_loop<F, Fut>(
    addr: SocketAddr,
    connections: usize,
    warmup: Duration,
    measure: Duration,
    step: F,
) -> anyhow::Result<Measured>
where
    F: Fn(Connection) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = (Connection, anyhow::Result<()>)> + Send,
{
    let start = Instant::now();
    let (from, until) = (start + warmup, start + warmup + measure);
    let mut tasks = Vec::new();
    for _ in 0..connections.max(1) {
        let step = step.clone();
        tasks.push(tokio::spawn(async move {
            let mut connection = Connection::new(addr);
            let (mut ok, mut errors, mut first_error, mut latencies) = (0, 0, None, Vec::new());
            while Instant::now() < until {
                let began = Instant::now();
                let (back, outcome) = step(connection).await;
                connection = back;
                let ended = Instant::now();
                match outcome {
                    Ok(()) if ended >= from && ended < until => {
                        ok += 1;
                        let us = ended.duration_since(began).as_micros();
                        latencies.push(u32::try_from(us).unwrap_or(u32::MAX));
                    }
                    Ok(()) => {}
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            (ok, errors, first_error, latencies)
        }));
    }
    let mut total = Measured {
        ok: 0,
        errors: 0,
        first_error: None,
        p50_us: 0,
        p99_us: 0,
    };
    let mut latencies = Vec::new();
    for task in tasks {
        let (ok, errors, first_error, mut l) = task.await?;
        total.ok += ok;
        total.errors += errors;
        total.first_error = total.first_error.or(first_error);
        latencies.append(&mut l);
    }
    latencies.sort_unstable();
    total.p50_us = percentile(&latencies, 0.50);
    total.p99_us = percentile(&latencies, 0.99);
    Ok(total)
}

/// One `GET /session/keepalive` per token of the file, to load each session into the server's
/// cache; fails unless every answer is 200.
pub async fn prime(
    url: &str,
    tokens: &Path,
    connections: usize,
    identities: bool,
) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(tokens).with_context(|| format!("reading {}", tokens.display()))?;
    let tokens: Arc<Vec<String>> = Arc::new(
        text.lines()
            .filter(|line| !line.is_empty())
            .map(str::to_owned)
            .collect(),
    );
    let addr = address(url)?;
    let start = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..connections.max(1) {
        let (tokens, next) = (tokens.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut connection = Connection::new(addr);
            let mut failures = (0u64, None);
            loop {
                let Some(token) = tokens.get(next.fetch_add(1, Ordering::Relaxed)) else {
                    return failures;
                };
                let cookie = format!("latchkey_session={token}");
                let (path, header) = if identities {
                    ("/forward-auth", ("cookie", cookie.as_str()))
                } else {
                    ("/session/keepalive", ("x-auth-token", token.as_str()))
                };
                let answer = connection.send(Method::GET, path, &[header], None).await;
                let failure = match answer {
                    Ok((status, _, _)) if status == StatusCode::OK => continue,
                    Ok((status, _, body)) => {
                        format!("status {status}: {}", String::from_utf8_lossy(&body))
                    }
                    Err(e) => format!("{e:#}"),
                };
                failures.0 += 1;
                failures.1.get_or_insert(failure);
            }
        }));
    }
    let mut failed = (0, None);
    for task in tasks {
        let (n, first) = task.await?;
        failed.0 += n;
        failed.1 = failed.1.or(first);
    }
    let seconds = start.elapsed().as_secs_f64();
    eprintln!(
        "  primed {} sessions in {seconds:.1} s ({:.0} cold keepalives/s)",
        tokens.len(),
        tokens.len() as f64 / seconds.max(1e-9)
    );
    if failed.0 > 0 {
        bail!(
            "{} keepalives failed; first: {}",
            failed.0,
            failed.1.unwrap_or_default()
        );
    }
    Ok(())
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() as f64) * q).ceil() as usize;
    sorted
        .get(rank.saturating_sub(1).min(sorted.len() - 1))
        .copied()
        .unwrap_or(0)
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
