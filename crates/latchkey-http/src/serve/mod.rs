//! latchkey's own accept loop, in place of `axum::serve`, so hostile connections are bounded:
//!
//! - **A cap on open connections** ([`connections::Registry`]): at the cap a new connection is
//!   still accepted and the longest-idle one (no request in flight) is closed to make room;
//!   only when every connection is busy is the newcomer closed at once. Idle or trickling
//!   sockets therefore never lock out `/healthz`.
//! - **Clocks per connection** ([`connections::Entry::expiry`], fed by the watched IO of
//!   [`io::Watched`]): a request head must be complete `header_read_timeout` after the
//!   connection opened, or after the first byte that follows an idle spell; a kept-alive
//!   connection may sit idle `idle_timeout` between requests; a busy connection that moves no
//!   byte for `max(request_timeout, heartbeat) + idle_timeout` is stalled (a client that
//!   stopped reading). latchkey keeps these clocks itself because hyper's `header_read_timeout`
//!   starts as soon as hyper waits for a head — right after each answer on a kept-alive
//!   connection, so it would cut `idle_timeout` short — does not run while hyper-util sniffs
//!   the protocol (a connection that sends nothing stays open forever), and is HTTP/1 only.
//!   It is switched off (and hyper gets no timer): with it set, a kept-alive connection that
//!   had an early answer (413 before its body was read) was sometimes closed under the client
//!   reusing it — `quatrix::bodies_over_the_limit_get_413_and_malformed_bodies_400` failed in
//!   7 runs of 110, in none of 120 without it, nor in 40 with `axum::serve`.
//! - **Graceful shutdown**: the loop stops accepting, every connection is asked to finish
//!   (requests in flight are answered, event streams end on the state's `shutdown` watch, a
//!   connection without a request in flight is closed within a second — even one still
//!   sending a head), and the loop returns once the last one has closed.
//!
//! - **A finish bound**: connections still busy `finish_timeout` after the listener closed are
//!   closed.
//!
//! hyper-util's auto builder serves HTTP/1.1 and HTTP/2 (by preface, or by ALPN under [`tls`]).
//! With TLS the handshake runs inside the connection's task, over the watched TCP stream, on
//! the header clock: a peer that opens a socket and never finishes its handshake is closed
//! like one that never finishes its head.
//!
//! The peer address is a task-local of the request's future ([`peer`]), not a request extension
//! (`ConnectInfo`): an extension's first insert allocates the request's extension map and a box
//! (about 550 instructions per request with their frees), and the session checks never read it.

mod connections;
mod io;
mod own_wake;
pub mod request_timeout;
pub mod streams;
pub mod tls;

pub use connections::default_max_connections;

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{Request, Response};
use futures_util::future::{ready, Either, Ready};
use futures_util::FutureExt;
use http_body_util::Limited;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::guard::{Answered, Guarded};
use crate::metrics::ClosedLabels;
use crate::state::AppState;
use connections::{Busy, CloseReason, Entry, Registry, Timeouts, Wake};
use own_wake::OwnWake;
use tls::Tls;

tokio::task_local! {
    /// The connection's peer, while its request is being answered (see the module docs).
    static PEER: SocketAddr;
}

/// The address of the peer whose request is being answered: set while its answer's future
/// runs (`None` outside a served request, as in unit tests that call a router directly; the
/// guard's own checks are given the peer).
pub fn peer() -> Option<SocketAddr> {
    PEER.try_with(|peer| *peer).ok()
}

/// The longest any configured duration is taken to be, so deadlines stay finite.
pub const LONGEST: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// At shutdown, how long a connection without a request in flight may take to close by itself
/// (an HTTP/2 connection sends its GOAWAY) before it is closed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// Pause after a failed accept (out of file descriptors, typically) before trying again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// One listener's way of serving.
pub(crate) struct Listener {
    pub tcp: TcpListener,
    pub app: Arc<Guarded>,
    /// HTTPS when set.
    pub tls: Option<Arc<Tls>>,
    /// Open connections at most.
    pub max_connections: usize,
    /// Turns true when this listener must stop accepting and its connections finish.
    pub stop: watch::Receiver<bool>,
    /// How long connections still busy after `stop` may take before they are closed.
    pub finish_timeout: Duration,
}

/// What every connection task of one listener shares.
struct Serving {
    app: Arc<Guarded>,
    state: AppState,
    tls: Option<Arc<Tls>>,
    builder: auto::Builder<TokioExecutor>,
    registry: Registry,
    timeouts: Timeouts,
}

/// Serves `listener` until its `stop` turns true, then until every connection has closed
/// (those still open `finish_timeout` later are closed). `state.options` must be resolved
/// (durations at most [`LONGEST`]).
pub(crate) async fn serve(listener: Listener, state: AppState) {
    let options = &state.options;
    let timeouts = Timeouts {
        header: options.header_read_timeout,
        idle: options.idle_timeout,
        stall: options.request_timeout.max(streams::HEARTBEAT) + options.idle_timeout,
        shutdown_grace: SHUTDOWN_GRACE,
    };
    let Listener {
        tcp,
        app,
        tls,
        max_connections,
        mut stop,
        finish_timeout,
    } = listener;
    let serving = Arc::new(Serving {
        app,
        tls,
        builder: builder(),
        registry: Registry::new(max_connections),
        timeouts,
        state: state.clone(),
    });
    // Each connection task holds a sender; `recv` answers `None` once all are gone.
    let (alive, mut all_closed) = mpsc::channel::<()>(1);
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|stop| *stop) => break,
            accepted = tcp.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors, typically: an idle connection gives one back.
                tracing::error!(error = %e, "accepting a connection failed");
                serving.registry.evict_one();
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let entry = match serving.registry.admit() {
            Some(entry) => entry,
            None => {
                tracing::debug!(%peer, "connection refused: at the cap, every connection busy");
                count_closed(&serving.state, CloseReason::Refused);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let serving = serving.clone();
        let alive = alive.clone();
        tokio::spawn(async move {
            connection(&serving, stream, peer, entry).await;
            drop(alive);
        });
    }
    drop(tcp);
    serving.registry.stop_all();
    drop(alive);
    if tokio::time::timeout(finish_timeout, all_closed.recv())
        .await
        .is_err()
    {
        let left = serving.registry.close_all();
        tracing::warn!(
            connections = left,
            "closing connections still busy at shutdown"
        );
        let _ = all_closed.recv().await;
    }
}

fn builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Off, and no timer (see the module documentation): latchkey's own clocks do this job.
    builder.http1().header_read_timeout(None);
    builder
}

fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

fn count_closed(state: &AppState, reason: CloseReason) {
    state
        .metrics
        .connections_closed
        .get_or_create(&ClosedLabels {
            reason: reason.label(),
        })
        .inc();
}

/// Serves one admitted connection until it ends or latchkey closes it.
async fn connection(serving: &Serving, stream: TcpStream, peer: SocketAddr, entry: Arc<Entry>) {
    let open = &serving.state.metrics.open_connections;
    open.inc();
    let io = io::Watched::new(stream, entry.clone());
    let closed = match &serving.tls {
        None => drive(serving, io, peer, &entry).await,
        Some(tls) => match handshake(serving, tls, io, &entry).await {
            Ok(io) => drive(serving, io, peer, &entry).await,
            Err(closed) => {
                if closed.is_none() {
                    tracing::debug!(%peer, "TLS handshake failed");
                }
                closed
            }
        },
    };
    if let Some(reason) = closed {
        tracing::debug!(%peer, reason = reason.label(), "connection closed");
        count_closed(&serving.state, reason);
    }
    serving.registry.remove(&entry);
    open.dec();
}

/// The TLS handshake, on the connection's header clock; `Err(None)`: it failed.
async fn handshake<I>(
    serving: &Serving,
    tls: &Tls,
    io: I,
    entry: &Entry,
) -> Result<tokio_rustls::server::TlsStream<I>, Option<CloseReason>>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    tokio::select! {
        accepted = tls.acceptor().accept(io) => accepted.map_err(|_| None),
        wake = entry.expiry(serving.timeouts) => Err(Some(match wake {
            Wake::Close(reason) => reason,
            Wake::Finish => CloseReason::Shutdown,
        })),
    }
}

/// Drives the connection; answers why latchkey closed it (`None`: it ended by itself). The
/// connection is dropped on return, which closes the socket.
async fn drive<I>(
    serving: &Serving,
    io: I,
    peer: SocketAddr,
    entry: &Arc<Entry>,
) -> Option<CloseReason>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = PerConnection {
        app: serving.app.clone(),
        peer,
        entry: entry.clone(),
    };
    let mut conn = pin!(serving.builder.serve_connection(TokioIo::new(io), service));
    // Only the connection's own entry is watched here (the server's stop reaches it through
    // the registry): nothing shared by all connections is polled on every wake-up.
    loop {
        // The connection first (it is what wakes the task on every request); the expiry only
        // when its own timer or notification woke the task.
        let expiry = pin!(entry.expiry(serving.timeouts));
        let mut expiry = OwnWake::new(expiry);
        let wake = poll_fn(|cx| {
            if let Poll::Ready(served) = conn.as_mut().poll(cx) {
                if let Err(e) = served {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return Poll::Ready(None);
            }
            expiry.poll_if_due(cx).map(Some)
        })
        .await;
        // `None`: the connection ended by itself.
        match wake? {
            Wake::Close(reason) => return Some(reason),
            Wake::Finish => conn.as_mut().graceful_shutdown(),
        }
    }
}

/// The application as one connection sees it: each request carries the peer address and keeps
/// the connection busy until its answer's body has been sent (or dropped).
#[derive(Clone)]
struct PerConnection {
    app: Arc<Guarded>,
    peer: SocketAddr,
    entry: Arc<Entry>,
}

type Answering = Either<
    Ready<Result<Response<Answer>, Infallible>>,
    Pin<Box<dyn Future<Output = Result<Response<Answer>, Infallible>> + Send>>,
>;

impl hyper::service::Service<Request<Incoming>> for PerConnection {
    type Response = Response<Answer>;
    type Error = Infallible;
    type Future = Answering;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        // Every body is cut at the limit here, as `DefaultBodyLimit` would (axum's extractors
        // answer 413 on the limit's error), without a layer around every route. A request
        // without a body (a check's `GET`) gets the empty body, which is not boxed.
        let request = request.map(|body| {
            if body.is_end_stream() {
                Body::empty()
            } else {
                Body::new(Limited::new(body, crate::guard::MAX_BODY_BYTES))
            }
        });
        let route = self.app.route(request.uri().path());
        let busy = self.entry.begin_request(&route.metrics.latency);
        let ends = |response: Response<Body>| {
            Ok(response.map(|body| Answer {
                body,
                busy: Some(busy),
            }))
        };
        // The peer is in scope for an answer made in the call too (a thread-local swap).
        match PEER.sync_scope(self.peer, || self.app.answer(route, request, self.peer)) {
            // Answered in the call: nothing to box, nor to scope.
            Answered::Now(response) => Either::Left(ready(ends(response))),
            Answered::Later(answer) => {
                Either::Right(Box::pin(PEER.scope(self.peer, answer).map(ends)))
            }
        }
    }
}

/// A response body that ends its request (on the connection's clock) when it has been sent.
pub struct Answer {
    body: Body,
    busy: Option<Busy>,
}

impl HttpBody for Answer {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) {
            self.busy = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
