//! The servers the benchmarks measure Waymark against or deliver to: the
//! bare axum baseline and a loopback webhook sink that counts events.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::{get, post};

/// The baseline: the same framework (axum), reading the body and answering
/// 200 with Waymark's success body, on `/v1/batch` and `/v1/{call}`.
pub async fn bare_server(listener: tokio::net::TcpListener) -> std::io::Result<()> {
    async fn ok(_body: Bytes) -> axum::Json<serde_json::Value> {
        axum::Json(serde_json::json!({"success": true}))
    }
    let app = axum::Router::new()
        .route("/v1/batch", post(ok))
        .route("/v1/{call}", post(ok));
    axum::serve(listener, app).await
}

/// Occurrences of `"messageId"` in a body: the events of a webhook batch.
pub fn count_events(body: &[u8]) -> u64 {
    const KEY: &[u8] = b"\"messageId\"";
    body.windows(KEY.len()).filter(|w| *w == KEY).count() as u64
}

/// A webhook receiver: `POST /hook` counts the events it gets and answers
/// 200; `GET /count` answers how many so far.
pub async fn webhook_sink(listener: tokio::net::TcpListener) -> std::io::Result<()> {
    let count = Arc::new(AtomicU64::new(0));
    let app =
        axum::Router::new()
            .route(
                "/hook",
                post(|State(c): State<Arc<AtomicU64>>, body: Bytes| async move {
                    c.fetch_add(count_events(&body), Ordering::Relaxed);
                    "ok"
                }),
            )
            .route(
                "/count",
                get(|State(c): State<Arc<AtomicU64>>| async move {
                    c.load(Ordering::Relaxed).to_string()
                }),
            )
            .with_state(count);
    axum::serve(listener, app).await
}
