use super::*;
use crate::storage::dedup::dedup_hash;

/// A migrated database and its runs folder, in a new folder.
fn store() -> (Connection, PathBuf) {
    let dir = std::env::temp_dir().join(format!("waymark-runs-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut conn = Connection::open(dir.join("waymark.db")).unwrap();
    crate::storage::schema::migrate_all(&mut conn).unwrap();
    (conn, dir.join(RUNS_DIR))
}

fn keys(prefix: &str, n: usize) -> Vec<DedupHash> {
    let mut k: Vec<DedupHash> = (0..n)
        .map(|i| dedup_hash("web", &format!("{prefix}{i}")))
        .collect();
    k.sort_unstable();
    k
}

/// A live run of `keys` (sorted) first seen at `at_ms`.
fn live_run(conn: &Connection, runs: &Runs, keys: &[DedupHash], at_ms: i64) -> RunInfo {
    let new = runs.write(keys.iter().copied(), at_ms, at_ms).unwrap();
    record(conn, &new).unwrap();
    let info = new.info();
    runs.publish(new, &[]);
    info
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn keys_are_found_in_any_live_run_and_not_in_an_unpublished_one() {
    let (conn, dir) = store();
    let runs = Runs::open(&conn, &dir, |_| {}).unwrap();
    let (a, b, c) = (keys("a", 1_000), keys("b", 10), keys("c", 5));
    live_run(&conn, &runs, &a, 1);
    live_run(&conn, &runs, &b, 2);
    let unpublished = runs.write(c.iter().copied(), 3, 3).unwrap();
    // Page edges: the last key of a page, the first of the next, the last.
    let probe = [
        a[0],
        a[255],
        a[256],
        a[511],
        a[999],
        b[3],
        c[0],
        7,
        u128::MAX,
    ];
    let mut found: Vec<DedupHash> = runs.folded_among(&probe).unwrap().into_iter().collect();
    found.sort_unstable();
    let mut expected = vec![a[0], a[255], a[256], a[511], a[999], b[3]];
    expected.sort_unstable();
    assert_eq!(found, expected);
    runs.discard(unpublished);
    assert_eq!(files(&dir).len(), 2);
}

#[test]
fn four_runs_of_a_size_merge_into_one_with_every_key_once() {
    let (conn, dir) = store();
    let runs = Runs::open(&conn, &dir, |_| {}).unwrap();
    let mut all = Vec::new();
    for i in 0..4 {
        let mut k = keys(&format!("r{i}-"), 700);
        if i == 3 {
            // A key folded twice (a crash between a fold and its log
            // delete) is in two runs; the merge keeps it once.
            k[0] = all[5];
            k.sort_unstable();
        }
        all.extend_from_slice(&k);
        live_run(&conn, &runs, &k, 10 + i);
    }
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 2_799);
    let inputs = runs.plan_merge(1_000).expect("four runs of a class");
    assert_eq!(inputs.len(), 4);
    let new = runs.merge(&inputs).unwrap().unwrap();
    assert_eq!(
        (new.info().keys, new.info().oldest_ms, new.info().newest_ms),
        (2_799, 10, 13)
    );
    assert!(record_merge(&conn, &inputs, &new).unwrap());
    let output = new.info().run;
    runs.publish(new, &inputs.iter().map(|r| r.run).collect::<Vec<_>>());
    assert_eq!(
        runs.infos().iter().map(|r| r.run).collect::<Vec<_>>(),
        [output]
    );
    assert_eq!(
        files(&dir),
        [format!("run-{output}.keys")],
        "the inputs' files go"
    );
    assert_eq!(runs.folded_among(&all).unwrap().len(), all.len());
    // Reopened, the output is the one run, sorted, each key once.
    let mut merged = Vec::new();
    let reopened = Runs::open(&conn, &dir, |k| merged.push(k)).unwrap();
    assert_eq!(merged, all);
    live_run(&conn, &reopened, &keys("small", 3), 20);
    assert!(
        reopened.plan_merge(1_000).is_none(),
        "runs of different classes"
    );
}

#[test]
fn the_planner_takes_one_class_and_keeps_a_merge_within_the_span() {
    let run = |run, keys, at| RunInfo {
        run,
        keys,
        oldest_ms: at,
        newest_ms: at,
    };
    let runs = [
        run(1, 100, 0),
        run(2, 5_000, 1),
        run(3, 120, 2),
        run(4, 90, 3),
        run(5, 110, 50),
    ];
    assert_eq!(
        plan(&runs, 100).map(|p| p.iter().map(|r| r.run).collect::<Vec<_>>()),
        Some(vec![1, 3, 4, 5])
    );
    assert_eq!(plan(&runs, 49), None, "four small ones span 50 ms");
    assert_eq!(class(1), 0);
    assert_eq!(class(4), 1);
    assert_eq!(class(65_536), 8);
}

#[test]
fn a_merge_whose_input_expired_is_not_swapped_in() {
    let (conn, dir) = store();
    let runs = Runs::open(&conn, &dir, |_| {}).unwrap();
    for i in 0..4 {
        live_run(&conn, &runs, &keys(&format!("r{i}-"), 50), 10 + i);
    }
    let inputs = runs.plan_merge(1_000).unwrap();
    let new = runs.merge(&inputs).unwrap().unwrap();
    let (expired, held) = expire(&conn, 11).unwrap();
    assert_eq!(held, 50, "the first run expired");
    runs.retire(&expired);
    assert!(!record_merge(&conn, &inputs, &new).unwrap());
    runs.discard(new);
    assert_eq!(runs.infos().len(), 3, "the three inputs left stay");
    assert_eq!(
        files(&dir).len(),
        3,
        "the output and the expired run are deleted"
    );
    assert!(runs.folded_among(&keys("r0-", 50)).unwrap().is_empty());
    assert!(runs.merge(&inputs).unwrap().is_none(), "an input is gone");
}

#[test]
fn files_no_row_lists_are_deleted_at_open_and_a_damaged_run_is_dropped() {
    let (conn, dir) = store();
    let runs = Runs::open(&conn, &dir, |_| {}).unwrap();
    let kept = live_run(&conn, &runs, &keys("k", 300), 1);
    let damaged = live_run(&conn, &runs, &keys("d", 300), 2);
    // A crash after writing a file, before its row committed.
    let orphan = runs.write(keys("o", 10), 3, 3).unwrap();
    let orphan_run = orphan.info().run;
    drop(runs);
    let path = file::run_path(&dir, damaged.run);
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    let reopened = Runs::open(&conn, &dir, |_| {}).unwrap();
    assert_eq!(reopened.infos(), [kept]);
    assert_eq!(files(&dir), [format!("run-{}.keys", kept.run)]);
    let listed: i64 = conn
        .query_row("SELECT count(*) FROM dedup_run_files", [], |r| r.get(0))
        .unwrap();
    assert_eq!(listed, 1, "the damaged run's row is deleted");
    // Numbers are never reused, not even an orphan's.
    let next = live_run(&conn, &reopened, &keys("n", 1), 4);
    assert!(next.run > orphan_run);
}

#[test]
fn a_damaged_file_is_an_error_not_a_panic() {
    let dir = std::env::temp_dir().join(format!("waymark-runs-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    for bytes in [&b""[..], &[0; 16], &[7; 40]] {
        let path = dir.join("run-1.keys");
        std::fs::write(&path, bytes).unwrap();
        assert!(file::RunFile::open(path, |_| {}).is_err());
    }
    // Keys out of order.
    let path = dir.join("run-2.keys");
    let mut bytes = Vec::new();
    bytes.extend(5u128.to_be_bytes());
    bytes.extend(3u128.to_be_bytes());
    bytes.extend(2u64.to_le_bytes());
    bytes.extend(b"WMDEDUP1");
    std::fs::write(&path, &bytes).unwrap();
    assert!(file::RunFile::open(path, |_| {}).is_err());
}
