//! The ceiling for `scripts/bench`: a bare axum hello-world on the same runtime geoscim uses.
//!
//! `cargo run --release --example hello -- [PORT]` (or env `PORT`; default 0 = any free port).
//! Serves `GET /` -> `hello` on 127.0.0.1 and prints `hello listening on http://127.0.0.1:PORT`.
//! Stops on SIGINT/SIGTERM.

use axum::{routing::get, Router};
use tokio::signal::unix::{signal, SignalKind};

#[tokio::main(flavor = "multi_thread")]
async fn main() -> std::io::Result<()> {
    let port: u16 = match std::env::args()
        .nth(1)
        .or_else(|| std::env::var("PORT").ok())
    {
        Some(p) => p.parse().map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("bad port {p:?}: {e}"),
            )
        })?,
        None => 0,
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("hello listening on http://{}", listener.local_addr()?);

    let app = Router::new().route("/", get(|| async { "hello" }));
    let mut term = signal(SignalKind::terminate())?;
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        })
        .await
}
