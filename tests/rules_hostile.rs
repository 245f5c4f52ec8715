//! Hostile rules never take the worker down: an infinite loop, unbounded
//! memory growth, a panic, garbage paths and a log flood are each stopped,
//! handled per `on_error`, counted in `waymark_rule_errors_total{rule,kind}`,
//! and the same rule goes on serving ordinary events at full rate.

mod rules_support;

use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusBuilder;
use rules_support::{event, rule, rule_errors};
use serde_json::json;
use waymark::config::{OnError, RuleConfig};
use waymark::rules::RuleHost;
use waymark::{Event, Verdict};

fn attack() -> Event {
    event(json!({"type":"track","event":"x","messageId":"evil","properties":{"attack":true,"n":1}}))
}

fn ordinary(i: usize) -> Event {
    event(json!({"type":"track","event":"x","messageId": format!("ok-{i}"),"properties":{"n":i}}))
}

/// Runs `f` with a fresh Prometheus recorder on this thread and returns its text.
fn with_metrics(f: impl FnOnce()) -> String {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, f);
    handle.render()
}

/// Loads one rule and checks: the attack gets `expected` under each
/// `on_error` policy, the event comes back unchanged, the fault is counted
/// under `kind`, and 2000 ordinary events then pass quickly.
fn assert_contained(name: &str, config: RuleConfig, kind: &str) {
    for (policy, expected) in [
        (OnError::Pass, Verdict::Keep),
        (
            OnError::Drop,
            Verdict::Drop {
                reason: format!("rule {name}: {kind}"),
            },
        ),
        (
            OnError::Quarantine,
            Verdict::Quarantine {
                reason: format!("rule {name}: {kind}"),
            },
        ),
    ] {
        let config = RuleConfig {
            on_error: policy,
            ..config.clone()
        };
        let host = RuleHost::builder().build().unwrap();
        host.load(&[config]).unwrap();
        let chain = host.chain(&[name.to_owned()]).unwrap();
        let rendered = with_metrics(|| {
            let before = attack();
            let mut e = before.clone();
            let started = Instant::now();
            assert_eq!(chain.apply(&mut e), expected, "{name} with {policy:?}");
            assert!(
                started.elapsed() < Duration::from_millis(500),
                "{name} took {:?}",
                started.elapsed()
            );
            assert_eq!(e, before, "{name}: the failed call's writes are undone");
        });
        assert_eq!(rule_errors(&rendered, name, kind), 1, "{name}: {rendered}");
        // The worker keeps serving: ordinary events flow at full rate.
        // NOTE: the deadline is wall-clock, so on an oversubscribed machine
        // (parallel tests on two cores) a descheduled call may rarely hit
        // it; allow 1%.
        let started = Instant::now();
        let kept = (0..2_000)
            .filter(|i| chain.apply(&mut ordinary(*i)) == Verdict::Keep)
            .count();
        assert!(
            kept >= 1_980,
            "{name}: only {kept} of 2000 ordinary events kept"
        );
        let elapsed = started.elapsed();
        assert!(
            elapsed < Duration::from_secs(4),
            "{name}: 2000 events took {elapsed:?}"
        );
    }
}

#[test]
fn an_infinite_loop_hits_the_deadline() {
    let mut config = rule("hostile-loop", json!({}), OnError::Pass);
    config.timeout_ms = 20;
    assert_contained("hostile-loop", config, "deadline");
}

#[test]
fn unbounded_memory_growth_hits_the_cap() {
    let mut config = rule("hostile-grow", json!({}), OnError::Pass);
    // A generous deadline, so the memory cap (not the clock) stops it.
    config.timeout_ms = 200;
    assert_contained("hostile-grow", config, "memory");
}

#[test]
fn a_panic_is_a_trap() {
    assert_contained(
        "hostile-trap",
        rule("hostile-trap", json!({}), OnError::Pass),
        "trap",
    );
}

#[test]
fn garbage_paths_are_refused_and_counted() {
    let host = RuleHost::builder().build().unwrap();
    host.load(&[rule("hostile-paths", json!({}), OnError::Drop)])
        .unwrap();
    let chain = host.chain(&["hostile-paths".into()]).unwrap();
    let mut e = event(
        json!({"type":"track","event":"x","messageId":"m1","receivedAt":"2024-01-01T00:00:00Z","context":{"ip":"1.2.3.4"}}),
    );
    let rendered = with_metrics(|| assert_eq!(chain.apply(&mut e), Verdict::Keep));
    assert_eq!(
        rule_errors(&rendered, "hostile-paths", "bad_path"),
        1,
        "{rendered}"
    );
    // 6 malformed, 3 read-only, 1 through a scalar, 3 invalid values, 1 over
    // budget on set; 3 bad removes.
    assert_eq!(e.get("properties.refused"), Some(&json!(17)));
    assert_eq!(e.str("type"), Some("track"));
    assert_eq!(e.message_id(), "m1");
    assert_eq!(e.str("receivedAt"), Some("2024-01-01T00:00:00Z"));
    assert_eq!(e.str("context.ip"), Some("1.2.3.4"));
    assert_eq!(e.get("properties.ünï.cødé"), Some(&json!(1)));
    assert_eq!(e.get("properties.big1"), None);
    assert_eq!(e.get("properties.big2"), None, "over the write budget");
}

#[test]
fn a_log_flood_is_rate_limited() {
    let host = RuleHost::builder().build().unwrap();
    host.load(&[rule("hostile-log", json!({"lines": 1000}), OnError::Drop)])
        .unwrap();
    let chain = host.chain(&["hostile-log".into()]).unwrap();
    let rendered = with_metrics(|| {
        for i in 0..5 {
            assert_eq!(chain.apply(&mut ordinary(i)), Verdict::Keep);
        }
    });
    assert_eq!(
        rule_errors(&rendered, "hostile-log", "log_flood"),
        5,
        "{rendered}"
    );
    let dropped: u64 = rendered
        .lines()
        .find(|l| l.starts_with("waymark_rule_logs_dropped_total{"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0);
    // At most 20 lines (the burst) got through in five calls.
    assert!(dropped >= 5 * 1000 - 20, "dropped {dropped}");
    // Endless logging ends at the deadline like any loop.
    let host = RuleHost::builder().build().unwrap();
    let mut endless = rule("hostile-log", json!({"lines": 0}), OnError::Quarantine);
    endless.timeout_ms = 20;
    host.load(&[endless]).unwrap();
    let chain = host.chain(&["hostile-log".into()]).unwrap();
    assert_eq!(
        chain.apply(&mut ordinary(0)),
        Verdict::Quarantine {
            reason: "rule hostile-log: deadline".into()
        }
    );
}

/// Bounds are generous (debug build, two shared cores): a rule that blocked
/// other threads would cost 20 ms per event here, 400 s in all.
#[test]
fn a_faulty_rule_does_not_slow_other_threads() {
    let host = RuleHost::builder().build().unwrap();
    let mut looping = rule("hostile-loop", json!({}), OnError::Pass);
    looping.timeout_ms = 20;
    host.load(&[looping, rule("bench-two-fields", json!({}), OnError::Pass)])
        .unwrap();
    let evil = host.chain(&["hostile-loop".into()]).unwrap();
    let good = host.chain(&["bench-two-fields".into()]).unwrap();
    std::thread::scope(|scope| {
        let attacker = scope.spawn(|| {
            for _ in 0..50 {
                evil.apply(&mut attack());
            }
        });
        let started = Instant::now();
        for i in 0..20_000 {
            let mut e = event(
                json!({"type":"track","messageId":"m","properties":{"price":1.5,"currency":"eur","i":i}}),
            );
            assert_eq!(good.apply(&mut e), Verdict::Keep);
            assert_eq!(e.get("properties.price_cents"), Some(&json!(150)));
        }
        let elapsed = started.elapsed();
        assert!(
            elapsed < Duration::from_secs(8),
            "20k events took {elapsed:?} beside a looping rule"
        );
        attacker.join().unwrap();
    });
}

#[test]
fn components_with_other_imports_are_refused_by_name() {
    let dir = rules_support::temp_dir("bad-import");
    let path = dir.join("wasi.wasm");
    // A component importing a WASI interface (as text; the host compiles WAT).
    std::fs::write(
        &path,
        r#"(component (import "wasi:filesystem/types@0.2.0" (instance)))"#,
    )
    .unwrap();
    let host = RuleHost::builder().build().unwrap();
    let err = host
        .load(&[rules_support::rule_at(
            "sneaky",
            path,
            json!({}),
            OnError::Pass,
        )])
        .unwrap_err();
    assert_eq!(err.kind().as_str(), "init");
    let text = err.to_string();
    assert!(
        text.contains("imports `wasi:filesystem/types@0.2.0`"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_core_module_or_garbage_is_refused_with_the_fix() {
    let dir = rules_support::temp_dir("garbage");
    let path = dir.join("junk.wasm");
    std::fs::write(&path, b"\0asm\x01\0\0\0").unwrap();
    let host = RuleHost::builder().build().unwrap();
    let err = host
        .load(&[rules_support::rule_at(
            "junk",
            path,
            json!({}),
            OnError::Pass,
        )])
        .unwrap_err();
    assert!(err.to_string().contains("component new"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
