//! Edge to region (issue #12): a worker at the edge on its embedded SQLite
//! store (cookie, consent, rules, the durable ack) forwards through its
//! `segment` destination to a regional fleet of two workers on PostgreSQL.
//! The region goes down for 20 seconds while the edge keeps acking; once it
//! is back, every acked event is in the region exactly once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use waymark_tests::fakes::webhook;
use waymark_tests::pg::test_database;
use waymark_tests::{client, temp_dir, Worker};

const SECRET: &str = "test-secret-0123456789abcdef0123456789";

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("its address").to_string()
}

#[test]
fn the_edge_keeps_acking_while_the_region_is_down_and_the_region_gets_everything_once() {
    let db = test_database("fleet_edge").expect("PostgreSQL test database");
    let sink = webhook::start("s");
    let region_cfg = format!(
        r#"
[identity]
keys = [{{ id = "k1", secret = "{SECRET}" }}]
[storage]
backend = "postgres"
url = "{}"
lease_secs = 3
[[sources]]
name = "edge"
write_key = "wk_region"
[[destinations]]
name = "warehouse"
type = "webhook"
url = "{}/hook"
secret = "s"
"#,
        db.url(),
        sink.base
    );
    let addrs = [free_addr(), free_addr()];
    let dirs = [temp_dir("region-a"), temp_dir("region-b")];
    let start_region = || -> Vec<Worker> {
        addrs
            .iter()
            .zip(&dirs)
            .map(|(addr, dir)| Worker::start_listening(&region_cfg, dir.clone(), addr))
            .collect()
    };
    let mut region = start_region();
    let edge = Worker::start(&format!(
        r#"
[identity]
keys = [{{ id = "k1", secret = "{SECRET}" }}]
[[sources]]
name = "web"
write_key = "wk_edge"
default_consent = {{ analytics = "granted" }}
[[destinations]]
name = "region"
type = "segment"
write_key = "wk_region"
base_url = "http://{}"
delivery = {{ initial_backoff_ms = 200, max_backoff_ms = 1000 }}
"#,
        addrs[0]
    ));

    let post = |round: usize| -> Vec<String> {
        let ids: Vec<String> = (0..5).map(|i| format!("e-{round}-{i}")).collect();
        let batch: Vec<Value> = ids
            .iter()
            .map(|id| json!({"type":"track","event":"E","anonymousId":"a","messageId":id}))
            .collect();
        let resp = client()
            .post(edge.url("/v1/batch"))
            .basic_auth("wk_edge", Some(""))
            .json(&json!({ "batch": batch }))
            .send()
            .expect("post to the edge");
        assert_eq!(
            resp.status(),
            200,
            "the edge refused while the region was up or down"
        );
        ids
    };

    let mut acked = Vec::new();
    let mut round = 0;
    // 1. Region up.
    for _ in 0..10 {
        acked.extend(post(round));
        round += 1;
    }
    sink.wait_for(acked.len(), Duration::from_secs(20));
    // The region records a delivery just after the sink answers it: a kill
    // in between sends that batch again (delivery is at least once). Wait
    // for the bookkeeping, so what the test counts is the edge's retries.
    wait_until_settled(&db);
    // 2. Region down for 20 seconds; the edge keeps acking.
    for w in &mut region {
        w.kill();
    }
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(20) {
        acked.extend(post(round));
        round += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    // 3. Region back on the same addresses.
    region = start_region();
    let deadline = Instant::now() + Duration::from_secs(60);
    let counts = loop {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for e in sink.events() {
            if let Some(id) = e["messageId"].as_str() {
                *counts.entry(id.to_owned()).or_default() += 1;
            }
        }
        if acked.iter().all(|id| counts.contains_key(id)) || Instant::now() > deadline {
            break counts;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // Settle: redeliveries would show up now.
    std::thread::sleep(Duration::from_secs(2));
    drop(region);
    for id in &acked {
        assert!(
            counts.contains_key(id),
            "{id} acked by the edge never reached the region"
        );
    }
    let mut final_counts: HashMap<String, usize> = HashMap::new();
    for e in sink.events() {
        if let Some(id) = e["messageId"].as_str() {
            *final_counts.entry(id.to_owned()).or_default() += 1;
        }
    }
    let twice: Vec<_> = final_counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(final_counts.len(), acked.len());
}

/// Waits until no entry of the region's outbox is left undone.
fn wait_until_settled(db: &waymark_tests::pg::TestDb) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pending = db
            .psql(
                "SELECT count(*) FROM outbox o WHERE NOT EXISTS \
                 (SELECT 1 FROM outbox_status s WHERE s.ds = o.ds AND s.seq = o.seq AND s.done)",
            )
            .expect("count the region's undone entries");
        if pending.trim() == "0" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the region did not record its deliveries: {pending} undone"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
