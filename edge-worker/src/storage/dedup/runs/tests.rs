use super::*;
use crate::storage::dedup::dedup_hash;

fn conn() -> Connection {
    let mut conn = Connection::open_in_memory().unwrap();
    crate::storage::schema::migrate_all(&mut conn).unwrap();
    conn
}

fn keys(prefix: &str, n: usize) -> Vec<DedupHash> {
    let mut k: Vec<DedupHash> = (0..n)
        .map(|i| dedup_hash("web", &format!("{prefix}{i}")))
        .collect();
    k.sort_unstable();
    k
}

/// A live run of `keys` (sorted) first seen at `at_ms`.
fn live_run(conn: &Connection, keys: &[DedupHash], at_ms: i64) -> i64 {
    let run = start_run(conn, keys.len(), at_ms, at_ms).unwrap();
    write_blocks(conn, run, keys).unwrap();
    seal_run(conn, run).unwrap();
    run
}

fn states(conn: &Connection) -> Vec<(i64, i64)> {
    conn.prepare("SELECT run, state FROM dedup_runs ORDER BY run")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn keys_are_found_in_any_live_run_and_not_in_a_filling_one() {
    let conn = conn();
    let (a, b, c) = (keys("a", 1_000), keys("b", 10), keys("c", 5));
    live_run(&conn, &a, 1);
    live_run(&conn, &b, 2);
    let filling = start_run(&conn, c.len(), 3, 3).unwrap();
    write_blocks(&conn, filling, &c).unwrap();
    let probe: Vec<DedupHash> = [a[0], a[239], a[240], a[999], b[3], c[0], 7, u128::MAX]
        .into_iter()
        .collect();
    let found = folded_among(&conn, &probe).unwrap();
    let mut found: Vec<DedupHash> = found.into_iter().collect();
    found.sort_unstable();
    let mut expected = vec![a[0], a[239], a[240], a[999], b[3]];
    expected.sort_unstable();
    assert_eq!(found, expected);
}

#[test]
fn four_runs_of_a_size_merge_into_one_with_every_key_once() {
    let conn = conn();
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
        live_run(&conn, &k, 10 + i);
    }
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 2_799);
    let mut merge = Merge::start(&conn, 1_000)
        .unwrap()
        .expect("four runs of a class");
    let mut steps = 0;
    while !merge.step(&conn).unwrap() {
        steps += 1;
    }
    assert!(steps >= 2800 / MERGE_STEP, "{steps} steps");
    let output = merge.output();
    let st = states(&conn);
    assert!(st
        .iter()
        .filter(|(r, _)| *r != output)
        .all(|(_, s)| *s == DROPPING));
    assert!(st.contains(&(output, LIVE)));
    let mut merged = Vec::new();
    for_each_live_key(&conn, |k| merged.push(k)).unwrap();
    assert_eq!(merged, all, "sorted, each key once");
    let found = folded_among(&conn, &all).unwrap();
    assert_eq!(found.len(), all.len());
    // The inputs' blocks go, a chunk per call.
    while drop_some(&conn).unwrap() {}
    assert_eq!(states(&conn), [(output, LIVE)]);
    live_run(&conn, &keys("small", 3), 20);
    assert!(
        Merge::start(&conn, 1_000).unwrap().is_none(),
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
fn a_merge_whose_input_expired_is_dropped_not_sealed() {
    let conn = conn();
    for i in 0..4 {
        live_run(&conn, &keys(&format!("r{i}-"), 50), 10 + i);
    }
    let mut merge = Merge::start(&conn, 1_000).unwrap().unwrap();
    assert_eq!(expire(&conn, 11).unwrap(), 50, "the first run expired");
    while !merge.step(&conn).unwrap() {}
    let live: i64 = conn
        .query_row("SELECT count(*) FROM dedup_runs WHERE state = 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(live, 3, "the three inputs left stay; the output drops");
    let found = folded_among(&conn, &keys("r0-", 50)).unwrap();
    assert!(found.is_empty());
}

#[test]
fn a_run_left_filling_is_dropped_at_open_and_an_abandoned_merge_too() {
    let conn = conn();
    let k = keys("f", 10);
    let run = start_run(&conn, k.len(), 1, 1).unwrap();
    write_blocks(&conn, run, &k).unwrap();
    drop_unfinished(&conn).unwrap();
    assert_eq!(states(&conn), [(run, DROPPING)]);
    let other = start_run(&conn, 1, 1, 1).unwrap();
    abandon(&conn, other).unwrap();
    assert_eq!(states(&conn), [(run, DROPPING), (other, DROPPING)]);
    while drop_some(&conn).unwrap() {}
    assert!(states(&conn).is_empty());
}

#[test]
fn a_damaged_block_is_an_error() {
    assert!(block_contains(&[0; 17], 1).is_err());
    assert!(block_contains(&5u128.to_be_bytes(), 5).unwrap());
}
