//! A destination's rules in the running worker (issue #14): a failing rule
//! with `on_error = "quarantine"` puts the event in the quarantine store
//! with the destination, the rule and the reason, never in the outbox's
//! "delivered"; once the rule allows it, a replay delivers it to that
//! destination only. Events with no vendor equivalent are skipped, counted.

mod rules_support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use waymark_tests::fakes::ga4;
use waymark_tests::{client, Worker};

const ADMIN: &str = "admin-secret";

fn quarantine(worker: &Worker) -> Vec<Value> {
    let body: Value = client()
        .get(worker.url("/admin/quarantine"))
        .bearer_auth(ADMIN)
        .send()
        .unwrap()
        .json()
        .unwrap();
    body["events"].as_array().cloned().unwrap_or_default()
}

fn metric(worker: &Worker, name: &str, labels: &str) -> u64 {
    let text = client()
        .get(worker.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[test]
fn a_rule_quarantine_is_kept_and_replayed_to_its_destination_once_the_rule_allows_it() {
    let dir = rules_support::temp_dir("deliver-quarantine");
    let rule = dir.join("guard.wasm");
    std::fs::copy(rules_support::component("hostile-trap"), &rule).unwrap();
    let g = ga4::start("G-TEST123", "ga-secret");
    let config = format!(
        r#"
[identity]
keys = [{{ id = "k1", secret = "test-secret-0123456789abcdef0123456789" }}]
[admin]
token = "{ADMIN}"

[[sources]]
name = "web"
write_key = "wk_test"
default_consent = {{ analytics = "granted", marketing = "granted" }}

[[rules]]
name = "guard"
path = "{rule}"
on_error = "quarantine"
timeout_ms = 1000

[[destinations]]
name = "guarded"
type = "file"
path = "guarded.ndjson"
rules = ["guard"]

[[destinations]]
name = "lake"
type = "file"
path = "lake.ndjson"

[[destinations]]
name = "ga4"
type = "ga4"
measurement_id = "G-TEST123"
api_secret = "ga-secret"
base_url = "{ga4}"
"#,
        rule = rule.display(),
        ga4 = g.base,
    );
    let worker = Worker::start(&config);
    let body = json!({"batch": [
        {"type":"track","event":"Buy","anonymousId":"a1","messageId":"m-calm"},
        {"type":"track","event":"Buy","anonymousId":"a1","messageId":"m-attack","properties":{"attack":true}},
        {"type":"identify","userId":"u1","anonymousId":"a1","messageId":"m-identify","traits":{"plan":"pro"}},
    ]});
    let resp = client()
        .post(worker.url("/v1/batch"))
        .basic_auth("wk_test", Some(""))
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);

    // 1. The calm event reaches the guarded destination; the attacked one
    //    is quarantined for it (and only for it: the lake has all three).
    worker.wait_for_file_events("lake.ndjson", 3, Duration::from_secs(20));
    worker.wait_for_file_events("guarded.ndjson", 2, Duration::from_secs(20));
    let deadline = Instant::now() + Duration::from_secs(20);
    let entry = loop {
        if let Some(e) = quarantine(&worker)
            .into_iter()
            .find(|e| e["destination"] == "guarded")
        {
            break e;
        }
        assert!(
            Instant::now() < deadline,
            "nothing quarantined; stderr:\n{}",
            worker.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(entry["rule"], "guard", "{entry}");
    assert_eq!(entry["reason"], "rule", "{entry}");
    assert_eq!(entry["message_id"], "m-attack", "{entry}");
    assert!(
        entry["detail"]
            .as_str()
            .unwrap_or("")
            .starts_with("rule guard: "),
        "{entry}"
    );
    let guarded: Vec<String> = worker
        .file_events("guarded.ndjson")
        .iter()
        .map(|e| e["messageId"].as_str().unwrap_or("").to_owned())
        .collect();
    assert!(!guarded.contains(&"m-attack".to_owned()), "{guarded:?}");
    assert_eq!(
        metric(
            &worker,
            "waymark_events_quarantined_total",
            r#"destination="guarded""#
        ),
        1
    );

    // 2. GA4 has no event for `identify`: skipped, counted, never silent.
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(
        &worker,
        "waymark_events_skipped_total",
        r#"reason="unsupported_type""#,
    ) < 1
    {
        assert!(
            Instant::now() < deadline,
            "identify never counted as skipped"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        metric(
            &worker,
            "waymark_events_skipped_total",
            r#"destination="ga4""#
        ),
        1
    );
    g.wait_for(2, Duration::from_secs(20));

    // 3. The rule is fixed (its file replaced; the worker reloads it); a
    //    replay then delivers the event to the guarded destination, once.
    let fixed = dir.join("fixed.wasm");
    std::fs::copy(rules_support::component("bench-noop"), &fixed).unwrap();
    std::fs::rename(&fixed, &rule).unwrap();
    let mut id = entry["id"].as_i64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer: Value = client()
            .post(worker.url("/admin/quarantine/replay"))
            .bearer_auth(ADMIN)
            .json(&json!({"ids": [id]}))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(answer["replayed"], json!([id]), "{answer}");
        let delivered = Instant::now() + Duration::from_secs(5);
        let mut requarantined = None;
        while Instant::now() < delivered {
            if worker
                .file_events("guarded.ndjson")
                .iter()
                .any(|e| e["messageId"] == "m-attack")
            {
                break;
            }
            if let Some(e) = quarantine(&worker)
                .into_iter()
                .find(|e| e["destination"] == "guarded")
            {
                requarantined = e["id"].as_i64();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        match requarantined {
            // The reload had not happened yet: replay the new entry.
            Some(next) => id = next,
            None => break,
        }
        assert!(
            Instant::now() < deadline,
            "the fixed rule never let the event through"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let guarded = worker.wait_for_file_events("guarded.ndjson", 3, Duration::from_secs(20));
    let attacks = guarded
        .iter()
        .filter(|e| e["messageId"] == "m-attack")
        .count();
    assert_eq!(attacks, 1, "{guarded:?}");
    assert!(quarantine(&worker).is_empty());
    // The lake got it once, at ingest; the replay went to `guarded` only.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(worker.file_events("lake.ndjson").len(), 3);
    let _ = std::fs::remove_dir_all(&dir);
}
