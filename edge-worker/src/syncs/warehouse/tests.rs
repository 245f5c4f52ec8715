//! Both warehouses against real databases: a SQLite file and a throwaway
//! PostgreSQL database (`tests/pg.rs`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::config::{SyncCall, SyncMode};
use crate::storage::test_db::test_database;

fn sqlite_config(path: PathBuf) -> WarehouseConfig {
    WarehouseConfig {
        name: "local".into(),
        kind: WarehouseKind::Sqlite,
        url_env: None,
        url: None,
        path: Some(path),
        connect_timeout_ms: 1_000,
        batch_rows: 1_000,
    }
}

fn pg_config(url: &str) -> WarehouseConfig {
    WarehouseConfig {
        name: "crm".into(),
        kind: WarehouseKind::Postgres,
        url_env: None,
        url: Some(url.into()),
        path: None,
        connect_timeout_ms: 2_000,
        batch_rows: 1_000,
    }
}

fn sqlite_file(sql: &str) -> PathBuf {
    let dir = crate::storage::conformance_tempdir();
    let path = dir.join("crm.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(sql).unwrap();
    path
}

async fn drain(mut stream: RowStream) -> Result<Vec<Vec<Row>>, WarehouseError> {
    let mut batches = Vec::new();
    while let Some(batch) = stream.next_batch().await? {
        batches.push(batch);
    }
    Ok(batches)
}

fn model(primary_key: &str) -> ModelConfig {
    ModelConfig {
        name: "users".into(),
        warehouse: "local".into(),
        query: "select 1".into(),
        primary_key: primary_key.into(),
    }
}

fn sync(mapping: &[(&str, &str)]) -> SyncConfig {
    SyncConfig {
        name: "users-to-hook".into(),
        model: "users".into(),
        destination: "hook".into(),
        call: SyncCall::Identify,
        mode: SyncMode::Upsert,
        mapping: mapping
            .iter()
            .map(|(f, c)| (f.to_string(), c.to_string()))
            .collect::<BTreeMap<_, _>>(),
        event: None,
        schedule: None,
        fail_on_zero_rows: true,
        disabled: false,
        report_timeout_secs: 600,
    }
}

#[tokio::test]
async fn sqlite_rows_come_in_bounded_batches_with_json_values() {
    let path = sqlite_file(
        "CREATE TABLE users (id INTEGER, email TEXT, score REAL, avatar BLOB, note TEXT);
         INSERT INTO users VALUES (1, 'a@example.com', 1.5, x'0102', NULL);
         WITH RECURSIVE n(i) AS (SELECT 2 UNION ALL SELECT i + 1 FROM n WHERE i < 10)
         INSERT INTO users SELECT i, 'u' || i || '@example.com', i, NULL, 'x' FROM n;",
    );
    let w = open(&sqlite_config(path), 0).unwrap();
    let query = "select id, email, score, avatar, note from users order by id";
    assert_eq!(
        w.describe(query).await.unwrap(),
        ["id", "email", "score", "avatar", "note"]
    );
    let stream = w.stream(query, 3).await.unwrap();
    assert_eq!(stream.columns(), ["id", "email", "score", "avatar", "note"]);
    let batches = drain(stream).await.unwrap();
    let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
    assert_eq!(sizes, [3, 3, 3, 1]);
    assert_eq!(
        batches[0][0],
        vec![
            json!(1),
            json!("a@example.com"),
            json!(1.5),
            json!("AQI="),
            json!(null)
        ]
    );
    assert_eq!(batches[3][0][0], json!(10));
}

#[tokio::test]
async fn sqlite_errors_say_whether_the_file_or_the_query_is_wrong() {
    let path = sqlite_file("CREATE TABLE users (id INTEGER);");
    let w = open(&sqlite_config(path.clone()), 0).unwrap();
    let err = w.describe("select nope from users").await.unwrap_err();
    assert!(matches!(err, WarehouseError::Query { .. }), "{err}");
    assert!(err.to_string().contains("nope"), "{err}");
    assert!(!err.is_retriable());
    let err = w.stream("select nope from users", 10).await.unwrap_err();
    assert!(matches!(err, WarehouseError::Query { .. }), "{err}");
    // The model is read-only: check refuses it, and a run cannot write.
    let err = w.describe("delete from users").await.unwrap_err();
    assert!(err.to_string().contains("read-only"), "{err}");
    let err = match w.stream("delete from users returning id", 10).await {
        Ok(stream) => drain(stream).await.unwrap_err(),
        Err(e) => e,
    };
    assert!(err.to_string().contains("readonly"), "{err}");
    let missing = open(&sqlite_config(path.with_file_name("missing.db")), 0).unwrap();
    let err = missing.describe("select 1").await.unwrap_err();
    assert!(err.is_retriable(), "{err}");
    assert!(err.to_string().contains("missing.db"), "{err}");
}

#[tokio::test]
async fn a_dropped_sqlite_stream_stops_early() {
    let path = sqlite_file("CREATE TABLE t (id INTEGER);");
    let w = open(&sqlite_config(path), 0).unwrap();
    // Ten million rows: only the first batches are ever produced.
    let query = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000000) SELECT i FROM n";
    let started = std::time::Instant::now();
    let mut stream = w.stream(query, 100).await.unwrap();
    let first = stream.next_batch().await.unwrap().unwrap();
    assert_eq!(first.len(), 100);
    assert_eq!(first[99][0], json!(100));
    drop(stream);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the first batch came before the query finished"
    );
}

#[test]
fn check_names_the_missing_or_repeated_column() {
    let columns: Vec<String> = ["id", "email"].iter().map(|s| s.to_string()).collect();
    let s = sync(&[("userId", "id"), ("traits.plan", "plan")]);
    let err = check_columns(&model("id"), &[&s], &columns)
        .unwrap_err()
        .to_string();
    assert!(err.contains("mapping.\"traits.plan\""), "{err}");
    assert!(err.contains("`plan`") && err.contains("id, email"), "{err}");
    let err = check_columns(&model("user_id"), &[], &columns)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("primary_key") && err.contains("`user_id`"),
        "{err}"
    );
    let twice: Vec<String> = ["id", "id"].iter().map(|s| s.to_string()).collect();
    let err = check_columns(&model("id"), &[], &twice)
        .unwrap_err()
        .to_string();
    assert!(err.contains("two columns named `id`"), "{err}");
    let ok = sync(&[("userId", "id"), ("traits.email", "email")]);
    assert!(check_columns(&model("id"), &[&ok], &columns).is_ok());
}

async fn pg_client(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rows_come_in_bounded_batches_with_json_values() {
    let db = test_database("warehouse_rows").expect("a PostgreSQL test database (see tests/pg.rs)");
    let client = pg_client(db.url()).await;
    client
        .batch_execute(
            "CREATE TABLE crm_users (id bigint, email text, ltv numeric, seen timestamptz,
                                     vip boolean, tags text[], extra jsonb, note text);
             INSERT INTO crm_users VALUES
               (1, 'a@example.com', 12.50, '2024-01-02T03:04:05Z', true, '{a,b}', '{\"b\":1,\"a\":[2]}', NULL);
             INSERT INTO crm_users (id, email) SELECT i, 'u' || i || '@example.com' FROM generate_series(2, 10) i;",
        )
        .await
        .unwrap();
    let w = open(&pg_config(db.url()), 0).unwrap();
    let query = "select id, email, ltv, seen, vip, tags, extra, note from crm_users order by id;";
    assert_eq!(
        w.describe(query).await.unwrap(),
        ["id", "email", "ltv", "seen", "vip", "tags", "extra", "note"]
    );
    let batches = drain(w.stream(query, 4).await.unwrap()).await.unwrap();
    assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), [4, 4, 2]);
    assert_eq!(
        batches[0][0],
        vec![
            json!(1),
            json!("a@example.com"),
            json!(12.50),
            json!("2024-01-02T03:04:05+00:00"),
            json!(true),
            json!(["a", "b"]),
            json!({"a": [2], "b": 1}),
            json!(null)
        ]
    );
    assert_eq!(batches[2][1][0], json!(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_errors_say_whether_the_server_or_the_query_is_wrong() {
    let db = test_database("warehouse_errors").expect("a PostgreSQL test database");
    let client = pg_client(db.url()).await;
    client
        .batch_execute("CREATE TABLE t (id int)")
        .await
        .unwrap();
    let w = open(&pg_config(db.url()), 0).unwrap();
    let err = w.describe("select nope from t").await.unwrap_err();
    assert!(matches!(err, WarehouseError::Query { .. }), "{err}");
    assert!(err.to_string().contains("nope"), "{err}");
    // Models cannot write: a writing statement does not fit the read.
    let err = w.describe("delete from t returning id").await.unwrap_err();
    assert!(matches!(err, WarehouseError::Query { .. }), "{err}");
    client
        .batch_execute("INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let err = drain(
        w.stream("select id, 1 / (id - id) as x from t", 10)
            .await
            .unwrap(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("division by zero"), "{err}");
    // A server that is not there.
    let down = open(&pg_config("postgres://waymark@127.0.0.1:9/none"), 0).unwrap();
    let err = down.describe("select 1").await.unwrap_err();
    assert!(err.is_retriable(), "{err}");
    assert!(err.to_string().contains("cannot connect"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_stream_holds_one_batch_and_stops_when_dropped() {
    let db = test_database("warehouse_drop").expect("a PostgreSQL test database");
    let client = pg_client(db.url()).await;
    let w = open(&pg_config(db.url()), 0).unwrap();
    let mut stream = w
        .stream("select i as id from generate_series(1, 5000000) i", 1000)
        .await
        .unwrap();
    let first = stream.next_batch().await.unwrap().unwrap();
    assert_eq!(first.len(), 1000);
    let sessions = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'waymark-sync' AND datname = current_database()";
    let open_now: i64 = client.query_one(sessions, &[]).await.unwrap().get(0);
    assert_eq!(
        open_now, 1,
        "the run's own connection, parked on its portal"
    );
    drop(stream);
    let mut left = open_now;
    for _ in 0..100 {
        left = client.query_one(sessions, &[]).await.unwrap().get(0);
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(left, 0, "dropping the stream closed its connection");
}
