//! Identify-stage throughput: events/s for known visitors, with 1M
//! identifiers already in the store (issue #4), and resident memory while
//! the number of profiles touched grows.
//!
//! Run: `cargo bench -p waymark --bench identify`. Set
//! `WAYMARK_BENCH_IDENTIFIERS` to change the pre-loaded count (default 1000000).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rusqlite::params;
use serde_json::{json, Value};
use waymark::config::IdentityConfig;
use waymark::identity::Identity;
use waymark::stages::identify::{link, Visit};
use waymark::storage::SqliteStorage;
use waymark::Event;

/// Requests in flight at once (their writes share group commits).
const CONCURRENT_REQUESTS: usize = 64;
/// Events per request (a browser tag batch).
const EVENTS_PER_REQUEST: usize = 20;
/// Visitors the hot set cycles through.
const HOT_VISITORS: usize = 20_000;

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// Pre-loads `identifiers` nodes: half cookies, half user ids, two per profile.
fn preload(db: &PathBuf, identifiers: usize) {
    let mut conn = rusqlite::Connection::open(db).expect("open");
    conn.busy_timeout(Duration::from_secs(30))
        .expect("busy timeout");
    let tx = conn.transaction().expect("tx");
    {
        let mut profile = tx
            .prepare("INSERT INTO identity_profiles (id, created_ms) VALUES (?1, ?2)")
            .expect("prepare");
        let mut node = tx
            .prepare(
                "INSERT INTO identity_nodes (key, profile_id, created_ms, first_seen_ms, last_seen_ms, n_page)
                 VALUES (?1, ?2, ?3, ?3, ?3, 1)",
            )
            .expect("prepare");
        let mut link = tx
            .prepare(
                "INSERT INTO identity_links (a, b, cause, created_ms) VALUES (?1, ?2, 'event', ?3)",
            )
            .expect("prepare");
        for i in 0..identifiers / 2 {
            let p = format!("p{i:08}");
            let (cookie, user) = (format!("anon:v{i:021}"), format!("user:u{i}"));
            profile.execute(params![p, i as i64]).expect("profile");
            node.execute(params![user, p, i as i64]).expect("node");
            node.execute(params![cookie, p, i as i64]).expect("node");
            link.execute(params![user, cookie, i as i64]).expect("link");
        }
    }
    tx.commit().expect("commit");
}

fn request(visitor: usize, seq: usize) -> Vec<Event> {
    (0..EVENTS_PER_REQUEST)
        .map(|j| {
            let body = json!({
                "type": if j == 0 { "page" } else { "track" },
                "event": "Product Viewed",
                "messageId": format!("m{visitor}-{seq}-{j}"),
                "anonymousId": format!("v{visitor:021}"),
                "userId": format!("u{visitor}"),
                "timestamp": "2024-05-01T10:00:00.000Z",
                "properties": {"sku": "A-1", "price": 12.5},
            });
            match body {
                Value::Object(m) => Event::from_map(m),
                _ => unreachable!(),
            }
        })
        .collect()
}

fn bench_identify(c: &mut Criterion) {
    let identifiers: usize = std::env::var("WAYMARK_BENCH_IDENTIFIERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = std::env::temp_dir().join(format!("waymark-bench-identify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("data dir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let store = SqliteStorage::open(&dir, 512).expect("store");
    let started = Instant::now();
    preload(&store.path().to_path_buf(), identifiers);
    eprintln!(
        "identify bench: pre-loaded {identifiers} identifiers in {:.1}s; RSS {:.0} MiB",
        started.elapsed().as_secs_f64(),
        rss_mib()
    );
    let identity = Arc::new(Identity::with_store(
        &IdentityConfig::default(),
        Arc::clone(&store),
    ));

    let run = |first_visitor: usize, requests: usize, stride: usize| {
        let identity = Arc::clone(&identity);
        rt.block_on(async move {
            let mut tasks = Vec::with_capacity(requests);
            for r in 0..requests {
                let identity = Arc::clone(&identity);
                let visitor = (first_visitor + r * stride) % (identifiers / 2).max(1);
                tasks.push(tokio::spawn(async move {
                    let mut events = request(visitor, r);
                    let granted = vec![true; events.len()];
                    let visit = Visit {
                        visitor: None,
                        cookie_known: true,
                        cookie_granted: &granted,
                        sessions: true,
                    };
                    link(&identity, &mut events, &visit).await.expect("link")
                }));
            }
            for t in tasks {
                t.await.expect("task");
            }
        })
    };

    // Warm the hot set once so the measurement is of known, cached visitors.
    for start in (0..HOT_VISITORS).step_by(CONCURRENT_REQUESTS) {
        run(start, CONCURRENT_REQUESTS, 1);
    }
    eprintln!("identify bench: hot set warm; RSS {:.0} MiB", rss_mib());

    let mut group = c.benchmark_group("identify");
    group.throughput(Throughput::Elements(
        (CONCURRENT_REQUESTS * EVENTS_PER_REQUEST) as u64,
    ));
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(20));
    let mut next = 0usize;
    group.bench_function("known_visitors_1m_identifiers", |b| {
        b.iter(|| {
            run(next % HOT_VISITORS, CONCURRENT_REQUESTS, 1);
            next += CONCURRENT_REQUESTS;
        })
    });
    group.finish();

    // Resident memory while ever more distinct profiles are touched: the
    // cache is bounded, so RSS levels off instead of following the count.
    let span = (identifiers / 2).min(400_000);
    let mut touched = 0usize;
    let started = Instant::now();
    for checkpoint in [span / 4, span / 2, span] {
        while touched < checkpoint {
            run(touched, CONCURRENT_REQUESTS, 1);
            touched += CONCURRENT_REQUESTS;
        }
        eprintln!(
            "identify bench: {touched} distinct profiles touched; RSS {:.0} MiB",
            rss_mib()
        );
    }
    let events = touched * EVENTS_PER_REQUEST;
    eprintln!(
        "identify bench: cold sweep {:.0} events/s (every request a cache miss)",
        events as f64 / started.elapsed().as_secs_f64()
    );
    drop(identity);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench_identify);
criterion_main!(benches);
