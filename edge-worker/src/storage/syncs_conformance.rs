//! The sync state store's behaviour, run against every backend (issue #18),
//! in the manner of `conformance.rs`: each behaviour is an
//! `async fn(Backend)` and `conformance!` makes a SQLite and a PostgreSQL
//! test of it.

use std::sync::Arc;

use super::conformance::{conformance, Backend};
use super::syncs::{
    Change, Delivery, InvalidRow, KeyStatus, ObjectKind, RowCounts, RowHash, RowOutcome, RunFilter,
    RunPlan, RunStatus,
};
use super::SyncStore;

conformance!(
    "syncs_";
    ids_are_stable_across_restarts_and_never_reused,
    a_trigger_during_a_run_queues_one_more_and_no_more,
    delivered_rows_move_state_and_dead_letters_are_marked_for_retry,
    an_older_run_never_overwrites_a_newer_state,
    state_pages_walk_every_key_in_order,
    runs_list_newest_first_and_filter,
    runs_left_active_by_a_crash_are_interrupted,
);

fn syncs(b: &Backend) -> Arc<dyn SyncStore> {
    b.store.sync_store()
}

fn hash(n: u8) -> RowHash {
    RowHash([n; 16])
}

fn outcome(run: i64, key: &str, h: u8, change: Change, delivery: Delivery) -> RowOutcome {
    RowOutcome {
        sync: 1,
        run,
        key: key.into(),
        hash: hash(h),
        change,
        delivery,
    }
}

fn dead(reason: &str) -> Delivery {
    Delivery::DeadLettered {
        reason: reason.into(),
    }
}

async fn ids_are_stable_across_restarts_and_never_reused(b: Backend) {
    let s = syncs(&b);
    let first = s
        .object_ids(ObjectKind::Sync, vec!["a".into(), "b".into()])
        .await
        .unwrap();
    assert_eq!(first[0].name, "a");
    assert_ne!(first[0].id, first[1].id);
    let again = s
        .object_ids(ObjectKind::Sync, vec!["b".into(), "c".into()])
        .await
        .unwrap();
    assert_eq!(again[0], first[1]);
    assert!(again[1].id > first[1].id);
    // A model may share a sync's name; it gets an id of its own.
    let model = s
        .object_ids(ObjectKind::Model, vec!["a".into()])
        .await
        .unwrap();
    assert!(![first[0].id, first[1].id, again[1].id].contains(&model[0].id));
    // Another process on the same store sees the same ids.
    let reopened = b.reopen().sync_store();
    let later = reopened
        .object_ids(ObjectKind::Sync, vec!["c".into(), "a".into()])
        .await
        .unwrap();
    assert_eq!(later, vec![again[1].clone(), first[0].clone()]);
}

async fn a_trigger_during_a_run_queues_one_more_and_no_more(b: Backend) {
    let s = syncs(&b);
    let r1 = s.queue_run(1, false).await.unwrap();
    assert_eq!(
        s.queue_run(1, true).await.unwrap(),
        r1,
        "one queued run per sync"
    );
    let started = s
        .start_run(1)
        .await
        .unwrap()
        .expect("the queued run starts");
    assert_eq!(started.id, r1);
    assert_eq!(started.status, RunStatus::Querying);
    assert!(started.full_resync, "a coalesced full resync is kept");
    assert!(started.started_at_ms.is_some());
    let r2 = s.queue_run(1, false).await.unwrap();
    assert!(r2 > r1);
    assert_eq!(s.queue_run(1, false).await.unwrap(), r2);
    assert_eq!(
        s.start_run(1).await.unwrap(),
        None,
        "one active run per sync"
    );
    // Another sync is independent.
    let other = s.queue_run(2, false).await.unwrap();
    assert_eq!(s.start_run(2).await.unwrap().map(|r| r.id), Some(other));
    assert!(s.set_run_status(r1, RunStatus::Processing).await.unwrap());
    assert!(s.set_run_status(r1, RunStatus::Success).await.is_err());
    assert!(s.finish_run(r1, RunStatus::Success, None).await.unwrap());
    assert!(!s.finish_run(r1, RunStatus::Failed, None).await.unwrap());
    assert!(!s.set_run_status(r1, RunStatus::Reporting).await.unwrap());
    let next = s
        .start_run(1)
        .await
        .unwrap()
        .expect("the queued run starts next");
    assert_eq!((next.id, next.full_resync), (r2, false));
    assert_eq!(s.start_run(1).await.unwrap(), None, "nothing queued");
}

async fn delivered_rows_move_state_and_dead_letters_are_marked_for_retry(b: Backend) {
    let s = syncs(&b);
    let run = s.queue_run(1, false).await.unwrap();
    s.start_run(1).await.unwrap();
    s.record_outcomes(vec![
        outcome(run, "a", 1, Change::Added, Delivery::Delivered),
        outcome(run, "b", 1, Change::Added, Delivery::Delivered),
        outcome(run, "c", 1, Change::Added, dead("400 bad email")),
    ])
    .await
    .unwrap();
    let state = s.state_page(1, None, 10).await.unwrap();
    let view: Vec<_> = state
        .iter()
        .map(|k| {
            (
                k.key.as_str(),
                k.hash,
                k.status,
                k.attempts,
                k.last_error.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        view,
        [
            ("a", hash(1), KeyStatus::Synced, 0, None),
            ("b", hash(1), KeyStatus::Synced, 0, None),
            ("c", hash(1), KeyStatus::FailedNew, 1, Some("400 bad email")),
        ]
    );
    let r = s.run(run).await.unwrap().unwrap();
    assert_eq!(
        r.successful,
        RowCounts {
            added: 2,
            changed: 0,
            removed: 0
        }
    );
    assert_eq!(
        r.failed,
        RowCounts {
            added: 1,
            changed: 0,
            removed: 0
        }
    );

    let run2 = s.queue_run(1, false).await.unwrap();
    s.finish_run(run, RunStatus::Warning, None).await.unwrap();
    s.start_run(1).await.unwrap();
    s.record_outcomes(vec![
        outcome(run2, "a", 2, Change::Changed, Delivery::Delivered),
        outcome(run2, "b", 2, Change::Changed, dead("500 twice")),
        outcome(run2, "c", 2, Change::Added, dead("400 again")),
    ])
    .await
    .unwrap();
    let state = s.state_page(1, None, 10).await.unwrap();
    assert_eq!(
        (state[0].hash, state[0].status),
        (hash(2), KeyStatus::Synced)
    );
    assert_eq!(
        (state[1].hash, state[1].status, state[1].attempts),
        (hash(2), KeyStatus::Failed, 1),
        "a failed change was synced before"
    );
    assert_eq!(
        (state[2].status, state[2].attempts, state[2].run),
        (KeyStatus::FailedNew, 2, run2),
        "never delivered stays new"
    );
    // Removals: delivered forgets the key, dead-lettered keeps it, failed.
    s.record_outcomes(vec![
        outcome(run2, "a", 2, Change::Removed, Delivery::Delivered),
        outcome(run2, "b", 2, Change::Removed, dead("410 gone")),
    ])
    .await
    .unwrap();
    let failed = s.failed_keys(1, 10).await.unwrap();
    let keys: Vec<_> = failed.iter().map(|k| k.key.as_str()).collect();
    assert_eq!(keys, ["b", "c"]);
    assert_eq!(failed[0].attempts, 2);
    assert_eq!(failed[0].last_error.as_deref(), Some("410 gone"));
    let all = s.state_page(1, None, 10).await.unwrap();
    assert_eq!(all.len(), 2, "the delivered removal forgot `a`");
    let r2 = s.run(run2).await.unwrap().unwrap();
    assert_eq!(
        r2.successful,
        RowCounts {
            added: 0,
            changed: 1,
            removed: 1
        }
    );
    assert_eq!(
        r2.failed,
        RowCounts {
            added: 1,
            changed: 1,
            removed: 1
        }
    );
    assert!(
        s.state_page(2, None, 10).await.unwrap().is_empty(),
        "per sync"
    );
}

async fn an_older_run_never_overwrites_a_newer_state(b: Backend) {
    let s = syncs(&b);
    s.record_outcomes(vec![outcome(
        7,
        "k",
        7,
        Change::Changed,
        Delivery::Delivered,
    )])
    .await
    .unwrap();
    // A retried entry of an interrupted earlier run lands late.
    s.record_outcomes(vec![
        outcome(6, "k", 6, Change::Changed, Delivery::Delivered),
        outcome(5, "k", 5, Change::Removed, Delivery::Delivered),
        outcome(6, "k", 6, Change::Changed, dead("late")),
    ])
    .await
    .unwrap();
    let state = s.state_page(1, None, 10).await.unwrap();
    assert_eq!(state.len(), 1);
    assert_eq!(
        (state[0].hash, state[0].status, state[0].run),
        (hash(7), KeyStatus::Synced, 7)
    );
    // Within one batch the highest run wins whatever the order.
    s.record_outcomes(vec![
        outcome(9, "m", 9, Change::Added, Delivery::Delivered),
        outcome(8, "m", 8, Change::Added, dead("older")),
    ])
    .await
    .unwrap();
    let m = &s.state_page(1, Some("k".into()), 10).await.unwrap()[0];
    assert_eq!(
        (m.key.as_str(), m.hash, m.status),
        ("m", hash(9), KeyStatus::Synced)
    );
}

async fn state_pages_walk_every_key_in_order(b: Backend) {
    let s = syncs(&b);
    let keys: Vec<(String, RowHash)> = (0..250).map(|i| (format!("user-{i}"), hash(3))).collect();
    s.record_baseline(1, 1, keys.clone()).await.unwrap();
    // A baseline never overwrites what a delivery recorded.
    s.record_outcomes(vec![outcome(2, "user-5", 9, Change::Changed, dead("x"))])
        .await
        .unwrap();
    s.record_baseline(1, 3, vec![("user-5".into(), hash(3))])
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = s.state_page(1, after.clone(), 100).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 100);
        after = page.last().map(|k| k.key.clone());
        seen.extend(page);
    }
    let mut expected: Vec<String> = keys.into_iter().map(|(k, _)| k).collect();
    expected.sort();
    assert_eq!(
        seen.iter().map(|k| k.key.clone()).collect::<Vec<_>>(),
        expected
    );
    let five = seen.iter().find(|k| k.key == "user-5").unwrap();
    assert_eq!((five.hash, five.status), (hash(9), KeyStatus::Failed));
    assert!(seen
        .iter()
        .filter(|k| k.key != "user-5")
        .all(|k| k.status == KeyStatus::Synced));
}

async fn runs_list_newest_first_and_filter(b: Backend) {
    let s = syncs(&b);
    let mut ids = Vec::new();
    for _ in 0..5 {
        let id = s.queue_run(1, false).await.unwrap();
        s.start_run(1).await.unwrap();
        s.finish_run(id, RunStatus::Success, None).await.unwrap();
        ids.push(id);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let all = s.runs(1, RunFilter::default()).await.unwrap();
    let listed: Vec<i64> = all.iter().map(|r| r.id).collect();
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(listed, newest_first);
    let page = s
        .runs(
            1,
            RunFilter {
                limit: 2,
                offset: 1,
                ..RunFilter::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|r| r.id).collect::<Vec<_>>(),
        [ids[3], ids[2]]
    );
    let one = s
        .runs(
            1,
            RunFilter {
                run: Some(ids[1]),
                ..RunFilter::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].id, ids[1]);
    let middle = all[2].created_at_ms;
    let after = s
        .runs(
            1,
            RunFilter {
                after_ms: Some(middle),
                ..RunFilter::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        after.iter().map(|r| r.id).collect::<Vec<_>>(),
        [ids[4], ids[3]]
    );
    let before = s
        .runs(
            1,
            RunFilter {
                before_ms: Some(middle),
                ..RunFilter::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        before.iter().map(|r| r.id).collect::<Vec<_>>(),
        [ids[1], ids[0]]
    );
    assert!(s.runs(2, RunFilter::default()).await.unwrap().is_empty());
    assert_eq!(s.run(ids[0] + 1000).await.unwrap(), None);

    // A planned run reports its progress.
    let id = s.queue_run(1, false).await.unwrap();
    s.start_run(1).await.unwrap();
    let fresh = s.run(id).await.unwrap().unwrap();
    assert_eq!((fresh.query_size, fresh.completion_ratio()), (None, 0.0));
    s.record_plan(
        id,
        RunPlan {
            query_size: 10,
            planned: RowCounts {
                added: 3,
                changed: 1,
                removed: 0,
            },
            invalid: 3,
            invalid_rows: vec![
                InvalidRow {
                    key: String::new(),
                    reason: "null primary key".into(),
                },
                InvalidRow {
                    key: "7".into(),
                    reason: "duplicate primary key".into(),
                },
            ],
        },
    )
    .await
    .unwrap();
    s.record_outcomes(vec![
        outcome(id, "a", 1, Change::Added, Delivery::Delivered),
        outcome(id, "b", 1, Change::Changed, dead("no")),
    ])
    .await
    .unwrap();
    let r = s.run(id).await.unwrap().unwrap();
    assert_eq!(r.query_size, Some(10));
    assert_eq!(r.invalid, 3);
    assert_eq!(r.planned.total(), 4);
    assert_eq!(r.completion_ratio(), 0.5);
    let invalid = s.invalid_rows(id, 10).await.unwrap();
    assert_eq!(invalid.len(), 2);
    assert_eq!(invalid[1].reason, "duplicate primary key");
    s.finish_run(id, RunStatus::Failed, Some("query failed".into()))
        .await
        .unwrap();
    let r = s.run(id).await.unwrap().unwrap();
    assert_eq!(
        (r.status, r.error.as_deref()),
        (RunStatus::Failed, Some("query failed"))
    );
    assert!(r.finished_at_ms >= r.started_at_ms);
}

async fn runs_left_active_by_a_crash_are_interrupted(b: Backend) {
    let s = syncs(&b);
    let running = s.queue_run(1, false).await.unwrap();
    s.start_run(1).await.unwrap();
    s.set_run_status(running, RunStatus::Processing)
        .await
        .unwrap();
    let waiting = s.queue_run(1, false).await.unwrap();
    let done = s.queue_run(2, false).await.unwrap();
    s.start_run(2).await.unwrap();
    s.finish_run(done, RunStatus::Success, None).await.unwrap();
    // The worker restarts. A run whose heartbeat is fresh is still going
    // (on another worker of a fleet); one whose heartbeat is stale is not.
    let after = b.reopen().sync_store();
    let then = crate::time::now_ms();
    assert!(after.keep_run(running).await.unwrap());
    assert_eq!(after.interrupt_runs(then - 60_000).await.unwrap(), 0);
    assert_eq!(
        after
            .interrupt_runs(crate::time::now_ms() + 1)
            .await
            .unwrap(),
        1
    );
    let r = after.run(running).await.unwrap().unwrap();
    assert_eq!(r.status, RunStatus::Interrupted);
    assert!(r.finished_at_ms.is_some());
    assert!(r.error.is_some());
    assert!(!after
        .finish_run(running, RunStatus::Success, None)
        .await
        .unwrap());
    // Its executor learns at its next heartbeat that it must stop.
    assert!(!after.keep_run(running).await.unwrap());
    assert_eq!(
        after.run(done).await.unwrap().unwrap().status,
        RunStatus::Success
    );
    // The queued run goes ahead.
    assert_eq!(
        after.start_run(1).await.unwrap().map(|r| r.id),
        Some(waiting)
    );
}
