//! The light path of a shared store (`identity::activity::link_known`) on
//! real PostgreSQL, with two workers (two pools, two `Identity` handles):
//! sessions moved on by both stay one session, and counters written behind
//! by each add up.

use std::sync::Arc;

use super::{PersonEventTables, PgConn, PgIdentity, MIGRATIONS};
use crate::config::IdentityConfig;
use crate::event::EventType;
use crate::identity::activity::link_known;
use crate::identity::graph::{BatchContext, Cause, EventIds, Linked};
use crate::identity::{Identity, Lookup};
use crate::storage::identity::{DeletedEvents, IdentityStore, PersonEvents, PersonMatch};
use crate::storage::postgres::test_db::{test_database, TestDb};
use crate::storage::StorageError;

/// No delivery tables: these tests never export or delete.
struct NoEvents;

impl PersonEventTables for NoEvents {
    fn person_events(&self, _: &PgConn<'_>, _: &PersonMatch) -> Result<PersonEvents, StorageError> {
        Ok(PersonEvents::default())
    }

    fn delete_person_events(
        &self,
        _: &PgConn<'_>,
        _: &PersonMatch,
    ) -> Result<DeletedEvents, StorageError> {
        Ok(DeletedEvents::default())
    }
}

/// Two workers over one fresh database.
async fn two_workers() -> (TestDb, [Identity; 2]) {
    let db = test_database("identity_light").expect("a PostgreSQL test database");
    let pool = || {
        let config: tokio_postgres::Config = db.url().parse().expect("test URL");
        let manager = deadpool_postgres::Manager::new(config, tokio_postgres::NoTls);
        deadpool_postgres::Pool::builder(manager)
            .max_size(8)
            .build()
            .expect("pool")
    };
    let (a, b) = (pool(), pool());
    let client = a.get().await.expect("connect");
    for step in MIGRATIONS {
        client
            .batch_execute(step)
            .await
            .expect("identity migration");
    }
    drop(client);
    let worker = |p: deadpool_postgres::Pool| {
        let store: Arc<dyn IdentityStore> = Arc::new(PgIdentity::new(p, Arc::new(NoEvents)));
        Identity::over(&IdentityConfig::default(), store)
    };
    (db, [worker(a), worker(b)])
}

/// A track event at `ts_ms` under `keys`, its session kept under `session`.
fn event(keys: &[&str], session: &str, ts_ms: i64) -> EventIds {
    EventIds {
        message_id: uuid::Uuid::new_v4().to_string(),
        kind: EventType::Track,
        ts_ms,
        keys: keys.iter().map(|k| (*k).to_owned()).collect(),
        user_seed: false,
        previous_id: None,
        cause: Cause::Event,
        traits: Vec::new(),
        session_key: Some(session.to_owned()),
    }
}

/// `(session id, count, start)` of every linked event.
fn sessions(linked: &[Linked]) -> Vec<(i64, i64, bool)> {
    linked
        .iter()
        .map(|l| match l {
            Linked::Profile {
                session: Some(s), ..
            }
            | Linked::Session { session: Some(s) } => (s.id, s.count, s.start),
            other => panic!("expected a session, got {other:?}"),
        })
        .collect()
}

const T0: i64 = 1_700_000_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_returning_visitor_through_both_workers_keeps_one_session_and_every_count() {
    let (_db, workers) = two_workers().await;
    let workers = Arc::new(workers);
    // The first event creates the node (the graph path).
    let first = workers[0]
        .link(vec![event(&["anon:a1"], "anon:a1", T0)])
        .await
        .expect("link");
    assert_eq!(sessions(&first), vec![(T0, 1, true)]);
    // Then 24 requests of 5 events at once, alternating workers.
    let mut tasks = Vec::new();
    for i in 0..24i64 {
        let workers = Arc::clone(&workers);
        tasks.push(tokio::spawn(async move {
            let events = (0..5)
                .map(|j| event(&["anon:a1"], "anon:a1", T0 + 1_000 + i * 10 + j))
                .collect();
            workers[(i % 2) as usize].link(events).await.expect("link")
        }));
    }
    for t in tasks {
        let linked = t.await.expect("task");
        for l in &linked {
            assert!(
                matches!(l, Linked::Profile { profile_id, .. } if profile_id == first_profile(&first))
            );
        }
        assert!(
            sessions(&linked).iter().all(|s| *s == (T0, 1, false)),
            "{linked:?}"
        );
    }
    // Each worker's counts wait in its memory until it flushes them.
    let view = workers[0]
        .find(Lookup::AnonymousId("a1".into()))
        .await
        .expect("profile");
    assert_eq!(view.event_counts["total"], serde_json::json!(1 + 12 * 5));
    workers[1].flush().await.expect("flush");
    let view = workers[0]
        .find(Lookup::AnonymousId("a1".into()))
        .await
        .expect("profile");
    assert_eq!(view.event_counts["total"], serde_json::json!(1 + 24 * 5));
}

fn first_profile(linked: &[Linked]) -> &Arc<str> {
    match &linked[0] {
        Linked::Profile { profile_id, .. } => profile_id,
        other => panic!("expected a profile, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_started_on_both_workers_at_once_is_one_session() {
    let (_db, workers) = two_workers().await;
    let workers = Arc::new(workers);
    // A cookieless visitor has no node: every request is the light path,
    // and the first ones race to create the session row.
    let mut tasks = Vec::new();
    for i in 0..16i64 {
        let workers = Arc::clone(&workers);
        tasks.push(tokio::spawn(async move {
            workers[(i % 2) as usize]
                .link(vec![event(&[], "cookieless:v1", T0 + i)])
                .await
                .expect("link")
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(sessions(&t.await.expect("task")));
    }
    let ids: std::collections::BTreeSet<i64> = all.iter().map(|s| s.0).collect();
    assert_eq!(ids.len(), 1, "one session: {all:?}");
    assert!(all.iter().all(|s| s.1 == 1), "{all:?}");
    assert_eq!(all.iter().filter(|s| s.2).count(), 1, "one start: {all:?}");
    // After half an hour of silence the next event starts session 2, on either worker.
    let later = workers[1]
        .link(vec![event(&[], "cookieless:v1", T0 + 16 + 31 * 60_000)])
        .await
        .expect("link");
    assert_eq!(sessions(&later), vec![(T0 + 16 + 31 * 60_000, 2, true)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_request_that_changes_nothing_takes_the_light_job() {
    let (db, workers) = two_workers().await;
    let linked = workers[0]
        .link(vec![
            event(&["anon:a1"], "anon:a1", T0),
            event(&["anon:a2"], "anon:a2", T0),
        ])
        .await
        .expect("link");
    assert_ne!(first_profile(&linked), first_profile(&linked[1..]));
    let store: Arc<dyn IdentityStore> = {
        let config: tokio_postgres::Config = db.url().parse().expect("test URL");
        let manager = deadpool_postgres::Manager::new(config, tokio_postgres::NoTls);
        let pool = deadpool_postgres::Pool::builder(manager)
            .build()
            .expect("pool");
        Arc::new(PgIdentity::new(pool, Arc::new(NoEvents)))
    };
    let light = |events: Vec<EventIds>| {
        let store = Arc::clone(&store);
        async move {
            let cx = BatchContext {
                now_ms: T0,
                session_timeout_ms: 1_800_000,
            };
            store
                .activity(move |conn| Ok(link_known(conn, &events, cx)?.is_some()))
                .await
                .expect("job")
        }
    };
    assert!(light(vec![event(&["anon:a1"], "anon:a1", T0 + 1)]).await);
    let mut with_traits = event(&["anon:a1"], "anon:a1", T0 + 2);
    with_traits.traits = vec![("plan".into(), "\"pro\"".into())];
    let mut alias = event(&["anon:a1"], "anon:a1", T0 + 2);
    alias.previous_id = Some("a2".into());
    for (why, events) in [
        (
            "a new identifier",
            vec![event(&["anon:a1", "anon:a9"], "anon:a1", T0 + 2)],
        ),
        (
            "two profiles",
            vec![event(&["anon:a1", "anon:a2"], "anon:a1", T0 + 2)],
        ),
        ("traits to keep", vec![with_traits]),
        ("an alias", vec![alias]),
        (
            "a visitor without a stored session",
            vec![event(&["anon:a1"], "cookie:c1", T0 + 2)],
        ),
    ] {
        assert!(!light(events).await, "{why} needs the graph job");
    }
    // Nothing of the refused requests was written: the session moved once.
    let later = workers[1]
        .link(vec![event(&["anon:a1"], "anon:a1", T0 + 3)])
        .await
        .expect("link");
    assert_eq!(sessions(&later), vec![(T0, 1, false)]);
    let client = tokio_postgres::connect(db.url(), tokio_postgres::NoTls).await;
    let (client, conn) = client.expect("connect");
    tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT count(*), max(last_activity_ms) FROM identity_sessions",
            &[],
        )
        .await
        .expect("sessions");
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (2, T0 + 3));
}
