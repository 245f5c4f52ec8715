//! The executor end to end in one process: a SQLite warehouse, the
//! embedded store, real destinations (a file, a loopback webhook), and
//! `App::run_sync` as `waymark sync run` calls it.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::storage::syncs::{KeyStatus, RunStatus, SyncRun};
use crate::{App, Config};

fn dir(label: &str) -> PathBuf {
    crate::storage::conformance_tempdir().join(label)
}

fn config(data: &Path, warehouse: &Path, mode: &str, destination: &str) -> Config {
    let text = format!(
        r#"
[storage]
data_dir = "{data}"
[identity]
keys = [{{ id = "k1", secret = "0123456789abcdef0123456789abcdef" }}]
[[sources]]
name = "web"
write_key = "wk_test"
{destination}
[[warehouses]]
name = "crm"
type = "sqlite"
path = "{warehouse}"
[[models]]
name = "users"
warehouse = "crm"
query = "select id, email, plan from users"
primary_key = "id"
[[syncs]]
name = "users-out"
model = "users"
destination = "out"
call = "identify"
mode = "{mode}"
mapping = {{ userId = "id", "traits.email" = "email", "traits.plan" = "plan" }}
report_timeout_secs = 20
"#,
        data = data.display(),
        warehouse = warehouse.display(),
    );
    Config::parse(&text).expect("the config parses")
}

const FILE_DESTINATION: &str = r#"[[destinations]]
name = "out"
type = "file"
path = "out.ndjson""#;

fn warehouse(path: &Path, rows: impl IntoIterator<Item = (i64, String, &'static str)>) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, email TEXT, plan TEXT)",
    )
    .unwrap();
    for (id, email, plan) in rows {
        conn.execute(
            "INSERT OR REPLACE INTO users (id, email, plan) VALUES (?1, ?2, ?3)",
            rusqlite::params![id, email, plan],
        )
        .unwrap();
    }
}

fn sql(path: &Path, statement: &str) {
    rusqlite::Connection::open(path)
        .unwrap()
        .execute_batch(statement)
        .unwrap();
}

async fn run(config: &Config, full: bool) -> SyncRun {
    App::build(config.clone())
        .expect("the worker builds")
        .run_sync("users-out", full)
        .await
        .expect("the run runs")
        .expect("no other run is active")
}

fn file_events(data: &Path) -> Vec<Value> {
    std::fs::read_to_string(data.join("out.ndjson"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_sync_sends_the_diff_and_nothing_else() {
    let data = dir("exec-mirror");
    let crm = data.with_extension("crm.db");
    let _ = std::fs::remove_dir_all(&data);
    let _ = std::fs::remove_file(&crm);
    warehouse(
        &crm,
        (1..=200).map(|i| (i, format!("u{i}@example.com"), "free")),
    );
    let config = config(&data, &crm, "mirror", FILE_DESTINATION);

    // First run: every row is added and delivered.
    let first = run(&config, false).await;
    assert_eq!(first.status, RunStatus::Success, "{first:?}");
    assert_eq!(first.query_size, Some(200));
    assert_eq!(first.planned.added, 200);
    assert_eq!(first.successful.added, 200);
    let events = file_events(&data);
    assert_eq!(events.len(), 200);
    let one = events
        .iter()
        .find(|e| e["userId"] == 7 || e["userId"] == "7")
        .expect("row 7 was sent");
    assert_eq!(one["type"], "identify");
    assert_eq!(one["traits"]["email"], "u7@example.com");
    assert_eq!(one["context"]["waymark"]["sync"]["run"], first.id);
    assert!(one["messageId"].as_str().unwrap().starts_with("sync-"));

    // 3 changed, 2 added, 1 removed: exactly those are sent.
    sql(
        &crm,
        "UPDATE users SET plan = 'pro' WHERE id IN (3, 4, 5);
         INSERT INTO users VALUES (201, 'u201@example.com', 'free'), (202, 'u202@example.com', 'free');
         DELETE FROM users WHERE id = 9;",
    );
    let second = run(&config, false).await;
    assert_eq!(second.status, RunStatus::Success, "{second:?}");
    assert_eq!(
        (
            second.planned.added,
            second.planned.changed,
            second.planned.removed
        ),
        (2, 3, 1)
    );
    assert_eq!(second.successful.total(), 6);
    let events = file_events(&data);
    let sent: Vec<&Value> = events[200..].iter().collect();
    assert_eq!(sent.len(), 6, "{sent:#?}");
    let mut changed: Vec<i64> = sent
        .iter()
        .filter(|e| e["context"]["waymark"]["sync"]["change"] == "changed")
        .map(|e| {
            e["context"]["waymark"]["sync"]["key"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    changed.sort_unstable();
    assert_eq!(changed, [3, 4, 5]);
    let removal = sent
        .iter()
        .find(|e| e["context"]["waymark"]["delete"] == true)
        .expect("the removal is a delete marker");
    assert_eq!(removal["context"]["waymark"]["sync"]["key"], "9");

    // Nothing changed: nothing is sent.
    let third = run(&config, false).await;
    assert_eq!(third.status, RunStatus::Success);
    assert_eq!(third.planned.total(), 0);
    assert_eq!(file_events(&data).len(), 206);

    // A full resync sends every current row again as added.
    let full = run(&config, true).await;
    assert_eq!(full.planned.added, 201);
    assert_eq!(file_events(&data).len(), 407);
}

/// A loopback webhook that answers 500 to rows whose plan is `bad`.
async fn picky_webhook() -> (String, tokio::task::JoinHandle<()>) {
    use axum::http::StatusCode;
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(|body: axum::body::Bytes| async move {
            let text = String::from_utf8_lossy(&body);
            if text.contains("\"bad\"") {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_a_destination_refuses_fail_the_run_to_warning_and_are_retried() {
    let data = dir("exec-partial");
    let crm = data.with_extension("crm.db");
    let _ = std::fs::remove_dir_all(&data);
    let _ = std::fs::remove_file(&crm);
    warehouse(
        &crm,
        (1..=50).map(|i| {
            (
                i,
                format!("u{i}@example.com"),
                if i % 10 == 0 { "bad" } else { "free" },
            )
        }),
    );
    let (url, _server) = picky_webhook().await;
    // One row per request, so the failures are per row; retried with
    // backoff for two seconds, then dead-lettered.
    let destination = format!(
        "[[destinations]]\nname = \"out\"\ntype = \"webhook\"\nurl = \"{url}\"\nmax_batch = 1\n\
         [destinations.delivery]\nmax_age_secs = 2\ninitial_backoff_ms = 100\nmax_backoff_ms = 400"
    );
    let config = config(&data, &crm, "upsert", &destination);
    let first = run(&config, false).await;
    assert_eq!(first.status, RunStatus::Warning, "{first:?}");
    assert_eq!(first.successful.added, 45);
    assert_eq!(first.failed.added, 5);
    let store = crate::storage::open(&config.storage, 86_400)
        .unwrap()
        .sync_store();
    let failed = store.failed_keys(first.sync, 100).await.unwrap();
    let mut keys: Vec<&str> = failed.iter().map(|k| k.key.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["10", "20", "30", "40", "50"]);
    assert!(failed.iter().all(|k| k.status == KeyStatus::FailedNew));
    drop(store);

    // The rows are fixed in the warehouse for two of them; all five are
    // retried, the three still bad fail again.
    sql(&crm, "UPDATE users SET plan = 'free' WHERE id IN (10, 20)");
    let second = run(&config, false).await;
    assert_eq!(second.planned.added, 5, "{second:?}");
    assert_eq!(second.successful.added, 2);
    assert_eq!(second.failed.added, 3);
    assert_eq!(second.status, RunStatus::Warning);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_keys_are_invalid_and_the_rest_of_the_run_goes_on() {
    let data = dir("exec-keys");
    let crm = data.with_extension("crm.db");
    let _ = std::fs::remove_dir_all(&data);
    let _ = std::fs::remove_file(&crm);
    sql(
        &crm,
        "CREATE TABLE users (id INTEGER, email TEXT, plan TEXT);
         INSERT INTO users VALUES (1, 'a@x', 'free'), (2, 'b@x', 'free'), (2, 'b2@x', 'free'),
                                  (NULL, 'n@x', 'free'), (3, 'c@x', 'free');",
    );
    let config = config(&data, &crm, "upsert", FILE_DESTINATION);
    let run = run(&config, false).await;
    assert_eq!(run.status, RunStatus::Success, "{run:?}");
    assert_eq!((run.query_size, run.invalid), (Some(5), 2));
    assert_eq!(run.successful.added, 3);
    let store = crate::storage::open(&config.storage, 86_400)
        .unwrap()
        .sync_store();
    let invalid = store.invalid_rows(run.id, 10).await.unwrap();
    let reasons: Vec<&str> = invalid.iter().map(|r| r.reason.as_str()).collect();
    assert!(reasons.contains(&"duplicate primary key"), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("null")), "{reasons:?}");
    assert_eq!(file_events(&data).len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_query_a_missing_warehouse_and_zero_rows_fail_the_run_with_why() {
    let data = dir("exec-failures");
    let crm = data.with_extension("crm.db");
    let _ = std::fs::remove_dir_all(&data);
    let _ = std::fs::remove_file(&crm);
    warehouse(&crm, (1..=3).map(|i| (i, format!("u{i}@x"), "free")));
    let config = config(&data, &crm, "mirror", FILE_DESTINATION);
    assert_eq!(run(&config, false).await.status, RunStatus::Success);

    // Zero rows after a run that had some: failed, nothing removed.
    sql(&crm, "DELETE FROM users");
    let zero = run(&config, false).await;
    assert_eq!(zero.status, RunStatus::Failed);
    assert!(
        zero.error.as_deref().unwrap_or("").contains("no rows"),
        "{zero:?}"
    );
    assert_eq!(file_events(&data).len(), 3, "nothing was removed");

    // The query fails (the table is gone).
    sql(&crm, "DROP TABLE users");
    let broken = run(&config, false).await;
    assert_eq!(broken.status, RunStatus::Failed);
    assert!(
        broken.error.as_deref().unwrap_or("").contains("query"),
        "{broken:?}"
    );

    // The warehouse file is gone.
    std::fs::remove_file(&crm).unwrap();
    let down = run(&config, false).await;
    assert_eq!(down.status, RunStatus::Failed);
    assert!(
        down.error.as_deref().unwrap_or("").contains("crm"),
        "{down:?}"
    );
}
