//! Each destination type, through the real worker, to its strict fake:
//! events arrive in the vendor's shape with the vendor's dedup key.

use std::time::Duration;

use serde_json::{json, Value};
use waymark_tests::fakes::{amplitude, ga4, meta_capi, mixpanel, segment, webhook, Fake};
use waymark_tests::{client, Worker};

const WAIT: Duration = Duration::from_secs(20);

struct Fakes {
    webhook: Fake,
    segment: Fake,
    ga4: Fake,
    mixpanel: Fake,
    amplitude: Fake,
    meta: Fake,
}

fn fakes() -> Fakes {
    Fakes {
        webhook: webhook::start("whsec"),
        segment: segment::start("wk_downstream"),
        ga4: ga4::start("G-TEST123", "ga-secret"),
        mixpanel: mixpanel::start("sa.user", "sa-secret", "4242"),
        amplitude: amplitude::start("amp-key"),
        meta: meta_capi::start("123456789", "meta-token"),
    }
}

fn config(f: &Fakes) -> String {
    format!(
        r#"
[identity]
keys = [{{ id = "k1", secret = "test-secret-0123456789abcdef0123456789" }}]
[admin]
token = "admin-secret"
live_token = "live-secret"
[[sources]]
name = "web"
write_key = "wk_test"
default_consent = {{ analytics = "granted", marketing = "pending" }}

[[destinations]]
name = "hook"
type = "webhook"
url = "{}/hook"
secret = "whsec"
headers = {{ "x-team" = "growth" }}
delivery = {{ initial_backoff_ms = 50 }}

[[destinations]]
name = "segment"
type = "segment"
write_key = "wk_downstream"
base_url = "{}"

[[destinations]]
name = "ga4"
type = "ga4"
consent = ["analytics"]
measurement_id = "G-TEST123"
api_secret = "ga-secret"
base_url = "{}"

[[destinations]]
name = "mixpanel"
type = "mixpanel"
consent = ["analytics"]
project_id = "4242"
service_account = "sa.user"
secret = "sa-secret"
base_url = "{}"

[[destinations]]
name = "amplitude"
type = "amplitude"
consent = ["analytics"]
api_key = "amp-key"
base_url = "{}"

[[destinations]]
name = "ads"
type = "meta_capi"
consent = ["marketing"]
pixel_id = "123456789"
access_token = "meta-token"
base_url = "{}"
"#,
        f.webhook.base, f.segment.base, f.ga4.base, f.mixpanel.base, f.amplitude.base, f.meta.base
    )
}

fn event(kind: &str, name: &str, marketing: bool) -> Value {
    let mut e = json!({
        "type": kind,
        "messageId": format!("ajs-next-{}", uuid::Uuid::new_v4()),
        "anonymousId": "anon-12345",
        "userId": "user-777",
        "timestamp": chrono::Utc::now().to_rfc3339(),
        "properties": {"revenue": 42.5, "currency": "EUR", "Product Name": "Mug"},
        "traits": {"email": " Jane.Doe@Example.com ", "phone": "+1 (650) 555-1212"},
        "context": {
            "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 Safari/605.1.15",
            "page": {"url": "https://shop.example.com/checkout", "title": "Checkout"},
            "consent": {"categoryPreferences": {"marketing": marketing}}
        }
    });
    match kind {
        "track" => e["event"] = json!(name),
        "page" => e["name"] = json!(name),
        _ => {}
    }
    e
}

fn post_batch(worker: &Worker, batch: &[Value]) {
    let r = client()
        .post(worker.url("/v1/batch"))
        .basic_auth("wk_test", Some(""))
        .json(&json!({ "batch": batch }))
        .send()
        .expect("post");
    assert_eq!(r.status(), 200, "{}", r.text().unwrap_or_default());
}

#[test]
fn every_destination_receives_vendor_shaped_events() {
    let f = fakes();
    let worker = Worker::start(&config(&f));
    let batch = vec![
        event("track", "Order Completed", true),
        event("page", "Checkout", true),
        event("identify", "", true),
        event("track", "Product Added", false),
    ];
    post_batch(&worker, &batch);
    let ids: Vec<&str> = batch
        .iter()
        .map(|e| e["messageId"].as_str().unwrap())
        .collect();

    // Webhook and Segment: all four, as sent, signed.
    let hooked = f.webhook.wait_for(4, WAIT);
    assert_eq!(
        hooked
            .iter()
            .filter(|e| ids.contains(&e["messageId"].as_str().unwrap()))
            .count(),
        4
    );
    let seg = f.segment.wait_for(4, WAIT);
    assert!(seg
        .iter()
        .all(|e| e["context"]["waymark"]["visitorId"].is_string()));

    // GA4: track and page (identify has no GA4 event); names mapped, consent from purposes.
    let ga = f.ga4.wait_for(3, WAIT);
    let names: Vec<&str> = ga.iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert!(
        names.contains(&"order_completed")
            && names.contains(&"page_view")
            && names.contains(&"product_added"),
        "{names:?}"
    );
    let order = ga.iter().find(|e| e["name"] == "order_completed").unwrap();
    assert_eq!(order["user_id"], "user-777");
    assert_eq!(order["consent"]["ad_user_data"], "GRANTED");
    assert!(order["params"]["session_id"].is_number());
    assert_eq!(order["params"]["product_name"], "Mug");
    let unconsented = ga.iter().find(|e| e["name"] == "product_added").unwrap();
    assert_eq!(unconsented["consent"]["ad_personalization"], "DENIED");

    // Mixpanel: $insert_id stable and derived from the messageId (too long for Mixpanel as is).
    let mp = f.mixpanel.wait_for(3, WAIT);
    assert!(mp
        .iter()
        .all(|e| e["properties"]["$insert_id"].as_str().unwrap().len() <= 36));
    assert!(mp.iter().any(|e| e["event"] == "$mp_web_page_view"));

    // Amplitude: insert_id is the messageId; identify becomes $identify.
    let amp = f.amplitude.wait_for(4, WAIT);
    for e in &amp {
        assert!(ids.contains(&e["insert_id"].as_str().unwrap()), "{e}");
    }
    assert!(amp.iter().any(
        |e| e["event_type"] == "$identify" && e["user_properties"]["$set"]["email"].is_string()
    ));

    // Meta: only the marketing-consented track and page; hashed PII, event_id = messageId.
    let meta = f.meta.wait_for(2, WAIT);
    std::thread::sleep(Duration::from_millis(500));
    let meta_all = f.meta.events();
    assert_eq!(
        meta_all.len(),
        2,
        "consent-denied event reached Meta: {meta_all:?}"
    );
    let purchase = meta
        .iter()
        .find(|e| e["event_name"] == "Purchase")
        .expect("Purchase");
    assert_eq!(purchase["event_id"], ids[0]);
    use sha2::Digest;
    let em = hex::encode(sha2::Sha256::digest(b"jane.doe@example.com"));
    assert_eq!(purchase["user_data"]["em"][0], em);
    assert_eq!(
        purchase["user_data"]["ph"][0],
        hex::encode(sha2::Sha256::digest(b"16505551212"))
    );
    assert_eq!(purchase["custom_data"]["value"], 42.5);
    assert!(meta.iter().any(|e| e["event_name"] == "PageView"));

    // Nothing was refused by any fake.
    for fake in [
        &f.webhook,
        &f.segment,
        &f.ga4,
        &f.mixpanel,
        &f.amplitude,
        &f.meta,
    ] {
        assert!(
            fake.rejections().is_empty(),
            "{}: {:?}",
            fake.base,
            fake.rejections()
        );
    }

    // Metrics per destination.
    let metrics = client()
        .get(worker.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    for d in ["hook", "segment", "ga4", "mixpanel", "amplitude", "ads"] {
        assert!(
            metrics.contains(&format!(
                "waymark_events_delivered_total{{destination=\"{d}\"}}"
            )),
            "{d}:\n{metrics}"
        );
    }
    assert!(
        metrics.contains("waymark_consent_blocked_total{destination=\"ads\",state=\"denied\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("waymark_delivery_latency_seconds_bucket{destination=\"hook\""));
}

#[test]
fn a_vendor_rejection_dead_letters_and_replay_delivers() {
    let f = fakes();
    let worker = Worker::start(&config(&f));
    f.amplitude
        .set_mode(waymark_tests::fakes::Mode::Status(400));
    let batch: Vec<Value> = (0..3)
        .map(|i| event("track", &format!("E{i}"), false))
        .collect();
    post_batch(&worker, &batch);
    let auth = ("Authorization", "Bearer admin-secret");
    let deadline = std::time::Instant::now() + WAIT;
    let letters = loop {
        let r: Value = client()
            .get(worker.url("/admin/dlq?destination=amplitude"))
            .header(auth.0, auth.1)
            .send()
            .unwrap()
            .json()
            .unwrap();
        let letters = r["deadLetters"].as_array().cloned().unwrap_or_default();
        if letters.len() == 3 || std::time::Instant::now() > deadline {
            break letters;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(letters.len(), 3, "{letters:?}");
    assert!(letters[0]["reason"].as_str().unwrap().contains("HTTP 400"));
    assert_eq!(letters[0]["event"]["type"], "track");

    // The CLI sees the same dead letters.
    let out = std::process::Command::new(waymark_tests::waymark_bin())
        .args(["dlq", "list", "--destination", "amplitude", "--data-dir"])
        .arg(&worker.data_dir)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        3,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    f.amplitude.set_mode(waymark_tests::fakes::Mode::Normal);
    let r: Value = client()
        .post(worker.url("/admin/dlq/replay"))
        .header(auth.0, auth.1)
        .json(&json!({"destination": "amplitude"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(r["replayed"], 3);
    f.amplitude.wait_for(3, WAIT);
}

#[test]
fn the_live_stream_shows_each_stage_and_filters() {
    use std::io::{BufRead, BufReader};
    let f = fakes();
    let worker = Worker::start(&config(&f));
    let unauthorized = client()
        .get(worker.url("/admin/live?token=nope"))
        .send()
        .unwrap();
    assert_eq!(unauthorized.status(), 401);
    let live = reqwest::blocking::Client::builder()
        .timeout(None)
        .build()
        .unwrap()
        .get(worker.url("/admin/live?token=live-secret&event=Order%20Completed"))
        .send()
        .unwrap();
    assert_eq!(live.status(), 200);
    let (tx, rx) = std::sync::mpsc::channel::<Value>();
    std::thread::spawn(move || {
        for line in BufReader::new(live).lines() {
            let Ok(line) = line else { return };
            if let Some(data) = line.strip_prefix("data:") {
                if let Ok(v) = serde_json::from_str(data.trim()) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
            }
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    post_batch(
        &worker,
        &[
            event("track", "Order Completed", true),
            event("page", "Home", true),
        ],
    );
    let mut stages = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + WAIT;
    while std::time::Instant::now() < deadline {
        if let Ok(frame) = rx.recv_timeout(Duration::from_millis(200)) {
            assert_eq!(frame["event"], "Order Completed", "filter leaked {frame}");
            for k in [
                "stage",
                "messageId",
                "type",
                "event",
                "destination",
                "visitorId",
                "payload",
            ] {
                assert!(frame.get(k).is_some(), "frame lacks {k}: {frame}");
            }
            stages.insert(frame["stage"].as_str().unwrap().to_owned());
            if stages.contains("delivered")
                && stages.contains("routed")
                && stages.contains("accepted")
            {
                break;
            }
        }
    }
    assert!(
        stages.contains("accepted") && stages.contains("routed") && stages.contains("delivered"),
        "{stages:?}"
    );
}
