use super::*;

/// A filter small enough for tests, large enough to leave few "maybe"s.
const TEST_FILTER: usize = 1 << 16;

/// A store's folder: the database file, and the runs beside it.
fn scratch() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("waymark-dedup-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn db(dir: &std::path::Path) -> Connection {
    Connection::open(dir.join("waymark.db")).unwrap()
}

/// A migrated database in a new folder.
fn conn() -> (Connection, std::path::PathBuf) {
    let dir = scratch();
    let mut conn = db(&dir);
    crate::storage::schema::migrate_all(&mut conn).unwrap();
    (conn, dir)
}

/// Expires runs before `cutoff_ms` and retires them, as the store does
/// once the job commits; the keys they held.
fn expire(conn: &Connection, runs: &Runs, cutoff_ms: i64) -> u64 {
    let (gone, keys) = runs::expire(conn, cutoff_ms).unwrap();
    runs.retire(&gone);
    keys
}

/// Dedup's state over `conn`, as at open.
fn load(conn: &Connection, dir: &std::path::Path, filter: usize) -> (RecentIds, Runs) {
    open(conn, &dir.join(runs::RUNS_DIR), filter).unwrap()
}

fn id(source: &str, message_id: &str) -> Option<DedupHash> {
    Some(dedup_hash(source, message_id))
}

fn web(message_id: &str) -> Option<DedupHash> {
    id("web", message_id)
}

#[test]
fn ids_are_new_once_within_and_across_commits() {
    let (conn, dir) = conn();
    let (recent, runs) = load(&conn, &dir, TEST_FILTER);
    let (fresh, added) = recent
        .admit(&conn, &runs, &[web("a"), web("b"), web("a"), None, None], 1)
        .unwrap();
    assert_eq!(fresh, [true, true, false, true, true]);
    assert_eq!(added.len(), 2);
    let (fresh, _) = recent
        .admit(&conn, &runs, &[web("b"), web("c")], 2)
        .unwrap();
    assert_eq!(fresh, [false, true]);
    // Sources dedup apart.
    let (fresh, _) = recent.admit(&conn, &runs, &[id("app", "a")], 3).unwrap();
    assert_eq!(fresh, [true]);
}

#[test]
fn folded_ids_are_still_seen_and_leave_memory() {
    let (conn, dir) = conn();
    let (recent, runs) = load(&conn, &dir, TEST_FILTER);
    recent
        .admit(&conn, &runs, &[web("a"), web("b")], 1)
        .unwrap();
    recent.admit(&conn, &runs, &[id("app", "c")], 2).unwrap();
    let moved = fold(&conn, &runs).unwrap();
    assert_eq!(moved.len(), 3);
    recent.forget(&moved);
    assert_eq!(recent.len(), 0);
    let logged: i64 = conn
        .query_row("SELECT COUNT(*) FROM dedup_log", [], |r| r.get(0))
        .unwrap();
    assert_eq!(logged, 0);
    let mut folded = Vec::new();
    Runs::open(&conn, &dir.join(runs::RUNS_DIR), |k| folded.push(k)).unwrap();
    let mut expected: Vec<DedupHash> = [web("a"), web("b"), id("app", "c")]
        .into_iter()
        .flatten()
        .collect();
    expected.sort();
    assert_eq!(folded, expected, "one run of sorted 16-byte keys");
    let span: (i64, i64) = conn
        .query_row(
            "SELECT oldest_ms, newest_ms FROM dedup_run_files",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(span, (1, 2), "the run knows when its keys were first seen");
    let (fresh, _) = recent
        .admit(&conn, &runs, &[web("a"), id("app", "c"), web("d")], 3)
        .unwrap();
    assert_eq!(fresh, [false, false, true]);
    assert_eq!(fold(&conn, &runs).unwrap().len(), 1);
    assert!(
        fold(&conn, &runs).unwrap().is_empty(),
        "nothing left to fold"
    );
}

#[test]
fn a_fold_batch_takes_whole_log_rows_up_to_the_limit_in_key_order() {
    let (conn, dir) = conn();
    let (recent, runs) = load(&conn, &dir, TEST_FILTER);
    let names: Vec<String> = (0..FOLD_BATCH_MAX + 10).map(|i| format!("m{i}")).collect();
    for chunk in names.chunks(1_000) {
        let ids: Vec<_> = chunk.iter().map(|m| web(m)).collect();
        recent.admit(&conn, &runs, &ids, 1).unwrap();
    }
    let first = fold_batch(&conn).unwrap().unwrap();
    assert!(first.keys.len() >= FOLD_BATCH_MAX && first.keys.len() < FOLD_BATCH_MAX + 1_000);
    assert!(first.keys.windows(2).all(|w| w[0] <= w[1]), "sorted");
    let moved = fold(&conn, &runs).unwrap();
    assert_eq!(moved.len(), first.keys.len());
    recent.forget(&moved);
    let second = fold(&conn, &runs).unwrap();
    assert_eq!(moved.len() + second.len(), names.len());
    assert!(fold_batch(&conn).unwrap().is_none());
}

#[test]
fn ids_logged_while_a_batch_folds_stay_logged() {
    let (conn, dir) = conn();
    let (recent, runs) = load(&conn, &dir, TEST_FILTER);
    recent.admit(&conn, &runs, &[web("a")], 1).unwrap();
    let batch = fold_batch(&conn).unwrap().unwrap();
    recent.admit(&conn, &runs, &[web("b")], 2).unwrap();
    let run = runs
        .write(batch.keys.iter().copied(), batch.oldest_ms, batch.newest_ms)
        .unwrap();
    seal_folded(&conn, &run, batch.last_log_id).unwrap();
    runs.publish(run, &[]);
    recent.forget(&batch.keys);
    assert_eq!(recent.len(), 1, "b is still recent");
    let again = fold_batch(&conn).unwrap().unwrap();
    assert_eq!(again.keys, [web("b").unwrap()]);
    assert_eq!((again.oldest_ms, again.newest_ms), (2, 2));
    let (fresh, _) = recent
        .admit(&conn, &runs, &[web("a"), web("b")], 3)
        .unwrap();
    assert_eq!(fresh, [false, false]);
}

#[test]
fn recent_ids_are_read_back_from_the_log() {
    let (conn, dir) = conn();
    let (recent, runs) = load(&conn, &dir, TEST_FILTER);
    recent
        .admit(&conn, &runs, &[web("a"), web("é \u{0}x")], 1)
        .unwrap();
    // A restart before the fold: the set comes back from the log.
    let (reopened, runs) = load(&conn, &dir, TEST_FILTER);
    assert_eq!(reopened.len(), 2);
    let (fresh, _) = reopened
        .admit(&conn, &runs, &[web("a"), web("é \u{0}x"), web("z")], 2)
        .unwrap();
    assert_eq!(fresh, [false, false, true]);
}

#[test]
fn folded_ids_are_seen_after_a_restart_with_the_filter_on_or_off() {
    for filter in [TEST_FILTER, 0] {
        let (conn, dir) = conn();
        let (recent, runs) = load(&conn, &dir, filter);
        let ids: Vec<_> = (0..500).map(|i| web(&format!("m{i}"))).collect();
        recent.admit(&conn, &runs, &ids, 1).unwrap();
        recent.forget(&fold(&conn, &runs).unwrap());
        // A restart after the fold: the filter comes back from the runs.
        let (reopened, runs) = load(&conn, &dir, filter);
        assert_eq!(reopened.len(), 0);
        let (fresh, _) = reopened.admit(&conn, &runs, &ids, 2).unwrap();
        assert!(
            fresh.iter().all(|f| !f),
            "filter {filter}: a folded id was new"
        );
        let (fresh, _) = reopened.admit(&conn, &runs, &[web("new")], 3).unwrap();
        assert_eq!(fresh, [true]);
    }
}

#[test]
fn forgotten_ids_are_new_again() {
    let (conn, dir) = conn();
    let (recent, runs) = load(&conn, &dir, TEST_FILTER);
    let (_, added) = recent.admit(&conn, &runs, &[web("a")], 1).unwrap();
    conn.execute("DELETE FROM dedup_log", []).unwrap();
    recent.forget(&added);
    let (fresh, _) = recent.admit(&conn, &runs, &[web("a")], 2).unwrap();
    assert_eq!(fresh, [true]);
}

#[test]
fn prune_forgets_folded_ids_past_the_cutoff() {
    let (conn, dir) = conn();
    let (recent, runs) = load(&conn, &dir, TEST_FILTER);
    recent.admit(&conn, &runs, &[web("old")], 1_000).unwrap();
    recent.admit(&conn, &runs, &[web("new")], 5_000).unwrap();
    recent.forget(&fold(&conn, &runs).unwrap());
    // Both were folded into one run: it expires once its newest key does.
    assert_eq!(expire(&conn, &runs, 5_000), 0);
    recent.admit(&conn, &runs, &[web("newer")], 5_000).unwrap();
    assert_eq!(expire(&conn, &runs, 5_001), 2);
    let (fresh, _) = recent
        .admit(&conn, &runs, &[web("old"), web("new")], 6_000)
        .unwrap();
    assert_eq!(fresh, [true, true]);
    let (fresh, _) = recent.admit(&conn, &runs, &[web("newer")], 6_000).unwrap();
    assert_eq!(fresh, [false], "a logged id is not pruned");
}

#[test]
fn a_damaged_log_row_is_an_error_not_a_panic() {
    assert!(decode_keys(&[0; 17]).is_err());
    let key = web("m1").unwrap();
    assert_eq!(
        decode_keys(&encode_keys(&[key]))
            .unwrap()
            .collect::<Vec<_>>(),
        [key]
    );
    assert!(migrate::decode_v6_log(&[9, 0, 0, 0, b'a']).is_err());
    assert!(
        migrate::decode_v6_log(&[1, 0, 0, 0, b'a']).is_err(),
        "a source without an id"
    );
}

#[test]
fn prune_expires_whole_runs_and_deletes_their_files() {
    let (conn, dir) = conn();
    let (recent, runs) = load(&conn, &dir, TEST_FILTER);
    for (i, at) in [1_000, 1_000, 9_000, 1_000].into_iter().enumerate() {
        let ids: Vec<_> = (0..300).map(|n| web(&format!("m{i}-{n}"))).collect();
        recent.admit(&conn, &runs, &ids, at).unwrap();
        recent.forget(&fold(&conn, &runs).unwrap());
    }
    assert_eq!(
        expire(&conn, &runs, 2_000),
        900,
        "old runs around a young one"
    );
    assert_eq!(expire(&conn, &runs, 2_000), 0);
    let listed: i64 = conn
        .query_row("SELECT count(*) FROM dedup_run_files", [], |r| r.get(0))
        .unwrap();
    let files = std::fs::read_dir(dir.join(runs::RUNS_DIR)).unwrap().count();
    assert_eq!(
        (listed, files, runs.infos().len()),
        (1, 1, 1),
        "the young run is left"
    );
}

#[test]
fn migration_7_turns_stored_ids_into_keys() {
    let dir = scratch();
    let mut conn = db(&dir);
    for sql in &crate::storage::schema::MIGRATIONS[..6] {
        conn.execute_batch(sql).unwrap();
    }
    conn.pragma_update(None, "user_version", 6).unwrap();
    conn.execute(
        "INSERT INTO dedup (source, message_id, seen_at_ms) VALUES ('web', 'folded', 7)",
        [],
    )
    .unwrap();
    let mut v6_log = Vec::new();
    for part in ["app", "logged", "web", "é \u{0}x"] {
        v6_log.extend_from_slice(&(part.len() as u32).to_le_bytes());
        v6_log.extend_from_slice(part.as_bytes());
    }
    conn.execute(
        "INSERT INTO dedup_log (seen_at_ms, ids) VALUES (8, ?1)",
        [v6_log],
    )
    .unwrap();
    crate::storage::schema::migrate_all(&mut conn).unwrap();

    let (recent, runs) = load(&conn, &dir, TEST_FILTER);
    assert_eq!(recent.len(), 2, "logged ids come back as keys");
    let (fresh, _) = recent
        .admit(
            &conn,
            &runs,
            &[
                web("folded"),
                id("app", "logged"),
                web("é \u{0}x"),
                web("new"),
            ],
            9,
        )
        .unwrap();
    assert_eq!(fresh, [false, false, false, true]);
    let moved = fold(&conn, &runs).unwrap();
    assert_eq!(moved.len(), 3);
}

#[test]
fn folded_ids_are_found_in_chunks_and_across_sources() {
    let (conn, dir) = conn();
    let (recent, runs) = load(&conn, &dir, TEST_FILTER);
    let names: Vec<String> = (0..70).map(|i| format!("m{i}")).collect();
    let mut ids: Vec<_> = names.iter().map(|m| web(m)).collect();
    ids.push(id("app", "m1"));
    recent.admit(&conn, &runs, &ids, 1).unwrap();
    recent.forget(&fold(&conn, &runs).unwrap());
    assert_eq!(recent.len(), 0);
    // Mixed sources, more ids than one statement takes, one new id.
    ids.insert(3, id("app", "m3"));
    ids.push(id("app", "m1"));
    let (fresh, added) = recent.admit(&conn, &runs, &ids, 2).unwrap();
    assert_eq!(added.len(), 1);
    assert_eq!(fresh.iter().position(|f| *f), Some(3));
}

#[test]
fn migrations_8_and_9_turn_folded_keys_into_one_run_file() {
    let dir = scratch();
    let mut conn = db(&dir);
    register_migration_functions(&conn).unwrap();
    for sql in &crate::storage::schema::MIGRATIONS[..7] {
        conn.execute_batch(sql).unwrap();
    }
    conn.pragma_update(None, "user_version", 7).unwrap();
    for (i, at) in [(0, 5), (1, 3), (2, 9)] {
        conn.execute(
            "INSERT INTO dedup_keys (key, seen_at_ms) VALUES (?1, ?2)",
            rusqlite::params![web(&format!("m{i}")).unwrap().to_be_bytes(), at],
        )
        .unwrap();
    }
    crate::storage::schema::migrate_all(&mut conn).unwrap();
    let span: (i64, i64, i64) = conn
        .query_row(
            "SELECT keys, oldest_ms, newest_ms FROM dedup_run_files",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(span, (3, 3, 9));
    let (recent, runs) = load(&conn, &dir, TEST_FILTER);
    let (fresh, _) = recent
        .admit(
            &conn,
            &runs,
            &[web("m0"), web("m1"), web("m2"), web("m3")],
            10,
        )
        .unwrap();
    assert_eq!(fresh, [false, false, false, true]);
}

#[test]
fn migration_9_writes_each_live_run_of_blocks_to_a_file() {
    let dir = scratch();
    let mut conn = db(&dir);
    register_migration_functions(&conn).unwrap();
    for sql in &crate::storage::schema::MIGRATIONS[..8] {
        conn.execute_batch(sql).unwrap();
    }
    conn.pragma_update(None, "user_version", 8).unwrap();
    // Two live runs over several blocks each, and one dropping.
    let mut all = Vec::new();
    for (run, state, n) in [(1, 1, 500), (2, 1, 241), (3, 2, 10)] {
        let mut keys: Vec<DedupHash> = (0..n)
            .map(|i| web(&format!("r{run}-{i}")).unwrap())
            .collect();
        keys.sort_unstable();
        conn.execute(
            "INSERT INTO dedup_runs (run, state, keys, oldest_ms, newest_ms) VALUES (?1, ?2, ?3, ?1, ?1)",
            rusqlite::params![run, state, n],
        )
        .unwrap();
        for block in keys.chunks(240) {
            conn.execute(
                "INSERT INTO dedup_blocks (run, first_key, keys) VALUES (?1, ?2, ?3)",
                rusqlite::params![run, block[0].to_be_bytes(), encode_keys(block)],
            )
            .unwrap();
        }
        if state == 1 {
            all.extend(keys);
        }
    }
    crate::storage::schema::migrate_all(&mut conn).unwrap();
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name IN ('dedup_runs', 'dedup_blocks')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 0, "the block tables are gone");
    let mut seen = Vec::new();
    let reopened = Runs::open(&conn, &dir.join(runs::RUNS_DIR), |k| seen.push(k)).unwrap();
    let mut infos = reopened.infos();
    infos.sort_by_key(|r| r.run);
    assert_eq!(
        infos.iter().map(|r| (r.run, r.keys)).collect::<Vec<_>>(),
        [(1, 500), (2, 241)]
    );
    seen.sort_unstable();
    all.sort_unstable();
    assert_eq!(seen, all);
    assert_eq!(reopened.folded_among(&all).unwrap().len(), all.len());
}
