//! Isolation and durability: a destination that answers 500 or hangs for
//! 10 s changes neither the others' delivery nor ingest; once it recovers
//! every event arrives; a restart with a non-empty outbox delivers all.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use waymark_tests::fakes::{webhook, Fake, Mode};
use waymark_tests::{client, Worker};

fn config(healthy: &Fake, sick: &Fake) -> String {
    format!(
        r#"
[identity]
keys = [{{ id = "k1", secret = "test-secret-0123456789abcdef0123456789" }}]
[[sources]]
name = "web"
write_key = "wk_test"
[[destinations]]
name = "healthy"
type = "webhook"
url = "{}/hook"
secret = "s"
[[destinations]]
name = "sick"
type = "webhook"
url = "{}/hook"
secret = "s"
timeout_ms = 30000
delivery = {{ initial_backoff_ms = 100, max_backoff_ms = 500 }}
"#,
        healthy.base, sick.base
    )
}

fn send(worker: &Worker, from: usize, n: usize) -> Duration {
    let started = Instant::now();
    for chunk in (from..from + n).collect::<Vec<_>>().chunks(20) {
        let batch: Vec<Value> = chunk
            .iter()
            .map(|i| json!({"type":"track","event":"E","anonymousId":"anon-1","messageId":format!("m-{i}")}))
            .collect();
        let r = client()
            .post(worker.url("/v1/batch"))
            .basic_auth("wk_test", Some(""))
            .json(&json!({ "batch": batch }))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    started.elapsed()
}

fn ids(fake: &Fake) -> HashSet<String> {
    fake.events()
        .iter()
        .filter_map(|e| e["messageId"].as_str().map(str::to_owned))
        .collect()
}

fn check(mode: Mode) {
    let healthy = webhook::start("s");
    let sick = webhook::start("s");
    let worker = Worker::start(&config(&healthy, &sick));
    // Baseline: both healthy.
    let baseline = send(&worker, 0, 100);
    healthy.wait_for(100, Duration::from_secs(20));
    sick.wait_for(100, Duration::from_secs(20));

    // One turns sick: ingest and the healthy one go on as before.
    sick.set_mode(mode);
    let during = send(&worker, 100, 400);
    let t = Instant::now();
    healthy.wait_for(500, Duration::from_secs(20));
    let healthy_lag = t.elapsed();
    assert!(
        during < baseline * 4 + Duration::from_secs(2),
        "ingest slowed: {baseline:?} -> {during:?}"
    );
    assert!(
        healthy_lag < Duration::from_secs(3),
        "healthy destination lagged {healthy_lag:?}"
    );

    // Recovery: everything reaches the sick one too, nothing twice lost.
    sick.set_mode(Mode::Normal);
    let deadline = Instant::now() + Duration::from_secs(60);
    while ids(&sick).len() < 500 {
        assert!(
            Instant::now() < deadline,
            "sick destination got {} of 500 after recovery",
            ids(&sick).len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(ids(&healthy).len(), 500);
}

#[test]
fn an_outage_isolates_and_recovers() {
    check(Mode::Status(500));
}

#[test]
fn a_slow_destination_isolates_and_recovers() {
    check(Mode::Sleep(Duration::from_secs(10)));
}

#[test]
fn a_restart_with_a_non_empty_outbox_delivers_everything() {
    let healthy = webhook::start("s");
    let sick = webhook::start("s");
    sick.set_mode(Mode::Status(503));
    let mut worker = Worker::start(&config(&healthy, &sick));
    send(&worker, 0, 200);
    healthy.wait_for(200, Duration::from_secs(20));
    let data_dir = worker.data_dir.clone();
    let config_text = std::fs::read_to_string(&worker.config_path).unwrap();
    worker.kill();
    sick.set_mode(Mode::Normal);
    let _worker = Worker::start_in(&config_text, data_dir);
    let deadline = Instant::now() + Duration::from_secs(30);
    while ids(&sick).len() < 200 {
        assert!(
            Instant::now() < deadline,
            "got {} of 200 after restart",
            ids(&sick).len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `GET /admin/dlq` for `destination`.
fn dead_letters(worker: &Worker, destination: &str) -> Vec<Value> {
    let r: Value = client()
        .get(worker.url(&format!("/admin/dlq?destination={destination}")))
        .header("Authorization", "Bearer admin-secret")
        .send()
        .unwrap()
        .json()
        .unwrap();
    r["deadLetters"].as_array().cloned().unwrap_or_default()
}

#[test]
fn a_removed_destinations_events_go_to_the_dead_letters_and_replay_when_it_returns() {
    let healthy = webhook::start("s");
    let sick = webhook::start("s");
    sick.set_mode(Mode::Status(503));
    let admin = "\n[admin]\ntoken = \"admin-secret\"\n";
    let both = config(&healthy, &sick) + admin;
    let mut worker = Worker::start(&both);
    send(&worker, 0, 40);
    healthy.wait_for(40, Duration::from_secs(20));
    let data_dir = worker.data_dir.clone();
    worker.kill();

    // Restarted without `sick`: its 40 waiting events move to the dead letters.
    // `sick` is the last destination of the config: cut it off.
    let text = config(&healthy, &sick);
    let cut = text
        .find("[[destinations]]\nname = \"sick\"")
        .expect("the config names `sick`");
    let without = format!("{}{admin}", &text[..cut]);
    let mut worker = Worker::start_in(
        &format!("{without}\n[storage]\nremoved_destination_secs = 0\n"),
        data_dir.clone(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let letters = loop {
        let letters = dead_letters(&worker, "sick");
        if letters.len() >= 40 || Instant::now() > deadline {
            break letters;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(letters.len(), 40, "{letters:?}");
    assert!(letters
        .iter()
        .all(|l| l["reason"] == "destination `sick` is no longer configured"));
    worker.kill();

    // Added back, a replay delivers every one of them.
    sick.set_mode(Mode::Normal);
    let worker = Worker::start_in(&both, data_dir);
    let r: Value = client()
        .post(worker.url("/admin/dlq/replay"))
        .header("Authorization", "Bearer admin-secret")
        .json(&json!({"destination": "sick"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(r["replayed"], 40);
    let deadline = Instant::now() + Duration::from_secs(20);
    while ids(&sick).len() < 40 {
        assert!(Instant::now() < deadline, "got {} of 40", ids(&sick).len());
        std::thread::sleep(Duration::from_millis(50));
    }
}
