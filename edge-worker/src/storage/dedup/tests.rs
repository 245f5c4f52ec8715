use super::*;

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
    let recent = RecentIds::load(&conn).unwrap();
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
    let recent = RecentIds::load(&conn).unwrap();
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
    let mut folded: Vec<(Vec<u8>, i64)> = conn
        .prepare("SELECT key, seen_at_ms FROM dedup_keys")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    folded.sort();
    let mut expected: Vec<(Vec<u8>, i64)> = [(web("a"), 1), (web("b"), 1), (id("app", "c"), 2)]
        .into_iter()
        .map(|(key, at)| (key.unwrap().to_be_bytes().to_vec(), at))
        .collect();
    expected.sort();
    assert_eq!(folded, expected, "16-byte keys with their first-seen time");
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
    let recent = RecentIds::load(&conn).unwrap();
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
    let recent = RecentIds::load(&conn).unwrap();
    recent.admit(&conn, &[web("a")], 1).unwrap();
    let batch = fold_batch(&conn).unwrap().unwrap();
    recent.admit(&conn, &[web("b")], 2).unwrap();
    insert_folded(&conn, &batch.keys).unwrap();
    drop_folded_log(&conn, batch.last_log_id).unwrap();
    recent.forget(&batch.hashes());
    assert_eq!(recent.len(), 1, "b is still recent");
    let again = fold_batch(&conn).unwrap().unwrap();
    assert_eq!(again.keys, [(web("b").unwrap(), 2)]);
    let (fresh, _) = recent.admit(&conn, &[web("a"), web("b")], 3).unwrap();
    assert_eq!(fresh, [false, false]);
}

#[test]
fn recent_ids_are_read_back_from_the_log() {
    let conn = conn();
    let recent = RecentIds::load(&conn).unwrap();
    recent
        .admit(&conn, &[web("a"), web("é \u{0}x")], 1)
        .unwrap();
    // A restart before the fold: the set comes back from the log.
    let reopened = RecentIds::load(&conn).unwrap();
    assert_eq!(reopened.len(), 2);
    let (fresh, _) = reopened
        .admit(&conn, &[web("a"), web("é \u{0}x"), web("z")], 2)
        .unwrap();
    assert_eq!(fresh, [false, false, true]);
}

#[test]
fn forgotten_ids_are_new_again() {
    let conn = conn();
    let recent = RecentIds::load(&conn).unwrap();
    let (_, added) = recent.admit(&conn, &[web("a")], 1).unwrap();
    conn.execute("DELETE FROM dedup_log", []).unwrap();
    recent.forget(&added);
    let (fresh, _) = recent.admit(&conn, &[web("a")], 2).unwrap();
    assert_eq!(fresh, [true]);
}

#[test]
fn prune_forgets_folded_ids_past_the_cutoff() {
    let conn = conn();
    let recent = RecentIds::load(&conn).unwrap();
    recent.admit(&conn, &[web("old")], 1_000).unwrap();
    recent.admit(&conn, &[web("new")], 5_000).unwrap();
    recent.forget(&fold(&conn).unwrap());
    assert_eq!(prune(&conn, 2_000).unwrap(), 1);
    assert!(!prune_again(1));
    let (fresh, _) = recent
        .admit(&conn, &[web("old"), web("new")], 6_000)
        .unwrap();
    assert_eq!(fresh, [true, false]);
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
fn prune_deletes_the_old_rows_among_the_oldest_even_past_a_young_one() {
    let conn = conn();
    let recent = RecentIds::load(&conn).unwrap();
    for (i, at) in [1_000, 1_000, 9_000, 1_000].into_iter().enumerate() {
        recent.admit(&conn, &[web(&format!("m{i}"))], at).unwrap();
        recent.forget(&fold(&conn).unwrap());
    }
    assert_eq!(
        prune(&conn, 2_000).unwrap(),
        3,
        "old rows around a young one"
    );
    assert_eq!(prune(&conn, 2_000).unwrap(), 0);
    let left: i64 = conn
        .query_row("SELECT COUNT(*) FROM dedup_keys", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 1);
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

    let recent = RecentIds::load(&conn).unwrap();
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
    let recent = RecentIds::load(&conn).unwrap();
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
fn placeholders_are_numbered_from_one() {
    assert_eq!(placeholders(3), "?1,?2,?3");
}
