use super::*;

/// A filter small enough for tests, large enough to leave few "maybe"s.
const TEST_FILTER: usize = 1 << 16;

fn conn() -> Connection {
    let mut conn = Connection::open_in_memory().unwrap();
    crate::storage::schema::migrate_all(&mut conn).unwrap();
    conn
}

fn id(source: &str, message_id: &str) -> Option<DedupHash> {
    Some(dedup_hash(source, message_id))
}

fn web(message_id: &str) -> Option<DedupHash> {
    id("web", message_id)
}

#[test]
fn ids_are_new_once_within_and_across_commits() {
    let conn = conn();
    let recent = RecentIds::load(&conn, TEST_FILTER).unwrap();
    let (fresh, added) = recent
        .admit(&conn, &[web("a"), web("b"), web("a"), None, None], 1)
        .unwrap();
    assert_eq!(fresh, [true, true, false, true, true]);
    assert_eq!(added.len(), 2);
    let (fresh, _) = recent.admit(&conn, &[web("b"), web("c")], 2).unwrap();
    assert_eq!(fresh, [false, true]);
    // Sources dedup apart.
    let (fresh, _) = recent.admit(&conn, &[id("app", "a")], 3).unwrap();
    assert_eq!(fresh, [true]);
}

#[test]
fn folded_ids_are_still_seen_and_leave_memory() {
    let conn = conn();
    let recent = RecentIds::load(&conn, TEST_FILTER).unwrap();
    recent.admit(&conn, &[web("a"), web("b")], 1).unwrap();
    recent.admit(&conn, &[id("app", "c")], 2).unwrap();
    let moved = fold(&conn).unwrap();
    assert_eq!(moved.len(), 3);
    recent.forget(&moved);
    assert_eq!(recent.len(), 0);
    let logged: i64 = conn
        .query_row("SELECT COUNT(*) FROM dedup_log", [], |r| r.get(0))
        .unwrap();
    assert_eq!(logged, 0);
    let mut folded = Vec::new();
    runs::for_each_live_key(&conn, |k| folded.push(k)).unwrap();
    let mut expected: Vec<DedupHash> = [web("a"), web("b"), id("app", "c")]
        .into_iter()
        .flatten()
        .collect();
    expected.sort();
    assert_eq!(folded, expected, "one run of sorted 16-byte keys");
    let span: (i64, i64) = conn
        .query_row("SELECT oldest_ms, newest_ms FROM dedup_runs", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(span, (1, 2), "the run knows when its keys were first seen");
    let (fresh, _) = recent
        .admit(&conn, &[web("a"), id("app", "c"), web("d")], 3)
        .unwrap();
    assert_eq!(fresh, [false, false, true]);
    assert_eq!(fold(&conn).unwrap().len(), 1);
    assert!(fold(&conn).unwrap().is_empty(), "nothing left to fold");
}

#[test]
fn a_fold_batch_takes_whole_log_rows_up_to_the_limit_in_key_order() {
    let conn = conn();
    let recent = RecentIds::load(&conn, TEST_FILTER).unwrap();
    let names: Vec<String> = (0..FOLD_BATCH_MAX + 10).map(|i| format!("m{i}")).collect();
    for chunk in names.chunks(1_000) {
        let ids: Vec<_> = chunk.iter().map(|m| web(m)).collect();
        recent.admit(&conn, &ids, 1).unwrap();
    }
    let first = fold_batch(&conn).unwrap().unwrap();
    assert!(first.keys.len() >= FOLD_BATCH_MAX && first.keys.len() < FOLD_BATCH_MAX + 1_000);
    assert!(first.keys.windows(2).all(|w| w[0] <= w[1]), "sorted");
    let moved = fold(&conn).unwrap();
    assert_eq!(moved.len(), first.keys.len());
    recent.forget(&moved);
    let second = fold(&conn).unwrap();
    assert_eq!(moved.len() + second.len(), names.len());
    assert!(fold_batch(&conn).unwrap().is_none());
}

#[test]
fn ids_logged_while_a_batch_folds_stay_logged() {
    let conn = conn();
    let recent = RecentIds::load(&conn, TEST_FILTER).unwrap();
    recent.admit(&conn, &[web("a")], 1).unwrap();
    let batch = fold_batch(&conn).unwrap().unwrap();
    recent.admit(&conn, &[web("b")], 2).unwrap();
    let run = runs::start_run(&conn, batch.keys.len(), batch.oldest_ms, batch.newest_ms).unwrap();
    runs::write_blocks(&conn, run, &batch.keys).unwrap();
    seal_folded(&conn, run, batch.last_log_id).unwrap();
    recent.forget(&batch.keys);
    assert_eq!(recent.len(), 1, "b is still recent");
    let again = fold_batch(&conn).unwrap().unwrap();
    assert_eq!(again.keys, [web("b").unwrap()]);
    assert_eq!((again.oldest_ms, again.newest_ms), (2, 2));
    let (fresh, _) = recent.admit(&conn, &[web("a"), web("b")], 3).unwrap();
    assert_eq!(fresh, [false, false]);
}

#[test]
fn recent_ids_are_read_back_from_the_log() {
    let conn = conn();
    let recent = RecentIds::load(&conn, TEST_FILTER).unwrap();
    recent
        .admit(&conn, &[web("a"), web("é \u{0}x")], 1)
        .unwrap();
    // A restart before the fold: the set comes back from the log.
    let reopened = RecentIds::load(&conn, TEST_FILTER).unwrap();
    assert_eq!(reopened.len(), 2);
    let (fresh, _) = reopened
        .admit(&conn, &[web("a"), web("é \u{0}x"), web("z")], 2)
        .unwrap();
    assert_eq!(fresh, [false, false, true]);
}

#[test]
fn folded_ids_are_seen_after_a_restart_with_the_filter_on_or_off() {
    for filter in [TEST_FILTER, 0] {
        let conn = conn();
        let recent = RecentIds::load(&conn, filter).unwrap();
        let ids: Vec<_> = (0..500).map(|i| web(&format!("m{i}"))).collect();
        recent.admit(&conn, &ids, 1).unwrap();
        recent.forget(&fold(&conn).unwrap());
        // A restart after the fold: the filter comes back from `dedup_keys`.
        let reopened = RecentIds::load(&conn, filter).unwrap();
        assert_eq!(reopened.len(), 0);
        let (fresh, _) = reopened.admit(&conn, &ids, 2).unwrap();
        assert!(
            fresh.iter().all(|f| !f),
            "filter {filter}: a folded id was new"
        );
        let (fresh, _) = reopened.admit(&conn, &[web("new")], 3).unwrap();
        assert_eq!(fresh, [true]);
    }
}

#[test]
fn forgotten_ids_are_new_again() {
    let conn = conn();
    let recent = RecentIds::load(&conn, TEST_FILTER).unwrap();
    let (_, added) = recent.admit(&conn, &[web("a")], 1).unwrap();
    conn.execute("DELETE FROM dedup_log", []).unwrap();
    recent.forget(&added);
    let (fresh, _) = recent.admit(&conn, &[web("a")], 2).unwrap();
    assert_eq!(fresh, [true]);
}

#[test]
fn prune_forgets_folded_ids_past_the_cutoff() {
    let conn = conn();
    let recent = RecentIds::load(&conn, TEST_FILTER).unwrap();
    recent.admit(&conn, &[web("old")], 1_000).unwrap();
    recent.admit(&conn, &[web("new")], 5_000).unwrap();
    recent.forget(&fold(&conn).unwrap());
    // Both were folded into one run: it expires once its newest key does.
    assert_eq!(runs::expire(&conn, 5_000).unwrap(), 0);
    recent.admit(&conn, &[web("newer")], 5_000).unwrap();
    assert_eq!(runs::expire(&conn, 5_001).unwrap(), 2);
    while runs::drop_some(&conn).unwrap() {}
    let (fresh, _) = recent
        .admit(&conn, &[web("old"), web("new")], 6_000)
        .unwrap();
    assert_eq!(fresh, [true, true]);
    let (fresh, _) = recent.admit(&conn, &[web("newer")], 6_000).unwrap();
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
    assert!(decode_v6_log(&[9, 0, 0, 0, b'a']).is_err());
    assert!(
        decode_v6_log(&[1, 0, 0, 0, b'a']).is_err(),
        "a source without an id"
    );
}

#[test]
fn prune_expires_whole_runs_and_deletes_their_blocks() {
    let conn = conn();
    let recent = RecentIds::load(&conn, TEST_FILTER).unwrap();
    for (i, at) in [1_000, 1_000, 9_000, 1_000].into_iter().enumerate() {
        let ids: Vec<_> = (0..300).map(|n| web(&format!("m{i}-{n}"))).collect();
        recent.admit(&conn, &ids, at).unwrap();
        recent.forget(&fold(&conn).unwrap());
    }
    assert_eq!(
        runs::expire(&conn, 2_000).unwrap(),
        900,
        "old runs around a young one"
    );
    assert_eq!(runs::expire(&conn, 2_000).unwrap(), 0);
    while runs::drop_some(&conn).unwrap() {}
    let (runs_left, blocks): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT count(*) FROM dedup_runs), (SELECT count(*) FROM dedup_blocks)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((runs_left, blocks), (1, 2), "300 keys are two blocks");
}

#[test]
fn migration_7_turns_stored_ids_into_keys() {
    let mut conn = Connection::open_in_memory().unwrap();
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

    let recent = RecentIds::load(&conn, TEST_FILTER).unwrap();
    assert_eq!(recent.len(), 2, "logged ids come back as keys");
    let (fresh, _) = recent
        .admit(
            &conn,
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
    let moved = fold(&conn).unwrap();
    assert_eq!(moved.len(), 3);
}

#[test]
fn folded_ids_are_found_in_chunks_and_across_sources() {
    let conn = conn();
    let recent = RecentIds::load(&conn, TEST_FILTER).unwrap();
    let names: Vec<String> = (0..70).map(|i| format!("m{i}")).collect();
    let mut ids: Vec<_> = names.iter().map(|m| web(m)).collect();
    ids.push(id("app", "m1"));
    recent.admit(&conn, &ids, 1).unwrap();
    recent.forget(&fold(&conn).unwrap());
    assert_eq!(recent.len(), 0);
    // Mixed sources, more ids than one statement takes, one new id.
    ids.insert(3, id("app", "m3"));
    ids.push(id("app", "m1"));
    let (fresh, added) = recent.admit(&conn, &ids, 2).unwrap();
    assert_eq!(added.len(), 1);
    assert_eq!(fresh.iter().position(|f| *f), Some(3));
}

#[test]
fn migration_8_turns_folded_keys_into_one_run() {
    let mut conn = Connection::open_in_memory().unwrap();
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
            "SELECT keys, oldest_ms, newest_ms FROM dedup_runs WHERE state = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(span, (3, 3, 9));
    let recent = RecentIds::load(&conn, TEST_FILTER).unwrap();
    let (fresh, _) = recent
        .admit(&conn, &[web("m0"), web("m1"), web("m2"), web("m3")], 10)
        .unwrap();
    assert_eq!(fresh, [false, false, false, true]);
}
