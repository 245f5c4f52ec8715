use std::collections::BTreeMap;

use serde_json::json;

use super::*;
use crate::config::{SyncCall, SyncConfig, SyncMode};
use crate::storage::syncs::{Change, RowHash, RunStatus};
use crate::syncs::plan::PlannedRow;
use crate::syncs::Mapping;

fn sync(call: SyncCall) -> SyncConfig {
    SyncConfig {
        name: "users-to-hook".into(),
        model: "users".into(),
        destination: "hook".into(),
        call,
        mode: SyncMode::Mirror,
        mapping: BTreeMap::new(),
        event: None,
        schedule: None,
        fail_on_zero_rows: true,
        disabled: false,
        report_timeout_secs: 600,
    }
}

fn mapping() -> Mapping {
    Mapping::from_indices(0, vec![("userId".into(), 0), ("traits.email".into(), 1)])
}

fn planned(change: Change) -> PlannedRow {
    PlannedRow {
        key: "7".into(),
        hash: RowHash([3; 16]),
        change,
        retry: false,
        row: if change == Change::Removed {
            Vec::new()
        } else {
            vec![json!(7), json!("a@example.com")]
        },
    }
}

#[test]
fn a_row_becomes_its_call_with_the_mapping_and_the_mark() {
    let call = row_call(
        &sync(SyncCall::Identify),
        4,
        9,
        &mapping(),
        &planned(Change::Added),
    );
    assert_eq!(call["type"], "identify");
    assert_eq!(call["userId"], 7);
    assert_eq!(call["traits"]["email"], "a@example.com");
    assert_eq!(
        call["messageId"],
        message_id("users-to-hook", "7", &RowHash([3; 16]))
    );
    assert!(call.pointer("/context/waymark/delete").is_none());
    let mark = SyncMark::from_event(&call).expect("the mark reads back");
    assert_eq!(
        mark,
        SyncMark {
            sync: 4,
            run: 9,
            key: "7".into(),
            hash: RowHash([3; 16]),
            change: Change::Added,
        }
    );
}

#[test]
fn a_track_call_is_named_by_its_event_or_the_sync() {
    let mut s = sync(SyncCall::Track);
    let call = row_call(&s, 1, 1, &mapping(), &planned(Change::Changed));
    assert_eq!(call["event"], "users-to-hook");
    s.event = Some("Account Updated".into());
    let call = row_call(&s, 1, 1, &mapping(), &planned(Change::Changed));
    assert_eq!(call["event"], "Account Updated");
}

#[test]
fn a_removal_is_a_delete_marker_with_the_key_only() {
    let call = row_call(
        &sync(SyncCall::Identify),
        4,
        9,
        &mapping(),
        &planned(Change::Removed),
    );
    assert_eq!(call["context"]["waymark"]["delete"], true);
    assert!(call.get("traits").is_none());
    let mark = SyncMark::from_event(&call).expect("the mark reads back");
    assert_eq!(mark.change, Change::Removed);
    assert_eq!(mark.key, "7");
}

#[test]
fn message_ids_are_deterministic_and_separate_their_parts() {
    let h = RowHash([1; 16]);
    assert_eq!(message_id("s", "k", &h), message_id("s", "k", &h));
    assert_ne!(
        message_id("s", "k", &h),
        message_id("s", "k", &RowHash([2; 16]))
    );
    assert_ne!(message_id("ab", "c", &h), message_id("a", "bc", &h));
}

#[test]
fn events_without_a_mark_are_not_sync_rows() {
    assert_eq!(SyncMark::from_event(&json!({"type": "track"})), None);
    let bad = json!({"context": {"waymark": {"sync": {"sync": 1, "run": 1, "key": "k",
        "hash": "zz", "change": "added"}}}});
    assert_eq!(SyncMark::from_event(&bad), None);
}

#[test]
fn the_final_status_follows_the_settled_counts() {
    assert_eq!(final_status(0, 0, 0), RunStatus::Success);
    assert_eq!(final_status(10, 10, 0), RunStatus::Success);
    assert_eq!(final_status(10, 8, 2), RunStatus::Warning);
    assert_eq!(final_status(10, 8, 0), RunStatus::Warning);
    assert_eq!(final_status(10, 0, 10), RunStatus::Failed);
}

fn entry(source: &str, json: String) -> crate::storage::OutboxEntry {
    crate::storage::OutboxEntry {
        id: 1,
        source: source.into(),
        message_id: "m".into(),
        granted: Default::default(),
        json: json.into(),
        enqueued_at_ms: 0,
        attempts: 0,
    }
}

#[test]
fn a_settled_sync_entry_is_its_rows_outcome() {
    use crate::storage::syncs::Delivery;
    let call = row_call(
        &sync(SyncCall::Identify),
        4,
        9,
        &mapping(),
        &planned(Change::Changed),
    );
    let sync_entry = entry("sync:users-to-hook", call.to_string());
    // The same event from an ordinary source is not looked at.
    let other = entry("web", call.to_string());
    let garbage = entry("sync:x", "not json".into());
    let failed = Delivery::DeadLettered {
        reason: "500".into(),
    };
    let outcomes = outcomes_of([&sync_entry, &other, &garbage], &failed);
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0].sync, 4);
    assert_eq!(outcomes[0].run, 9);
    assert_eq!(outcomes[0].key, "7");
    assert_eq!(outcomes[0].change, Change::Changed);
    assert_eq!(outcomes[0].delivery, failed);
}
