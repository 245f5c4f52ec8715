use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::storage::syncs::TrackedKey;

fn mapping() -> Mapping {
    Mapping::from_indices(0, vec![("userId".into(), 0), ("traits.v".into(), 1)])
}

fn row(key: &str, v: i64) -> Row {
    vec![json!(key), json!(v)]
}

fn hash_of(key: &str, v: i64) -> RowHash {
    mapping().hash(&row(key, v), &mut Vec::new())
}

fn state(entries: &[(&str, i64, KeyStatus)]) -> TrackedState {
    let mut s = TrackedState::new();
    let page: Vec<TrackedKey> = entries
        .iter()
        .map(|(k, v, status)| TrackedKey {
            key: k.to_string(),
            hash: hash_of(k, *v),
            status: *status,
            attempts: 0,
            last_error: None,
            run: 1,
        })
        .collect();
    s.extend(&page);
    s
}

fn options(mode: SyncMode) -> PlanOptions {
    PlanOptions {
        mode,
        full_resync: false,
        fail_on_zero_rows: true,
        previous_rows: 0,
    }
}

/// Sends as `(key, change, retry)`, baseline keys, listed invalid rows, the end.
type Outcome = (
    Vec<(String, Change, bool)>,
    Vec<String>,
    Vec<InvalidRow>,
    Result<FinalPlan, PlanError>,
);

/// Plans `rows` in batches of `batch`; returns sends (removals last) as
/// `(key, change, retry)`, the baseline keys, and the final plan.
fn run(state: TrackedState, options: PlanOptions, rows: Vec<Row>, batch: usize) -> Outcome {
    let mut planner = Planner::new(mapping(), state, options);
    let (mut sent, mut baseline, mut invalid) = (Vec::new(), Vec::new(), Vec::new());
    for chunk in rows.chunks(batch.max(1)) {
        let plan = planner.plan_batch(chunk.to_vec());
        for p in &plan.send {
            assert_eq!(p.row.len(), 2, "the whole row is handed back");
            assert_eq!(p.hash, mapping().hash(&p.row, &mut Vec::new()));
        }
        sent.extend(plan.send.into_iter().map(|p| (p.key, p.change, p.retry)));
        baseline.extend(plan.baseline.into_iter().map(|(k, _)| k));
        invalid.extend(plan.invalid);
    }
    let end = planner.finish();
    if let Ok(end) = &end {
        sent.extend(
            end.removed
                .iter()
                .map(|p| (p.key.clone(), p.change, p.retry)),
        );
    }
    (sent, baseline, invalid, end)
}

fn keys(sent: &[(String, Change, bool)]) -> Vec<(&str, Change, bool)> {
    let mut v: Vec<_> = sent.iter().map(|(k, c, r)| (k.as_str(), *c, *r)).collect();
    v.sort();
    v
}

#[test]
fn a_first_run_adds_everything_and_a_second_sends_only_the_difference() {
    let rows: Vec<Row> = (0..10).map(|i| row(&format!("u{i}"), i)).collect();
    let (sent, _, _, end) = run(TrackedState::new(), options(SyncMode::Upsert), rows, 3);
    assert_eq!(sent.len(), 10);
    assert!(sent.iter().all(|(_, c, r)| *c == Change::Added && !r));
    assert_eq!(
        end.unwrap().counts.planned,
        RowCounts {
            added: 10,
            changed: 0,
            removed: 0
        }
    );

    let tracked: Vec<(String, i64)> = (0..10).map(|i| (format!("u{i}"), i)).collect();
    let entries: Vec<(&str, i64, KeyStatus)> = tracked
        .iter()
        .map(|(k, v)| (k.as_str(), *v, KeyStatus::Synced))
        .collect();
    let mut rows: Vec<Row> = (0..9).map(|i| row(&format!("u{i}"), i)).collect();
    rows[4] = row("u4", 40);
    rows.push(row("u10", 10));
    for mode in [SyncMode::Upsert, SyncMode::Mirror] {
        let (sent, _, _, end) = run(state(&entries), options(mode), rows.clone(), 4);
        let mut expected = vec![
            ("u10", Change::Added, false),
            ("u4", Change::Changed, false),
        ];
        if mode == SyncMode::Mirror {
            expected.push(("u9", Change::Removed, false));
        }
        expected.sort();
        assert_eq!(keys(&sent), expected, "{mode:?}");
        let counts = end.unwrap().counts;
        assert_eq!(counts.unchanged, 8);
        assert_eq!(counts.rows, 10);
    }
}

#[test]
fn each_mode_sends_what_its_table_says() {
    use KeyStatus::*;
    let tracked = [
        ("same", 1, Synced),
        ("changed", 1, Synced),
        ("failed", 1, Failed),
        ("failed-new", 1, FailedNew),
        ("gone", 1, Synced),
        ("gone-failed", 1, Failed),
    ];
    let rows = vec![
        row("same", 1),
        row("changed", 2),
        row("failed", 1),
        row("failed-new", 1),
        row("new", 1),
    ];
    let retried = [
        ("failed", Change::Changed, true),
        ("failed-new", Change::Added, true),
    ];
    let cases = [
        (
            SyncMode::Upsert,
            vec![
                ("changed", Change::Changed, false),
                ("new", Change::Added, false),
            ],
            vec![],
        ),
        (
            SyncMode::Insert,
            vec![("new", Change::Added, false)],
            vec![],
        ),
        (
            SyncMode::Update,
            vec![("changed", Change::Changed, false)],
            vec!["new"],
        ),
        (
            SyncMode::Mirror,
            vec![
                ("changed", Change::Changed, false),
                ("new", Change::Added, false),
                ("gone", Change::Removed, false),
                ("gone-failed", Change::Removed, true),
            ],
            vec![],
        ),
    ];
    for (mode, mut expected, baseline) in cases {
        expected.extend(retried);
        expected.sort();
        let (sent, base, _, end) = run(state(&tracked), options(mode), rows.clone(), 2);
        assert_eq!(keys(&sent), expected, "{mode:?}");
        assert_eq!(base, baseline, "{mode:?}");
        let counts = end.unwrap().counts;
        assert_eq!(counts.unchanged, 1, "{mode:?}");
        assert_eq!(
            counts.skipped,
            (mode == SyncMode::Insert) as u64,
            "{mode:?}"
        );
        assert_eq!(counts.planned.total(), expected.len() as u64, "{mode:?}");
    }
}

#[test]
fn a_full_resync_adds_every_row_in_every_mode_and_mirror_still_removes() {
    let tracked = [
        ("a", 1, KeyStatus::Synced),
        ("b", 1, KeyStatus::Failed),
        ("c", 1, KeyStatus::Synced),
    ];
    let rows = vec![row("a", 1), row("b", 1), row("d", 1)];
    for mode in [
        SyncMode::Upsert,
        SyncMode::Insert,
        SyncMode::Update,
        SyncMode::Mirror,
    ] {
        let mut o = options(mode);
        o.full_resync = true;
        let (sent, base, _, _) = run(state(&tracked), o, rows.clone(), 10);
        let mut expected = vec![
            ("a", Change::Added, false),
            ("b", Change::Added, true),
            ("d", Change::Added, false),
        ];
        if mode == SyncMode::Mirror {
            expected.push(("c", Change::Removed, false));
        }
        expected.sort();
        assert_eq!(keys(&sent), expected, "{mode:?}");
        assert!(base.is_empty());
    }
}

#[test]
fn null_empty_and_repeated_keys_are_invalid_and_the_rest_goes_on() {
    let rows = vec![
        vec![json!(null), json!(1)],
        row("a", 1),
        vec![json!(""), json!(1)],
        row("a", 2),
        vec![json!({"id": 1}), json!(1)],
        row("b", 1),
    ];
    let (sent, _, invalid, end) = run(TrackedState::new(), options(SyncMode::Upsert), rows, 2);
    assert_eq!(
        keys(&sent),
        [("a", Change::Added, false), ("b", Change::Added, false)]
    );
    let reasons: Vec<(&str, &str)> = invalid
        .iter()
        .map(|i| (i.key.as_str(), i.reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        [
            ("", "null primary key"),
            ("", "empty primary key"),
            ("a", "duplicate primary key"),
            ("", "primary key is not a scalar"),
        ]
    );
    let counts = end.unwrap().counts;
    assert_eq!((counts.invalid, counts.rows), (4, 6));
}

#[test]
fn the_invalid_row_list_is_capped_but_every_one_counts() {
    let rows: Vec<Row> = (0..INVALID_ROWS_LISTED + 50)
        .map(|_| vec![json!(null), json!(1)])
        .collect();
    let (_, _, invalid, end) = run(TrackedState::new(), options(SyncMode::Upsert), rows, 100);
    assert_eq!(invalid.len(), INVALID_ROWS_LISTED);
    assert_eq!(end.unwrap().counts.invalid, INVALID_ROWS_LISTED as u64 + 50);
}

#[test]
fn zero_rows_after_a_run_with_rows_fail_unless_allowed() {
    let tracked = [("a", 1, KeyStatus::Synced)];
    let mut o = options(SyncMode::Mirror);
    o.previous_rows = 1;
    let (_, _, _, end) = run(state(&tracked), o, vec![], 10);
    let err = end.unwrap_err();
    assert_eq!(err, PlanError::ZeroRows { previous: 1 });
    assert!(
        err.to_string().contains("fail_on_zero_rows = false"),
        "{err}"
    );
    o.fail_on_zero_rows = false;
    let (sent, _, _, end) = run(state(&tracked), o, vec![], 10);
    assert_eq!(keys(&sent), [("a", Change::Removed, false)]);
    assert!(end.is_ok());
    // A first run of an empty model is fine.
    let (_, _, _, end) = run(TrackedState::new(), options(SyncMode::Mirror), vec![], 10);
    assert!(end.is_ok());
}

/// One key of a generated case: what the state has, what the model returns.
#[derive(Debug, Clone)]
struct Case {
    tracked: Option<(i64, u8)>,
    current: Option<i64>,
}

fn status_of(code: u8) -> KeyStatus {
    match code {
        0 | 1 => KeyStatus::Synced,
        2 => KeyStatus::Failed,
        _ => KeyStatus::FailedNew,
    }
}

fn case() -> impl Strategy<Value = Case> {
    (
        proptest::option::weighted(0.7, (0i64..4, 0u8..4)),
        proptest::option::weighted(0.8, 0i64..4),
    )
        .prop_map(|(tracked, current)| Case { tracked, current })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Random state and random changes: the plan is exactly what each
    /// mode's rules say, whatever the batch size and row order.
    #[test]
    fn the_plan_matches_the_rules_exactly(
        cases in proptest::collection::btree_map(0u16..400, case(), 0..120),
        mode in prop_oneof![
            Just(SyncMode::Upsert), Just(SyncMode::Insert), Just(SyncMode::Update), Just(SyncMode::Mirror)
        ],
        full_resync in any::<bool>(),
        fail_on_zero_rows in any::<bool>(),
        previous_rows in 0u64..3,
        duplicates in proptest::collection::vec(any::<proptest::sample::Index>(), 0..5),
        nulls in 0usize..3,
        batch in 1usize..40,
        seed in any::<u64>(),
    ) {
        let cases: BTreeMap<String, Case> =
            cases.into_iter().map(|(k, c)| (format!("k{k}"), c)).collect();
        let tracked: Vec<(&str, i64, KeyStatus)> = cases
            .iter()
            .filter_map(|(k, c)| c.tracked.map(|(v, s)| (k.as_str(), v, status_of(s))))
            .collect();
        let mut rows: Vec<Row> = cases
            .iter()
            .filter_map(|(k, c)| c.current.map(|v| row(k, v)))
            .collect();
        // Shuffle deterministically, then add repeats (after their first
        // copy) and null keys.
        let mut x = seed | 1;
        for i in (1..rows.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            rows.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let valid = rows.len();
        let mut repeated = BTreeSet::new();
        if valid > 0 {
            for d in &duplicates {
                let copy = rows[d.index(valid)].clone();
                repeated.insert(copy[0].as_str().unwrap_or_default().to_owned());
                rows.push(vec![copy[0].clone(), json!(99)]);
            }
        }
        for _ in 0..nulls {
            rows.insert(0, vec![json!(null), json!(1)]);
        }
        let total_rows = rows.len() as u64;

        // What the rules say.
        let sends = |change: Change| match mode {
            SyncMode::Upsert => change != Change::Removed,
            SyncMode::Insert => change == Change::Added,
            SyncMode::Update => change == Change::Changed,
            SyncMode::Mirror => true,
        };
        let mut expected = Vec::new();
        let mut baseline = Vec::new();
        for (k, c) in &cases {
            match (c.tracked, c.current) {
                (None, Some(_)) if full_resync || sends(Change::Added) => {
                    expected.push((k.as_str(), Change::Added, false))
                }
                (None, Some(_)) => baseline.push(k.clone()),
                (Some((_, s)), Some(_)) if full_resync => {
                    expected.push((k.as_str(), Change::Added, status_of(s).is_failed()))
                }
                (Some((_, s)), Some(_)) if status_of(s) == KeyStatus::FailedNew => {
                    expected.push((k.as_str(), Change::Added, true))
                }
                (Some((_, s)), Some(_)) if status_of(s) == KeyStatus::Failed => {
                    expected.push((k.as_str(), Change::Changed, true))
                }
                (Some((tv, _)), Some(cv)) if tv != cv && sends(Change::Changed) => {
                    expected.push((k.as_str(), Change::Changed, false))
                }
                (Some((_, s)), None) if mode == SyncMode::Mirror => {
                    expected.push((k.as_str(), Change::Removed, status_of(s).is_failed()))
                }
                _ => {}
            }
        }
        expected.sort();
        baseline.sort();
        let refused = total_rows == 0 && previous_rows > 0 && fail_on_zero_rows;

        let options = PlanOptions { mode, full_resync, fail_on_zero_rows, previous_rows };
        let (sent, mut base, invalid, end) = run(state(&tracked), options, rows, batch);
        base.sort();
        prop_assert_eq!(base, baseline);
        let expected_invalid = nulls + if valid > 0 { duplicates.len() } else { 0 };
        prop_assert_eq!(invalid.len(), expected_invalid);
        prop_assert!(invalid
            .iter()
            .filter(|i| i.reason == "duplicate primary key")
            .all(|i| repeated.contains(&i.key)));
        match end {
            Err(e) => {
                prop_assert!(refused, "refused without cause: {}", e);
            }
            Ok(end) => {
                prop_assert!(!refused);
                prop_assert_eq!(keys(&sent), expected.clone());
                let counts = end.counts;
                prop_assert_eq!(counts.rows, total_rows);
                prop_assert_eq!(counts.planned.total(), expected.len() as u64);
                prop_assert_eq!(
                    counts.retried,
                    expected.iter().filter(|(_, _, r)| *r).count() as u64
                );
                prop_assert_eq!(counts.invalid as usize, invalid.len());
            }
        }
    }
}

/// How fast the planner diffs: a million tracked keys against a model with
/// 1% of rows changed. Run with
/// `CARGO_PROFILE_DEV_OPT_LEVEL=2 cargo test --workspace --lib diff_throughput -- --ignored --nocapture`
/// (the worker's own code optimised as dependencies are).
#[test]
#[ignore]
fn diff_throughput() {
    let n = 1_000_000usize;
    let started = std::time::Instant::now();
    let mut tracked = TrackedState::new();
    let m = Mapping::from_indices(
        0,
        vec![
            ("userId".into(), 0),
            ("traits.email".into(), 1),
            ("traits.plan".into(), 2),
            ("traits.ltv".into(), 3),
        ],
    );
    let make = |i: usize, plan: &str| -> Row {
        vec![
            json!(i as i64),
            json!(format!("user{i}@example.com")),
            json!(plan),
            json!(i as f64 * 1.5),
        ]
    };
    let mut scratch = Vec::new();
    for i in 0..n {
        let r = make(i, "free");
        tracked.insert(&i.to_string(), m.hash(&r, &mut scratch), KeyStatus::Synced);
    }
    let loaded = started.elapsed();
    let rows: Vec<Vec<Row>> = (0..n)
        .collect::<Vec<_>>()
        .chunks(1000)
        .map(|c| {
            c.iter()
                .map(|&i| make(i, if i % 100 == 0 { "pro" } else { "free" }))
                .collect()
        })
        .collect();
    let mut planner = Planner::new(m, tracked, options(SyncMode::Upsert));
    let started = std::time::Instant::now();
    let mut sent = 0;
    for batch in rows {
        sent += planner.plan_batch(batch).send.len();
    }
    let state_bytes = planner.state_bytes();
    let end = planner.finish().unwrap();
    let took = started.elapsed();
    assert_eq!(sent, n / 100);
    assert_eq!(end.counts.unchanged as usize, n - n / 100);
    println!(
        "state of {n} keys loaded in {loaded:?}; diffed {n} rows in {took:?}: {:.0} rows/s; state {:.1} MiB",
        n as f64 / took.as_secs_f64(),
        state_bytes as f64 / (1 << 20) as f64
    );
}
