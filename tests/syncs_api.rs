//! The Hightouch-compatible API (issue #18 §5) against the real worker, a
//! SQLite warehouse and a file destination, driven as orchestrators drive
//! Hightouch: with plain HTTP the way airflow-provider-hightouch does, and
//! with Hightouch's own Python SDK from PyPI.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use waymark_tests::{client, temp_dir, Worker};

const TOKEN: &str = "api-secret";
const SLUG: &str = "crm-users-to-lake";
const ROWS: u64 = 25;

/// The statuses after which Airflow and Dagster stop polling.
const FINISHED: [&str; 5] = ["success", "warning", "failed", "cancelled", "interrupted"];

/// A SQLite warehouse with `ROWS` users, and a worker syncing them to a file.
fn worker() -> Worker {
    let dir = temp_dir("syncs-api");
    let crm = dir.join("crm.db");
    let db = rusqlite::Connection::open(&crm).expect("create the warehouse");
    db.execute_batch(&format!(
        "CREATE TABLE crm_users (id INTEGER PRIMARY KEY, email TEXT, plan TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS})
         INSERT INTO crm_users SELECT i, 'user' || i || '@example.com', 'pro' FROM n;"
    ))
    .expect("fill the warehouse");
    drop(db);
    Worker::start_in(&config(&crm), dir)
}

fn config(crm: &Path) -> String {
    format!(
        r#"
[admin]
token = "{TOKEN}"

[identity]
keys = [{{ id = "k1", secret = "test-secret-0123456789abcdef0123456789" }}]

[[sources]]
name = "web"
write_key = "wk_test"

[[destinations]]
name = "lake"
type = "file"
path = "synced.ndjson"

[[warehouses]]
name = "crm"
type = "sqlite"
path = "{}"

[[models]]
name = "crm-users"
warehouse = "crm"
query = "select id, email, plan from crm_users"
primary_key = "id"

[[syncs]]
name = "{SLUG}"
model = "crm-users"
destination = "lake"
call = "identify"
mapping = {{ userId = "id", "traits.email" = "email", "traits.plan" = "plan" }}
"#,
        crm.display()
    )
}

fn get(worker: &Worker, path: &str) -> Value {
    let response = client()
        .get(worker.url(path))
        .bearer_auth(TOKEN)
        .send()
        .expect("the worker answers");
    assert_eq!(response.status(), 200, "GET {path}");
    response.json().expect("a JSON answer")
}

/// The rows the destination got: `userId` to `traits`.
fn delivered(worker: &Worker) -> Vec<(String, Value)> {
    let events =
        worker.wait_for_file_events("synced.ndjson", ROWS as usize, Duration::from_secs(30));
    let mut rows: Vec<(String, Value)> = events
        .iter()
        .map(|e| {
            let user = match &e["userId"] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (user, e["traits"].clone())
        })
        .collect();
    rows.sort_by_key(|(user, _)| user.parse::<u64>().unwrap_or(u64::MAX));
    rows
}

fn assert_rows_delivered(worker: &Worker) {
    let rows = delivered(worker);
    assert_eq!(rows.len() as u64, ROWS, "each row once");
    assert_eq!(rows[0].0, "1");
    assert_eq!(rows[0].1["email"], "user1@example.com");
    assert_eq!(rows[0].1["plan"], "pro");
}

/// airflow-provider-hightouch: the sync's id from its slug, a form-encoded
/// trigger on `/syncs/trigger`, then `runs?runId=` until the run is done.
#[test]
fn airflow_finds_the_sync_by_slug_triggers_by_form_and_polls_the_run() {
    let worker = worker();
    let http = client();
    // 1. The id from the slug (Airflow takes `data[0].id`).
    let listed = get(&worker, &format!("/api/v1/syncs?slug={SLUG}"));
    let sync_id = listed["data"][0]["id"].as_str().expect("an id").to_owned();
    assert_eq!(listed["data"][0]["slug"], SLUG);
    // 2. The trigger, as Airflow's HttpHook sends it: a form.
    let response = http
        .post(worker.url("/api/v1/syncs/trigger"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("syncId={sync_id}"))
        .send()
        .expect("the trigger answers");
    assert_eq!(response.status(), 200);
    let run_id = response.json::<Value>().expect("JSON")["id"]
        .as_str()
        .expect("the run id as a string")
        .to_owned();
    // 3. Poll until the run is finished, as Airflow does (every 3 s there).
    let run = poll(&worker, &sync_id, &run_id);
    assert_eq!(run["status"], "success", "{run}");
    for field in ["plannedRows", "successfulRows"] {
        assert_eq!(run[field]["addedCount"], ROWS, "{field}: {run}");
    }
    assert_eq!(run["failedRows"]["addedCount"], 0);
    assert_eq!(run["querySize"], ROWS);
    assert_eq!(run["completionRatio"], 1.0);
    assert!(run["finishedAt"].is_string() && run["startedAt"].is_string());
    assert_rows_delivered(&worker);
    // The sync reads as its last run, as Dagster checks after polling.
    let sync = get(&worker, &format!("/api/v1/syncs/{sync_id}"));
    assert_eq!(sync["status"], "success");
    let destination = sync["destinationId"].as_str().expect("destination id");
    let destination = get(&worker, &format!("/api/v1/destinations/{destination}"));
    assert_eq!(
        (destination["slug"].as_str(), destination["type"].as_str()),
        (Some("lake"), Some("file"))
    );
}

/// `GET /syncs/{id}/runs?runId=` until the run has a final status.
fn poll(worker: &Worker, sync_id: &str, run_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let runs = get(
            worker,
            &format!("/api/v1/syncs/{sync_id}/runs?runId={run_id}"),
        );
        let run = runs["data"][0].clone();
        assert_eq!(run["id"], run_id, "{runs}");
        let status = run["status"].as_str().unwrap_or_default();
        if FINISHED.contains(&status) {
            return run;
        }
        assert!(
            Instant::now() < deadline,
            "run {run_id} still `{status}` after 60 s: {run}\n{}",
            worker.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Hightouch's SDK from PyPI, pointed at the worker with `server_url`.
#[test]
fn hightouchs_python_sdk_lists_triggers_a_full_resync_and_reads_the_run() {
    let python = sdk_python();
    let worker = worker();
    // 1. A first run (Dagster's way: no body) sends every row.
    let sync_id = get(&worker, &format!("/api/v1/syncs?slug={SLUG}"))["data"][0]["id"]
        .as_str()
        .expect("an id")
        .to_owned();
    let response = client()
        .post(worker.url(&format!("/api/v1/syncs/{sync_id}/trigger")))
        .bearer_auth(TOKEN)
        .send()
        .expect("the trigger answers");
    assert_eq!(response.status(), 200);
    let first: Value = response.json().expect("JSON");
    let first = poll(&worker, &sync_id, first["id"].as_str().expect("a run id"));
    assert_eq!(first["status"], "success", "{first}");
    assert_rows_delivered(&worker);
    // 2. The SDK's full resync plans them all again.
    let script = worker.data_dir.join("hightouch_sdk.py");
    std::fs::write(&script, SDK_SCRIPT).expect("write the script");
    let output = Command::new(&python)
        .arg(&script)
        .args([&worker.url("/api/v1"), TOKEN, SLUG])
        .output()
        .expect("run the SDK's python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the SDK script failed:\n{stdout}\n{stderr}\nworker:\n{}",
        worker.stderr()
    );
    let result: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("the script prints a JSON line ({e}):\n{stdout}\n{stderr}"));
    assert_eq!(result["status"], "success", "{result}\n{stderr}");
    // After a run that sent every row, only a full resync plans them again.
    assert_eq!(result["planned_added"], ROWS as f64);
    assert_eq!(result["successful_added"], ROWS as f64);
    assert_eq!(result["query_size"], ROWS as f64);
    assert_eq!(result["completion_ratio"], 1.0);
    assert_eq!(result["by_slug_is_this_run_or_the_next"], true, "{result}");
    assert_eq!(result["model_primary_key"], "id");
    assert_eq!(result["destination_type"], "file");
    assert_eq!(result["missing_sync_status"], 404);
    assert_eq!(result["wrong_token_status"], 401);
    assert_eq!(result["by_slug_is_this_run_or_the_next"], true, "{result}");
}

/// The interpreter of the venv `cargo xtask test` makes (xtask/src/python.rs).
fn sdk_python() -> PathBuf {
    let python = std::env::var_os("WAYMARK_HIGHTOUCH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| waymark_tests::workspace_root().join("target"));
            target.join("hightouch-sdk-1.31.0/bin/python")
        });
    assert!(
        python.exists(),
        "{} is missing: run `cargo xtask test` (it installs Hightouch's SDK from PyPI into a venv) \
         or set WAYMARK_HIGHTOUCH_PYTHON to a python with `hightouch==1.31.0`",
        python.display()
    );
    python
}

/// Lists the sync by slug, reads it by its float-formatted id, triggers a
/// full resync, polls the run, reads its model and destination, checks a
/// missing id and a wrong token, and prints what it saw as one JSON line.
const SDK_SCRIPT: &str = r#"
import json, sys, time
from hightouch import Hightouch
from hightouch.models import operations, shared

server, token, slug = sys.argv[1:4]
sdk = Hightouch(server_url=server)

listed = sdk.list_sync(operations.ListSyncRequest(slug=slug), operations.ListSyncSecurity(bearer_auth=token))
assert listed.status_code == 200, (listed.status_code, listed.raw_response.text)
sync = listed.list_sync_200_application_json_object.data[0]
assert sync.slug == slug, sync

# The SDK formats path and query ids as floats: /syncs/1.0
got = sdk.get_sync(operations.GetSyncRequest(sync_id=float(sync.id)), operations.GetSyncSecurity(bearer_auth=token))
assert got.status_code == 200 and got.sync.id == sync.id, (got.status_code, got.raw_response.text)

triggered = sdk.trigger_run(
    operations.TriggerRunRequest(sync_id=sync.id, trigger_run_input=shared.TriggerRunInput(full_resync=True)),
    operations.TriggerRunSecurity(bearer_auth=token),
)
assert triggered.status_code == 200, (triggered.status_code, triggered.raw_response.text)
run_id = triggered.trigger_run_output.id

# Triggering by slug while the run waits answers the same run (or queues one after it).
by_slug = sdk.trigger_run_custom(shared.TriggerRunCustomInput(sync_slug=slug), operations.TriggerRunCustomSecurity(bearer_auth=token))
assert by_slug.status_code == 200, (by_slug.status_code, by_slug.raw_response.text)
by_slug_id = by_slug.trigger_run_custom_200_application_json_any_of["id"]

deadline = time.time() + 60
while True:
    runs = sdk.list_sync_runs(
        operations.ListSyncRunsRequest(sync_id=float(sync.id), run_id=float(run_id)),
        operations.ListSyncRunsSecurity(bearer_auth=token),
    )
    assert runs.status_code == 200, (runs.status_code, runs.raw_response.text)
    run = runs.list_sync_runs_200_application_json_object.data[0]
    assert run.id == run_id, run
    if run.status.value in ("success", "warning", "failed", "cancelled", "interrupted"):
        break
    if time.time() > deadline:
        break
    time.sleep(0.2)

model = sdk.get_model(operations.GetModelRequest(model_id=float(sync.model_id)), operations.GetModelSecurity(bearer_auth=token))
assert model.status_code == 200, (model.status_code, model.raw_response.text)
destination = sdk.get_destination(
    operations.GetDestinationRequest(destination_id=float(sync.destination_id)),
    operations.GetDestinationSecurity(bearer_auth=token),
)
assert destination.status_code == 200, (destination.status_code, destination.raw_response.text)
missing = sdk.get_sync(operations.GetSyncRequest(sync_id=999999.0), operations.GetSyncSecurity(bearer_auth=token))
wrong = sdk.list_sync(operations.ListSyncRequest(), operations.ListSyncSecurity(bearer_auth="wrong"))

print(json.dumps({
    "status": run.status.value,
    "error": run.error,
    "planned_added": run.planned_rows.added_count,
    "successful_added": run.successful_rows.added_count,
    "query_size": run.query_size,
    "completion_ratio": run.completion_ratio,
    "by_slug_is_this_run_or_the_next": by_slug_id == run_id or int(by_slug_id) > int(run_id),
    "model_primary_key": model.model.primary_key,
    "destination_type": destination.destination.type,
    "missing_sync_status": missing.status_code,
    "wrong_token_status": wrong.status_code,
}))
"#;
