//! The light path of a shared store (`identity::activity::link_known`) on
//! real PostgreSQL, with two workers (two pools, two `Identity` handles):
//! sessions moved on by both stay one session, and counters written behind
//! by each add up.

use std::sync::Arc;

use super::{PersonEventTables, PgConn, PgIdentity, MIGRATIONS};
use crate::config::IdentityConfig;
use crate::event::EventType;
use crate::identity::activity::{known_query, link_known};
use crate::identity::graph::{BatchContext, Cause, EventIds, Linked};
use crate::identity::session::advance_session;
use crate::identity::{Identity, Lookup};
use crate::storage::identity::{
    DeletedEvents, IdentityStore, KnownQuery, PersonEvents, PersonMatch, SessionRow,
};
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
            let Some(query) = known_query(&events, cx) else {
                return false;
            };
            let rows = store.move_known(query).await.expect("job");
            link_known(&events, rows, cx).expect("link").is_some()
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

/// The one statement moves sessions on as `advance_session` does event by
/// event: stored and new sessions, events out of order, gaps past the
/// timeout, several events of one key in a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_one_statement_moves_sessions_as_the_graph_does_event_by_event() {
    let (db, _workers) = two_workers().await;
    let config: tokio_postgres::Config = db.url().parse().expect("test URL");
    let manager = deadpool_postgres::Manager::new(config, tokio_postgres::NoTls);
    let pool = deadpool_postgres::Pool::builder(manager)
        .build()
        .expect("pool");
    let client = pool.get().await.expect("connect");
    let store: Arc<dyn IdentityStore> = Arc::new(PgIdentity::new(pool.clone(), Arc::new(NoEvents)));
    const TIMEOUT: i64 = 1_000;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for case in 0..200 {
        // Up to 4 cookieless visitors, some with a stored session.
        let keys: Vec<String> = (0..=next(3))
            .map(|k| format!("cookieless:c{case}-{k}"))
            .collect();
        let mut stored = std::collections::HashMap::new();
        for key in &keys {
            if next(2) == 0 {
                let last = T0 + next(4_000) as i64;
                let row = SessionRow {
                    session_id: last - next(500) as i64,
                    count: 1 + next(3) as i64,
                    last_activity_ms: last,
                };
                client
                    .execute(
                        "INSERT INTO identity_sessions VALUES ($1, $2, $3, $4)",
                        &[key, &row.session_id, &row.count, &row.last_activity_ms],
                    )
                    .await
                    .expect("seed a session");
                stored.insert(key.clone(), row);
            }
        }
        let steps: Vec<(String, i64)> = (0..1 + next(8))
            .map(|_| {
                let key = keys[next(keys.len() as u64) as usize].clone();
                (key, T0 + next(8_000) as i64)
            })
            .collect();
        // What the graph would do, event by event.
        let mut expected = stored.clone();
        for (key, ts) in &steps {
            let (row, _) = advance_session(expected.get(key).copied(), *ts, TIMEOUT);
            expected.insert(key.clone(), row);
        }
        let mut query = KnownQuery::new(TIMEOUT);
        for (key, ts) in &steps {
            query.push_event(&[], Some(key), *ts);
        }
        let query = query.finish();
        let mut stored_keys: Vec<&String> = stored
            .keys()
            .filter(|k| steps.iter().any(|(s, _)| s == *k))
            .collect();
        stored_keys.sort();
        let rows = store.move_known(query.clone()).await.expect("move");
        assert!(rows.moved, "case {case}");
        let returned: Vec<&String> = rows.sessions.iter().map(|(k, _)| k).collect();
        assert_eq!(
            returned, stored_keys,
            "case {case}: the rows before the move"
        );
        // The closed form in memory agrees too.
        let before: std::collections::HashMap<&str, SessionRow> =
            stored.iter().map(|(k, r)| (k.as_str(), *r)).collect();
        for (key, row) in query.moved(&before) {
            assert_eq!(
                Some(&row),
                expected.get(&key),
                "case {case}: closed form of {key}"
            );
        }
        for key in &keys {
            let got = client
                .query_opt(
                    "SELECT session_id, count, last_activity_ms FROM identity_sessions WHERE key = $1",
                    &[key],
                )
                .await
                .expect("read")
                .map(|r| SessionRow {
                    session_id: r.get(0),
                    count: r.get(1),
                    last_activity_ms: r.get(2),
                });
            assert_eq!(
                got.as_ref(),
                expected.get(key),
                "case {case}: {key} after {steps:?}"
            );
        }
    }
}

/// A store of its own over `db`, for jobs run directly.
fn store_over(db: &TestDb) -> Arc<dyn IdentityStore> {
    let config: tokio_postgres::Config = db.url().parse().expect("test URL");
    let manager = deadpool_postgres::Manager::new(config, tokio_postgres::NoTls);
    let pool = deadpool_postgres::Pool::builder(manager)
        .build()
        .expect("pool");
    Arc::new(PgIdentity::new(pool, Arc::new(NoEvents)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_over_new_identifiers_that_finds_one_runs_again_serializable() {
    let (db, _workers) = two_workers().await;
    let store = store_over(&db);
    let runs = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let count = Arc::clone(&runs);
    // Its own node, read back, is new: the job runs once.
    let own = store
        .write_new(move |tx| {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tx.insert_profile("p1", T0)?;
            tx.insert_node("anon:n1", "p1", T0)?;
            tx.node_profiles(&["anon:n1".to_owned()])
        })
        .await
        .expect("job");
    assert_eq!(own, vec![("anon:n1".to_owned(), "p1".to_owned())]);
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
    // Another job's node is not: the job runs again, serializable, and
    // answers as a write job would.
    for (i, read) in ["node", "nodes", "session"].into_iter().enumerate() {
        let count = Arc::clone(&runs);
        runs.store(0, std::sync::atomic::Ordering::SeqCst);
        let session = SessionRow {
            session_id: T0,
            count: 1,
            last_activity_ms: T0,
        };
        let key = format!("anon:s{i}");
        store
            .write({
                let key = key.clone();
                move |tx| tx.put_sessions(&[(key.clone(), session)])
            })
            .await
            .expect("session");
        let found = store
            .write_new(move |tx| {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok(match read {
                    "node" => tx.node_profile("anon:n1")?.into_iter().count(),
                    "nodes" => tx.node_profiles(&["anon:n1".to_owned()])?.len(),
                    _ => tx.session(&key)?.into_iter().count(),
                })
            })
            .await
            .expect("job");
        assert_eq!(found, 1, "{read}");
        assert_eq!(
            runs.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "{read}: once over new identifiers, once serializable"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_visitor_first_seen_on_both_workers_at_once_is_one_profile_and_session() {
    let (_db, workers) = two_workers().await;
    let workers = Arc::new(workers);
    // Every request finds nothing stored and takes the job over new
    // identifiers; all but the first meet its node on the unique key.
    let mut tasks = Vec::new();
    for i in 0..16i64 {
        let workers = Arc::clone(&workers);
        tasks.push(tokio::spawn(async move {
            workers[(i % 2) as usize]
                .link(vec![event(&["anon:new1"], "anon:new1", T0 + i)])
                .await
                .expect("link")
        }));
    }
    let mut profiles = std::collections::BTreeSet::new();
    let mut all = Vec::new();
    for t in tasks {
        let linked = t.await.expect("task");
        profiles.insert(first_profile(&linked).to_string());
        all.extend(sessions(&linked));
    }
    assert_eq!(profiles.len(), 1, "one profile: {profiles:?}");
    let ids: std::collections::BTreeSet<i64> = all.iter().map(|s| s.0).collect();
    assert_eq!(ids.len(), 1, "one session: {all:?}");
    assert_eq!(all.iter().filter(|s| s.2).count(), 1, "one start: {all:?}");
    // Later requests may find it known and leave their counts behind.
    for worker in workers.iter() {
        worker.flush().await.expect("flush");
    }
    let view = workers[1]
        .find(Lookup::AnonymousId("new1".into()))
        .await
        .expect("profile");
    assert_eq!(view.event_counts["total"], serde_json::json!(16));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_holding_the_gate_holds_off_a_new_visitors_link_until_it_commits() {
    let (db, workers) = two_workers().await;
    let (client, conn) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    // What a privacy delete does first: the gate, then its suppressions.
    client
        .batch_execute(
            "BEGIN ISOLATION LEVEL SERIALIZABLE; LOCK TABLE identity_link_gate IN EXCLUSIVE MODE",
        )
        .await
        .expect("gate");
    let hash = crate::identity::key::suppression_hash("anon:gone");
    client
        .execute(
            "INSERT INTO identity_suppressions (hash, created_ms) VALUES ($1, 0)",
            &[&hash],
        )
        .await
        .expect("suppress");
    let workers = Arc::new(workers);
    let link = tokio::spawn({
        let workers = Arc::clone(&workers);
        async move {
            workers[0]
                .link(vec![event(&["anon:gone"], "anon:gone", T0)])
                .await
                .expect("link")
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!link.is_finished(), "the link waits for the delete");
    client.batch_execute("COMMIT").await.expect("commit");
    let linked = link.await.expect("task");
    assert!(
        matches!(linked[..], [Linked::Suppressed]),
        "the link sees the delete's suppression: {linked:?}"
    );
}
