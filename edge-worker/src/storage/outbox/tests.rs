use super::*;

fn conn() -> Connection {
    let mut conn = Connection::open_in_memory().unwrap();
    super::super::schema::migrate_all(&mut conn).unwrap();
    conn
}

fn enqueue_n(conn: &Connection, destination: &str, n: usize) {
    let ids: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
    let jsons: Vec<String> = ids
        .iter()
        .map(|m| format!(r#"{{"messageId":"{m}"}}"#))
        .collect();
    let events: Vec<(&str, &str, &str)> = ids
        .iter()
        .zip(&jsons)
        .map(|(m, j)| (m.as_str(), "", j.as_str()))
        .collect();
    enqueue(conn, &PackMeta::new(destination, "web", 1), &events).unwrap();
}

/// A cache that holds nothing: every read takes the SQLite path.
fn no_cache() -> PackCache {
    PackCache::new(0)
}

fn ids(entries: &[OutboxEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.message_id.as_str()).collect()
}

#[test]
fn events_come_out_one_by_one_in_order_past_the_cursor() {
    let conn = conn();
    enqueue_n(&conn, "a", 3);
    enqueue_n(&conn, "b", 1);
    let all = due(&conn, &no_cache(), "a", 10, 0, 10).unwrap();
    assert_eq!(ids(&all), ["m0", "m1", "m2"]);
    assert_eq!(&*all[0].json, r#"{"messageId":"m0"}"#);
    // A limit cuts inside a pack; the cursor resumes inside it.
    let first = due(&conn, &no_cache(), "a", 10, 0, 2).unwrap();
    assert_eq!(ids(&first), ["m0", "m1"]);
    let rest = due(&conn, &no_cache(), "a", 10, first[1].id, 10).unwrap();
    assert_eq!(ids(&rest), ["m2"]);
    assert_eq!(depth(&conn, "a").unwrap(), 3);
    assert_eq!(depth(&conn, "b").unwrap(), 1);
}

#[test]
fn a_pack_leaves_when_its_last_event_does() {
    let conn = conn();
    enqueue_n(&conn, "a", 3);
    let all = due(&conn, &no_cache(), "a", 10, 0, 10).unwrap();
    remove(&conn, &[all[1].id], false).unwrap();
    assert_eq!(
        ids(&due(&conn, &no_cache(), "a", 10, 0, 10).unwrap()),
        ["m0", "m2"]
    );
    // Keys stay stable for the events left.
    let taken = remove(&conn, &[all[0].id, all[2].id, all[1].id], true)
        .unwrap()
        .taken;
    assert_eq!(taken.len(), 2);
    assert_eq!(depth(&conn, "a").unwrap(), 0);
    let packs: i64 = conn
        .query_row("SELECT COUNT(*) FROM outbox_packs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(packs, 0);
}

#[test]
fn a_partly_failed_pack_is_split_and_keeps_its_age() {
    let conn = conn();
    enqueue_n(&conn, "a", 3);
    let all = due(&conn, &no_cache(), "a", 10, 0, 10).unwrap();
    retry(&conn, &[all[2].id], 1_000, "503").unwrap();
    // Not due yet: only the other two.
    assert_eq!(
        ids(&due(&conn, &no_cache(), "a", 10, 0, 10).unwrap()),
        ["m0", "m1"]
    );
    let later = due(&conn, &no_cache(), "a", 1_000, 0, 10).unwrap();
    assert_eq!(ids(&later), ["m0", "m1", "m2"]);
    assert_eq!((later[2].attempts, later[2].enqueued_at_ms), (1, 1));
    // A whole pack is retried in place.
    retry(&conn, &[later[0].id, later[1].id], 2_000, "503").unwrap();
    assert_eq!(
        ids(&due(&conn, &no_cache(), "a", 1_000, 0, 10).unwrap()),
        ["m2"]
    );
    assert_eq!(depth(&conn, "a").unwrap(), 3);
}

#[test]
fn message_ids_and_events_survive_the_encoding() {
    let conn = conn();
    let json = r#"{"messageId":"a\"b,c","emoji":"é"}"#;
    enqueue(
        &conn,
        &PackMeta::new("a", "web", 1),
        &[("a\"b,c", "", json)],
    )
    .unwrap();
    let all = due(&conn, &no_cache(), "a", 10, 0, 10).unwrap();
    assert_eq!(
        (all[0].message_id.as_str(), &*all[0].json),
        ("a\"b,c", json)
    );
}

#[test]
fn granted_purposes_are_stored_with_each_event_and_survive_splits() {
    let conn = conn();
    let meta = PackMeta::new("a", "web", 1);
    let events = [
        ("m0", "analytics,marketing", r#"{"messageId":"m0"}"#),
        ("m1", "", r#"{"messageId":"m1"}"#),
        ("m2", "marketing", r#"{"messageId":"m2"}"#),
    ];
    enqueue(&conn, &meta, &events).unwrap();
    let all = due(&conn, &no_cache(), "a", 10, 0, 10).unwrap();
    let granted: Vec<&str> = all.iter().map(|e| e.granted.as_str()).collect();
    assert_eq!(granted, ["analytics,marketing", "", "marketing"]);
    // A partial retry moves part of the pack: the decision moves with it.
    retry(&conn, &[all[2].id], 0, "HTTP 503").unwrap();
    let again = due(&conn, &no_cache(), "a", 10, 0, 10).unwrap();
    let by_id: Vec<(&str, &str)> = again
        .iter()
        .map(|e| (e.message_id.as_str(), e.granted.as_str()))
        .collect();
    assert!(by_id.contains(&("m2", "marketing")), "{by_id:?}");
    assert!(by_id.contains(&("m0", "analytics,marketing")), "{by_id:?}");
    // A pack written before the field existed reads as nothing granted.
    let old = r#"[{"i":0,"m":"old","e":{"messageId":"old"}}]"#;
    assert_eq!(decode(old).unwrap()[0].g, "");
}

/// Caches `destination`'s packs as the ingest commit does.
fn cache_packs(conn: &Connection, cache: &PackCache, destination: &str) {
    let mut stmt = conn
        .prepare("SELECT id, events FROM outbox_packs WHERE destination = ?1")
        .unwrap();
    let rows: Vec<(i64, String)> = stmt
        .query_map([destination], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for (id, text) in rows {
        let pack = decode(&text)
            .unwrap()
            .into_iter()
            .map(|p| super::super::pack_cache::CachedEvent {
                message_id: Arc::from(p.m.as_str()),
                granted: crate::consent::GrantedPurposes::from_stored(&p.g),
                json: Arc::from(p.e.get()),
            })
            .collect();
        cache.insert(id, pack);
    }
}

fn summary(entries: &[OutboxEntry]) -> Vec<(i64, String, String, u32)> {
    entries
        .iter()
        .map(|e| (e.id, e.message_id.clone(), e.json.to_string(), e.attempts))
        .collect()
}

#[test]
fn cached_packs_read_the_same_as_stored_ones() {
    let conn = conn();
    enqueue_n(&conn, "a", 5);
    enqueue_n(&conn, "a", 3);
    let cache = PackCache::new(1 << 20);
    cache_packs(&conn, &cache, "a");
    let read = |after: i64, limit: usize| {
        let cached = due(&conn, &cache, "a", 10, after, limit).unwrap();
        let stored = due(&conn, &no_cache(), "a", 10, after, limit).unwrap();
        assert_eq!(summary(&cached), summary(&stored));
        cached
    };
    let all = read(0, 100);
    assert_eq!(all.len(), 8);
    // Inside a pack, across packs, and after events left a pack: the
    // cache keeps the original pack, SQLite says which events wait.
    read(all[2].id, 3);
    remove(&conn, &[all[1].id, all[6].id], false).unwrap();
    retry(&conn, &[all[3].id], 5, "503").unwrap();
    let left = read(0, 100);
    assert_eq!(ids(&left), ["m0", "m2", "m4", "m0", "m2", "m3"]);
    assert_eq!(left.last().map(|e| e.attempts), Some(1));
}

#[test]
fn removal_reports_the_packs_it_emptied() {
    let conn = conn();
    enqueue_n(&conn, "a", 2);
    enqueue_n(&conn, "a", 1);
    let all = due(&conn, &no_cache(), "a", 10, 0, 10).unwrap();
    let removed = remove(&conn, &[all[0].id, all[2].id], false).unwrap();
    assert_eq!(removed.emptied, vec![pack_of(all[2].id)]);
    let removed = remove(&conn, &[all[1].id], true).unwrap();
    assert_eq!(removed.emptied, vec![pack_of(all[1].id)]);
    assert_eq!(removed.taken.len(), 1);
}

#[test]
fn pack_ids_are_never_reused() {
    let conn = conn();
    enqueue_n(&conn, "a", 1);
    let first = due(&conn, &no_cache(), "a", 10, 0, 10).unwrap();
    remove(&conn, &[first[0].id], false).unwrap();
    enqueue_n(&conn, "a", 1);
    let second = due(&conn, &no_cache(), "a", 10, 0, 10).unwrap();
    assert!(pack_of(second[0].id) > pack_of(first[0].id));
}

#[test]
fn large_requests_are_split_into_packs() {
    let conn = conn();
    enqueue_n(&conn, "a", PACK_MAX + 1);
    let packs: i64 = conn
        .query_row("SELECT COUNT(*) FROM outbox_packs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(packs, 2);
    assert_eq!(
        due(&conn, &no_cache(), "a", 10, 0, PACK_MAX + 10)
            .unwrap()
            .len(),
        PACK_MAX + 1
    );
}

#[test]
fn indices_are_written_in_decimal() {
    for i in [0, 7, 10, 65_535, u32::MAX] {
        let mut out = b"x".to_vec();
        push_decimal(&mut out, i);
        assert_eq!(out, format!("x{i}").into_bytes());
    }
    let (text, indices, n) =
        encode([(3, "a\"b", "", "{}"), (12, "c", "analytics", "[1]")].into_iter());
    assert_eq!(
        text,
        r#"[{"i":3,"m":"a\"b","e":{}},{"i":12,"m":"c","g":"analytics","e":[1]}]"#
    );
    assert_eq!((indices.as_str(), n), ("3,12", 2));
}
