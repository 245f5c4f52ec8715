//! Consent through the real worker: over random consent states, nothing
//! reaches a destination without its purposes; a waiting destination holds
//! pending events until the visitor grants (released) or denies (dropped);
//! TC strings made by IAB's own encoder and Consent Mode fields decide at the
//! edge, and an unreadable TC string grants nothing without losing the event.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use waymark_tests::fakes::{webhook, Fake};
use waymark_tests::{client, Worker};

const PURPOSES: [&str; 3] = ["analytics", "marketing", "ads"];

fn post(worker: &Worker, batch: Vec<Value>) {
    let r = client()
        .post(worker.url("/v1/batch"))
        .basic_auth("wk_test", Some(""))
        .json(&json!({ "batch": batch }))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().unwrap_or_default());
}

#[test]
fn random_consent_never_reaches_a_destination_without_its_purposes() {
    // Destinations need: none, analytics, marketing, analytics+ads.
    let needs: [&[&str]; 4] = [&[], &["analytics"], &["marketing"], &["analytics", "ads"]];
    let fakes: Vec<Fake> = needs.iter().map(|_| webhook::start("s")).collect();
    let mut config = String::from(
        "[identity]\nkeys = [{ id = \"k1\", secret = \"test-secret-0123456789abcdef0123456789\" }]\n[[sources]]\nname = \"web\"\nwrite_key = \"wk_test\"\ndefault_consent = { analytics = \"granted\", marketing = \"pending\", ads = \"denied\" }\n",
    );
    for (i, (need, fake)) in needs.iter().zip(&fakes).enumerate() {
        let list: Vec<String> = need.iter().map(|p| format!("\"{p}\"")).collect();
        config.push_str(&format!(
            "[[destinations]]\nname = \"d{i}\"\ntype = \"webhook\"\nurl = \"{}/hook\"\nsecret = \"s\"\nconsent = [{}]\n",
            fake.base,
            list.join(", ")
        ));
    }
    let worker = Worker::start(&config);
    // A small deterministic generator: every combination of stated/unstated × true/false, and GPC.
    let mut batch = Vec::new();
    let mut seed: u64 = 0x5eed;
    for i in 0..300 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut prefs = serde_json::Map::new();
        for (k, p) in PURPOSES.iter().enumerate() {
            match (seed >> (k * 2 + 20)) & 3 {
                0 => {}
                1 | 2 => {
                    prefs.insert((*p).into(), json!(true));
                }
                _ => {
                    prefs.insert((*p).into(), json!(false));
                }
            }
        }
        let gpc = (seed >> 40) & 7 == 0;
        batch.push(json!({"type":"track","event":"E","anonymousId":format!("a-{i}"),"messageId":format!("m-{i}"),
            "context":{"consent":{"gpc":gpc,"categoryPreferences":prefs}}}));
    }
    let expected: Vec<usize> = needs
        .iter()
        .map(|need| {
            batch
                .iter()
                .filter(|e| {
                    need.iter().all(|p| {
                        let stated = e["context"]["consent"]["categoryPreferences"][*p].as_bool();
                        let default = *p == "analytics";
                        let granted = stated.unwrap_or(default);
                        granted && !(*p == "marketing" && e["context"]["consent"]["gpc"] == true)
                    })
                })
                .count()
        })
        .collect();
    for chunk in batch.chunks(50) {
        post(&worker, chunk.to_vec());
    }
    for ((fake, need), n) in fakes.iter().zip(&needs).zip(&expected) {
        let got = fake.wait_for(*n, Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(300));
        let got_all = fake.events();
        assert_eq!(got_all.len(), *n, "destination needing {need:?}");
        for e in got {
            for p in *need {
                let stated = e["context"]["consent"]["categoryPreferences"][*p].as_bool();
                assert!(stated.unwrap_or(*p == "analytics"), "{p} not granted: {e}");
            }
        }
    }
}

#[test]
fn waiting_destinations_hold_then_release_or_drop() {
    let ads = webhook::start("s");
    let config = format!(
        r#"
[identity]
keys = [{{ id = "k1", secret = "test-secret-0123456789abcdef0123456789" }}]
[[sources]]
name = "web"
write_key = "wk_test"
default_consent = {{ analytics = "granted", marketing = "pending" }}
[[destinations]]
name = "ads"
type = "webhook"
url = "{}/hook"
secret = "s"
consent = ["marketing"]
wait_for_consent = true
consent_hold_secs = 2
"#,
        ads.base
    );
    let worker = Worker::start(&config);
    let ev = |id: &str, visitor: &str, marketing: Option<bool>| {
        let mut e = json!({"type":"track","event":"E","anonymousId":visitor,"messageId":id});
        if let Some(m) = marketing {
            e["context"] = json!({"consent":{"categoryPreferences":{"marketing":m}}});
        }
        e
    };
    // Pending events of three visitors are held, not delivered.
    post(
        &worker,
        vec![
            ev("p1", "vis-grant", None),
            ev("p2", "vis-grant", None),
            ev("p3", "vis-deny", None),
            ev("p4", "vis-silent", None),
        ],
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        ads.events().is_empty(),
        "pending events leaked: {:?}",
        ads.events()
    );
    // A later grant releases that visitor's holds (marked granted); a denial drops them.
    post(
        &worker,
        vec![
            ev("g1", "vis-grant", Some(true)),
            ev("d1", "vis-deny", Some(false)),
        ],
    );
    let got = ads.wait_for(3, Duration::from_secs(10));
    let mut ids: Vec<&str> = got
        .iter()
        .map(|e| e["messageId"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["g1", "p1", "p2"]);
    // Released events are delivered as they were held: the store carries
    // the releasing decision beside them and never edits their JSON.
    for e in &got {
        let stated = &e["context"]["consent"]["categoryPreferences"]["marketing"];
        match e["messageId"].as_str() {
            Some("g1") => assert_eq!(stated, &json!(true), "{e}"),
            _ => assert!(stated.is_null(), "a held event was edited: {e}"),
        }
    }
    // The silent visitor's hold expires; a grant after expiry releases nothing.
    std::thread::sleep(Duration::from_secs(5));
    post(&worker, vec![ev("g2", "vis-silent", Some(true))]);
    ads.wait_for(4, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    let ids: Vec<String> = ads
        .events()
        .iter()
        .map(|e| e["messageId"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        !ids.contains(&"p4".to_owned()) && !ids.contains(&"p3".to_owned()),
        "{ids:?}"
    );
    let metrics = client()
        .get(worker.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    for outcome in ["held", "released", "dropped", "expired"] {
        assert!(
            metrics.contains(&format!(
                "waymark_consent_holds_total{{destination=\"ads\",outcome=\"{outcome}\"}}"
            )),
            "{outcome} not counted:\n{metrics}"
        );
    }
    let _ = Instant::now();
}

/// A TC string from IAB's own encoder (`tests/node/tcf/encode.js`, run
/// under Node; `cargo xtask test` installs `@iabtechlabtcf/core`).
fn iab_tc_string(purposes: &[u8], vendors: &[u16]) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("node/tcf");
    assert!(
        dir.join("node_modules/@iabtechlabtcf/core").exists(),
        "IAB's encoder is not installed: run `cargo xtask test` or `npm ci` in {}",
        dir.display()
    );
    let want = json!({"purposes": purposes, "vendors": vendors}).to_string();
    let out = Command::new("node")
        .arg("encode.js")
        .arg(want)
        .current_dir(&dir)
        .output()
        .expect("node runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("ASCII")
}

#[test]
fn tc_strings_and_consent_mode_decide_at_the_edge() {
    let analytics = webhook::start("s");
    let marketing = webhook::start("s");
    let config = format!(
        r#"
[identity]
keys = [{{ id = "k1", secret = "test-secret-0123456789abcdef0123456789" }}]
[[sources]]
name = "web"
write_key = "wk_test"
[[destinations]]
name = "analytics"
type = "webhook"
url = "{}/hook"
secret = "s"
consent = ["analytics"]
[[destinations]]
name = "ads"
type = "webhook"
url = "{}/hook"
secret = "s"
consent = ["marketing"]
tcf_vendor_id = 755
"#,
        analytics.base, marketing.base
    );
    let worker = Worker::start(&config);
    let ev = |id: &str, consent: Value| {
        json!({"type":"track","event":"E","anonymousId":format!("a-{id}"),"messageId":id,
               "context":{"consent":consent}})
    };
    let ads_ok = iab_tc_string(&[1, 3, 4], &[755]);
    let analytics_only = iab_tc_string(&[1, 3, 4, 8], &[12]);
    post(
        &worker,
        vec![
            // TCF 1, 3, 4 and vendor 755: marketing for the ads vendor; not analytics (needs 8).
            ev("t1", json!({"tcf": ads_ok})),
            // TCF 1, 3, 4, 8 without vendor 755: analytics; the ads vendor lacks consent.
            ev("t2", json!({"tcf": {"tcString": analytics_only}})),
            // Unreadable TC string: grants nothing, even beside granting preferences.
            ev(
                "t3",
                json!({"tcf": "COgarbage!!", "categoryPreferences": {"analytics": true, "marketing": true}}),
            ),
            // Consent Mode alone.
            ev("t4", json!({"gcm": {"analytics_storage": "granted"}})),
            // Consent Mode denies what the preferences grant.
            ev(
                "t5",
                json!({"gcm": {"ad_storage": "granted", "ad_user_data": "denied"},
                            "categoryPreferences": {"marketing": true}}),
            ),
            // GPC denies what the TC string grants.
            ev("t6", json!({"tcf": ads_ok, "gpc": true})),
            // Preferences grant and the TC string agrees.
            ev(
                "t7",
                json!({"tcf": ads_ok, "categoryPreferences": {"marketing": true}}),
            ),
        ],
    );
    let ids = |fake: &Fake, n: usize| {
        fake.wait_for(n, Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(500));
        let mut ids: Vec<String> = fake
            .events()
            .iter()
            .map(|e| e["messageId"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&analytics, 2), ["t2", "t4"]);
    assert_eq!(ids(&marketing, 2), ["t1", "t7"]);
    let metrics = client()
        .get(worker.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("waymark_consent_signal_invalid_total{signal=\"tcf\"} 1"),
        "{metrics}"
    );
}
