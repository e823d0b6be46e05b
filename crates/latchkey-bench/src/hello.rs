//! The baseline: a hello-world axum handler served by `axum::serve` on a runtime built as
//! `latchkey serve` builds its own (multi-threaded, one worker per core), TCP_NODELAY set as
//! latchkey sets it, compiled with the same release profile. It answers `GET /` with
//! `Hello, World!`, and the paths of latchkey's session checks with answers of the very size
//! latchkey gives them (same status, headers and body lengths; `bench/hot-path.sh` compares
//! them before measuring), so it can be sent exactly a check's request and give its answer
//! (the "same request and answer" column: what latchkey adds to reading that request and
//! writing that answer, on a machine whose load generator shares the cores). Every other path
//! gets `Hello, World!`.

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::routing::get;
use axum::serve::ListenerExt;

pub const HELLO: &str = "Hello, World!";

const JSON: HeaderValue = HeaderValue::from_static("application/json");
/// `/healthz`'s answer.
const HEALTHY: &str = r#"{"status":"ok"}"#;
/// `/sessions/validate/{id}`'s answer for an active session.
const VALID: &str = r#"{"valid":true,"message":"Session is active"}"#;
/// `/forward-auth`'s headers for a session of the bench user (`bench/common.sh`) signed in
/// with a password.
const FORWARD_AUTH: [(HeaderName, HeaderValue); 4] = [
    (
        HeaderName::from_static("remote-user"),
        HeaderValue::from_static("bench@example.com"),
    ),
    (
        HeaderName::from_static("remote-session"),
        HeaderValue::from_static("00000000-0000-4000-8000-000000000000"),
    ),
    (
        HeaderName::from_static("remote-amr"),
        HeaderValue::from_static("pwd"),
    ),
    (CACHE_CONTROL, HeaderValue::from_static("no-store")),
];

pub async fn serve(listen: &str) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    eprintln!("hello-world handler on http://{}", listener.local_addr()?);
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let app = axum::Router::new()
        .route("/", get(|| async { HELLO }))
        .route(
            "/healthz",
            get(|| async { ([(CONTENT_TYPE, JSON)], HEALTHY) }),
        )
        .route("/session/keepalive", get(|| async { StatusCode::OK }))
        .route(
            "/sessions/validate/{id}",
            get(|| async { ([(CONTENT_TYPE, JSON)], VALID) }),
        )
        .route("/forward-auth", get(|| async { (FORWARD_AUTH, ()) }))
        .route("/{*path}", get(|| async { HELLO }));
    axum::serve(listener, app).await?;
    Ok(())
}
