//! Hot reload: replacing a rule's file or its config swaps the rule
//! atomically, without dropping or double-processing events; a broken
//! replacement keeps the old rule running and says why.

mod rules_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rules_support::{component, event, rule, rule_at, temp_dir};
use serde_json::json;
use waymark::config::OnError;
use waymark::rules::RuleHost;
use waymark::Verdict;

fn priced() -> waymark::Event {
    event(
        json!({"type":"track","event":"Buy","messageId":"m","properties":{"price":2.5,"currency":"usd"}}),
    )
}

/// Replaces `path` the way deploy tools do: write beside it, then rename.
fn replace(path: &std::path::Path, from: &std::path::Path) {
    let tmp = path.with_extension("new");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn a_replaced_file_is_swapped_in_and_a_broken_one_is_refused() {
    let dir = temp_dir("reload-file");
    let path = dir.join("live.wasm");
    std::fs::copy(component("bench-noop"), &path).unwrap();
    let host = RuleHost::builder().build().unwrap();
    host.load(&[rule_at("live", path.clone(), json!({}), OnError::Pass)])
        .unwrap();
    let chain = host.chain(&["live".into()]).unwrap();

    let mut e = priced();
    chain.apply(&mut e);
    assert_eq!(e.get("properties.price_cents"), None, "noop rule");
    assert!(host.check_files().is_empty(), "nothing changed");

    // Step 1: a new version is picked up by the same chain.
    replace(&path, &component("bench-two-fields"));
    assert!(host.check_files().is_empty());
    let mut e = priced();
    chain.apply(&mut e);
    assert_eq!(e.get("properties.price_cents"), Some(&json!(250)));

    // Step 2: a broken file keeps the running version and says why, once.
    std::fs::write(&path, b"not wasm at all").unwrap();
    let errors = host.check_files();
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].to_string().contains("rule live:"),
        "{}",
        errors[0]
    );
    assert!(
        host.check_files().is_empty(),
        "a broken version is reported once"
    );
    let mut e = priced();
    chain.apply(&mut e);
    assert_eq!(
        e.get("properties.price_cents"),
        Some(&json!(250)),
        "old version still runs"
    );

    // Step 3: a rule whose init fails is refused the same way.
    replace(&path, &component("sample"));
    let errors = host.check_files();
    assert_eq!(errors.len(), 1, "sample needs a rate");
    assert!(
        errors[0].to_string().contains("init failed"),
        "{}",
        errors[0]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_config_change_rebuilds_only_that_rule() {
    let host = RuleHost::builder().build().unwrap();
    let a = rule("rename", json!({"events": {"A": "B"}}), OnError::Pass);
    let bots = rule("bot-filter", json!({}), OnError::Pass);
    host.load(&[a.clone(), bots.clone()]).unwrap();
    let chain = host.chain(&["rename".into()]).unwrap();
    let mut e = event(json!({"type":"track","event":"A","messageId":"m"}));
    chain.apply(&mut e);
    assert_eq!(e.name(), Some("B"));

    let c = rule("rename", json!({"events": {"A": "C"}}), OnError::Pass);
    assert!(host.reload(&[c, bots.clone()]).is_empty());
    let mut e = event(json!({"type":"track","event":"A","messageId":"m"}));
    chain.apply(&mut e);
    assert_eq!(e.name(), Some("C"), "existing chains see the new config");

    // A bad config keeps the running version.
    let bad = rule("rename", json!({"properties": {"x": "x"}}), OnError::Pass);
    let errors = host.reload(&[bad, bots]);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].to_string().contains("maps onto itself"),
        "{}",
        errors[0]
    );
    let mut e = event(json!({"type":"track","event":"A","messageId":"m"}));
    chain.apply(&mut e);
    assert_eq!(e.name(), Some("C"));
}

#[test]
fn events_in_flight_during_reloads_are_each_processed_once() {
    let dir = temp_dir("reload-flight");
    let path = dir.join("flip.wasm");
    std::fs::copy(component("bench-noop"), &path).unwrap();
    let host = RuleHost::builder().build().unwrap();
    host.load(&[rule_at("flip", path.clone(), json!({}), OnError::Drop)])
        .unwrap();
    let chain = host.chain(&["flip".into()]).unwrap();
    let done = AtomicBool::new(false);
    let (processed, transformed) = std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            let (mut processed, mut transformed) = (0u64, 0u64);
            while !done.load(Ordering::Acquire) {
                let mut e = priced();
                // on_error = drop: any failure during a swap would show here.
                assert_eq!(chain.apply(&mut e), Verdict::Keep);
                processed += 1;
                // Each event saw exactly one version: untouched or transformed once.
                match e.get("properties.price_cents") {
                    Some(v) => {
                        assert_eq!(v, &json!(250));
                        assert_eq!(e.str("properties.currency"), Some("USD"));
                        transformed += 1;
                    }
                    None => assert_eq!(e.str("properties.currency"), Some("usd")),
                }
            }
            (processed, transformed)
        });
        for round in 0..6 {
            let next = if round % 2 == 0 {
                "bench-two-fields"
            } else {
                "bench-noop"
            };
            replace(&path, &component(next));
            assert!(host.check_files().is_empty());
            std::thread::sleep(Duration::from_millis(30));
        }
        done.store(true, Ordering::Release);
        worker.join().unwrap()
    });
    assert!(
        processed > 100 && transformed > 0 && transformed < processed,
        "{processed} / {transformed}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_watcher_reloads_on_its_own() {
    let dir = temp_dir("reload-watch");
    let path = dir.join("w.wasm");
    std::fs::copy(component("bench-noop"), &path).unwrap();
    let host = RuleHost::builder().build().unwrap();
    host.load(&[rule_at("w", path.clone(), json!({}), OnError::Pass)])
        .unwrap();
    let chain = host.chain(&["w".into()]).unwrap();
    let _watcher = host.watch(Duration::from_millis(50));
    replace(&path, &component("bench-two-fields"));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut e = priced();
        chain.apply(&mut e);
        if e.get("properties.price_cents").is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "watcher never reloaded"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
