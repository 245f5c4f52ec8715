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
        granted: Default::default(),
        json: format!(r#"{{"type":"track","event":"{name}"}}"#).into(),
        enqueued_at_ms: 0,
        attempts: 0,
    };
    let ruled = apply_rules(&DropDebug, vec![entry(1, "Buy"), entry(2, "Debug")]);
    assert_eq!(ruled.dropped.len(), 1);
    assert_eq!(
        (ruled.dropped[0].0.id, ruled.dropped[0].1.as_str()),
        (2, "debug")
    );
    assert!(ruled.quarantined.is_empty());
    assert_eq!(ruled.keep.len(), 1);
    assert!(
        ruled.keep[0].json.contains(r#""seen":true"#),
        "{}",
        ruled.keep[0].json
    );
}

// Per-event outcomes and rule quarantine, through the real SQLite store.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::storage::{
    AcceptedEvent, DeliveryQueue as _, IngestCommit, IngestStore as _, ReplayStore as _,
    SqliteStorage, Storage,
};

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("waymark-deliver-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A destination that answers by event name: `Delivered`, `Skip-*`,
/// `Reject`, `Retry`; it records what it was sent.
struct ByName {
    sent: std::sync::Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl Destination for ByName {
    fn max_batch(&self) -> usize {
        100
    }

    async fn send(&self, events: &[OutboxEntry]) -> Vec<Outcome> {
        events
            .iter()
            .map(|e| {
                let v: serde_json::Value = serde_json::from_str(&e.json).unwrap();
                let name = v["event"].as_str().unwrap_or("").to_owned();
                self.sent.lock().unwrap().push(name.clone());
                match name.as_str() {
                    "Skip-type" => Outcome::Skipped(SkipReason::UnsupportedType),
                    "Skip-id" => Outcome::Skipped(SkipReason::MissingIdentity),
                    "Reject" => Outcome::Rejected(format!("vendor: {} refused", e.message_id)),
                    "Retry" => Outcome::Retry(DeliveryError::retriable("vendor: HTTP 503")),
                    _ => Outcome::Delivered,
                }
            })
            .collect()
    }
}

/// Quarantines `Held` events until `allow` is set.
struct HoldUntilAllowed {
    allow: AtomicBool,
}

impl DestinationRules for HoldUntilAllowed {
    fn apply(&self, event: &mut Event) -> Verdict {
        match event.name() {
            Some("Held") if !self.allow.load(Ordering::SeqCst) => Verdict::Quarantine {
                reason: "rule pii-check: email not hashed".into(),
            },
            Some("Debug") => Verdict::Drop {
                reason: "rule no-debug: debug event".into(),
            },
            _ => Verdict::Keep,
        }
    }
}

async fn lane_with(
    store: &Arc<SqliteStorage>,
    names: &[&str],
    rules: Option<Arc<dyn DestinationRules>>,
    recorder: &metrics_exporter_prometheus::PrometheusRecorder,
) -> (Arc<Lane>, Arc<ByName>) {
    let accepted = names
        .iter()
        .enumerate()
        .map(|(i, name)| AcceptedEvent {
            source: "web".into(),
            message_id: format!("m{i}"),
            dedup: true,
            granted: Default::default(),
            json: format!(r#"{{"type":"track","messageId":"m{i}","event":"{name}"}}"#).into(),
            destinations: vec!["d".into()],
        })
        .collect();
    store
        .commit_ingest(IngestCommit {
            accepted,
            quarantined: vec![],
            holds: Default::default(),
        })
        .await
        .unwrap();
    let destination = Arc::new(ByName {
        sent: Default::default(),
    });
    let storage: Arc<dyn Storage> = Arc::new(Arc::clone(store));
    let lane = Arc::new(Lane {
        name: "d".into(),
        destination: Arc::clone(&destination) as Arc<dyn Destination>,
        policy: RetryPolicy::from_config(&DeliveryConfig::default(), 100),
        outbox: Outbox::new(storage),
        rules,
        metrics: metrics::with_local_recorder(recorder, || DestinationMetrics::register("d")),
    });
    (lane, destination)
}

fn counter(rendered: &str, name: &str, labels: &str) -> u64 {
    rendered
        .lines()
        .find(|l| l.starts_with(name) && l.contains(labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn each_event_is_settled_by_its_own_outcome_and_every_skip_is_counted() {
    let store = SqliteStorage::open(&tempdir(), 64).unwrap();
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let names = [
        "Buy",
        "Skip-type",
        "Reject",
        "Retry",
        "Skip-id",
        "Buy",
        "Reject",
        "Skip-type",
    ];
    let (lane, _) = lane_with(&store, &names, None, &recorder).await;
    let batch = store.outbox_due("d", now_ms(), 0, 100).await.unwrap();
    assert_eq!(batch.len(), 8);
    deliver_batch(Arc::clone(&lane), batch).await;

    // Two delivered and three skipped left; two dead-lettered with their own reasons.
    let letters = store.dead_letters("d", 10).await.unwrap();
    let reasons: Vec<&str> = letters.iter().map(|l| l.reason.as_str()).collect();
    assert_eq!(reasons, ["vendor: m2 refused", "vendor: m6 refused"]);
    // The retry waits in the outbox, scheduled later, with the vendor's reason.
    assert_eq!(store.outbox_depth("d").await.unwrap(), 1);
    assert!(store
        .outbox_due("d", now_ms(), 0, 10)
        .await
        .unwrap()
        .is_empty());
    let later = store
        .outbox_due("d", now_ms() + 3_600_000, 0, 10)
        .await
        .unwrap();
    assert_eq!(later[0].message_id, "m3");

    let text = recorder.handle().render();
    let skipped = "waymark_events_skipped_total";
    assert_eq!(
        counter(&text, skipped, r#"reason="unsupported_type""#),
        2,
        "{text}"
    );
    assert_eq!(
        counter(&text, skipped, r#"reason="missing_identity""#),
        1,
        "{text}"
    );
    assert_eq!(
        counter(
            &text,
            "waymark_events_delivered_total",
            r#"destination="d""#
        ),
        2
    );
    assert_eq!(
        counter(
            &text,
            "waymark_events_dead_lettered_total",
            r#"reason="rejected""#
        ),
        2
    );
    assert_eq!(
        counter(&text, "waymark_events_retried_total", r#"destination="d""#),
        1
    );
}

#[tokio::test]
async fn a_rule_quarantine_quarantines_and_a_replay_delivers_once_the_rule_allows_it() {
    let store = SqliteStorage::open(&tempdir(), 64).unwrap();
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let rules = Arc::new(HoldUntilAllowed {
        allow: AtomicBool::new(false),
    });
    let chain: Arc<dyn DestinationRules> = Arc::clone(&rules) as Arc<dyn DestinationRules>;
    let (lane, destination) =
        lane_with(&store, &["Buy", "Held", "Debug"], Some(chain), &recorder).await;
    let batch = store.outbox_due("d", now_ms(), 0, 100).await.unwrap();
    deliver_batch(Arc::clone(&lane), batch).await;

    // Only `Buy` was sent; `Held` is in quarantine with the destination,
    // the rule and the reason; `Debug` is gone, counted as a rule drop.
    assert_eq!(*destination.sent.lock().unwrap(), ["Buy"]);
    assert_eq!(store.outbox_depth("d").await.unwrap(), 0);
    assert!(store.dead_letters("d", 10).await.unwrap().is_empty());
    let quarantined = store.quarantine_list(10).await.unwrap();
    assert_eq!(quarantined.len(), 1);
    let q = &quarantined[0];
    assert_eq!(q.destination.as_deref(), Some("d"));
    assert_eq!(q.rule.as_deref(), Some("pii-check"));
    assert_eq!(q.reason, "rule");
    assert_eq!(q.detail, "rule pii-check: email not hashed");
    assert_eq!(q.message_id.as_deref(), Some("m1"));
    assert!(q.raw.contains(r#""event":"Held""#), "{}", q.raw);
    let text = recorder.handle().render();
    assert_eq!(
        counter(
            &text,
            "waymark_events_quarantined_total",
            r#"destination="d""#
        ),
        1
    );
    assert_eq!(
        counter(&text, "waymark_events_dropped_total", r#"destination="d""#),
        1
    );
    assert_eq!(
        counter(
            &text,
            "waymark_events_delivered_total",
            r#"destination="d""#
        ),
        1
    );

    // A replay while the rule still refuses quarantines it again.
    assert_eq!(store.quarantine_requeue(vec![q.id]).await.unwrap(), [q.id]);
    let batch = store.outbox_due("d", now_ms(), 0, 100).await.unwrap();
    deliver_batch(Arc::clone(&lane), batch).await;
    let again = store.quarantine_list(10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(*destination.sent.lock().unwrap(), ["Buy"]);

    // Once the rule allows it, a replay delivers it.
    rules.allow.store(true, Ordering::SeqCst);
    assert_eq!(
        store.quarantine_requeue(vec![again[0].id]).await.unwrap(),
        [again[0].id]
    );
    let batch = store.outbox_due("d", now_ms(), 0, 100).await.unwrap();
    deliver_batch(Arc::clone(&lane), batch).await;
    assert_eq!(*destination.sent.lock().unwrap(), ["Buy", "Held"]);
    assert!(store.quarantine_list(10).await.unwrap().is_empty());
    assert_eq!(store.outbox_depth("d").await.unwrap(), 0);
}

#[tokio::test]
async fn ingest_quarantine_is_not_requeued_to_a_destination() {
    let store = SqliteStorage::open(&tempdir(), 64).unwrap();
    store
        .commit_ingest(IngestCommit {
            accepted: vec![],
            quarantined: vec![crate::storage::QuarantinedEvent {
                source: "web".into(),
                reason: "missing_field",
                detail: "event: missing".into(),
                raw: "{}".into(),
            }],
            holds: Default::default(),
        })
        .await
        .unwrap();
    let q = store.quarantine_list(10).await.unwrap();
    assert_eq!(q[0].destination, None);
    assert!(store
        .quarantine_requeue(vec![q[0].id])
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.quarantine_list(10).await.unwrap().len(), 1);
}

#[test]
fn rule_names_are_read_from_chain_reasons() {
    assert_eq!(rule_of("rule pii: no").as_deref(), Some("pii"));
    assert_eq!(rule_of("something else"), None);
}

mod sync_rows;

/// Sends take 30 ms; `Retry-once` is refused the first time.
struct SlowRetryOnce {
    sent: std::sync::Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl Destination for SlowRetryOnce {
    fn max_batch(&self) -> usize {
        1
    }

    async fn send(&self, events: &[OutboxEntry]) -> Vec<Outcome> {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let mut sent = self.sent.lock().unwrap();
        events
            .iter()
            .map(|e| {
                let first = !sent.contains(&e.message_id);
                sent.push(e.message_id.clone());
                if e.message_id == "retry-once" && first {
                    Outcome::Retry(DeliveryError::retriable("vendor: HTTP 503"))
                } else {
                    Outcome::Delivered
                }
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_is_sent_while_the_lane_stays_busy_on_sqlite() {
    a_retry_is_sent_while_the_lane_stays_busy(crate::storage::conformance::Backend::sqlite()).await;
}

/// On PostgreSQL a retry keeps its id, below the rows in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_is_sent_while_the_lane_stays_busy_on_postgres() {
    a_retry_is_sent_while_the_lane_stays_busy(crate::storage::conformance::Backend::postgres(
        "busy_lane",
    ))
    .await;
}

async fn a_retry_is_sent_while_the_lane_stays_busy(b: crate::storage::conformance::Backend) {
    let storage: Arc<dyn Storage> = Arc::clone(&b.store);
    let store = &storage;
    let event = |id: &str| AcceptedEvent {
        source: "web".into(),
        message_id: id.into(),
        dedup: true,
        granted: Default::default(),
        json: format!(r#"{{"type":"track","messageId":"{id}","event":"E"}}"#).into(),
        destinations: vec!["d".into()],
    };
    let commit = |events| IngestCommit {
        accepted: events,
        quarantined: vec![],
        holds: Default::default(),
    };
    store
        .commit_ingest(commit(vec![event("retry-once")]))
        .await
        .unwrap();
    let destination = Arc::new(SlowRetryOnce {
        sent: Default::default(),
    });
    let policy = RetryPolicy {
        batch_size: 1,
        concurrency: 2,
        max_age_ms: 600_000,
        initial_backoff_ms: 50,
        max_backoff_ms: 100,
    };
    let (stop, shutdown) = watch::channel(false);
    let worker = tokio::spawn(run_worker(
        "d".into(),
        Arc::clone(&destination) as Arc<dyn Destination>,
        policy,
        Outbox::new(Arc::clone(&storage)),
        None,
        shutdown,
    ));
    // More arrives than the lane sends (2 at a time, 30 ms each): it never drains.
    let started = Instant::now();
    let mut n = 0;
    let retried = loop {
        store
            .commit_ingest(commit(
                (0..4).map(|i| event(&format!("m{n}-{i}"))).collect(),
            ))
            .await
            .unwrap();
        n += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
        let sent = destination.sent.lock().unwrap().clone();
        if sent.iter().filter(|m| *m == "retry-once").count() == 2 {
            break true;
        }
        if started.elapsed() > Duration::from_secs(4) {
            break false;
        }
    };
    assert!(
        store.outbox_depth("d").await.unwrap() > 0,
        "the lane stayed busy"
    );
    let _ = stop.send(true);
    worker.await.unwrap();
    assert!(
        retried,
        "the retry was not sent again while the lane was busy"
    );
}
