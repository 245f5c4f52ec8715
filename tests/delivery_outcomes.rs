//! Per-event outcomes (issue #14): each HTTP destination, built from its
//! config exactly as the worker builds it, sends batches to its strict
//! fake. One malformed entry and one event over the vendor's size limit
//! are dead-lettered alone; events a vendor refuses per event are the only
//! ones rejected, and nothing the vendor refused for good is retried.

use std::sync::Arc;

use serde_json::{json, Value};
use waymark::config::DestinationConfig;
use waymark::consent::GrantedPurposes;
use waymark::destinations::{self, BuildContext, Outcome};
use waymark::storage::OutboxEntry;
use waymark_tests::fakes::{amplitude, ga4, meta_capi, mixpanel, segment, webhook, Fake};

/// The one `[[destinations]]` table of `toml`, built.
fn build(toml_text: &str) -> Box<dyn destinations::Destination> {
    #[derive(serde::Deserialize)]
    struct Doc {
        destinations: Vec<DestinationConfig>,
    }
    let doc: Doc = toml::from_str(toml_text).expect("destination config parses");
    let cx = BuildContext {
        data_dir: std::env::temp_dir(),
    };
    destinations::build(&doc.destinations[0], &cx, 0).expect("destination builds")
}

fn entry(i: usize, json: String) -> OutboxEntry {
    OutboxEntry {
        id: i as i64 + 1,
        source: "web".into(),
        message_id: format!("m-{i}"),
        // What the edge decided for these events (Meta's IP and user-agent
        // gate reads it).
        granted: GrantedPurposes::from_stored("analytics,marketing"),
        json: Arc::from(json),
        enqueued_at_ms: 0,
        attempts: 0,
    }
}

/// A valid event every vendor takes: recent, identified, with the page,
/// user agent and consent Meta needs for website events.
fn event(i: usize) -> Value {
    json!({
        "type": "track",
        "event": "Order Completed",
        "messageId": format!("m-{i}"),
        "userId": format!("user-{}", i % 7),
        "anonymousId": format!("anon-{}", i % 5),
        "timestamp": chrono::Utc::now().to_rfc3339(),
        "properties": {"revenue": 9.5, "currency": "EUR"},
        "context": {
            "page": {"url": "https://shop.example/"},
            "userAgent": "Mozilla/5.0",
            "ip": "203.0.113.0",
            "consent": {"categoryPreferences": {"analytics": true, "marketing": true}},
        },
    })
}

/// 500 entries: one malformed at 100, one over-size (built by `big`) at 300.
fn batch_of_500(big: impl Fn(Value) -> Value) -> Vec<OutboxEntry> {
    (0..500)
        .map(|i| match i {
            100 => entry(i, r#"{"type":"track","event":"Broken"#.to_owned()),
            300 => entry(i, big(event(i)).to_string()),
            _ => entry(i, event(i).to_string()),
        })
        .collect()
}

/// A property of `bytes` bytes.
fn with_blob(mut e: Value, bytes: usize) -> Value {
    e["properties"]["blob"] = json!("x".repeat(bytes));
    e
}

fn tally(outcomes: &[Outcome]) -> (usize, Vec<(usize, String)>, usize) {
    let delivered = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Delivered))
        .count();
    let rejected = outcomes
        .iter()
        .enumerate()
        .filter_map(|(i, o)| match o {
            Outcome::Rejected(reason) => Some((i, reason.clone())),
            _ => None,
        })
        .collect();
    let other = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Retry(_) | Outcome::Skipped(_)))
        .count();
    (delivered, rejected, other)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Sends the 500, then checks 498 delivered (and stored by the fake) and
/// the two dead-lettered with their own reasons.
fn check_498_of_500(name: &str, fake: &Fake, toml_text: &str, big: impl Fn(Value) -> Value) {
    let destination = build(toml_text);
    let outcomes = runtime().block_on(destination.send(&batch_of_500(big)));
    assert_eq!(outcomes.len(), 500, "{name}");
    let (delivered, rejected, other) = tally(&outcomes);
    assert_eq!(
        (delivered, other),
        (498, 0),
        "{name}: rejected {rejected:?}; fake refused {:?}",
        fake.rejections()
    );
    assert_eq!(rejected.len(), 2, "{name}: {rejected:?}");
    assert_eq!(rejected[0].0, 100, "{name}");
    assert!(
        rejected[0].1.contains("m-100") || rejected[0].1.contains("not a JSON object"),
        "{name}: {}",
        rejected[0].1
    );
    assert_eq!(rejected[1].0, 300, "{name}");
    assert!(
        rejected[1].1.contains("bytes"),
        "{name}: the reason names the size: {}",
        rejected[1].1
    );
    assert_eq!(
        fake.events().len(),
        498,
        "{name}: the fake stored the others"
    );
    assert!(
        fake.rejections().is_empty(),
        "{name}: nothing sent was refused: {:?}",
        fake.rejections()
    );
}

#[test]
fn a_malformed_entry_and_an_over_size_event_are_dead_lettered_alone_for_each_http_destination() {
    let hook = webhook::start("whsec");
    check_498_of_500(
        "webhook",
        &hook,
        &format!(
            r#"[[destinations]]
name = "hook"
type = "webhook"
url = "{}/hook"
secret = "whsec"
max_batch = 500
max_event_bytes = 65536"#,
            hook.base
        ),
        |e| with_blob(e, 70_000),
    );

    let seg = segment::start("wk_downstream");
    check_498_of_500(
        "segment",
        &seg,
        &format!(
            r#"[[destinations]]
name = "segment"
type = "segment"
write_key = "wk_downstream"
base_url = "{}""#,
            seg.base
        ),
        |e| with_blob(e, 33 * 1024),
    );

    let mp = mixpanel::start("sa.user", "sa-secret", "4242");
    check_498_of_500(
        "mixpanel",
        &mp,
        &format!(
            r#"[[destinations]]
name = "mixpanel"
type = "mixpanel"
project_id = "4242"
service_account = "sa.user"
secret = "sa-secret"
base_url = "{}""#,
            mp.base
        ),
        |e| with_blob(e, 1_100_000),
    );

    let amp = amplitude::start("amp-key");
    check_498_of_500(
        "amplitude",
        &amp,
        &format!(
            r#"[[destinations]]
name = "amplitude"
type = "amplitude"
api_key = "amp-key"
base_url = "{}""#,
            amp.base
        ),
        |e| with_blob(e, 1_100_000),
    );

    let meta = meta_capi::start("123456789", "meta-token");
    check_498_of_500(
        "meta_capi",
        &meta,
        &format!(
            r#"[[destinations]]
name = "ads"
type = "meta_capi"
pixel_id = "123456789"
access_token = "meta-token"
base_url = "{}""#,
            meta.base
        ),
        |e| with_blob(e, 1_100_000),
    );

    // GA4 cuts params to 100 characters, so what passes its 130 kB body
    // limit is the client: a visitor id no request can carry.
    let g = ga4::start("G-TEST123", "ga-secret");
    check_498_of_500(
        "ga4",
        &g,
        &format!(
            r#"[[destinations]]
name = "ga4"
type = "ga4"
measurement_id = "G-TEST123"
api_secret = "ga-secret"
base_url = "{}""#,
            g.base
        ),
        |mut e| {
            e["anonymousId"] = json!("a".repeat(140_000));
            e
        },
    );
}

/// 100 events of which the vendor refuses m-10, m-50 and m-90: 97
/// delivered, 3 rejected with the vendor's reason, none retried, and the
/// refused ones never sent again.
fn check_97_of_100(name: &str, fake: &Fake, toml_text: &str, expected_requests: usize) {
    fake.refuse(["m-10", "m-50", "m-90"].map(String::from));
    let destination = build(toml_text);
    let batch: Vec<OutboxEntry> = (0..100).map(|i| entry(i, event(i).to_string())).collect();
    let outcomes = runtime().block_on(destination.send(&batch));
    let (delivered, rejected, other) = tally(&outcomes);
    assert_eq!((delivered, other), (97, 0), "{name}: {rejected:?}");
    assert_eq!(
        rejected.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        [10, 50, 90],
        "{name}"
    );
    for (_, reason) in &rejected {
        assert!(reason.contains("HTTP 400"), "{name}: {reason}");
    }
    let stored = fake.events();
    assert_eq!(stored.len(), 97, "{name}");
    assert_eq!(
        fake.requests(),
        expected_requests,
        "{name}: the refused events are not sent again"
    );
}

#[test]
fn only_the_events_a_vendor_refuses_are_dead_lettered() {
    let mp = mixpanel::start("sa.user", "sa-secret", "4242");
    // Strict mode imports the valid events of the same request: one request.
    check_97_of_100(
        "mixpanel",
        &mp,
        &format!(
            r#"[[destinations]]
name = "mixpanel"
type = "mixpanel"
project_id = "4242"
service_account = "sa.user"
secret = "sa-secret"
base_url = "{}""#,
            mp.base
        ),
        1,
    );
    assert!(mp.events().iter().all(|e| {
        let id = e["properties"]["$insert_id"].as_str().unwrap_or("");
        !["m-10", "m-50", "m-90"].contains(&id)
    }));

    // Amplitude and Meta store nothing of a refused request: the rest is
    // sent once more, without the refused events.
    let amp = amplitude::start("amp-key");
    check_97_of_100(
        "amplitude",
        &amp,
        &format!(
            r#"[[destinations]]
name = "amplitude"
type = "amplitude"
api_key = "amp-key"
base_url = "{}""#,
            amp.base
        ),
        2,
    );
    assert!(amp
        .events()
        .iter()
        .all(|e| !["m-10", "m-50", "m-90"].contains(&e["insert_id"].as_str().unwrap_or(""))));

    let meta = meta_capi::start("123456789", "meta-token");
    check_97_of_100(
        "meta_capi",
        &meta,
        &format!(
            r#"[[destinations]]
name = "ads"
type = "meta_capi"
pixel_id = "123456789"
access_token = "meta-token"
base_url = "{}""#,
            meta.base
        ),
        2,
    );
    assert!(meta
        .events()
        .iter()
        .all(|e| !["m-10", "m-50", "m-90"].contains(&e["event_id"].as_str().unwrap_or(""))));
}

#[test]
fn a_server_error_settles_only_the_events_of_its_request() {
    // GA4 sends one request per visitor: a 500 for all is a retry for all,
    // never a rejection.
    let g = ga4::start("G-TEST123", "ga-secret");
    g.set_mode(waymark_tests::fakes::Mode::Status(503));
    let destination = build(&format!(
        r#"[[destinations]]
name = "ga4"
type = "ga4"
measurement_id = "G-TEST123"
api_secret = "ga-secret"
base_url = "{}""#,
        g.base
    ));
    let batch: Vec<OutboxEntry> = (0..10).map(|i| entry(i, event(i).to_string())).collect();
    let outcomes = runtime().block_on(destination.send(&batch));
    assert!(
        outcomes.iter().all(|o| matches!(o, Outcome::Retry(_))),
        "{outcomes:?}"
    );
}
