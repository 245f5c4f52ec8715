//! A fleet of workers on one PostgreSQL (issue #12), with the real binary:
//! the same events posted to two workers are delivered once; both workers
//! take traffic and no entry is sent twice; a SIGKILLed worker's
//! destinations are taken over; PostgreSQL restarted under load costs 503s,
//! not events; `waymark check` says what is wrong.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use waymark_tests::fakes::{webhook, Fake};
use waymark_tests::pg::{test_database, TestDb};
use waymark_tests::{client, Worker};

fn config(db: &TestDb, hook: &Fake) -> String {
    config_with_url(db.url(), hook)
}

fn config_with_url(url: &str, hook: &Fake) -> String {
    format!(
        r#"
[identity]
keys = [{{ id = "k1", secret = "test-secret-0123456789abcdef0123456789" }}]
[storage]
backend = "postgres"
url = "{}"
lease_secs = 3
pool_size = 8
[[sources]]
name = "web"
write_key = "wk_test"
[[destinations]]
name = "hook"
type = "webhook"
url = "{}/hook"
secret = "s"
"#,
        url, hook.base
    )
}

fn post(worker: &Worker, ids: &[String]) -> u16 {
    let batch: Vec<Value> = ids
        .iter()
        .map(|id| json!({"type":"track","event":"E","anonymousId":"anon-1","messageId":id}))
        .collect();
    client()
        .post(worker.url("/v1/batch"))
        .basic_auth("wk_test", Some(""))
        .json(&json!({ "batch": batch }))
        .send()
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// How many times each messageId reached the fake.
fn counts(hook: &Fake) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for e in hook.events() {
        if let Some(id) = e["messageId"].as_str() {
            *out.entry(id.to_owned()).or_insert(0) += 1;
        }
    }
    out
}

fn wait_for_ids(hook: &Fake, n: usize, timeout: Duration) -> HashMap<String, usize> {
    let deadline = Instant::now() + timeout;
    loop {
        let c = counts(hook);
        if c.len() >= n || Instant::now() > deadline {
            assert!(c.len() >= n, "expected {n} ids delivered, got {}", c.len());
            return c;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_same_events_posted_to_two_workers_are_delivered_once() {
    let db = test_database("fleet_dedup").expect("PostgreSQL test database");
    let hook = webhook::start("s");
    let cfg = config(&db, &hook);
    let a = Worker::start(&cfg);
    let b = Worker::start(&cfg);
    // Both workers get every batch, from two threads at once.
    let batches: Vec<Vec<String>> = (0..20)
        .map(|r| (0..10).map(|i| format!("m-{r}-{i}")).collect())
        .collect();
    std::thread::scope(|s| {
        for w in [&a, &b] {
            let batches = &batches;
            s.spawn(move || {
                for batch in batches {
                    assert_eq!(post(w, batch), 200, "{}", w.stderr());
                }
            });
        }
    });
    let delivered = wait_for_ids(&hook, 200, Duration::from_secs(30));
    // Settle: nothing more arrives.
    std::thread::sleep(Duration::from_secs(1));
    let delivered_after = counts(&hook);
    assert_eq!(delivered_after.len(), 200);
    let twice: Vec<_> = delivered_after.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(delivered.len(), 200);
}

#[test]
fn a_killed_workers_destination_is_taken_over_and_nothing_acked_is_lost() {
    let db = test_database("fleet_kill").expect("PostgreSQL test database");
    let hook = webhook::start("s");
    let cfg = config(&db, &hook);
    let a = std::sync::Mutex::new(Worker::start(&cfg));
    let b = Worker::start(&cfg);
    let a_url = a.lock().expect("worker a").url("/v1/batch");
    // Two threads load each worker; A is SIGKILLed halfway. Only what was
    // answered 200 counts as acked.
    let send = |url: &str, ids: &[String]| -> bool {
        let batch: Vec<Value> = ids
            .iter()
            .map(|id| json!({"type":"track","event":"E","anonymousId":"anon-1","messageId":id}))
            .collect();
        client()
            .post(url)
            .basic_auth("wk_test", Some(""))
            .json(&json!({ "batch": batch }))
            .send()
            .map(|r| r.status().as_u16() == 200)
            .unwrap_or(false)
    };
    let b_url = b.url("/v1/batch");
    let acked: Vec<String> = std::thread::scope(|s| {
        let mut threads = Vec::new();
        for t in 0..4 {
            let url = if t % 2 == 0 {
                a_url.clone()
            } else {
                b_url.clone()
            };
            let send = &send;
            threads.push(s.spawn(move || {
                let mut acked = Vec::new();
                for round in 0..30 {
                    let ids: Vec<String> = (0..10).map(|i| format!("k-{t}-{round}-{i}")).collect();
                    if send(&url, &ids) {
                        acked.extend(ids);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                acked
            }));
        }
        std::thread::sleep(Duration::from_millis(400));
        a.lock().expect("worker a").kill();
        threads
            .into_iter()
            .flat_map(|t| t.join().expect("load thread"))
            .collect()
    });
    assert!(
        acked.len() >= 600,
        "B's threads alone ack 600: {}",
        acked.len()
    );
    // Whoever held the lease, every acked event arrives within the lease plus slack.
    let delivered = wait_for_ids(&hook, acked.len(), Duration::from_secs(30));
    for id in &acked {
        assert!(delivered.contains_key(id), "{id} acked but never delivered");
    }
}

#[test]
fn check_names_what_is_wrong_with_the_database() {
    let db = test_database("fleet_check").expect("PostgreSQL test database");
    let hook = webhook::start("s");
    let dir = waymark_tests::temp_dir("fleet-check");
    let good = dir.join("good.toml");
    std::fs::write(&good, config(&db, &hook)).unwrap();
    let out = std::process::Command::new(waymark_tests::waymark_bin())
        .args(["check", "--config", good.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Nobody listens on this port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bad = dir.join("bad.toml");
    let text = config(&db, &hook).replace(
        db.url(),
        &format!("postgres://waymark@127.0.0.1:{port}/nowhere"),
    );
    std::fs::write(&bad, text).unwrap();
    let out = std::process::Command::new(waymark_tests::waymark_bin())
        .args(["check", "--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot connect to PostgreSQL"), "{stderr}");
}

#[test]
fn postgres_restarted_under_load_answers_503_and_loses_nothing_acked() {
    // A cluster of its own: the run's shared one must not be restarted.
    let cluster = waymark_tests::pg::Cluster::start().expect("a PostgreSQL cluster");
    let url = cluster.create_database("restart").expect("database");
    let hook = webhook::start("s");
    let cfg = config_with_url(&url, &hook);
    let worker = Worker::start(&cfg);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (acked, unavailable, ready_while_down) = std::thread::scope(|s| {
        let load = s.spawn(|| {
            let mut acked = Vec::new();
            let mut unavailable = 0;
            let mut round = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let ids: Vec<String> = (0..5).map(|i| format!("p-{round}-{i}")).collect();
                match post(&worker, &ids) {
                    200 => acked.extend(ids),
                    503 => unavailable += 1,
                    other => panic!("unexpected status {other}: {}", worker.stderr()),
                }
                round += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            (acked, unavailable)
        });
        std::thread::sleep(Duration::from_secs(1));
        cluster.stop().expect("stop PostgreSQL");
        std::thread::sleep(Duration::from_secs(2));
        let ready = client()
            .get(worker.url("/readyz"))
            .send()
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        cluster.start_again().expect("start PostgreSQL again");
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (acked, unavailable) = load.join().expect("load thread");
        (acked, unavailable, ready)
    });
    assert!(unavailable > 0, "no 503 while PostgreSQL was down");
    assert_eq!(
        ready_while_down, 503,
        "/readyz passed while PostgreSQL was down"
    );
    let delivered = wait_for_ids(&hook, acked.len(), Duration::from_secs(30));
    for id in &acked {
        assert!(delivered.contains_key(id), "{id} acked but never delivered");
    }
}
