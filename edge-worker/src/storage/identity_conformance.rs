//! The identity store's behaviour, written once and run on both backends
//! (issue #12): merges and their guards, split, forced merge, delete and
//! suppression, export, and concurrent linking.
//!
//! Each test gets a [`Fleet`]: on SQLite one worker over one embedded store;
//! on PostgreSQL two workers, each with its own connection pool, over one
//! database, so "any worker" really is another worker.

use std::sync::Arc;

use serde_json::{json, Value};

use super::identity::{DeletedEvents, IdentityStore, PersonEvent, PersonEvents, PersonMatch};
use super::postgres::identity::{
    PersonEventTables, PgConn, PgIdentity, MIGRATIONS as PG_MIGRATIONS,
};
use super::{AcceptedEvent, IngestCommit, IngestStore as _, SqliteStorage, StorageError};
use crate::config::IdentityConfig;
use crate::event::Event;
use crate::identity::graph::{EventIds, Linked};
use crate::identity::key::KeyRules;
use crate::identity::{Identity, IdentityError, Lookup};
use crate::stages::identify::event_ids;

use super::postgres::test_db;

/// Workers over one identity store, and a way to leave one of a person's
/// events waiting in the store.
struct Fleet {
    workers: Vec<Identity>,
    waiting: Box<dyn Fn(Value) + Send + Sync>,
    rules: KeyRules,
    _keep: Box<dyn std::any::Any + Send + Sync>,
}

impl Fleet {
    fn sqlite() -> Fleet {
        let dir = std::env::temp_dir().join(format!("waymark-idc-{}", uuid::Uuid::new_v4()));
        let store = SqliteStorage::open(&dir, 100).expect("open the SQLite store");
        let identity = Identity::with_store(&IdentityConfig::default(), Arc::clone(&store));
        let waiting_store = Arc::clone(&store);
        Fleet {
            workers: vec![identity],
            waiting: Box::new(move |event: Value| {
                let store = Arc::clone(&waiting_store);
                let commit = IngestCommit {
                    accepted: vec![AcceptedEvent {
                        source: "web".into(),
                        message_id: uuid::Uuid::new_v4().to_string(),
                        dedup: false,
                        granted: Default::default(),
                        json: event.to_string().into(),
                        destinations: vec!["hook".into()],
                    }],
                    quarantined: Vec::new(),
                    holds: Default::default(),
                };
                let done = std::thread::spawn(move || {
                    tokio::runtime::Runtime::new()
                        .expect("runtime")
                        .block_on(store.commit_ingest(commit))
                })
                .join()
                .expect("commit thread");
                done.expect("commit a waiting event");
            }),
            rules: KeyRules::from_config(&IdentityConfig::default()),
            _keep: Box::new(store),
        }
    }

    async fn postgres() -> Fleet {
        let db = test_db::test_database("identity").expect("a PostgreSQL test database");
        let url = db.url().to_owned();
        let pools: Vec<deadpool_postgres::Pool> = (0..2).map(|_| pool(&url)).collect();
        {
            let client = pools[0].get().await.expect("connect");
            for step in PG_MIGRATIONS {
                client
                    .batch_execute(step)
                    .await
                    .expect("identity migration");
            }
            client
                .batch_execute(
                    "CREATE TABLE test_waiting (destination text NOT NULL, at_ms bigint NOT NULL, event text NOT NULL)",
                )
                .await
                .expect("waiting table");
        }
        let workers = pools
            .iter()
            .map(|p| {
                let store: Arc<dyn IdentityStore> =
                    Arc::new(PgIdentity::new(p.clone(), Arc::new(WaitingTable)));
                Identity::over(&IdentityConfig::default(), store)
            })
            .collect();
        let pool0 = pools[0].clone();
        Fleet {
            workers,
            waiting: Box::new(move |event: Value| {
                let pool = pool0.clone();
                std::thread::spawn(move || {
                    tokio::runtime::Runtime::new()
                        .expect("runtime")
                        .block_on(async {
                            let client = pool.get().await.expect("connect");
                            client
                                .execute(
                                    "INSERT INTO test_waiting VALUES ('hook', 1, $1)",
                                    &[&event.to_string()],
                                )
                                .await
                                .expect("insert a waiting event");
                        })
                })
                .join()
                .expect("insert thread");
            }),
            rules: KeyRules::from_config(&IdentityConfig::default()),
            _keep: Box::new((db, pools)),
        }
    }

    /// The worker that takes request `n` (round robin).
    fn worker(&self, n: usize) -> &Identity {
        &self.workers[n % self.workers.len()]
    }

    fn ids(&self, body: Value, cookie: Option<&str>) -> EventIds {
        let mut body = body;
        let obj = body.as_object_mut().expect("an object");
        obj.entry("messageId")
            .or_insert(json!(uuid::Uuid::new_v4().to_string()));
        obj.entry("type").or_insert(json!("track"));
        let event = Event::from_map(obj.clone());
        event_ids(&event, &self.rules, cookie, cookie, crate::time::now_ms())
    }

    /// Sends one event through worker `n`.
    async fn send(&self, n: usize, body: Value, cookie: Option<&str>) -> Linked {
        let ids = self.ids(body, cookie);
        self.worker(n)
            .link(vec![ids])
            .await
            .expect("link")
            .remove(0)
    }
}

fn pool(url: &str) -> deadpool_postgres::Pool {
    let config: tokio_postgres::Config = url.parse().expect("test URL");
    let manager = deadpool_postgres::Manager::new(config, tokio_postgres::NoTls);
    deadpool_postgres::Pool::builder(manager)
        .max_size(8)
        .build()
        .expect("pool")
}

/// The test's stand-in for the delivery tables: events in one real table.
struct WaitingTable;

const PERSON_SQL: &str =
    "event::jsonb->>'userId' = ANY($1) OR event::jsonb->>'anonymousId' = ANY($2)
    OR event::jsonb->'context'->'waymark'->>'profileId' = ANY($3)";

impl PersonEventTables for WaitingTable {
    fn person_events(
        &self,
        conn: &PgConn<'_>,
        p: &PersonMatch,
    ) -> Result<PersonEvents, StorageError> {
        let rows = conn.query(
            &format!("SELECT destination, at_ms, event FROM test_waiting WHERE {PERSON_SQL}"),
            &[&p.user_ids, &p.anonymous_ids, &p.profile_ids],
        )?;
        Ok(PersonEvents {
            undelivered: rows
                .iter()
                .map(|r| PersonEvent {
                    destination: r.get(0),
                    at_ms: r.get(1),
                    event: r.get(2),
                })
                .collect(),
            ..PersonEvents::default()
        })
    }

    fn delete_person_events(
        &self,
        conn: &PgConn<'_>,
        p: &PersonMatch,
    ) -> Result<DeletedEvents, StorageError> {
        let n = conn.execute(
            &format!("DELETE FROM test_waiting WHERE {PERSON_SQL}"),
            &[&p.user_ids, &p.anonymous_ids, &p.profile_ids],
        )?;
        Ok(DeletedEvents {
            outbox: n as usize,
            ..DeletedEvents::default()
        })
    }
}

fn profile_of(linked: &Linked) -> String {
    match linked {
        Linked::Profile { profile_id, .. } => profile_id.to_string(),
        other => panic!("expected a profile, got {other:?}"),
    }
}

/// `conformance!(name)`: `name_sqlite` and `name_postgres`, each running
/// `name(fleet)`.
macro_rules! conformance {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(super::Fleet::sqlite()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(super::Fleet::postgres().await).await;
            }
        }
    };
}

conformance!(an_identify_joins_the_visitor_and_a_second_user_is_refused);
async fn an_identify_joins_the_visitor_and_a_second_user_is_refused(f: Fleet) {
    let anon = profile_of(&f.send(0, json!({"type":"page"}), Some("c1")).await);
    let user = profile_of(
        &f.send(1, json!({"type":"identify","userId":"u1"}), Some("c1"))
            .await,
    );
    assert_eq!(
        anon, user,
        "the visitor keeps its profile when it identifies"
    );
    let other = profile_of(
        &f.send(0, json!({"type":"identify","userId":"u2"}), Some("c1"))
            .await,
    );
    assert_ne!(other, user, "two userIds never merge by themselves");
    let view = f.worker(1).profile(&user).await.expect("profile");
    assert_eq!(view.refusals.len(), 1, "{view:?}");
    assert_eq!(view.refusals[0].reason, "conflicting_user");
    let users: Vec<_> = view
        .identifiers
        .iter()
        .filter(|i| i.kind == "userId")
        .collect();
    assert_eq!(users.len(), 1);
}

conformance!(two_devices_of_one_user_merge_and_the_older_id_survives);
async fn two_devices_of_one_user_merge_and_the_older_id_survives(f: Fleet) {
    let laptop = profile_of(
        &f.send(0, json!({"type":"identify","userId":"u1"}), Some("laptop"))
            .await,
    );
    let phone = profile_of(&f.send(1, json!({"type":"page"}), Some("phone")).await);
    assert_ne!(laptop, phone);
    let merged = profile_of(
        &f.send(1, json!({"type":"identify","userId":"u1"}), Some("phone"))
            .await,
    );
    assert_eq!(merged, laptop, "the older profile survives");
    let view = f
        .worker(0)
        .profile(&phone)
        .await
        .expect("a merged id resolves");
    assert_eq!(view.id, laptop);
    assert_eq!(view.merged_ids, vec![phone.clone()]);
    assert_eq!(view.merges.len(), 1);
    assert_eq!(view.merges[0].cause, "event");
    assert_eq!(view.identifiers.len(), 3);
}

conformance!(a_split_stays_split_until_an_admin_merges);
async fn a_split_stays_split_until_an_admin_merges(f: Fleet) {
    let a = profile_of(&f.send(0, json!({"anonymousId":"a1"}), Some("c1")).await);
    let b = profile_of(&f.send(1, json!({"anonymousId":"a2"}), Some("c2")).await);
    let merged = profile_of(
        &f.send(
            0,
            json!({"type":"alias","previousId":"a2","userId":"u1"}),
            Some("c1"),
        )
        .await,
    );
    let view = f.worker(1).profile(&merged).await.expect("profile");
    assert_eq!(view.merges.len(), 1, "{view:?}");
    let merge_id = view.merges[0].id;

    let out = f
        .worker(1)
        .split(merged.clone(), merge_id, "ops".into())
        .await
        .expect("split");
    assert_eq!(out.profiles.len(), 2);
    let ids: Vec<&str> = out.profiles.iter().map(|p| p.id.as_str()).collect();
    assert!(
        ids.contains(&a.as_str()) && ids.contains(&b.as_str()),
        "{ids:?}"
    );
    assert!(matches!(
        f.worker(0)
            .split(merged.clone(), merge_id, "ops".into())
            .await,
        Err(IdentityError::Invalid(_))
    ));

    // An event carrying both sides does not merge them again.
    let again = f.send(0, json!({"anonymousId":"a1"}), Some("c2")).await;
    let again = profile_of(&again);
    let other = if again == a { &b } else { &a };
    let view = f.worker(1).profile(other).await.expect("profile");
    assert_eq!(view.id, *other, "still two profiles");
    let refused = f.worker(1).profile(&again).await.expect("profile");
    assert!(
        refused
            .refusals
            .iter()
            .any(|r| r.reason == "split_by_admin"),
        "{refused:?}"
    );

    // Only an admin crosses the barrier.
    let forced = f
        .worker(0)
        .force_merge(
            a.clone(),
            b.clone(),
            "ops".into(),
            Some("same person".into()),
        )
        .await
        .expect("force merge");
    assert!(forced.id == a || forced.id == b);
    assert_eq!(forced.merged_ids.len(), 1);
    let audit = f.worker(1).audit_log(10).await.expect("audit");
    let actions: Vec<&str> = audit.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, vec!["merge", "split"]);
}

conformance!(a_forced_merge_crosses_the_user_guard);
async fn a_forced_merge_crosses_the_user_guard(f: Fleet) {
    let a = profile_of(&f.send(0, json!({"userId":"u1"}), None).await);
    let b = profile_of(&f.send(1, json!({"userId":"u2"}), None).await);
    let merged = f
        .worker(1)
        .force_merge(b.clone(), a.clone(), "ops".into(), None)
        .await
        .expect("force merge");
    assert_eq!(merged.identifiers.len(), 2);
    assert!(matches!(
        f.worker(0).force_merge(a, b, "ops".into(), None).await,
        Err(IdentityError::Invalid(_))
    ));
}

conformance!(a_delete_on_one_worker_suppresses_on_every_worker);
async fn a_delete_on_one_worker_suppresses_on_every_worker(f: Fleet) {
    let p = profile_of(
        &f.send(
            0,
            json!({"type":"identify","userId":"u1","traits":{"email":"a@b.c","name":"A"}}),
            Some("c1"),
        )
        .await,
    );
    let other = profile_of(&f.send(1, json!({"userId":"u2"}), None).await);
    (f.waiting)(json!({"userId":"u1","event":"Bought"}));
    (f.waiting)(json!({"userId":"u2","event":"Bought"}));
    // The other worker has the person in view (and, on SQLite, in its cache).
    assert_eq!(
        profile_of(&f.send(1, json!({"type":"page"}), Some("c1")).await),
        p
    );

    let report = f
        .worker(0)
        .delete_person(Lookup::UserId("u1".into()), "dpo".into())
        .await
        .expect("delete");
    assert_eq!(report.profile_id, p);
    assert_eq!(report.identifiers, 3, "user, cookie and hashed email");
    assert_eq!(report.outbox_events, 1, "only the person's waiting event");

    for n in 0..f.workers.len() {
        assert!(matches!(
            f.worker(n).find(Lookup::UserId("u1".into())).await,
            Err(IdentityError::NotFound(_))
        ));
        assert_eq!(
            f.send(n, json!({"type":"page"}), Some("c1")).await,
            Linked::Suppressed,
            "worker {n}"
        );
        assert_eq!(
            f.send(
                n,
                json!({"type":"identify","traits":{"email":"A@B.C"}}),
                None
            )
            .await,
            Linked::Suppressed,
            "worker {n}"
        );
    }
    assert_eq!(
        profile_of(&f.send(1, json!({"userId":"u2"}), None).await),
        other
    );
    let audit = f.worker(1).audit_log(10).await.expect("audit");
    assert_eq!(audit[0].action, "delete");
    assert!(
        !audit[0].target.contains("u1"),
        "the audit names the person by hash only: {}",
        audit[0].target
    );
}

conformance!(an_export_holds_the_person_and_is_audited);
async fn an_export_holds_the_person_and_is_audited(f: Fleet) {
    f.send(
        0,
        json!({"type":"identify","userId":"u1","traits":{"plan":"pro"}}),
        Some("c1"),
    )
    .await;
    (f.waiting)(json!({"userId":"u1","event":"Bought"}));
    (f.waiting)(json!({"userId":"u2","event":"Bought"}));
    let export = f
        .worker(1)
        .export_person(Lookup::VisitorId("c1".into()), "dpo".into())
        .await
        .expect("export");
    assert_eq!(export.profile.identifiers.len(), 2);
    assert_eq!(export.traits.len(), 1);
    assert_eq!(export.traits[0]["value"], json!("pro"));
    assert_eq!(export.sessions.len(), 1);
    assert_eq!(export.undelivered_events.len(), 1);
    assert_eq!(export.undelivered_events[0]["event"]["userId"], json!("u1"));
    let audit = f.worker(0).audit_log(10).await.expect("audit");
    assert_eq!(audit[0].action, "export");
    assert_eq!(audit[0].id, export.audit_id);
}

conformance!(concurrent_links_of_the_same_identifiers_end_in_one_profile);
async fn concurrent_links_of_the_same_identifiers_end_in_one_profile(f: Fleet) {
    let f = Arc::new(f);
    // 16 requests at once, on every worker: each brings the shared cookie,
    // the shared userId and an anonymous id of its own.
    let mut tasks = Vec::new();
    for i in 0..16 {
        let f = Arc::clone(&f);
        tasks.push(tokio::spawn(async move {
            f.send(
                i,
                json!({"type":"identify","userId":"u1","anonymousId":format!("a{i}")}),
                Some("shared"),
            )
            .await
        }));
    }
    let mut profiles = std::collections::BTreeSet::new();
    for t in tasks {
        profiles.insert(profile_of(&t.await.expect("task")));
    }
    let view = f
        .worker(0)
        .find(Lookup::UserId("u1".into()))
        .await
        .expect("profile");
    for p in &profiles {
        // An event may carry an id merged away later; it resolves to the one profile.
        assert_eq!(f.worker(1).profile(p).await.expect("profile").id, view.id);
    }
    assert_eq!(view.identifiers.len(), 18, "{view:?}");
    assert_eq!(view.event_counts["total"], json!(16));
}

conformance!(concurrent_users_on_one_browser_never_merge);
async fn concurrent_users_on_one_browser_never_merge(f: Fleet) {
    let f = Arc::new(f);
    f.send(0, json!({"type":"page"}), Some("kiosk")).await;
    let mut tasks = Vec::new();
    for i in 0..12 {
        let f = Arc::clone(&f);
        tasks.push(tokio::spawn(async move {
            f.send(
                i,
                json!({"type":"identify","userId":format!("u{i}")}),
                Some("kiosk"),
            )
            .await
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let kiosk = f
        .worker(1)
        .find(Lookup::VisitorId("kiosk".into()))
        .await
        .expect("profile");
    let users = kiosk
        .identifiers
        .iter()
        .filter(|i| i.kind == "userId")
        .count();
    assert_eq!(users, 1, "exactly one user joined the browser: {kiosk:?}");
    for i in 0..12 {
        let view = f
            .worker(i)
            .find(Lookup::UserId(format!("u{i}")))
            .await
            .expect("every user has a profile");
        let users = view
            .identifiers
            .iter()
            .filter(|i| i.kind == "userId")
            .count();
        assert_eq!(users, 1, "{view:?}");
    }
}
