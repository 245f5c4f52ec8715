//! One storage behaviour suite, run against every backend (issue #12).
//!
//! Each behaviour is an `async fn(Backend)` written once; `conformance!`
//! turns it into `<name>::sqlite` and `<name>::postgres` tests. The
//! PostgreSQL tests get their own database from `tests/pg.rs` and fail,
//! never skip, when no cluster can be had.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::postgres::test_db::{test_database, TestDb};
use super::{
    AcceptedEvent, ConsentSettled, HeldEvent, HoldCommit, IngestCommit, QuarantinedEvent, Storage,
    Stored,
};
use crate::config::{StorageBackend, StorageConfig};
use crate::consent::GrantedPurposes;
use crate::time::now_ms;

/// A store under test, with what keeps it alive.
pub(crate) struct Backend {
    pub store: Arc<dyn Storage>,
    pub config: StorageConfig,
    _db: Option<TestDb>,
}

impl Backend {
    pub(crate) fn sqlite() -> Backend {
        let config = StorageConfig {
            data_dir: tempdir(),
            ..StorageConfig::default()
        };
        Backend {
            store: super::open(&config, 86_400).expect("open SQLite"),
            config,
            _db: None,
        }
    }

    pub(crate) fn postgres(name: &str) -> Backend {
        let db = test_database(name).expect("a PostgreSQL test database (see tests/pg.rs)");
        let config = StorageConfig {
            backend: StorageBackend::Postgres,
            data_dir: tempdir(),
            url: Some(db.url().to_owned()),
            pool_size: 4,
            lease_secs: 2,
            ..StorageConfig::default()
        };
        Backend {
            store: super::open(&config, 86_400).expect("open PostgreSQL"),
            config,
            _db: Some(db),
        }
    }

    /// Makes every later insert into `consent_holds` fail inside the
    /// database (a trigger), as a full disk or a lost connection would in
    /// the middle of an ingest commit; `false` removes the trigger.
    pub(crate) async fn fail_holds(&self, fail: bool) {
        self.fail_inserts("consent_holds", fail).await;
    }

    /// Makes every later write of a key's sync state fail inside the
    /// database, as [`fail_holds`](Self::fail_holds) does for holds.
    pub(crate) async fn fail_sync_state(&self, fail: bool) {
        self.fail_inserts("sync_state", fail).await;
    }

    /// Makes every later insert into `table` fail (a trigger); `false`
    /// removes the trigger.
    async fn fail_inserts(&self, table: &str, fail: bool) {
        let sql = match (self.config.backend, fail) {
            (StorageBackend::Sqlite, true) => format!(
                "CREATE TRIGGER fail_{table} BEFORE INSERT ON {table}
                 BEGIN SELECT RAISE(ABORT, 'injected failure'); END;"
            ),
            (StorageBackend::Sqlite, false) => format!("DROP TRIGGER fail_{table};"),
            (StorageBackend::Postgres, true) => format!(
                "CREATE FUNCTION fail_{table}() RETURNS trigger LANGUAGE plpgsql AS
                   $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$;
                 CREATE TRIGGER fail_{table} BEFORE INSERT ON {table}
                   FOR EACH ROW EXECUTE FUNCTION fail_{table}();"
            ),
            (StorageBackend::Postgres, false) => {
                format!("DROP TRIGGER fail_{table} ON {table}; DROP FUNCTION fail_{table}();")
            }
        };
        match self.config.backend {
            StorageBackend::Sqlite => {
                let conn = rusqlite::Connection::open(
                    self.config.data_dir.join(super::sqlite::DATABASE_FILE),
                )
                .expect("open the SQLite file");
                conn.execute_batch(&sql).expect("the trigger");
            }
            StorageBackend::Postgres => {
                let url = self.config.url.clone().expect("a URL");
                let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .expect("connect");
                tokio::spawn(conn);
                client.batch_execute(&sql).await.expect("the trigger");
            }
        }
    }

    /// The same store opened again, as a restarted worker (or, on
    /// PostgreSQL, another worker) opens it.
    pub(crate) fn reopen(&self) -> Arc<dyn Storage> {
        super::open(&self.config, 86_400).expect("open the store again")
    }

    /// Another worker on the same store (PostgreSQL only).
    pub(crate) fn second_worker(&self) -> Arc<dyn Storage> {
        super::open(&self.config, 86_400).expect("open a second worker")
    }
}

pub(crate) fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("waymark-conf-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

pub(crate) fn accepted(source: &str, id: &str, destinations: &[&str]) -> AcceptedEvent {
    AcceptedEvent {
        source: source.into(),
        message_id: id.into(),
        dedup: true,
        granted: GrantedPurposes::from_stored(&format!("analytics,{id}")),
        json: format!(r#"{{"messageId":"{id}"}}"#).into(),
        destinations: destinations.iter().map(|d| Arc::from(*d)).collect(),
    }
}

pub(crate) fn commit(events: Vec<AcceptedEvent>) -> IngestCommit {
    IngestCommit {
        accepted: events,
        quarantined: vec![],
        holds: Default::default(),
    }
}

/// `conformance!(a, b)`: `a::sqlite`, `a::postgres`, … for each behaviour;
/// `conformance!("prefix_"; a, b)` names each test's PostgreSQL database
/// with the prefix (other suites use it so database names never clash).
macro_rules! conformance {
    ($($name:ident),* $(,)?) => { conformance!(""; $($name),*); };
    ($prefix:literal; $($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(super::Backend::sqlite()).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(super::Backend::postgres(concat!($prefix, stringify!($name)))).await;
            }
        }
    )*};
}
pub(crate) use conformance;

conformance!(
    dedup_is_per_source_and_first_in_a_request_wins,
    dedup_is_forgotten_once_pruned,
    due_entries_come_oldest_first_past_the_given_id,
    delivered_entries_leave_the_queue,
    retries_wait_until_due_and_count_attempts,
    dead_letters_are_listed_and_replayed,
    quarantine_lists_newest_first_and_removes,
    rule_quarantine_keeps_the_destination_and_requeues_to_it,
    holds_release_on_grant_drop_on_denial_and_expire,
    a_failed_hold_write_leaves_nothing_of_the_request,
    readiness_is_a_durable_write,
    a_removed_destinations_entries_move_to_the_dead_letters,
);

async fn dedup_is_per_source_and_first_in_a_request_wins(b: Backend) {
    let s = &b.store;
    let mut no_dedup = accepted("web", "m3", &["a"]);
    no_dedup.dedup = false;
    let stored = s
        .commit_ingest(commit(vec![
            accepted("web", "m1", &["a", "b"]),
            accepted("web", "m1", &["a", "b"]),
            accepted("app", "m1", &["a"]),
            no_dedup.clone(),
        ]))
        .await
        .unwrap()
        .stored;
    assert_eq!(
        stored,
        vec![
            Stored::Enqueued,
            Stored::Duplicate,
            Stored::Enqueued,
            Stored::Enqueued
        ]
    );
    let again = s
        .commit_ingest(commit(vec![
            accepted("web", "m1", &["a"]),
            accepted("app", "m1", &["a"]),
            accepted("web", "m2", &["a"]),
            no_dedup,
        ]))
        .await
        .unwrap()
        .stored;
    assert_eq!(
        again,
        vec![
            Stored::Duplicate,
            Stored::Duplicate,
            Stored::Enqueued,
            Stored::Enqueued
        ]
    );
    assert_eq!(s.outbox_depth("a").await.unwrap(), 5);
    assert_eq!(s.outbox_depth("b").await.unwrap(), 1);
}

async fn dedup_is_forgotten_once_pruned(b: Backend) {
    let s = &b.store;
    s.commit_ingest(commit(vec![accepted("web", "m1", &["a"])]))
        .await
        .unwrap();
    s.fold_dedup().await.unwrap();
    // A cutoff in the past keeps the key.
    s.prune_dedup(now_ms() - 3 * 86_400_000).await.unwrap();
    let kept = s
        .commit_ingest(commit(vec![accepted("web", "m1", &["a"])]))
        .await
        .unwrap()
        .stored;
    assert_eq!(kept, vec![Stored::Duplicate]);
    // A cutoff past every key forgets it.
    s.prune_dedup(now_ms() + 3 * 86_400_000).await.unwrap();
    let forgotten = s
        .commit_ingest(commit(vec![accepted("web", "m1", &["a"])]))
        .await
        .unwrap()
        .stored;
    assert_eq!(forgotten, vec![Stored::Enqueued]);
    assert_eq!(s.outbox_depth("a").await.unwrap(), 2);
}

async fn due_entries_come_oldest_first_past_the_given_id(b: Backend) {
    let s = &b.store;
    for i in 0..5 {
        s.commit_ingest(commit(vec![accepted("web", &format!("m{i}"), &["a"])]))
            .await
            .unwrap();
    }
    s.commit_ingest(commit(vec![accepted("web", "other", &["b"])]))
        .await
        .unwrap();
    let due = s.outbox_due("a", now_ms(), 0, 3).await.unwrap();
    let ids: Vec<&str> = due.iter().map(|e| e.message_id.as_str()).collect();
    assert_eq!(ids, ["m0", "m1", "m2"]);
    assert!(due.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(due[0].attempts, 0);
    assert_eq!(&*due[0].json, r#"{"messageId":"m0"}"#);
    assert_eq!(due[0].source, "web");
    let rest = s.outbox_due("a", now_ms(), due[2].id, 10).await.unwrap();
    let ids: Vec<&str> = rest.iter().map(|e| e.message_id.as_str()).collect();
    assert_eq!(ids, ["m3", "m4"]);
}

async fn delivered_entries_leave_the_queue(b: Backend) {
    let s = &b.store;
    s.commit_ingest(commit(vec![
        accepted("web", "m1", &["a"]),
        accepted("web", "m2", &["a"]),
    ]))
    .await
    .unwrap();
    let due = s.outbox_due("a", now_ms(), 0, 10).await.unwrap();
    s.outbox_delivered(vec![due[0].id], vec![]).await.unwrap();
    assert_eq!(s.outbox_depth("a").await.unwrap(), 1);
    let left = s.outbox_due("a", now_ms(), 0, 10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].message_id, "m2");
}

async fn retries_wait_until_due_and_count_attempts(b: Backend) {
    let s = &b.store;
    s.commit_ingest(commit(vec![accepted("web", "m1", &["a"])]))
        .await
        .unwrap();
    let due = s.outbox_due("a", now_ms(), 0, 10).await.unwrap();
    let later = now_ms() + 60_000;
    s.outbox_retry(vec![due[0].id], later, "503 from vendor".into())
        .await
        .unwrap();
    assert!(s.outbox_due("a", now_ms(), 0, 10).await.unwrap().is_empty());
    assert_eq!(s.outbox_depth("a").await.unwrap(), 1);
    let again = s.outbox_due("a", later, 0, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 1);
    s.outbox_retry(vec![again[0].id], later, "503 again".into())
        .await
        .unwrap();
    let third = s.outbox_due("a", later, 0, 10).await.unwrap();
    assert_eq!(third[0].attempts, 2);
}

async fn dead_letters_are_listed_and_replayed(b: Backend) {
    let s = &b.store;
    s.commit_ingest(commit(vec![
        accepted("web", "m1", &["a"]),
        accepted("web", "m2", &["a"]),
    ]))
    .await
    .unwrap();
    let due = s.outbox_due("a", now_ms(), 0, 10).await.unwrap();
    s.outbox_retry(vec![due[0].id], 0, "timeout".into())
        .await
        .unwrap();
    // A retry may give an entry a new id (the embedded store splits packs):
    // read the queue again, as the delivery worker does.
    let due = s.outbox_due("a", now_ms(), 0, 10).await.unwrap();
    let ids: Vec<i64> = due.iter().map(|e| e.id).collect();
    s.outbox_dead_letter(ids, "400: bad event".into(), vec![])
        .await
        .unwrap();
    assert_eq!(s.outbox_depth("a").await.unwrap(), 0);
    assert_eq!(s.dead_letter_count("a").await.unwrap(), 2);
    let letters = s.dead_letters("a", 10).await.unwrap();
    let by_id = |m: &str| letters.iter().find(|l| l.message_id == m).unwrap();
    assert_eq!(by_id("m1").attempts, 2);
    assert_eq!(by_id("m2").attempts, 1);
    assert_eq!(by_id("m1").reason, "400: bad event");
    assert_eq!(by_id("m1").event.get(), r#"{"messageId":"m1"}"#);
    // The edge's decision travelled with each entry, through a retry.
    for e in &due {
        assert_eq!(e.granted.as_str(), format!("analytics,{}", e.message_id));
    }
    assert_eq!(
        s.replay_dead_letters("a", Some(vec![by_id("m2").id]))
            .await
            .unwrap(),
        1
    );
    let back = s.outbox_due("a", now_ms(), 0, 10).await.unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].message_id, "m2");
    assert_eq!(back[0].attempts, 0);
    assert_eq!(
        back[0].granted.as_str(),
        "analytics,m2",
        "a replayed letter keeps its decision"
    );
    assert_eq!(s.replay_dead_letters("a", None).await.unwrap(), 1);
    assert_eq!(s.dead_letter_count("a").await.unwrap(), 0);
    assert_eq!(s.outbox_depth("a").await.unwrap(), 2);
}

async fn rule_quarantine_keeps_the_destination_and_requeues_to_it(b: Backend) {
    let s = &b.store;
    s.commit_ingest(commit(vec![
        accepted("web", "m1", &["a", "b"]),
        accepted("web", "m2", &["a"]),
    ]))
    .await
    .unwrap();
    let due = s.outbox_due("a", now_ms(), 0, 10).await.unwrap();
    let m1 = due.iter().find(|e| e.message_id == "m1").unwrap().id;
    s.outbox_quarantine(
        vec![super::RuleQuarantine {
            id: m1,
            rule: Some("pii".into()),
            reason: "email in properties".into(),
        }],
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(s.outbox_depth("a").await.unwrap(), 1);
    assert_eq!(
        s.outbox_depth("b").await.unwrap(),
        1,
        "other destinations keep theirs"
    );
    let listed = s.quarantine_list(10).await.unwrap();
    assert_eq!(listed.len(), 1);
    let q = &listed[0];
    assert_eq!(q.reason, "rule");
    assert_eq!(q.detail, "email in properties");
    assert_eq!(q.destination.as_deref(), Some("a"));
    assert_eq!(q.rule.as_deref(), Some("pii"));
    assert_eq!(q.message_id.as_deref(), Some("m1"));
    assert_eq!(q.raw, r#"{"messageId":"m1"}"#);

    // Events quarantined at ingest have no destination and are not requeued.
    s.commit_ingest(IngestCommit {
        accepted: vec![],
        quarantined: vec![QuarantinedEvent {
            source: "web".into(),
            reason: "missing_field",
            detail: "no type".into(),
            raw: "{}".into(),
        }],
        holds: Default::default(),
    })
    .await
    .unwrap();
    let all: Vec<i64> = s
        .quarantine_list(10)
        .await
        .unwrap()
        .iter()
        .map(|q| q.id)
        .collect();
    assert_eq!(s.quarantine_requeue(all).await.unwrap(), vec![q.id]);
    assert_eq!(s.quarantine_list(10).await.unwrap().len(), 1);
    let back = s.outbox_due("a", now_ms(), 0, 10).await.unwrap();
    let m1 = back
        .iter()
        .find(|e| e.message_id == "m1")
        .expect("m1 requeued to a");
    assert_eq!(m1.attempts, 0);
    assert_eq!(&*m1.json, r#"{"messageId":"m1"}"#);
    assert_eq!(
        m1.granted.as_str(),
        "analytics,m1",
        "requeued with its decision"
    );
    assert_eq!(s.outbox_depth("b").await.unwrap(), 1);
}

async fn quarantine_lists_newest_first_and_removes(b: Backend) {
    let s = &b.store;
    let q = |detail: &str| QuarantinedEvent {
        source: "web".into(),
        reason: "missing_field",
        detail: detail.into(),
        raw: "{}".into(),
    };
    s.commit_ingest(IngestCommit {
        accepted: vec![],
        quarantined: vec![q("first"), q("second")],
        holds: Default::default(),
    })
    .await
    .unwrap();
    let list = s.quarantine_list(10).await.unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].detail, "second");
    assert_eq!(list[0].reason, "missing_field");
    let got = s.quarantine_get(vec![list[1].id, 999_999]).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].detail, "first");
    s.quarantine_remove(vec![list[1].id]).await.unwrap();
    let left = s.quarantine_list(10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].detail, "second");
}

fn held(dest: &str, visitor: &str, id: &str) -> HeldEvent {
    HeldEvent {
        destination: dest.into(),
        source: "web".into(),
        visitor: visitor.into(),
        message_id: id.into(),
        json: format!(
            r#"{{"messageId":"{id}","context":{{"consent":{{"categoryPreferences":{{}}}}}}}}"#
        ),
    }
}

async fn a_failed_hold_write_leaves_nothing_of_the_request(b: Backend) {
    let s = &b.store;
    let request = || {
        let mut c = commit(vec![
            accepted("web", "m1", &["hook"]),
            accepted("web", "m2", &["hook"]),
        ]);
        c.holds = HoldCommit {
            held: vec![held("ads", "v1", "m1"), held("ads", "v1", "m2")],
            settled: vec![],
            expires_at_ms: HashMap::from([(Arc::from("ads"), now_ms() + 60_000)]),
        };
        c
    };
    b.fail_holds(true).await;
    assert!(
        s.commit_ingest(request()).await.is_err(),
        "the injected failure"
    );
    assert_eq!(
        s.outbox_depth("hook").await.unwrap(),
        0,
        "no outbox rows of a failed commit"
    );
    b.fail_holds(false).await;
    // The client's retry is not a duplicate: it writes events and holds.
    let out = s.commit_ingest(request()).await.unwrap();
    assert_eq!(out.stored, vec![Stored::Enqueued, Stored::Enqueued]);
    assert_eq!(out.holds.held, vec![(Arc::from("ads"), 2)]);
    assert_eq!(s.outbox_depth("hook").await.unwrap(), 2);
    assert_eq!(s.held_count("ads").await.unwrap(), 2);
    // A second retry is: nothing more is written, held or counted.
    let again = s.commit_ingest(request()).await.unwrap();
    assert_eq!(again.stored, vec![Stored::Duplicate, Stored::Duplicate]);
    assert!(again.holds.held.is_empty());
    assert_eq!(s.held_count("ads").await.unwrap(), 2);
}

async fn holds_release_on_grant_drop_on_denial_and_expire(b: Backend) {
    let s = &b.store;
    let far = HashMap::from([(Arc::from("ads"), now_ms() + 60_000)]);
    let out = s
        .commit_holds(HoldCommit {
            held: vec![
                held("ads", "v1", "m1"),
                held("ads", "v1", "m2"),
                held("ads", "v2", "m3"),
                held("ads", "v1", "m1"),
            ],
            settled: vec![],
            expires_at_ms: far.clone(),
        })
        .await
        .unwrap();
    assert_eq!(out.held, vec![(Arc::from("ads"), 3)]);
    assert_eq!(s.held_count("ads").await.unwrap(), 3);
    let out = s
        .commit_holds(HoldCommit {
            held: vec![],
            settled: vec![
                ConsentSettled {
                    destination: "ads".into(),
                    visitor: "v1".into(),
                    granted: Some(GrantedPurposes::from_stored("analytics,marketing")),
                },
                ConsentSettled {
                    destination: "ads".into(),
                    visitor: "v2".into(),
                    granted: None,
                },
            ],
            expires_at_ms: HashMap::new(),
        })
        .await
        .unwrap();
    assert_eq!(out.released, vec![(Arc::from("ads"), 2)]);
    assert_eq!(out.dropped, vec![(Arc::from("ads"), 1)]);
    assert_eq!(s.held_count("ads").await.unwrap(), 0);
    let due = s.outbox_due("ads", now_ms(), 0, 10).await.unwrap();
    let ids: Vec<&str> = due.iter().map(|e| e.message_id.as_str()).collect();
    assert_eq!(ids, ["m1", "m2"]);
    // Released with the deciding event's decision beside it; the held
    // event itself is delivered as it was held, never edited.
    for e in &due {
        assert_eq!(e.granted.as_str(), "analytics,marketing");
        let held = held("ads", "v1", &e.message_id);
        assert_eq!(&*e.json, held.json.as_str());
    }
    // Expiry.
    let soon = HashMap::from([(Arc::from("ads"), now_ms() + 1_000)]);
    s.commit_holds(HoldCommit {
        held: vec![held("ads", "v3", "m4")],
        settled: vec![],
        expires_at_ms: soon,
    })
    .await
    .unwrap();
    assert_eq!(s.expire_holds("ads", now_ms()).await.unwrap(), 0);
    assert_eq!(s.expire_holds("ads", now_ms() + 2_000).await.unwrap(), 1);
    assert_eq!(s.held_count("ads").await.unwrap(), 0);
}

async fn readiness_is_a_durable_write(b: Backend) {
    b.store.check_writable().await.unwrap();
    b.store.check_writable().await.unwrap();
}

async fn a_removed_destinations_entries_move_to_the_dead_letters(b: Backend) {
    let s = &b.store;
    s.commit_ingest(commit(vec![
        accepted("web", "m1", &["a", "gone"]),
        accepted("web", "m2", &["gone"]),
    ]))
    .await
    .unwrap();
    // One of them waits on a retry an hour away: it moves too.
    let due = s.outbox_due("gone", now_ms(), 0, 10).await.unwrap();
    s.outbox_retry(vec![due[0].id], now_ms() + 3_600_000, "503".into())
        .await
        .unwrap();
    // And one of its events waits for consent: its hold goes too.
    s.commit_holds(HoldCommit {
        held: vec![held("gone", "v1", "m3")],
        settled: vec![],
        expires_at_ms: HashMap::from([(Arc::from("gone"), now_ms() + 60_000)]),
    })
    .await
    .unwrap();
    let mut names = s.outbox_destinations().await.unwrap();
    names.sort();
    assert_eq!(names, ["a", "gone"]);
    let reason = "destination `gone` is no longer configured";
    if b.config.backend == StorageBackend::Postgres {
        // This worker holds the lease (it read the queue above): another
        // moves nothing under it.
        let other = b.second_worker();
        assert_eq!(other.outbox_abandon("gone", reason).await.unwrap(), 0);
        assert_eq!(s.outbox_depth("gone").await.unwrap(), 2);
        assert_eq!(s.held_count("gone").await.unwrap(), 1);
        other.close().await.unwrap();
    }
    assert_eq!(s.outbox_abandon("gone", reason).await.unwrap(), 2);
    assert_eq!(s.outbox_depth("gone").await.unwrap(), 0);
    assert_eq!(s.held_count("gone").await.unwrap(), 0);
    assert_eq!(s.outbox_depth("a").await.unwrap(), 1);
    let letters = s.dead_letters("gone", 10).await.unwrap();
    assert_eq!(letters.len(), 2);
    assert!(letters.iter().all(|l| l.reason == reason));
    assert_eq!(s.outbox_abandon("gone", reason).await.unwrap(), 0);
    // Added back and replayed, they are due again.
    assert_eq!(s.replay_dead_letters("gone", None).await.unwrap(), 2);
    assert_eq!(
        s.outbox_due("gone", now_ms(), 0, 10).await.unwrap().len(),
        2
    );
}
