//! The delivery hook (issue #18 §2), run against every backend: a sync
//! row's key state and its run's counters move in the same transaction as
//! the outbox bookkeeping of the entry that carried it (delivered,
//! dead-lettered, or quarantined by a destination's rules), once per entry.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::conformance::{accepted, commit, conformance, Backend};
use super::syncs::{Change, Delivery, KeyStatus, RowCounts, RowHash, SettledRow};
use super::{AcceptedEvent, OutboxEntry, RuleQuarantine, SyncStore};
use crate::config::{SyncCall, SyncConfig, SyncMode};
use crate::syncs::plan::PlannedRow;
use crate::syncs::run::{outcome_of, row_call};
use crate::syncs::Mapping;
use crate::time::now_ms;

conformance!(
    "hook_";
    delivered_rows_are_synced_with_their_removal_and_dead_letters_fail,
    a_rule_quarantine_fails_the_row_and_a_rule_drop_settles_it,
    an_entry_settled_twice_or_missing_records_nothing_more,
    a_failed_state_write_leaves_the_entry_in_the_outbox,
);

/// The destination every test delivers to.
const DEST: &str = "hook";

/// The sync's configuration, as `row_call` needs it.
fn sync_config() -> SyncConfig {
    SyncConfig {
        name: "crm-users".into(),
        model: "users".into(),
        destination: DEST.into(),
        call: SyncCall::Identify,
        mode: SyncMode::Upsert,
        mapping: BTreeMap::new(),
        event: None,
        schedule: None,
        fail_on_zero_rows: true,
        disabled: false,
        report_timeout_secs: 600,
    }
}

/// The outbox event a sync's run `run` makes of `key` (as the run does:
/// `row_call`, source `sync:<name>`, the deterministic `messageId`).
pub(crate) fn sync_event(sync: i64, run: i64, key: &str, h: u8, change: Change) -> AcceptedEvent {
    let config = sync_config();
    let mapping = Mapping::from_indices(0, vec![("userId".into(), 0)]);
    let row = PlannedRow {
        key: key.into(),
        hash: RowHash([h; 16]),
        change,
        retry: false,
        row: vec![serde_json::json!(key)],
    };
    let call = row_call(&config, sync, run, &mapping, &row);
    AcceptedEvent {
        source: format!("sync:{}", config.name).into(),
        message_id: call["messageId"].as_str().unwrap_or_default().to_owned(),
        dedup: false,
        granted: Default::default(),
        json: call.to_string().into(),
        destinations: vec![Arc::from(DEST)],
    }
}

/// The rows among `entries` settled as `delivery`, as the deliver stage
/// hands them over.
fn rows(entries: &[&OutboxEntry], delivery: &Delivery) -> Vec<SettledRow> {
    entries
        .iter()
        .filter_map(|e| {
            Some(SettledRow {
                entry: e.id,
                outcome: outcome_of(e, delivery)?,
            })
        })
        .collect()
}

fn dead(reason: &str) -> Delivery {
    Delivery::DeadLettered {
        reason: reason.into(),
    }
}

fn added(n: u64) -> RowCounts {
    RowCounts {
        added: n,
        ..RowCounts::default()
    }
}

/// A started run of sync 1 with `keys` (added, hash 1) and one web event
/// in the outbox; returns the run, the syncs' store and the due entries.
async fn started(b: &Backend, keys: &[&str]) -> (i64, Arc<dyn SyncStore>, Vec<OutboxEntry>) {
    let s = b.store.sync_store();
    let run = s.queue_run(1, false).await.unwrap();
    s.start_run(1).await.unwrap().unwrap();
    let mut events: Vec<AcceptedEvent> = keys
        .iter()
        .map(|k| sync_event(1, run, k, 1, Change::Added))
        .collect();
    events.push(accepted("web", "w1", &[DEST]));
    b.store.commit_ingest(commit(events)).await.unwrap();
    let due = b.store.outbox_due(DEST, now_ms(), 0, 100).await.unwrap();
    assert_eq!(due.len(), keys.len() + 1);
    (run, s, due)
}

fn entry<'a>(due: &'a [OutboxEntry], key: &str) -> &'a OutboxEntry {
    due.iter()
        .find(|e| e.json.contains(&format!(r#""key":"{key}""#)))
        .unwrap_or_else(|| panic!("no entry for {key}"))
}

fn web(due: &[OutboxEntry]) -> &OutboxEntry {
    due.iter().find(|e| e.source == "web").unwrap()
}

async fn delivered_rows_are_synced_with_their_removal_and_dead_letters_fail(b: Backend) {
    let (run, s, due) = started(&b, &["a", "b", "c"]).await;
    let (a, bb, c) = (entry(&due, "a"), entry(&due, "b"), entry(&due, "c"));
    let done = [a, bb, web(&due)];
    let settled = rows(&done, &Delivery::Delivered);
    assert_eq!(settled.len(), 2, "the web event is not a sync row");
    b.store
        .outbox_delivered(done.iter().map(|e| e.id).collect(), settled)
        .await
        .unwrap();

    let state = s.state_page(1, None, 10).await.unwrap();
    let view: Vec<_> = state
        .iter()
        .map(|k| (k.key.as_str(), k.hash, k.status, k.run))
        .collect();
    assert_eq!(
        view,
        [
            ("a", RowHash([1; 16]), KeyStatus::Synced, run),
            ("b", RowHash([1; 16]), KeyStatus::Synced, run),
        ]
    );
    let r = s.run(run).await.unwrap().unwrap();
    assert_eq!((r.successful, r.failed), (added(2), added(0)));
    let left = b.store.outbox_due(DEST, now_ms(), 0, 100).await.unwrap();
    assert_eq!(left.iter().map(|e| e.id).collect::<Vec<_>>(), [c.id]);

    // The destination refuses `c` for good: failed, never delivered.
    b.store
        .outbox_dead_letter(vec![c.id], "400 bad email".into(), {
            rows(&[c], &dead("400 bad email"))
        })
        .await
        .unwrap();
    let failed = s.failed_keys(1, 10).await.unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(
        (
            failed[0].key.as_str(),
            failed[0].status,
            failed[0].attempts,
            failed[0].last_error.as_deref()
        ),
        ("c", KeyStatus::FailedNew, 1, Some("400 bad email"))
    );
    let r = s.run(run).await.unwrap().unwrap();
    assert_eq!((r.successful, r.failed), (added(2), added(1)));
    let letters = b.store.dead_letters(DEST, 10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].source, "sync:crm-users");
    assert_eq!(b.store.outbox_depth(DEST).await.unwrap(), 0);

    // Replayed and delivered, the row's outcome records again: synced.
    assert_eq!(b.store.replay_dead_letters(DEST, None).await.unwrap(), 1);
    let again = b.store.outbox_due(DEST, now_ms(), 0, 100).await.unwrap();
    assert_eq!(again.len(), 1);
    b.store
        .outbox_delivered(vec![again[0].id], rows(&[&again[0]], &Delivery::Delivered))
        .await
        .unwrap();
    assert!(s.failed_keys(1, 10).await.unwrap().is_empty());
    let r = s.run(run).await.unwrap().unwrap();
    assert_eq!((r.successful, r.failed), (added(3), added(1)));
}

async fn a_rule_quarantine_fails_the_row_and_a_rule_drop_settles_it(b: Backend) {
    let (run, s, due) = started(&b, &["kept-out", "dropped"]).await;
    let q = entry(&due, "kept-out");
    let reason = "rule pii: email not hashed";
    b.store
        .outbox_quarantine(
            vec![RuleQuarantine {
                id: q.id,
                rule: Some("pii".into()),
                reason: reason.into(),
            }],
            rows(&[q], &dead(reason)),
        )
        .await
        .unwrap();
    // A destination rule's drop is on purpose: settled as delivered.
    let d = entry(&due, "dropped");
    b.store
        .outbox_delivered(vec![d.id], rows(&[d], &Delivery::Delivered))
        .await
        .unwrap();

    let state = s.state_page(1, None, 10).await.unwrap();
    let view: Vec<_> = state
        .iter()
        .map(|k| (k.key.as_str(), k.status, k.last_error.as_deref()))
        .collect();
    assert_eq!(
        view,
        [
            ("dropped", KeyStatus::Synced, None),
            ("kept-out", KeyStatus::FailedNew, Some(reason)),
        ]
    );
    let r = s.run(run).await.unwrap().unwrap();
    assert_eq!((r.successful, r.failed), (added(1), added(1)));
    let quarantined = b.store.quarantine_list(10).await.unwrap();
    assert_eq!(quarantined.len(), 1);
    assert_eq!(quarantined[0].destination.as_deref(), Some(DEST));
    assert_eq!(
        b.store.outbox_depth(DEST).await.unwrap(),
        1,
        "the web event"
    );
}

async fn an_entry_settled_twice_or_missing_records_nothing_more(b: Backend) {
    let (run, s, due) = started(&b, &["a", "b", "c"]).await;
    let (a, bb, c) = (entry(&due, "a"), entry(&due, "b"), entry(&due, "c"));
    b.store
        .outbox_delivered(vec![a.id], rows(&[a], &Delivery::Delivered))
        .await
        .unwrap();
    // Settled again (a retried call, or a second worker after a lease
    // overlap), delivered or dead-lettered: no second count, state kept.
    b.store
        .outbox_delivered(vec![a.id], rows(&[a], &Delivery::Delivered))
        .await
        .unwrap();
    b.store
        .outbox_dead_letter(vec![a.id], "late".into(), rows(&[a], &dead("late")))
        .await
        .unwrap();
    // A row whose entry is not among the ids settled records nothing, and
    // an id that is not in the outbox records nothing either.
    b.store
        .outbox_delivered(vec![c.id], rows(&[bb], &Delivery::Delivered))
        .await
        .unwrap();
    let missing = due.iter().map(|e| e.id).max().unwrap_or_default() + 1_000;
    let mut stray = rows(&[bb], &Delivery::Delivered);
    stray[0].entry = missing;
    b.store
        .outbox_delivered(vec![missing], stray)
        .await
        .unwrap();

    let state = s.state_page(1, None, 10).await.unwrap();
    let view: Vec<_> = state.iter().map(|k| (k.key.as_str(), k.status)).collect();
    assert_eq!(view, [("a", KeyStatus::Synced)]);
    let r = s.run(run).await.unwrap().unwrap();
    assert_eq!((r.successful, r.failed), (added(1), added(0)));
    assert!(b.store.dead_letters(DEST, 10).await.unwrap().is_empty());
    let left = b.store.outbox_due(DEST, now_ms(), 0, 100).await.unwrap();
    let mut ids: Vec<i64> = left.iter().map(|e| e.id).collect();
    ids.sort_unstable();
    let mut expected = vec![bb.id, web(&due).id];
    expected.sort_unstable();
    assert_eq!(ids, expected, "`c` left the outbox, `b` stayed");
}

async fn a_failed_state_write_leaves_the_entry_in_the_outbox(b: Backend) {
    let (run, s, due) = started(&b, &["a"]).await;
    let a = entry(&due, "a");
    b.fail_sync_state(true).await;
    let failed = b
        .store
        .outbox_delivered(vec![a.id], rows(&[a], &Delivery::Delivered))
        .await;
    assert!(failed.is_err(), "the injected failure surfaces");
    let failed = b
        .store
        .outbox_dead_letter(vec![a.id], "400".into(), rows(&[a], &dead("400")))
        .await;
    assert!(failed.is_err());
    // Nothing of either write happened: the entry waits, no dead letter,
    // no state, no count.
    let left = b.store.outbox_due(DEST, now_ms(), 0, 100).await.unwrap();
    assert!(left.iter().any(|e| e.id == a.id));
    assert!(b.store.dead_letters(DEST, 10).await.unwrap().is_empty());
    assert!(s.state_page(1, None, 10).await.unwrap().is_empty());
    let r = s.run(run).await.unwrap().unwrap();
    assert_eq!((r.successful, r.failed), (added(0), added(0)));

    // Once the store accepts writes again, the same call settles it.
    b.fail_sync_state(false).await;
    b.store
        .outbox_delivered(vec![a.id], rows(&[a], &Delivery::Delivered))
        .await
        .unwrap();
    assert_eq!(s.state_page(1, None, 10).await.unwrap().len(), 1);
    assert_eq!(s.run(run).await.unwrap().unwrap().successful, added(1));
}
