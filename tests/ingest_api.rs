//! The ingest API end to end: the real `waymark` binary on a loopback port,
//! spoken to over HTTP. Covers the happy paths of Segment's HTTP Tracking
//! API, a table of bad inputs with their statuses and error texts, dedup,
//! the visitor cookie, CORS and the ops endpoints.

use std::io::Write;
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use reqwest::blocking::{Client, RequestBuilder};
use serde_json::{json, Value};
use sha2::Sha256;
use waymark_tests::{client, track, Worker, BASIC_CONFIG};

fn batch(worker: &Worker, body: Value) -> RequestBuilder {
    client()
        .post(worker.url("/v1/batch"))
        .basic_auth("wk_test", Some(""))
        .json(&body)
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A cookie signed with the test config's key, issued at `issued`.
fn signed_cookie(visitor: &str, issued: i64, kid: &str, secret: &str) -> String {
    let payload = format!("v1.{visitor}.{issued}.{kid}");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(payload.as_bytes());
    let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("wm_vid={payload}.{tag}")
}

const TEST_SECRET: &str = "test-secret-0123456789abcdef0123456789";

#[test]
fn a_valid_batch_is_acked_and_lands_in_the_file_destination() {
    let worker = Worker::start(BASIC_CONFIG);
    let events = vec![track("Product Viewed"), track("Product Added")];
    let resp = batch(
        &worker,
        json!({ "batch": events, "sentAt": "2024-01-01T00:00:00Z" }),
    )
    .send()
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().unwrap(), json!({"success": true}));
    let landed = worker.wait_for_file_events("events.ndjson", 2, Duration::from_secs(10));
    let first = &landed[0];
    assert_eq!(first["event"], "Product Viewed");
    assert!(first["receivedAt"].is_string());
    assert!(first["context"]["waymark"]["visitorId"].is_string());
    assert_eq!(
        first["context"]["ip"], "127.0.0.0",
        "IP is truncated by default"
    );
}

#[test]
fn every_single_call_endpoint_accepts_its_call() {
    let worker = Worker::start(BASIC_CONFIG);
    let bodies = [
        ("track", json!({"userId":"u1","event":"Signed Up"})),
        ("page", json!({"userId":"u1","name":"Home"})),
        ("screen", json!({"userId":"u1","name":"Home"})),
        (
            "identify",
            json!({"userId":"u1","traits":{"email":"a@example.com"}}),
        ),
        ("group", json!({"userId":"u1","groupId":"g1"})),
        ("alias", json!({"userId":"u1","previousId":"anon-9"})),
    ];
    for (call, body) in &bodies {
        let resp = client()
            .post(worker.url(&format!("/v1/{call}")))
            .basic_auth("wk_test", Some(""))
            .json(body)
            .send()
            .unwrap();
        assert_eq!(resp.status(), 200, "{call}");
    }
    let landed = worker.wait_for_file_events("events.ndjson", 6, Duration::from_secs(10));
    let types: Vec<&str> = landed.iter().filter_map(|e| e["type"].as_str()).collect();
    for (call, _) in &bodies {
        assert!(types.contains(call), "{call} missing from {types:?}");
    }
}

#[test]
fn write_key_in_body_text_plain_and_gzip_are_accepted() {
    let worker = Worker::start(BASIC_CONFIG);
    let body = json!({"batch":[track("Text Plain")],"writeKey":"wk_test"}).to_string();
    let resp = client()
        .post(worker.url("/v1/batch"))
        .header("content-type", "text/plain;charset=UTF-8")
        .body(body.clone())
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = client()
        .post(worker.url("/v1/batch"))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gz(json!({"batch":[track("Gzipped")],"writeKey":"wk_test"})
            .to_string()
            .as_bytes()))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    worker.wait_for_file_events("events.ndjson", 2, Duration::from_secs(10));
}

#[test]
fn a_partly_bad_batch_keeps_the_good_events_and_names_the_bad_ones() {
    let worker = Worker::start(BASIC_CONFIG);
    let good = track("Good");
    let body = json!({"batch":[
        good,
        {"type":"track","anonymousId":"a","messageId":"bad-1"},
        {"type":"group","userId":"u","messageId":"bad-2"},
    ]});
    let resp = batch(&worker, body).send().unwrap();
    assert_eq!(resp.status(), 400);
    let answer: Value = resp.json().unwrap();
    assert_eq!(answer["accepted"], 1);
    let errors = answer["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[0]["index"], 1);
    assert_eq!(errors[0]["messageId"], "bad-1");
    assert_eq!(errors[0]["field"], "event");
    assert_eq!(errors[1]["index"], 2);
    assert_eq!(errors[1]["field"], "groupId");
    worker.wait_for_file_events("events.ndjson", 1, Duration::from_secs(10));
    // The rejected events are in quarantine with their reasons, as received.
    let db = worker.db();
    let rows: Vec<(String, String)> = db
        .prepare("SELECT reason, raw FROM quarantine ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].0, "missing_field");
    assert!(rows[0].1.contains("bad-1"));
    // And the admin API lists them.
    let listed: Value = client()
        .get(worker.url("/admin/quarantine"))
        .bearer_auth("admin-secret")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(listed["events"].as_array().unwrap().len(), 2);
}

/// One row of the bad-input table: what is sent and what must come back.
struct Case {
    name: &'static str,
    request: fn(&Worker) -> RequestBuilder,
    status: u16,
    /// Text the error body must contain.
    text: &'static str,
}

fn post_raw(w: &Worker, body: impl Into<reqwest::blocking::Body>) -> RequestBuilder {
    client()
        .post(w.url("/v1/batch"))
        .basic_auth("wk_test", Some(""))
        .header("content-type", "application/json")
        .body(body)
}

fn one(w: &Worker, event: Value) -> RequestBuilder {
    batch(w, json!({ "batch": [event] }))
}

fn deep(levels: usize) -> Value {
    let mut v = json!(1);
    for _ in 0..levels {
        v = json!({ "n": v });
    }
    v
}

#[test]
fn bad_inputs_get_precise_errors() {
    let cases = [
        Case {
            name: "malformed JSON",
            request: |w| post_raw(w, "{\"batch\":[{"),
            status: 400,
            text: "not valid JSON",
        },
        Case {
            name: "body is an array",
            request: |w| post_raw(w, "[1,2,3]"),
            status: 400,
            text: "must be a JSON object",
        },
        Case {
            name: "body is not JSON at all",
            request: |w| post_raw(w, "hello"),
            status: 400,
            text: "must be a JSON object",
        },
        Case {
            name: "empty batch",
            request: |w| batch(w, json!({"batch": []})),
            status: 400,
            text: "non-empty `batch`",
        },
        Case {
            name: "batch is not an array",
            request: |w| batch(w, json!({"batch": {"a":1}})),
            status: 400,
            text: "not valid JSON",
        },
        Case {
            name: "missing ids",
            request: |w| one(w, json!({"type":"track","event":"x"})),
            status: 400,
            text: "userId or anonymousId is required",
        },
        Case {
            name: "track without event",
            request: |w| one(w, json!({"type":"track","userId":"u"})),
            status: 400,
            text: "is required for track calls",
        },
        Case {
            name: "group without groupId",
            request: |w| one(w, json!({"type":"group","userId":"u"})),
            status: 400,
            text: "is required for group calls",
        },
        Case {
            name: "alias without previousId",
            request: |w| one(w, json!({"type":"alias","userId":"u"})),
            status: 400,
            text: "is required for alias calls",
        },
        Case {
            name: "unknown call type",
            request: |w| one(w, json!({"type":"click","userId":"u"})),
            status: 400,
            text: "is not a call type",
        },
        Case {
            name: "missing type in batch",
            request: |w| one(w, json!({"userId":"u"})),
            status: 400,
            text: "is required in a batch",
        },
        Case {
            name: "properties not an object",
            request: |w| {
                one(
                    w,
                    json!({"type":"track","userId":"u","event":"e","properties":"x"}),
                )
            },
            status: 400,
            text: "must be an object",
        },
        Case {
            name: "userId of wrong type",
            request: |w| one(w, json!({"type":"identify","userId":["u"]})),
            status: 400,
            text: "must be a string or a number",
        },
        Case {
            name: "event of wrong type",
            request: |w| one(w, json!({"type":"track","userId":"u","event":5})),
            status: 400,
            text: "must be a string",
        },
        Case {
            name: "bad timestamp",
            request: |w| {
                one(
                    w,
                    json!({"type":"track","userId":"u","event":"e","timestamp":"last tuesday"}),
                )
            },
            status: 400,
            text: "is not an ISO 8601 timestamp",
        },
        Case {
            name: "oversized event",
            request: |w| {
                one(
                    w,
                    json!({"type":"track","userId":"u","event":"e","properties":{"blob":"x".repeat(40_000)}}),
                )
            },
            status: 400,
            text: "over the 32768-byte limit",
        },
        Case {
            name: "oversized batch",
            request: |w| {
                batch(
                    w,
                    json!({"batch": (0..40).map(|_| json!({"type":"track","userId":"u","event":"e","properties":{"blob":"x".repeat(20_000)}})).collect::<Vec<_>>()}),
                )
            },
            status: 413,
            text: "over the 512000-byte batch limit",
        },
        Case {
            name: "deep nesting",
            request: |w| {
                one(
                    w,
                    json!({"type":"track","userId":"u","event":"e","properties": deep(40)}),
                )
            },
            status: 400,
            text: "nesting depth",
        },
        Case {
            name: "invalid UTF-8",
            request: |w| {
                post_raw(
                    w,
                    b"{\"batch\":[{\"type\":\"track\",\"userId\":\"\xff\xfe\",\"event\":\"e\"}]}"
                        .to_vec(),
                )
            },
            status: 400,
            text: "invalid UTF-8 at byte",
        },
        Case {
            name: "unknown write key",
            request: |w| {
                client()
                    .post(w.url("/v1/batch"))
                    .basic_auth("wk_nope", Some(""))
                    .json(&json!({"batch":[track("x")]}))
            },
            status: 401,
            text: "unknown write key",
        },
        Case {
            name: "missing write key",
            request: |w| {
                client()
                    .post(w.url("/v1/batch"))
                    .json(&json!({"batch":[track("x")]}))
            },
            status: 401,
            text: "missing; send it as the HTTP Basic username",
        },
        Case {
            name: "disallowed origin",
            request: |w| {
                batch(w, json!({"batch":[track("x")]})).header("origin", "https://evil.example.com")
            },
            status: 403,
            text: "is not allowed for source `web`",
        },
        Case {
            name: "bad gzip",
            request: |w| {
                post_raw(w, b"definitely not gzip".to_vec()).header("content-encoding", "gzip")
            },
            status: 400,
            text: "gzip stream is corrupt",
        },
        Case {
            name: "unsupported encoding",
            request: |w| post_raw(w, "{}").header("content-encoding", "br"),
            status: 415,
            text: "is not supported; send identity or gzip",
        },
        Case {
            name: "unsupported media type",
            request: |w| {
                client()
                    .post(w.url("/v1/batch"))
                    .basic_auth("wk_test", Some(""))
                    .header("content-type", "application/xml")
                    .body("<xml/>")
            },
            status: 415,
            text: "send application/json or text/plain",
        },
        Case {
            name: "unknown endpoint",
            request: |w| {
                client()
                    .post(w.url("/v1/click"))
                    .basic_auth("wk_test", Some(""))
                    .json(&json!({"userId":"u"}))
            },
            status: 404,
            text: "is not an endpoint",
        },
        Case {
            name: "type conflicts with endpoint",
            request: |w| {
                client()
                    .post(w.url("/v1/track"))
                    .basic_auth("wk_test", Some(""))
                    .json(&json!({"type":"page","userId":"u","event":"e"}))
            },
            status: 400,
            text: "must be `track` on this endpoint",
        },
        Case {
            name: "id too long",
            request: |w| one(w, json!({"type":"identify","userId":"u".repeat(300)})),
            status: 400,
            text: "ids may be at most 255",
        },
    ];
    assert!(cases.len() >= 20);
    let worker = Worker::start(BASIC_CONFIG);
    let mut failures = Vec::new();
    for case in &cases {
        let resp = (case.request)(&worker).send().unwrap();
        let status = resp.status().as_u16();
        let body = resp.text().unwrap_or_default();
        let parsed: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if status != case.status || !body.contains(case.text) || !parsed["errors"].is_array() {
            failures.push(format!(
                "{}: expected {} containing {:?}, got {status}: {body}",
                case.name, case.status, case.text
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The worker is still healthy after all of that.
    assert_eq!(
        client()
            .get(worker.url("/healthz"))
            .send()
            .unwrap()
            .status(),
        200
    );
}

#[test]
fn duplicates_are_acked_but_not_routed_again_even_after_restart() {
    let mut worker = Worker::start(BASIC_CONFIG);
    let event = track("Once");
    for _ in 0..3 {
        let resp = batch(&worker, json!({"batch":[event.clone()]}))
            .send()
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    worker.wait_for_file_events("events.ndjson", 1, Duration::from_secs(10));
    let metrics = client()
        .get(worker.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("waymark_dedup_hits_total{source=\"web\"} 2"),
        "{metrics}"
    );
    worker.stop();
    let config = std::fs::read_to_string(&worker.config_path).unwrap();
    let restarted = Worker::start_in(&config, worker.data_dir.clone());
    let resp = batch(&restarted, json!({"batch":[event.clone()]}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    std::thread::sleep(Duration::from_millis(500));
    let landed = restarted.file_events("events.ndjson");
    assert_eq!(
        landed.len(),
        1,
        "the duplicate was routed again: {landed:?}"
    );
}

fn cookie_of(resp: &reqwest::blocking::Response) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("wm_vid="))
        .map(str::to_owned)
}

fn visitor_of(set_cookie: &str) -> String {
    set_cookie
        .trim_start_matches("wm_vid=")
        .split('.')
        .nth(1)
        .unwrap()
        .to_owned()
}

#[test]
fn the_visitor_cookie_is_signed_kept_and_replaced_when_forged_or_expired() {
    let worker = Worker::start(BASIC_CONFIG);
    let http = client();
    let send = |cookie: Option<&str>| {
        let mut req = http
            .post(worker.url("/v1/batch"))
            .basic_auth("wk_test", Some(""))
            .json(&json!({"batch":[{"type":"page","messageId":uuid::Uuid::new_v4().to_string()}]}));
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        req.send().unwrap()
    };
    // 1. No cookie: one is minted, with the contract's attributes. Without a
    // verified cookie, an event still needs an id of its own.
    assert_eq!(send(None).status(), 400, "no ids and no cookie");
    let first = http
        .post(worker.url("/v1/batch"))
        .basic_auth("wk_test", Some(""))
        .json(&json!({"batch":[{"type":"page","anonymousId":"tag-anon"}]}))
        .send()
        .unwrap();
    assert_eq!(first.status(), 200);
    let set = cookie_of(&first).expect("a wm_vid cookie");
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=34560000"] {
        assert!(set.contains(attr), "{set} lacks {attr}");
    }
    let visitor = visitor_of(&set);
    // 2. A fresh valid cookie is trusted (and not re-sent until it needs a refresh).
    let now = chrono::Utc::now().timestamp();
    let valid = signed_cookie(&visitor, now, "k1", TEST_SECRET);
    let again = send(Some(&valid));
    assert_eq!(again.status(), 200);
    assert!(cookie_of(&again).is_none());
    // 3. Forged, unknown-key and expired cookies are replaced by a new visitor.
    let forged = signed_cookie(
        &visitor,
        now,
        "k1",
        "attacker-secret-0123456789abcdef01234567",
    );
    let unknown = signed_cookie(&visitor, now, "k9", TEST_SECRET);
    let expired = signed_cookie(&visitor, now - 401 * 86_400, "k1", TEST_SECRET);
    let tampered = valid.replace(&visitor[..4], "AAAA");
    for bad in [&forged, &unknown, &expired, &tampered] {
        // An untrusted cookie supplies no id: the event is rejected, and a
        // new cookie is still issued.
        let resp = send(Some(bad));
        assert_eq!(resp.status(), 400);
        let replaced = cookie_of(&resp).expect("a replacement cookie");
        assert_ne!(visitor_of(&replaced), visitor, "{bad} was trusted");
    }
    let events = worker.wait_for_file_events("events.ndjson", 2, Duration::from_secs(10));
    assert_eq!(events[0]["anonymousId"], "tag-anon");
    assert_eq!(events[1]["anonymousId"], visitor.as_str());
    assert_eq!(
        events[1]["context"]["waymark"]["visitorId"],
        visitor.as_str()
    );
    let metrics = http
        .get(worker.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let rejected: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("waymark_cookie_rejected_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(rejected, 4.0, "{metrics}");
}

#[test]
fn cors_preflight_and_per_source_origins() {
    let worker = Worker::start(BASIC_CONFIG);
    let http = Client::new();
    let pre = http
        .request(reqwest::Method::OPTIONS, worker.url("/v1/batch"))
        .header("origin", "https://shop.example.com")
        .header("access-control-request-method", "POST")
        .send()
        .unwrap();
    assert_eq!(pre.status(), 204);
    assert_eq!(
        pre.headers()["access-control-allow-origin"],
        "https://shop.example.com"
    );
    assert!(pre.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("POST"));
    let evil = http
        .request(reqwest::Method::OPTIONS, worker.url("/v1/batch"))
        .header("origin", "https://evil.example.com")
        .send()
        .unwrap();
    assert_eq!(evil.status(), 403);
    let ok = batch(&worker, json!({"batch":[track("x")]}))
        .header("origin", "https://shop.example.com")
        .send()
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["access-control-allow-credentials"], "true");
}

#[test]
fn ops_endpoints_answer() {
    let worker = Worker::start(BASIC_CONFIG);
    let http = client();
    assert_eq!(
        http.get(worker.url("/healthz")).send().unwrap().status(),
        200
    );
    assert_eq!(
        http.get(worker.url("/readyz")).send().unwrap().status(),
        200
    );
    let _ = batch(&worker, json!({"batch":[track("x"), {"type":"track"}]}))
        .send()
        .unwrap();
    let metrics = http
        .get(worker.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    for name in [
        "waymark_http_requests_total",
        "waymark_events_accepted_total",
        "waymark_events_rejected_total",
        "waymark_store_commit_duration_seconds_bucket",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }
    assert!(metrics.contains("reason=\"missing_field\""));
    let unauthorized = http.get(worker.url("/admin/quarantine")).send().unwrap();
    assert_eq!(unauthorized.status(), 401);
    let wrong = http
        .get(worker.url("/admin/quarantine"))
        .bearer_auth("nope")
        .send()
        .unwrap();
    assert_eq!(wrong.status(), 401);
}

#[test]
fn the_embedded_default_serves_the_demo_site_and_accepts_wk_demo() {
    let data = waymark_tests::temp_dir("default");
    let worker = Worker::start_default(data);
    let http = client();
    let resp = http
        .post(worker.url("/v1/batch"))
        .basic_auth("wk_demo", Some(""))
        .json(&json!({"batch":[track("Hello")]}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    worker.wait_for_file_events("events.ndjson", 1, Duration::from_secs(10));
    let home = http.get(worker.url("/")).send().unwrap();
    assert_eq!(home.status(), 200);
}

#[test]
fn check_reports_precise_config_errors() {
    let dir = waymark_tests::temp_dir("check");
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        BASIC_CONFIG.replace(
            "write_key = \"wk_test\"",
            "write_key = \"wk_test\"\nallowed_origin = []",
        ),
    )
    .unwrap();
    let out = std::process::Command::new(waymark_tests::waymark_bin())
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("allowed_origin"), "{stderr}");
    let good = dir.join("good.toml");
    std::fs::write(&good, BASIC_CONFIG).unwrap();
    let out = std::process::Command::new(waymark_tests::waymark_bin())
        .args(["check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn quarantined_events_can_be_replayed_with_a_correction() {
    let worker = Worker::start(BASIC_CONFIG);
    let bad = json!({"type":"track","anonymousId":"a","messageId":"fix-me"});
    assert_eq!(
        batch(&worker, json!({"batch":[bad]}))
            .send()
            .unwrap()
            .status(),
        400
    );
    let http = client();
    let listed: Value = http
        .get(worker.url("/admin/quarantine"))
        .bearer_auth("admin-secret")
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = listed["events"][0]["id"].as_i64().unwrap();
    // Replayed as is, it fails again with the same reason and stays quarantined.
    let again: Value = http
        .post(worker.url("/admin/quarantine/replay"))
        .bearer_auth("admin-secret")
        .json(&json!({"ids":[id]}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(again["still_invalid"][0]["field"], "event", "{again}");
    let listed: Value = http
        .get(worker.url("/admin/quarantine"))
        .bearer_auth("admin-secret")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(listed["events"].as_array().unwrap().len(), 1);
    let id = listed["events"][0]["id"].as_i64().unwrap();
    // Corrected, it is accepted, delivered, and leaves the quarantine.
    let fixed: Value = http
        .post(worker.url("/admin/quarantine/replay"))
        .bearer_auth("admin-secret")
        .json(&json!({"ids":[id], "event": {"type":"track","anonymousId":"a","messageId":"fix-me","event":"Fixed"}}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(fixed["replayed"], json!([id]), "{fixed}");
    let landed = worker.wait_for_file_events("events.ndjson", 1, Duration::from_secs(10));
    assert_eq!(landed[0]["event"], "Fixed");
    let listed: Value = http
        .get(worker.url("/admin/quarantine"))
        .bearer_auth("admin-secret")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(listed["events"].as_array().unwrap().is_empty());
}

#[test]
fn a_verified_cookie_takes_precedence_over_the_clients_anonymous_id() {
    let worker = Worker::start(BASIC_CONFIG);
    let visitor = "AAAAAAAAAAAAAAAAAAAAAA";
    let cookie = signed_cookie(visitor, chrono::Utc::now().timestamp(), "k1", TEST_SECRET);
    let resp = client()
        .post(worker.url("/v1/batch"))
        .basic_auth("wk_test", Some(""))
        .header("cookie", cookie)
        .json(&json!({"batch":[{"type":"page","anonymousId":"tag-anon","messageId":"m-1"}]}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let landed = worker.wait_for_file_events("events.ndjson", 1, Duration::from_secs(10));
    assert_eq!(landed[0]["anonymousId"], visitor);
    assert_eq!(
        landed[0]["context"]["waymark"]["clientAnonymousId"],
        "tag-anon"
    );
    assert_eq!(landed[0]["context"]["waymark"]["visitorId"], visitor);
}
