//! What only the shared store does: several workers on one database.

use std::sync::Arc;
use std::time::Duration;

use super::migrate::{migrate_modules, PgMigrations};
use super::PgStorage;
use crate::config::{StorageBackend, StorageConfig};
use crate::storage::conformance::{accepted, commit, tempdir, Backend};
use crate::storage::{DeliveryQueue as _, IngestStore as _, StorageError, Stored};
use crate::time::now_ms;

fn config_for(url: &str) -> StorageConfig {
    StorageConfig {
        backend: StorageBackend::Postgres,
        data_dir: tempdir(),
        url: Some(url.to_owned()),
        pool_size: 4,
        lease_secs: 2,
        dataset_secs: 1,
        ..StorageConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_ids_sent_to_two_workers_at_once_are_enqueued_once() {
    let b = Backend::postgres("dedup_two_workers");
    let (one, two) = (Arc::clone(&b.store), b.second_worker());
    let mut tasks = Vec::new();
    for (reverse, store) in [(false, one), (true, two)] {
        tasks.push(tokio::spawn(async move {
            let mut enqueued = 0;
            for round in 0..20 {
                // Both workers get the same batch, in opposite orders.
                let mut ids: Vec<String> = (0..10).map(|i| format!("r{round}-m{i}")).collect();
                if reverse {
                    ids.reverse();
                }
                let events = ids.iter().map(|id| accepted("web", id, &["a"])).collect();
                let stored = store.commit_ingest(commit(events)).await.unwrap().stored;
                enqueued += stored.iter().filter(|s| **s == Stored::Enqueued).count();
            }
            enqueued
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(total, 200);
    assert_eq!(b.store.outbox_depth("a").await.unwrap(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_drains_a_destination_and_another_takes_over_after_its_lease() {
    let b = Backend::postgres("leases");
    let first = Arc::clone(&b.store);
    let second = b.second_worker();
    first
        .commit_ingest(commit(vec![accepted("web", "m1", &["a"])]))
        .await
        .unwrap();
    assert_eq!(
        first.outbox_due("a", now_ms(), 0, 10).await.unwrap().len(),
        1
    );
    // The other worker sees nothing while the lease is held and renewed.
    for _ in 0..3 {
        assert!(second
            .outbox_due("a", now_ms(), 0, 10)
            .await
            .unwrap()
            .is_empty());
        tokio::time::sleep(Duration::from_millis(1_000)).await;
    }
    // The first worker dies: its lease (2 s) runs out and the second takes over.
    drop(first);
    drop(b.store);
    let started = std::time::Instant::now();
    loop {
        let due = second.outbox_due("a", now_ms(), 0, 10).await.unwrap();
        if !due.is_empty() {
            assert_eq!(due[0].message_id, "m1");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(6), "no takeover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_newer_than_the_binary_is_refused() {
    let db = super::test_db::test_database("schema_too_new").unwrap();
    let config = config_for(db.url());
    drop(PgStorage::open(&config, 86_400).unwrap());
    let pg: tokio_postgres::Config = db.url().parse().unwrap();
    let mut client = super::connect(&pg).await.unwrap();
    client
        .execute(
            "INSERT INTO waymark_schema (module, version) VALUES ('core', 999)",
            &[],
        )
        .await
        .unwrap();
    let error = PgStorage::open(&config, 86_400).err().expect("refused");
    assert!(
        matches!(error, StorageError::SchemaTooNew { found: 999, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("upgrade this binary"), "{error}");
    let checked = super::check(&config).await.unwrap_err();
    assert!(
        matches!(checked, StorageError::SchemaTooNew { .. }),
        "{checked}"
    );
    // A module's steps apply once, however many workers start.
    const STEPS: &[&str] = &["CREATE TABLE once (n int)"];
    let modules = [PgMigrations {
        module: "test",
        steps: STEPS,
    }];
    migrate_modules(&mut client, &modules).await.unwrap();
    migrate_modules(&mut client, &modules).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drained_datasets_are_dropped_whole() {
    let db = super::test_db::test_database("datasets").unwrap();
    let store = PgStorage::open(&config_for(db.url()), 86_400).unwrap();
    store
        .commit_ingest(commit(vec![accepted("web", "m1", &["a"])]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    store.maintain().await.unwrap();
    // A second dataset started; the first still holds an undelivered entry.
    let started = |store: Arc<PgStorage>| async move {
        let client = store.client().await.unwrap();
        let n: i64 = client
            .query_one("SELECT count(*) FROM datasets", &[])
            .await
            .unwrap()
            .get(0);
        n
    };
    assert!(started(Arc::clone(&store)).await >= 2);
    store.maintain().await.unwrap();
    assert!(table_exists(&store, "outbox_ds1").await);
    store
        .commit_ingest(commit(vec![accepted("web", "m2", &["a"])]))
        .await
        .unwrap();
    let due = store.outbox_due("a", now_ms(), 0, 10).await.unwrap();
    assert_eq!(due.len(), 2);
    store
        .outbox_delivered(due.iter().map(|e| e.id).collect(), vec![])
        .await
        .unwrap();
    store.maintain().await.unwrap();
    assert!(!table_exists(&store, "outbox_ds1").await);
    assert!(!table_exists(&store, "outbox_status_ds1").await);
    assert_eq!(store.outbox_depth("a").await.unwrap(), 0);
    // New events still land and deliver.
    store
        .commit_ingest(commit(vec![accepted("web", "m3", &["a"])]))
        .await
        .unwrap();
    assert_eq!(store.outbox_depth("a").await.unwrap(), 1);
}

async fn table_exists(store: &PgStorage, name: &str) -> bool {
    let client = store.client().await.unwrap();
    client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
        .await
        .unwrap()
        .get(0)
}

/// Two workers commit and one delivers while others read the queue and
/// datasets start every second: drained ones are removed, and every acked
/// entry is delivered, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datasets_are_removed_under_load_and_every_acked_entry_is_delivered_once() {
    let db = super::test_db::test_database("datasets_load").unwrap();
    let one = PgStorage::open(&config_for(db.url()), 86_400).unwrap();
    let two = PgStorage::open(&config_for(db.url()), 86_400).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for (w, store) in [(0, Arc::clone(&one)), (1, Arc::clone(&two))] {
        let stop = Arc::clone(&stop);
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let ids: Vec<String> = (0..5).map(|i| format!("w{w}-{n}-{i}")).collect();
                n += 1;
                let events = ids.iter().map(|id| accepted("web", id, &["a"])).collect();
                if store.commit_ingest(commit(events)).await.is_ok() {
                    acked.extend(ids);
                }
            }
            acked
        }));
    }
    // Other destinations' delivery loops read the queue all the time.
    for _ in 0..3 {
        let (stop, two) = (Arc::clone(&stop), Arc::clone(&two));
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = two.outbox_depth("a").await;
            }
        });
    }
    let mut delivered: std::collections::HashMap<String, u32> = Default::default();
    let deliver = |delivered: &mut std::collections::HashMap<String, u32>| {
        let one = Arc::clone(&one);
        let mut seen = std::mem::take(delivered);
        async move {
            let due = one.outbox_due("a", now_ms(), 0, 200).await.unwrap();
            for e in &due {
                *seen.entry(e.message_id.clone()).or_default() += 1;
            }
            let n = due.len();
            one.outbox_delivered(due.iter().map(|e| e.id).collect(), vec![])
                .await
                .unwrap();
            (seen, n)
        }
    };
    let until = std::time::Instant::now() + Duration::from_secs(6);
    while std::time::Instant::now() < until {
        let (seen, _) = deliver(&mut delivered).await;
        delivered = seen;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    // Drain what is left, and let upkeep remove what it can.
    let until = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (seen, n) = deliver(&mut delivered).await;
        delivered = seen;
        let oldest: i64 = one
            .client()
            .await
            .unwrap()
            .query_one("SELECT min(ds) FROM datasets", &[])
            .await
            .unwrap()
            .get(0);
        if n == 0 && oldest >= 4 && delivered.len() >= acked.len() {
            break;
        }
        if std::time::Instant::now() > until {
            let client = one.client().await.unwrap();
            let tables: Vec<String> = client
                .query(
                    "SELECT c.relname || coalesce(' of ' || p.relname, '') FROM pg_class c
                     LEFT JOIN pg_inherits i ON i.inhrelid = c.oid
                     LEFT JOIN pg_class p ON p.oid = i.inhparent
                     WHERE c.relname LIKE 'outbox%ds%' ORDER BY 1",
                    &[],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            let pending: Vec<(i64, i64, i64)> = client
                .query(
                    "SELECT o.ds, o.seq, (SELECT count(*) FROM outbox_status s WHERE s.ds = o.ds AND s.seq = o.seq) FROM outbox o
                     WHERE NOT EXISTS (SELECT 1 FROM outbox_status s WHERE s.ds = o.ds AND s.seq = o.seq AND s.done)
                     ORDER BY o.seq LIMIT 20",
                    &[],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect();
            let floor = one.floors.lock().unwrap().get("a").copied();
            panic!(
                "pending {pending:?}, floor {floor:?}; not drained and removed: {} of {} acked delivered, oldest dataset {oldest}, tables {tables:?}",
                delivered.len(),
                acked.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(acked.len() > 1_000, "too little load: {}", acked.len());
    let missing: Vec<&String> = acked
        .iter()
        .filter(|id| !delivered.contains_key(*id))
        .collect();
    assert!(missing.is_empty(), "acked but never delivered: {missing:?}");
    let twice: Vec<_> = delivered.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered twice: {twice:?}");
    assert!(!table_exists(&one, "outbox_ds1").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_unavailable_not_a_crash() {
    let db = super::test_db::test_database("unreachable").unwrap();
    let mut config = config_for(db.url());
    let store = PgStorage::open(&config, 86_400).unwrap();
    // Point a second store at a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    config.url = Some(format!("postgres://waymark@127.0.0.1:{port}/x"));
    config.connect_timeout_ms = 500;
    let error = PgStorage::open(&config, 86_400).err().expect("refused");
    assert!(matches!(error, StorageError::Unavailable(_)), "{error}");
    assert!(error.to_string().contains("cannot connect"), "{error}");
    let checked = super::check(&config).await.unwrap_err();
    assert!(checked.to_string().contains("cannot connect"), "{checked}");
    store.check_writable().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_committed_after_later_ones_were_delivered_is_still_delivered() {
    let b = Backend::postgres("scan_floor");
    let s = &b.store;
    // A slow transaction draws a sequence number, then waits.
    let url = b.config.url.clone().expect("a URL");
    let (mut slow, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    let tx = slow.transaction().await.expect("begin");
    tx.execute("SELECT pg_current_xact_id()", &[])
        .await
        .expect("xid");
    tx.execute(
        "INSERT INTO outbox (ds, destination, source, message_id, event, enqueued_at_ms)
         VALUES ((SELECT max(ds) FROM datasets), 'a', 'web', 'late', '{\"messageId\":\"late\"}', 0)",
        &[],
    )
    .await
    .expect("insert");
    // Later entries commit and are delivered, poll after poll.
    for round in 0..5 {
        s.commit_ingest(commit(vec![accepted("web", &format!("m{round}"), &["a"])]))
            .await
            .unwrap();
        let due = s.outbox_due("a", now_ms(), 0, 100).await.unwrap();
        assert!(due.iter().all(|e| e.message_id != "late"));
        s.outbox_delivered(due.iter().map(|e| e.id).collect(), vec![])
            .await
            .unwrap();
    }
    // The slow one commits: its entry is due although later ones are done.
    tx.commit().await.expect("commit");
    let due = s.outbox_due("a", now_ms(), 0, 100).await.unwrap();
    let ids: Vec<&str> = due.iter().map(|e| e.message_id.as_str()).collect();
    assert_eq!(ids, ["late"]);
}
