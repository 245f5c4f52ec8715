//! `waymark-fanout-bench`: the fan-out benchmark (issue #5).
//!
//! Starts the real worker with three loopback webhook destinations, finds
//! the maximum ingest rate (20-event batches, 32 requests in flight), then
//! sends at half that rate and reports ingest→destination latency p50/p99,
//! measured per event from the moment its request was sent to the moment a
//! destination received it. `WAYMARK_BIN` picks the binary (release for
//! real numbers); `BENCH_BACKEND=postgres` runs the worker on a throwaway
//! PostgreSQL cluster instead of its embedded store (issue #12).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use waymark_tests::loadgen::{self, Load};
use waymark_tests::pg::Cluster;
use waymark_tests::Worker;

type Samples = Arc<Mutex<Vec<f64>>>;

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

async fn receiver(samples: Samples) -> String {
    let app = Router::new()
        .route(
            "/hook",
            post(|State(s): State<Samples>, body: Bytes| async move {
                let now = now_micros();
                if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                    let mut s = s.lock().unwrap();
                    for e in v["batch"].as_array().into_iter().flatten() {
                        if let Some(t0) = e["properties"]["t0"].as_i64() {
                            s.push((now - t0) as f64 / 1_000.0);
                        }
                    }
                }
                "ok"
            }),
        )
        .with_state(samples);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// How many latencies `samples` holds, and their "p50 X ms  p99 Y ms".
fn summary(samples: &Samples) -> (usize, String) {
    let mut v = samples.lock().unwrap().clone();
    v.sort_by(|a, b| a.total_cmp(b));
    let text = format!("p50 {:.1} ms  p99 {:.1} ms", pct(&v, 0.5), pct(&v, 0.99));
    (v.len(), text)
}

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let samples: Vec<Samples> = (0..3).map(|_| Samples::default()).collect();
    let bases: Vec<String> = samples
        .iter()
        .map(|s| rt.block_on(receiver(Arc::clone(s))))
        .collect();
    let mut config = String::from(
        "[identity]\nkeys = [{ id = \"k1\", secret = \"bench-secret-0123456789abcdef0123456789\" }]\n[[sources]]\nname = \"bench\"\nwrite_key = \"wk_bench\"\ndefault_consent = { analytics = \"granted\" }\n",
    );
    let backend = std::env::var("BENCH_BACKEND").unwrap_or_else(|_| "sqlite".into());
    let cluster = match backend.as_str() {
        "sqlite" => None,
        "postgres" => {
            let cluster = Cluster::start()?;
            let url = cluster.create_database("fanout")?;
            config.push_str(&format!(
                "[storage]\nbackend = \"postgres\"\nurl = \"{url}\"\n"
            ));
            Some(cluster)
        }
        other => anyhow::bail!("BENCH_BACKEND is sqlite or postgres, not {other:?}"),
    };
    println!("backend: {backend}");
    for (i, b) in bases.iter().enumerate() {
        config.push_str(&format!(
            "[[destinations]]\nname = \"d{i}\"\ntype = \"webhook\"\nurl = \"{b}/hook\"\nmax_batch = 500\n"
        ));
    }
    let worker = Worker::start(&config);
    let secs: u64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);

    // 1. Maximum ingest rate.
    let max = rt.block_on(loadgen::run(Load {
        duration: Duration::from_secs(secs),
        ..Load::batch(vec![worker.base.clone()], "wk_bench")
    }));
    println!("max ingest: {max}");
    std::thread::sleep(Duration::from_secs(5));
    for s in &samples {
        s.lock().unwrap().clear();
    }

    // 2. Half of it, paced: 8 senders, each sending 20-event batches on a fixed schedule.
    let target = max.events_per_sec / 2.0;
    let senders = 8usize;
    let per_sender_interval = Duration::from_secs_f64(20.0 * senders as f64 / target.max(1.0));
    let client = reqwest::Client::new();
    let url = worker.url("/v1/batch");
    let acked: Samples = Samples::default();
    let sent = rt.block_on(async {
        let mut tasks = Vec::new();
        for w in 0..senders {
            let client = client.clone();
            let url = url.clone();
            let acked = Arc::clone(&acked);
            tasks.push(tokio::spawn(async move {
                let end = Instant::now() + Duration::from_secs(secs);
                let mut tick = tokio::time::interval(per_sender_interval);
                let mut n = 0u64;
                while Instant::now() < end {
                    tick.tick().await;
                    let t0 = now_micros();
                    let batch: Vec<Value> = (0..20)
                        .map(|i| {
                            let mut e = loadgen::bench_event(n * 20 + i, w + 100);
                            e["properties"]["t0"] = json!(t0);
                            e
                        })
                        .collect();
                    n += 1;
                    let sent = client
                        .post(&url)
                        .basic_auth("wk_bench", Some(""))
                        .json(&json!({ "batch": batch }))
                        .send()
                        .await;
                    if sent.is_ok_and(|r| r.status().is_success()) {
                        let ms = (now_micros() - t0) as f64 / 1_000.0;
                        acked.lock().unwrap().push(ms);
                    }
                }
                n * 20
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap_or(0);
        }
        total
    });
    std::thread::sleep(Duration::from_secs(5));
    println!("half load: target {target:.0} events/s, sent {sent} events in {secs} s");
    let (n, latency) = summary(&acked);
    println!("  ingest: {n} requests acked  {latency}");
    for (i, s) in samples.iter().enumerate() {
        let (n, latency) = summary(s);
        println!("  d{i}: {n} delivered  ingest->destination {latency}");
    }
    drop(worker);
    drop(cluster);
    Ok(())
}
