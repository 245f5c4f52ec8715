//! Sync runs end to end (issue 18 §7) with the real `waymark` binary: a
//! 10 000-row model on a throwaway PostgreSQL warehouse and on a SQLite
//! one, diffed after 1% changed, 0.5% added and 0.3% deleted, for each
//! mode (`waymark sync run`); and a worker killed with SIGKILL in the
//! middle of a scheduled run.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use waymark_tests::fakes::{webhook, Mode};
use waymark_tests::pg::test_database;
use waymark_tests::{temp_dir, waymark_bin, Worker};

const ROWS: i64 = 10_000;
/// 1% changed, 0.5% added, 0.3% deleted.
const CHANGED: std::ops::RangeInclusive<i64> = 1..=100;
const ADDED: std::ops::RangeInclusive<i64> = 10_001..=10_050;
const DELETED: std::ops::RangeInclusive<i64> = 9_971..=10_000;

const MODES: [&str; 4] = ["upsert", "insert", "update", "mirror"];

fn config(warehouse: &str) -> String {
    let mut text = format!(
        r#"[identity]
keys = [{{ id = "k1", secret = "0123456789abcdef0123456789abcdef" }}]
[[sources]]
name = "web"
write_key = "wk_test"
{warehouse}
[[models]]
name = "users"
warehouse = "crm"
query = "select id, email, plan from crm_users"
primary_key = "id"
"#
    );
    for mode in MODES {
        text.push_str(&format!(
            r#"[[destinations]]
name = "{mode}-file"
type = "file"
path = "{mode}.ndjson"
[[syncs]]
name = "users-{mode}"
model = "users"
destination = "{mode}-file"
call = "identify"
mode = "{mode}"
mapping = {{ userId = "id", "traits.email" = "email", "traits.plan" = "plan" }}
"#
        ));
    }
    text
}

/// Runs `waymark sync run NAME` to its end; returns the run it prints.
fn sync_run(config: &Path, data: &Path, name: &str, env: &[(&str, &str)]) -> Value {
    let out = Command::new(waymark_bin())
        .args(["sync", "run", name, "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .envs(env.iter().copied())
        .output()
        .expect("waymark runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "sync run {name} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).expect("the run is printed as JSON")
}

fn counts(run: &Value, field: &str) -> (u64, u64, u64) {
    let c = &run[field];
    let n = |k: &str| c[k].as_u64().unwrap_or(u64::MAX);
    (n("addedCount"), n("changedCount"), n("removedCount"))
}

/// The file destination's events, by change: (added, changed, removed) keys.
fn sent(data: &Path, mode: &str) -> Vec<Value> {
    std::fs::read_to_string(data.join(format!("{mode}.ndjson")))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON lines"))
        .collect()
}

fn keys(events: &[Value], change: &str) -> BTreeSet<i64> {
    events
        .iter()
        .filter(|e| e["context"]["waymark"]["sync"]["change"] == change)
        .map(|e| {
            e["context"]["waymark"]["sync"]["key"]
                .as_str()
                .and_then(|k| k.parse().ok())
                .expect("the mark names the key")
        })
        .collect()
}

/// Drives every mode through the first run and the diffed one; `edit`
/// applies the 1% / 0.5% / 0.3% change to the warehouse.
fn modes_match_the_diff(config: &str, env: &[(&str, &str)], edit: impl FnOnce()) {
    let data = temp_dir("syncs-modes");
    let config_path = data.join("waymark.toml");
    std::fs::write(&config_path, config).unwrap();
    let all: BTreeSet<i64> = (1..=ROWS).collect();
    let none = BTreeSet::new();
    for mode in MODES {
        let run = sync_run(&config_path, &data, &format!("users-{mode}"), env);
        assert_eq!(run["status"], "success", "{mode}: {run}");
        assert_eq!(run["querySize"], ROWS, "{mode}");
        let events = sent(&data, mode);
        if mode == "update" {
            // `update` sends only changes: the first sight of a key is recorded, not sent.
            assert_eq!(counts(&run, "plannedRows"), (0, 0, 0), "{mode}");
            assert!(events.is_empty(), "{mode}");
        } else {
            assert_eq!(counts(&run, "plannedRows"), (ROWS as u64, 0, 0), "{mode}");
            assert_eq!(
                counts(&run, "successfulRows"),
                (ROWS as u64, 0, 0),
                "{mode}"
            );
            assert_eq!(keys(&events, "added"), all, "{mode}");
            assert_eq!(events.len() as i64, ROWS, "{mode}: every row once");
        }
    }
    edit();
    let changed: BTreeSet<i64> = CHANGED.collect();
    let added: BTreeSet<i64> = ADDED.collect();
    let deleted: BTreeSet<i64> = DELETED.collect();
    for mode in MODES {
        let before = sent(&data, mode).len();
        let run = sync_run(&config_path, &data, &format!("users-{mode}"), env);
        assert_eq!(run["status"], "success", "{mode}: {run}");
        assert_eq!(run["querySize"], ROWS + 50 - 30, "{mode}");
        let events = sent(&data, mode).split_off(before);
        let expected = match mode {
            "upsert" => (&added, &changed, &none),
            "insert" => (&added, &none, &none),
            "update" => (&none, &changed, &none),
            _ => (&added, &changed, &deleted),
        };
        let planned = (
            expected.0.len() as u64,
            expected.1.len() as u64,
            expected.2.len() as u64,
        );
        assert_eq!(counts(&run, "plannedRows"), planned, "{mode}");
        assert_eq!(counts(&run, "successfulRows"), planned, "{mode}");
        assert_eq!(&keys(&events, "added"), expected.0, "{mode}: added");
        assert_eq!(&keys(&events, "changed"), expected.1, "{mode}: changed");
        assert_eq!(&keys(&events, "removed"), expected.2, "{mode}: removed");
        assert_eq!(
            events.len() as u64,
            planned.0 + planned.1 + planned.2,
            "{mode}: nothing else was sent"
        );
        for e in events
            .iter()
            .filter(|e| e["context"]["waymark"]["sync"]["change"] == "changed")
        {
            assert_eq!(e["traits"]["plan"], "pro", "{mode}: the new value is sent");
        }
    }
}

#[test]
fn each_mode_sends_exactly_the_diff_from_postgres() {
    let db = test_database("syncs_modes").expect("a throwaway PostgreSQL database");
    db.psql(&format!(
        "CREATE TABLE crm_users (id bigint PRIMARY KEY, email text, plan text);
         INSERT INTO crm_users SELECT i, 'u' || i || '@example.com', 'free' FROM generate_series(1, {ROWS}) i;"
    ))
    .expect("the warehouse table is made");
    let warehouse = "[[warehouses]]\nname = \"crm\"\ntype = \"postgres\"\nurl_env = \"CRM_PG_URL\"";
    let env = [("CRM_PG_URL", db.url())];
    modes_match_the_diff(&config(warehouse), &env, || {
        db.psql(&format!(
            "UPDATE crm_users SET plan = 'pro' WHERE id BETWEEN {} AND {};
             INSERT INTO crm_users SELECT i, 'u' || i || '@example.com', 'free' FROM generate_series({}, {}) i;
             DELETE FROM crm_users WHERE id BETWEEN {} AND {};",
            CHANGED.start(),
            CHANGED.end(),
            ADDED.start(),
            ADDED.end(),
            DELETED.start(),
            DELETED.end()
        ))
        .expect("the warehouse changes");
    });
}

/// A SQLite warehouse whose `crm_users` has rows 1 to `rows`, all `free`.
fn sqlite_crm(label: &str, rows: i64) -> (std::path::PathBuf, rusqlite::Connection) {
    let crm = temp_dir(label).join("crm.db");
    let conn = rusqlite::Connection::open(&crm).unwrap();
    conn.execute_batch(&format!(
        "CREATE TABLE crm_users (id INTEGER PRIMARY KEY, email TEXT, plan TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
         INSERT INTO crm_users SELECT i, 'u' || i || '@example.com', 'free' FROM n;"
    ))
    .unwrap();
    (crm, conn)
}

#[test]
fn each_mode_sends_exactly_the_diff_from_sqlite() {
    let (crm, conn) = sqlite_crm("syncs-crm", ROWS);
    let warehouse = format!(
        "[[warehouses]]\nname = \"crm\"\ntype = \"sqlite\"\npath = \"{}\"",
        crm.display()
    );
    modes_match_the_diff(&config(&warehouse), &[], || {
        conn.execute_batch(&format!(
            "UPDATE crm_users SET plan = 'pro' WHERE id BETWEEN {} AND {};
             WITH RECURSIVE n(i) AS (SELECT {} UNION ALL SELECT i + 1 FROM n WHERE i < {})
             INSERT INTO crm_users SELECT i, 'u' || i || '@example.com', 'free' FROM n;
             DELETE FROM crm_users WHERE id BETWEEN {} AND {};",
            CHANGED.start(),
            CHANGED.end(),
            ADDED.start(),
            ADDED.end(),
            DELETED.start(),
            DELETED.end()
        ))
        .unwrap();
    });
}

/// The keys the store has marked synced for the only sync.
fn synced_keys(worker: &Worker) -> HashSet<String> {
    let db = worker.db();
    let mut stmt = db
        .prepare("SELECT key FROM sync_state WHERE status = 0")
        .unwrap();
    let keys = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    keys
}

fn runs(worker: &Worker) -> Vec<(i64, String)> {
    let db = worker.db();
    let mut stmt = db
        .prepare("SELECT id, status FROM sync_runs ORDER BY id")
        .unwrap();
    let runs = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    runs
}

fn received_keys(hook: &waymark_tests::fakes::Fake) -> HashSet<String> {
    hook.events()
        .iter()
        .filter_map(|e| {
            e["context"]["waymark"]["sync"]["key"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

#[test]
fn a_run_cut_by_sigkill_is_interrupted_and_the_next_sends_what_was_missed() {
    const N: i64 = 3_000;
    let (crm, _) = sqlite_crm("syncs-kill", N);
    let hook = webhook::start("whsec");
    // Slow enough that the kill lands mid-run.
    hook.set_mode(Mode::Sleep(Duration::from_millis(30)));
    let config = format!(
        r#"[identity]
keys = [{{ id = "k1", secret = "0123456789abcdef0123456789abcdef" }}]
[[sources]]
name = "web"
write_key = "wk_test"
[[destinations]]
name = "hook"
type = "webhook"
url = "{}/hook"
secret = "whsec"
max_batch = 20
[[warehouses]]
name = "crm"
type = "sqlite"
path = "{}"
[[models]]
name = "users"
warehouse = "crm"
query = "select id, email, plan from crm_users"
primary_key = "id"
[[syncs]]
name = "users-hook"
model = "users"
destination = "hook"
call = "identify"
mapping = {{ userId = "id", "traits.email" = "email" }}
schedule = {{ every_secs = 2 }}
"#,
        hook.base,
        crm.display()
    );
    let mut worker = Worker::start(&config);
    let deadline = Instant::now() + Duration::from_secs(60);
    while received_keys(&hook).len() < 500 {
        assert!(Instant::now() < deadline, "the scheduled run did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    worker.kill();
    // Nothing is marked synced that the destination never got.
    let synced = synced_keys(&worker);
    let received = received_keys(&hook);
    assert!(
        !synced.is_empty() && synced.len() < N as usize,
        "{}",
        synced.len()
    );
    let phantom: Vec<_> = synced.difference(&received).take(5).collect();
    assert!(
        phantom.is_empty(),
        "marked synced but never received: {phantom:?}"
    );
    let killed = runs(&worker);
    assert_eq!(killed.len(), 1, "{killed:?}");
    assert!(
        ["processing", "reporting"].contains(&killed[0].1.as_str()),
        "{killed:?}"
    );

    hook.set_mode(Mode::Normal);
    let data = worker.data_dir.clone();
    let worker = Worker::start_in(&config, data);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let runs = runs(&worker);
        let done = synced_keys(&worker).len() == N as usize
            && runs.iter().skip(1).any(|(_, s)| s == "success");
        if done {
            assert_eq!(runs[0].1, "interrupted", "{runs:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the next runs did not finish the sync: {runs:?}, {} synced\n{}",
            synced_keys(&worker).len(),
            worker.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let received = received_keys(&hook);
    assert_eq!(
        received.len(),
        N as usize,
        "every row reached the destination"
    );
}
