//! The baseline: a hello-world axum handler served by `axum::serve` on a runtime built as
//! `latchkey serve` builds its own (multi-threaded, one worker per core), TCP_NODELAY set as
//! latchkey sets it, compiled with the same release profile. It answers every path, so it can
//! also be sent exactly the request a latchkey route gets (`bench/hot-path.sh`'s "same request"
//! column: what latchkey adds to reading and answering that request).

use axum::serve::ListenerExt;

pub const HELLO: &str = "Hello, World!";

pub async fn serve(listen: &str) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    eprintln!("hello-world handler on http://{}", listener.local_addr()?);
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { HELLO }))
        .route("/{*path}", axum::routing::get(|| async { HELLO }));
    axum::serve(listener, app).await?;
    Ok(())
}
