use super::*;

#[test]
fn backoff_grows_and_is_capped() {
    let policy = RetryPolicy {
        batch_size: 10,
        concurrency: 1,
        max_age_ms: 1_000,
        initial_backoff_ms: 100,
        max_backoff_ms: 1_000,
    };
    for _ in 0..50 {
        let first = policy.backoff(0, None).as_millis();
        assert!((50..=100).contains(&first), "{first}");
        let capped = policy.backoff(30, None).as_millis();
        assert!((500..=1_000).contains(&capped), "{capped}");
    }
}

#[test]
fn retry_after_wins_when_longer() {
    let policy = RetryPolicy::from_config(&DeliveryConfig::default(), 100);
    let d = policy.backoff(0, Some(Duration::from_secs(30)));
    assert_eq!(d, Duration::from_secs(30));
    assert_eq!(policy.batch_size, 100);
    assert_eq!(policy.concurrency, 2);
}

struct DropDebug;
impl DestinationRules for DropDebug {
    fn apply(&self, event: &mut Event) -> Verdict {
        if event.name() == Some("Debug") {
            return Verdict::Drop {
                reason: "debug".into(),
            };
        }
        let _ = event.set("properties.seen", serde_json::json!(true));
        Verdict::Keep
    }
}

#[test]
fn rule_chains_change_and_drop_events() {
    let entry = |id: i64, name: &str| OutboxEntry {
        id,
        source: "web".into(),
        message_id: format!("m{id}"),
        json: format!(r#"{{"type":"track","event":"{name}"}}"#).into(),
        enqueued_at_ms: 0,
        attempts: 0,
    };
    let (keep, dropped) = apply_rules(&DropDebug, vec![entry(1, "Buy"), entry(2, "Debug")]);
    assert_eq!(dropped, vec![2]);
    assert_eq!(keep.len(), 1);
    assert!(keep[0].json.contains(r#""seen":true"#), "{}", keep[0].json);
}
