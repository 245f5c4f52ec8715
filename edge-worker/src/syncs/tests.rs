use super::*;

fn config(path: &std::path::Path, mapping: &str) -> Config {
    Config::parse(&format!(
        r#"
[identity]
keys = [{{ id = "k1", secret = "0123456789abcdef0123456789abcdef" }}]
[[sources]]
name = "web"
write_key = "wk_test"
[[destinations]]
name = "hook"
type = "webhook"
url = "http://127.0.0.1:9/"
[[warehouses]]
name = "local"
type = "sqlite"
path = "{}"
[[models]]
name = "users"
warehouse = "local"
query = "select id, email from users"
primary_key = "id"
[[syncs]]
name = "users-to-hook"
model = "users"
destination = "hook"
call = "identify"
mapping = {mapping}
"#,
        path.display()
    ))
    .expect("the config parses")
}

/// The sync state store of a fresh SQLite store under `dir`.
fn sync_store(dir: &std::path::Path) -> std::sync::Arc<dyn crate::storage::SyncStore> {
    let storage = crate::config::StorageConfig {
        data_dir: dir.join("store"),
        ..crate::config::StorageConfig::default()
    };
    crate::storage::open(&storage, 86_400).unwrap().sync_store()
}

#[tokio::test]
async fn check_prepares_each_model_and_names_what_is_wrong() {
    let path = crate::storage::conformance_tempdir().join("crm.db");
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE users (id INTEGER, email TEXT)")
        .unwrap();
    let good = config(&path, r#"{ userId = "id", "traits.email" = "email" }"#);
    check(&good).await.expect("a good model checks");
    let bad = config(&path, r#"{ userId = "id", "traits.plan" = "plan" }"#);
    let err = check(&bad).await.unwrap_err().to_string();
    assert!(
        err.contains("`plan`") && err.contains("users-to-hook"),
        "{err}"
    );
    let missing = config(&path.with_file_name("gone.db"), r#"{ userId = "id" }"#);
    let err = check(&missing).await.unwrap_err().to_string();
    assert!(err.contains("gone.db"), "{err}");
}

/// The layers together: a SQLite warehouse streamed through the planner,
/// outcomes recorded in the store, and a second run planned against what
/// the store kept: changed, added, removed and the failed rows retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_plans_against_what_the_first_run_delivered() {
    use crate::config::SyncMode;
    use crate::storage::syncs::{Change, Delivery, RowOutcome, RunStatus};

    let dir = crate::storage::conformance_tempdir();
    let path = dir.join("crm.db");
    let crm = rusqlite::Connection::open(&path).unwrap();
    crm.execute_batch(
        "CREATE TABLE users (id INTEGER, email TEXT, plan TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100)
         INSERT INTO users SELECT i, 'u' || i || '@example.com', 'free' FROM n;",
    )
    .unwrap();
    let mut config = config(
        &path,
        r#"{ userId = "id", "traits.email" = "email", "traits.plan" = "plan" }"#,
    );
    config.syncs[0].mode = SyncMode::Mirror;
    config.models[0].query = "select id, email, plan from users".into();
    let store = sync_store(&dir);
    let sync = store
        .object_ids(
            crate::storage::syncs::ObjectKind::Sync,
            vec!["users-to-hook".into()],
        )
        .await
        .unwrap()[0]
        .id;
    let warehouse = warehouse::open(&config.warehouses[0], 0).unwrap();

    // One run: stream, plan, and deliver all but rows 7, 8 and 9.
    let run = |previous_rows: u64| {
        let (store, warehouse, config) = (store.clone(), warehouse.clone(), config.clone());
        async move {
            let id = store.queue_run(sync, false).await.unwrap();
            store.start_run(sync).await.unwrap().unwrap();
            let mut rows = warehouse.stream(&config.models[0].query, 16).await.unwrap();
            let mapping =
                Mapping::new(&config.models[0], &config.syncs[0], rows.columns()).unwrap();
            let state = load_state(store.as_ref(), sync, 0).await.unwrap();
            let options = PlanOptions {
                mode: config.syncs[0].mode,
                full_resync: false,
                fail_on_zero_rows: true,
                previous_rows,
            };
            let mut planner = Planner::new(mapping, state, options);
            let mut planned = Vec::new();
            while let Some(batch) = rows.next_batch().await.unwrap() {
                planned.extend(planner.plan_batch(batch).send);
            }
            let end = planner.finish().unwrap();
            planned.extend(end.removed);
            let outcomes = planned
                .iter()
                .map(|p| RowOutcome {
                    sync,
                    run: id,
                    key: p.key.clone(),
                    hash: p.hash,
                    change: p.change,
                    delivery: if ["7", "8", "9"].contains(&p.key.as_str()) && id == 1 {
                        Delivery::DeadLettered {
                            reason: "400 invalid email".into(),
                        }
                    } else {
                        Delivery::Delivered
                    },
                })
                .collect();
            store.record_outcomes(outcomes).await.unwrap();
            store
                .finish_run(id, RunStatus::Warning, None)
                .await
                .unwrap();
            let mut plan: Vec<(String, Change, bool)> = planned
                .into_iter()
                .map(|p| (p.key, p.change, p.retry))
                .collect();
            plan.sort();
            (plan, end.counts)
        }
    };
    let (first, counts) = run(0).await;
    assert_eq!(first.len(), 100);
    assert!(first.iter().all(|(_, c, _)| *c == Change::Added));
    assert_eq!(counts.rows, 100);

    // The model moves on: 5 changed, 2 added, 4 deleted.
    crm.execute_batch(
        "UPDATE users SET plan = 'pro' WHERE id BETWEEN 20 AND 24;
         INSERT INTO users VALUES (101, 'new1@example.com', 'free'), (102, 'new2@example.com', 'free');
         DELETE FROM users WHERE id BETWEEN 50 AND 53;",
    )
    .unwrap();
    let (second, counts) = run(100).await;
    let mut expected: Vec<(String, Change, bool)> = Vec::new();
    expected.extend((20..25).map(|i| (i.to_string(), Change::Changed, false)));
    expected.extend([101, 102].map(|i| (i.to_string(), Change::Added, false)));
    expected.extend((50..54).map(|i| (i.to_string(), Change::Removed, false)));
    expected.extend((7..10).map(|i| (i.to_string(), Change::Added, true)));
    expected.sort();
    assert_eq!(second, expected);
    assert_eq!(counts.unchanged, 100 - 5 - 4 - 3);
    assert_eq!(counts.retried, 3);

    // Everything was delivered: a third run of the same model sends nothing.
    let (third, _) = run(98).await;
    assert!(third.is_empty(), "{third:?}");
}

/// A dry run plans as a run would, lists invalid keys, and writes nothing:
/// a second dry run plans the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_reports_the_plan_and_changes_nothing() {
    let dir = crate::storage::conformance_tempdir();
    let path = dir.join("crm.db");
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(
            "CREATE TABLE users (id INTEGER, email TEXT);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10)
             INSERT INTO users SELECT i, 'u' || i || '@example.com' FROM n;
             INSERT INTO users VALUES (NULL, 'nobody@example.com'), (3, 'again@example.com');",
        )
        .unwrap();
    let config = config(&path, r#"{ userId = "id", "traits.email" = "email" }"#);
    let store = sync_store(&dir);
    for full in [false, false, true] {
        let plan = dry_run::dry_run(&config, store.as_ref(), "users-to-hook", full)
            .await
            .unwrap();
        assert_eq!(plan.query_size, 12);
        assert_eq!(plan.planned.added, 10, "{plan:?}");
        assert_eq!((plan.planned.changed, plan.planned.removed), (0, 0));
        assert_eq!(plan.invalid, 2);
        assert_eq!(plan.invalid_rows.len(), 2, "{plan:?}");
    }
    let err = dry_run::dry_run(&config, store.as_ref(), "nope", false)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("`nope`") && err.contains("sync list"), "{err}");
}

/// `waymark sync runs`: a sync's runs newest first in Hightouch's shape,
/// an unknown name refused by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_history_lists_runs_newest_first() {
    use crate::storage::syncs::RunStatus;

    let dir = crate::storage::conformance_tempdir();
    let config = config(&dir.join("crm.db"), r#"{ userId = "id" }"#);
    let store = sync_store(&dir);
    let id = run::prepare::sync_id(store.as_ref(), "users-to-hook")
        .await
        .unwrap();
    let first = store.queue_run(id, false).await.unwrap();
    let started = store.start_run(id).await.unwrap().unwrap();
    assert_eq!(started.id, first);
    store
        .finish_run(
            first,
            RunStatus::Failed,
            Some("the warehouse is down".into()),
        )
        .await
        .unwrap();
    let second = store.queue_run(id, true).await.unwrap();
    let runs = run::history(&config, store.as_ref(), "users-to-hook", 0)
        .await
        .unwrap();
    let seen: Vec<_> = runs.iter().map(|r| (r.id.0, r.status)).collect();
    assert_eq!(seen, [(second, "queued"), (first, "failed")]);
    assert_eq!(runs[1].error.as_deref(), Some("the warehouse is down"));
    let err = run::history(&config, store.as_ref(), "nope", 0)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("`nope`"), "{err}");
}
