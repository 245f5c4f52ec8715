//! The example rules, run through the real host: each does what its header
//! says on realistic events, chains compose, and `waymark rule test`'s
//! trial reports fuel.

mod rules_support;

use rules_support::{component, event, rule};
use serde_json::json;
use waymark::config::OnError;
use waymark::rules::{trial, RuleHost, TrialOutcome};
use waymark::Verdict;

fn host_with(rules: &[waymark::config::RuleConfig]) -> RuleHost {
    let host = RuleHost::builder().build().expect("rule host");
    host.load(rules).expect("rules load");
    host
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

#[test]
fn pii_hash_hashes_normalised_email_and_phone() {
    let host = host_with(&[rule("pii-hash", json!({}), OnError::Pass)]);
    let chain = host.chain(&["pii-hash".into()]).unwrap();
    let mut e = event(json!({
        "type": "identify", "messageId": "m1", "userId": "u1",
        "traits": {"email": " Ana@Example.com ", "phone": "+44 20 7946 0000", "plan": "pro"}
    }));
    assert_eq!(chain.apply(&mut e), Verdict::Keep);
    assert_eq!(
        e.str("traits.email"),
        Some(sha256_hex("ana@example.com").as_str())
    );
    assert_eq!(
        e.str("traits.phone"),
        Some(sha256_hex("442079460000").as_str())
    );
    assert_eq!(e.str("traits.plan"), Some("pro"));
}

#[test]
fn bot_filter_drops_crawlers_with_a_reason() {
    let host = host_with(&[rules_support::rule_at(
        "bots",
        component("bot-filter"),
        json!({}),
        OnError::Pass,
    )]);
    let chain = host.chain(&["bots".into()]).unwrap();
    let mut bot = event(
        json!({"type":"page","messageId":"m","context":{"userAgent":"Mozilla/5.0 (compatible; bingbot/2.0)"}}),
    );
    assert_eq!(
        chain.apply(&mut bot),
        Verdict::Drop {
            reason: "rule bots: bot".into()
        }
    );
    let mut human = event(
        json!({"type":"page","messageId":"m","context":{"userAgent":"Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"}}),
    );
    assert_eq!(chain.apply(&mut human), Verdict::Keep);
}

#[test]
fn rename_maps_events_and_properties() {
    let config = json!({"events": {"Order Completed": "Purchase"}, "properties": {"properties.total": "properties.value"}});
    let host = host_with(&[rule("rename", config, OnError::Pass)]);
    let chain = host.chain(&["rename".into()]).unwrap();
    let mut e = event(
        json!({"type":"track","event":"Order Completed","messageId":"m","properties":{"total":99.5,"items":[{"sku":"a"}]}}),
    );
    assert_eq!(chain.apply(&mut e), Verdict::Keep);
    assert_eq!(e.name(), Some("Purchase"));
    assert_eq!(e.get("properties.value"), Some(&json!(99.5)));
    assert_eq!(e.get("properties.total"), None);
    assert_eq!(e.get("properties.items"), Some(&json!([{"sku":"a"}])));
}

#[test]
fn sample_keeps_a_deterministic_fraction() {
    let host = host_with(&[rule("sample", json!({"rate": 0.5}), OnError::Pass)]);
    let chain = host.chain(&["sample".into()]).unwrap();
    let verdicts: Vec<Verdict> = (0..400)
        .map(|i| {
            chain.apply(&mut event(
                json!({"type":"track","event":"x","messageId": format!("id-{i}")}),
            ))
        })
        .collect();
    let kept = verdicts.iter().filter(|v| **v == Verdict::Keep).count();
    assert!((150..250).contains(&kept), "kept {kept} of 400");
    let again: Vec<Verdict> = (0..400)
        .map(|i| {
            chain.apply(&mut event(
                json!({"type":"track","event":"x","messageId": format!("id-{i}")}),
            ))
        })
        .collect();
    assert_eq!(verdicts, again, "same messageId, same verdict");
}

#[test]
fn redact_url_strips_parameters_from_urls_and_referrers() {
    let host = host_with(&[rule(
        "redact-url",
        json!({"params": ["token", "utm_*"]}),
        OnError::Pass,
    )]);
    let chain = host.chain(&["redact-url".into()]).unwrap();
    let mut e = event(json!({"type":"page","messageId":"m","context":{"page":{
        "url":"https://shop.example/cart?token=s3cret&id=7&utm_source=mail#pay",
        "referrer":"https://mail.example/?utm_medium=x"}}}));
    assert_eq!(chain.apply(&mut e), Verdict::Keep);
    assert_eq!(
        e.str("context.page.url"),
        Some("https://shop.example/cart?id=7#pay")
    );
    assert_eq!(
        e.str("context.page.referrer"),
        Some("https://mail.example/")
    );
}

#[test]
fn a_chain_runs_rules_in_order_and_stops_at_the_first_drop() {
    let host = host_with(&[
        rule(
            "rename",
            json!({"events": {"Signed Up": "Lead"}}),
            OnError::Pass,
        ),
        rule("pii-hash", json!({}), OnError::Pass),
        rule("bot-filter", json!({}), OnError::Pass),
    ]);
    let chain = host
        .chain(&["rename".into(), "pii-hash".into(), "bot-filter".into()])
        .unwrap();
    let mut e = event(
        json!({"type":"track","event":"Signed Up","messageId":"m","properties":{"email":"A@B.co"},"context":{"userAgent":"Mozilla/5.0 Safari"}}),
    );
    assert_eq!(chain.apply(&mut e), Verdict::Keep);
    assert_eq!(e.name(), Some("Lead"));
    assert_eq!(
        e.str("properties.email"),
        Some(sha256_hex("a@b.co").as_str())
    );
}

#[test]
fn a_rule_that_refuses_its_config_is_not_loaded() {
    let host = RuleHost::builder().build().unwrap();
    let err = host
        .load(&[rule("sample", json!({"rate": 2}), OnError::Pass)])
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("rule sample: init failed") && text.contains("rate"),
        "{text}"
    );
}

#[test]
fn trial_reports_the_event_and_fuel() {
    let before = event(json!({"type":"identify","messageId":"m","traits":{"email":"x@y.z"}}));
    let report = trial(&component("pii-hash"), "{}", 16, before).unwrap();
    assert_eq!(report.outcome, TrialOutcome::Keep);
    assert_eq!(
        report.event.str("traits.email"),
        Some(sha256_hex("x@y.z").as_str())
    );
    assert!(report.fuel > 1_000, "fuel {}", report.fuel);
    let spin = trial(
        &component("hostile-loop"),
        "{}",
        16,
        event(json!({"type":"track","messageId":"m","properties":{"attack":true}})),
    )
    .unwrap();
    assert!(
        matches!(spin.outcome, TrialOutcome::Failed(ref cause) if cause.contains("fuel")),
        "{:?}",
        spin.outcome
    );
    assert_eq!(spin.event.get("properties.touched"), None, "rolled back");
}

#[test]
fn compiled_rules_are_cached_on_disk() {
    let dir = rules_support::temp_dir("rule-cache");
    let host = RuleHost::builder().cache_dir(&dir).build().unwrap();
    host.load(&[rule("bot-filter", json!({}), OnError::Pass)])
        .unwrap();
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
    assert_eq!(files.len(), 1, "one artifact");
    let name = files[0].file_name().to_string_lossy().into_owned();
    assert!(name.ends_with(".cwasm") && name.len() > 64, "{name}");
    // A second host loads the artifact instead of compiling.
    let again = RuleHost::builder().cache_dir(&dir).build().unwrap();
    again
        .load(&[rule("bot-filter", json!({}), OnError::Pass)])
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_rule_test_command_prints_verdict_event_and_fuel() {
    let dir = rules_support::temp_dir("rule-cli");
    let event_path = dir.join("event.json");
    std::fs::write(
        &event_path,
        r#"{"type":"identify","messageId":"m-1","traits":{"email":"Jane@Example.com"}}"#,
    )
    .unwrap();
    let run = |rule: &str, config: &str| {
        std::process::Command::new(waymark_tests::waymark_bin())
            .args(["rule", "test"])
            .arg(component(rule))
            .args(["--config", config, "--event"])
            .arg(&event_path)
            .output()
            .expect("run waymark rule test")
    };
    let out = run("pii-hash", "{}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.starts_with("verdict: keep\nfuel: "), "{stdout}");
    assert!(stdout.contains(&sha256_hex("jane@example.com")), "{stdout}");
    let out = run("sample", r#"{"rate": 0}"#);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("verdict: drop (sampled-out)"));
    let out = run("sample", "{}");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("init failed"));
    let _ = std::fs::remove_dir_all(&dir);
}
