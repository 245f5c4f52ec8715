use super::*;

fn conn() -> Connection {
    let mut conn = Connection::open_in_memory().unwrap();
    crate::storage::schema::migrate_all(&mut conn).unwrap();
    conn
}

fn id<'a>(source: &'a str, message_id: &'a str) -> Option<SeenId<'a>> {
    Some(SeenId {
        hash: dedup_hash(source, message_id),
        source,
        message_id,
    })
}

fn web(message_id: &str) -> Option<SeenId<'_>> {
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
    let folded: Vec<(String, String, i64)> = conn
        .prepare("SELECT source, message_id, seen_at_ms FROM dedup ORDER BY 1, 2")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        folded,
        [
            ("app".into(), "c".into(), 2),
            ("web".into(), "a".into(), 1),
            ("web".into(), "b".into(), 1)
        ]
    );
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
    assert!(first.ids.len() >= FOLD_BATCH_MAX && first.ids.len() < FOLD_BATCH_MAX + 1_000);
    assert!(first.ids.windows(2).all(|w| w[0] <= w[1]), "sorted");
    let moved = fold(&conn).unwrap();
    assert_eq!(moved.len(), first.ids.len());
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
    insert_folded(&conn, &batch.ids).unwrap();
    drop_folded_log(&conn, batch.last_log_id).unwrap();
    recent.forget(&batch.hashes());
    assert_eq!(recent.len(), 1, "b is still recent");
    let again = fold_batch(&conn).unwrap().unwrap();
    assert_eq!(again.ids, [("web".to_owned(), "b".to_owned(), 2)]);
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
    assert!(decode_ids(&[9, 0, 0, 0, b'a']).is_err());
    assert!(
        decode_ids(&[1, 0, 0, 0, b'a']).is_err(),
        "a source without an id"
    );
    let mut log = Vec::new();
    encode_id(&mut log, "web", "m1");
    assert_eq!(decode_ids(&log).unwrap(), [("web", "m1")]);
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
fn placeholders_are_numbered_in_groups() {
    assert_eq!(placeholders(2, 1, 2), "?2,?3");
    assert_eq!(placeholders(2, 3, 1), "(?1,?2,?3),(?4,?5,?6)");
}
