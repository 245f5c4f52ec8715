//! Rule chains in the running worker: a source chain (bot filter, then
//! rename) runs before routing, and a destination chain (PII hashing) runs
//! before delivery to that destination only.

mod rules_support;

use std::time::Duration;

use serde_json::json;
use sha2::{Digest, Sha256};
use waymark_tests::{client, Worker};

#[test]
fn source_and_destination_chains_run_in_the_worker() {
    let bot = rules_support::component("bot-filter");
    let rename = rules_support::component("rename");
    let pii = rules_support::component("pii-hash");
    let config = format!(
        r#"
[identity]
keys = [{{ id = "k1", secret = "test-secret-0123456789abcdef0123456789" }}]

[[sources]]
name = "web"
write_key = "wk_test"
default_consent = {{ analytics = "granted", marketing = "granted" }}
rules = ["bots", "rename"]

[[rules]]
name = "bots"
path = "{bot}"
timeout_ms = 200

[[rules]]
name = "rename"
path = "{rename}"
config = {{ events = {{ "Order Completed" = "Purchase" }} }}
timeout_ms = 200

[[rules]]
name = "pii"
path = "{pii}"
timeout_ms = 200

[[destinations]]
name = "lake"
type = "file"
path = "lake.ndjson"

[[destinations]]
name = "ads"
type = "file"
path = "ads.ndjson"
rules = ["pii"]
"#,
        bot = bot.display(),
        rename = rename.display(),
        pii = pii.display(),
    );
    let worker = Worker::start(&config);
    let human = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36";
    let body = json!({"batch": [
        {"type":"track","event":"Order Completed","anonymousId":"a1","messageId":"m-human",
         "context":{"userAgent": human, "traits": {"email": "Ana@Example.com"}}},
        {"type":"track","event":"Order Completed","anonymousId":"a2","messageId":"m-bot",
         "context":{"userAgent":"Googlebot/2.1 (+http://www.google.com/bot.html)"}},
        {"type":"identify","userId":"u1","messageId":"m-identify","traits":{"email":"Ana@Example.com"}}
    ]});
    let resp = client()
        .post(worker.url("/v1/batch"))
        .basic_auth("wk_test", Some(""))
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);

    let lake = worker.wait_for_file_events("lake.ndjson", 2, Duration::from_secs(20));
    let ads = worker.wait_for_file_events("ads.ndjson", 2, Duration::from_secs(20));
    let ids: Vec<&str> = lake
        .iter()
        .filter_map(|e| e["messageId"].as_str())
        .collect();
    assert!(!ids.contains(&"m-bot"), "the bot was not dropped: {ids:?}");
    // The source chain renamed the event for every destination.
    let purchase = lake.iter().find(|e| e["messageId"] == "m-human").unwrap();
    assert_eq!(purchase["event"], "Purchase");
    // The destination chain hashed the email for `ads` only.
    let hashed = hex::encode(Sha256::digest(b"ana@example.com"));
    let lake_identify = lake
        .iter()
        .find(|e| e["messageId"] == "m-identify")
        .unwrap();
    let ads_identify = ads.iter().find(|e| e["messageId"] == "m-identify").unwrap();
    assert_eq!(lake_identify["traits"]["email"], "Ana@Example.com");
    assert_eq!(ads_identify["traits"]["email"], hashed.as_str());
    let metrics = client()
        .get(worker.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains(
            "waymark_events_dropped_total{stage=\"rules\",source=\"web\",reason=\"rule\"} 1"
        ),
        "{metrics}"
    );
}
