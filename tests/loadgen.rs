//! The ingest load generator: posts `/v1/batch` requests of 20 track events
//! (about 600 bytes each) at a fixed concurrency for a fixed time, and
//! reports events/s and request latency percentiles.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Load settings.
#[derive(Debug, Clone)]
pub struct Load {
    /// `http://127.0.0.1:PORT` of each server; connections are spread over
    /// them in turn (a fleet of workers behind no load balancer).
    pub bases: Vec<String>,
    /// Write key sent as the Basic username.
    pub write_key: String,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Events per request.
    pub batch: usize,
    /// How long to send, after warm-up.
    pub duration: Duration,
    /// Random (UUID v4) message ids, as browsers send, instead of ids that
    /// count up per connection (neighbours in a B-tree).
    pub random_ids: bool,
    /// Warm-up before measuring.
    pub warmup: Duration,
}

/// What a run measured.
#[derive(Debug, Clone, Copy)]
pub struct Report {
    /// Requests answered 200.
    pub requests: u64,
    /// Requests answered otherwise (or failed).
    pub errors: u64,
    /// Events per second (200 answers × batch size / elapsed).
    pub events_per_sec: f64,
    /// Requests per second.
    pub requests_per_sec: f64,
    /// Median request latency.
    pub p50: Duration,
    /// 99th percentile request latency.
    pub p99: Duration,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>9.0} events/s {:>8.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  ({} ok, {} errors)",
            self.events_per_sec,
            self.requests_per_sec,
            self.p50.as_secs_f64() * 1e3,
            self.p99.as_secs_f64() * 1e3,
            self.requests,
            self.errors
        )
    }
}

/// One ~600-byte track event with a unique messageId.
pub fn bench_event(i: u64, worker: usize) -> serde_json::Value {
    bench_event_with_id(i, format!("bench-{worker}-{i}-{}", uuid::Uuid::new_v4()))
}

/// [`bench_event`] with the given messageId.
pub fn bench_event_with_id(i: u64, message_id: String) -> serde_json::Value {
    serde_json::json!({
        "type": "track",
        "event": "Product Added",
        "messageId": message_id,
        "anonymousId": format!("anon-{}", i % 1000),
        "timestamp": "2024-05-01T12:00:00.000Z",
        "properties": {
            "product_id": "507f1f77bcf86cd799439011",
            "sku": "G-32",
            "category": "Games",
            "name": "Monopoly: 3rd Edition",
            "brand": "Hasbro",
            "variant": "200 pieces",
            "price": 18.99,
            "quantity": 1,
            "coupon": "MAYDEALS",
            "position": 3,
            "url": "https://www.example.com/product/path",
            "image_url": "https://www.example.com/product/path.jpg"
        },
        "context": {
            "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
            "page": {"path": "/product/path", "url": "https://www.example.com/product/path"},
            "library": {"name": "waymark-loadgen", "version": "0.1.0"}
        }
    })
}

/// Runs the load and returns what it measured.
pub async fn run(load: Load) -> Report {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(load.concurrency)
        .build()
        .expect("client");
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for worker in 0..load.concurrency {
        let client = client.clone();
        let url = format!("{}/v1/batch", load.bases[worker % load.bases.len().max(1)]);
        let key = load.write_key.clone();
        let stop = Arc::clone(&stop);
        let measuring = Arc::clone(&measuring);
        let batch = load.batch;
        let random_ids = load.random_ids;
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let (mut ok, mut errors) = (0u64, 0u64);
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let events: Vec<_> = (0..batch)
                    .map(|_| {
                        i += 1;
                        if random_ids {
                            bench_event_with_id(i, uuid::Uuid::new_v4().to_string())
                        } else {
                            bench_event(i, worker)
                        }
                    })
                    .collect();
                let body =
                    serde_json::to_vec(&serde_json::json!({"batch": events})).unwrap_or_default();
                let started = Instant::now();
                let result = client
                    .post(&url)
                    .basic_auth(&key, Some(""))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                let good = match result {
                    Ok(r) => {
                        let status = r.status();
                        let _ = r.bytes().await;
                        status.is_success()
                    }
                    Err(_) => false,
                };
                if measuring.load(Ordering::Relaxed) {
                    if good {
                        ok += 1;
                        latencies.push(started.elapsed());
                    } else {
                        errors += 1;
                    }
                }
            }
            (ok, errors, latencies)
        }));
    }
    tokio::time::sleep(load.warmup).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(load.duration).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (mut requests, mut errors, mut all) = (0u64, 0u64, Vec::new());
    for t in tasks {
        if let Ok((ok, err, lat)) = t.await {
            requests += ok;
            errors += err;
            all.extend(lat);
        }
    }
    all.sort();
    let pct = |p: f64| -> Duration {
        if all.is_empty() {
            return Duration::ZERO;
        }
        let idx = ((all.len() as f64 - 1.0) * p).round() as usize;
        all[idx.min(all.len() - 1)]
    };
    let secs = elapsed.as_secs_f64();
    Report {
        requests,
        errors,
        events_per_sec: requests as f64 * load.batch as f64 / secs,
        requests_per_sec: requests as f64 / secs,
        p50: pct(0.50),
        p99: pct(0.99),
    }
}

/// The baseline: the same framework (axum), reading the body and answering 200.
pub async fn bare_server(listener: tokio::net::TcpListener) -> std::io::Result<()> {
    use axum::routing::post;
    async fn ok(_body: axum::body::Bytes) -> axum::Json<serde_json::Value> {
        axum::Json(serde_json::json!({"success": true}))
    }
    let app = axum::Router::new().route("/v1/batch", post(ok));
    axum::serve(listener, app).await
}
