//! The batch benchmark: the bare server, the SQLite worker and (with
//! `--backend postgres`) `--workers` workers on a throwaway PostgreSQL, in
//! alternating rounds of the same load (20 track events of ~750 B per
//! request, file destination), with CPU per request and per event from
//! /proc and a check that every acked event reached the file.

use std::process::Command;
use std::time::Duration;

use waymark_tests::loadgen::{self, Load};
use waymark_tests::pg::Cluster;

use crate::procs::{check_delivered, rss_kib, Fleet, Server};
use crate::{arg, num, per_request, print_median, saturation};

/// The worker's configuration in the batch benches.
pub(crate) const BENCH_CONFIG: &str = r#"
[identity]
keys = [{ id = "k1", secret = "bench-secret-0123456789abcdef0123456789" }]
[[sources]]
name = "bench"
write_key = "wk_bench"
default_consent = { analytics = "granted" }
[[destinations]]
name = "lake"
type = "file"
path = "events.ndjson"
"#;

/// Runs the batch benchmark (`waymark-loadgen ingest`).
pub fn ingest(runtime: &tokio::runtime::Runtime, args: &[String]) -> anyhow::Result<()> {
    let waymark = arg(args, "--waymark").unwrap_or_else(|| "target/release/waymark".into());
    let secs = num(args, "--seconds", 10);
    let concurrency = num(args, "--concurrency", 32) as usize;
    let rounds = num(args, "--rounds", 3).max(1) as usize;
    let workers = num(args, "--workers", 1).max(1) as usize;
    let soak = num(args, "--soak", 0);
    let postgres = arg(args, "--backend").as_deref() == Some("postgres");
    let random_ids = args.iter().any(|a| a == "--random-ids");
    let load = |bases: Vec<String>, duration: Duration| Load {
        concurrency,
        duration,
        random_ids,
        ..Load::batch(bases, "wk_bench")
    };
    let ids = if random_ids { "random" } else { "counting" };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    println!(
        "ingest benchmark: {concurrency} connections, POST /v1/batch of 20 track events \
         (~750 B each, {ids} message ids), file destination, {rounds} rounds of {secs} s \
         against each server, nothing pinned ({cores} cores)\n"
    );
    let cluster = if postgres {
        Some(Cluster::start().map_err(|e| anyhow::anyhow!("cannot start PostgreSQL: {e}"))?)
    } else {
        None
    };

    // Rounds alternate the servers, so a change in the machine's speed (a
    // shared VM) moves every side of each round's ratio.
    let me = std::env::current_exe()?;
    let bare = Server::start(Command::new(&me).arg("bare-server"), "bare listening on ")?;
    let mut sqlite_ratios = Vec::with_capacity(rounds);
    let mut pg_ratios = Vec::with_capacity(rounds);
    let mut all_delivered = true;
    let duration = Duration::from_secs(secs);
    for round in 1..=rounds {
        let mut bare_load = load(vec![bare.base.clone()], duration);
        bare_load.watch = vec![("bare".into(), bare.pids())];
        let baseline = runtime.block_on(loadgen::run(bare_load));
        println!("round {round}: bare axum (reads body, 200):\n  {baseline}");
        println!(
            "  {}{}",
            per_request(&baseline, "bare"),
            saturation(&baseline, &[])
        );
        // A fresh worker and store each round: nothing it does in the
        // background runs during the next server's turn.
        let sqlite = Fleet::start(&waymark, BENCH_CONFIG, None, 1, None)?;
        let mut worker_load = load(sqlite.bases.clone(), duration);
        worker_load.watch = vec![("waymark".into(), sqlite.pids())];
        let report = runtime.block_on(loadgen::run(worker_load));
        let ratio = report.requests_per_sec / baseline.requests_per_sec.max(1.0);
        println!("round {round}: waymark sqlite (durable acks, file destination):\n  {report}");
        println!(
            "  {}  ratio to bare {ratio:.3}",
            per_request(&report, "waymark")
        );
        all_delivered &= check_delivered("file", report.acked_events, || sqlite.file_events());
        sqlite_ratios.push(ratio);
        drop(sqlite);
        if let Some(cluster) = &cluster {
            let url = cluster
                .create_database(&format!("bench_r{round}"))
                .map_err(|e| anyhow::anyhow!("cannot create the bench database: {e}"))?;
            let fleet = Fleet::start(&waymark, BENCH_CONFIG, Some((cluster, url)), workers, None)?;
            let pg = measure(runtime, &fleet, &load, duration);
            let vs_sqlite = pg.requests_per_sec / report.requests_per_sec.max(1.0);
            println!("round {round}: waymark postgres x{workers}:\n  {pg}");
            println!(
                "  {}  {}  vs sqlite {vs_sqlite:.2}",
                per_request(&pg, "waymark"),
                per_request(&pg, "postgres")
            );
            all_delivered &= check_delivered("files", pg.acked_events, || fleet.file_events());
            pg_ratios.push(vs_sqlite);
        }
    }
    drop(bare);
    print_median("waymark sqlite / bare (requests/s)", &mut sqlite_ratios);
    if postgres {
        print_median(
            &format!("waymark postgres x{workers} / sqlite"),
            &mut pg_ratios,
        );
    }
    if let (Some(cluster), true) = (&cluster, soak > 0) {
        soak_run(runtime, &waymark, cluster, workers, soak, &load)?;
    }
    anyhow::ensure!(all_delivered, "some acked events did not reach the file");
    Ok(())
}

/// One run against `fleet`, watching its workers and PostgreSQL.
fn measure(
    runtime: &tokio::runtime::Runtime,
    fleet: &Fleet,
    load: &dyn Fn(Vec<String>, Duration) -> Load,
    duration: Duration,
) -> loadgen::Report {
    let mut l = load(fleet.bases.clone(), duration);
    l.watch = vec![("waymark".into(), fleet.pids())];
    if let Some(db) = fleet.db_pids() {
        l.watch.push(("postgres".into(), db));
    }
    runtime.block_on(loadgen::run(l))
}

/// Table health of the queue under sustained load: one fleet, one-minute
/// slices of load for `secs`, and `pg_stat_user_tables` at start and end.
fn soak_run(
    runtime: &tokio::runtime::Runtime,
    waymark: &str,
    cluster: &Cluster,
    workers: usize,
    secs: u64,
    load: &dyn Fn(Vec<String>, Duration) -> Load,
) -> anyhow::Result<()> {
    let url = cluster
        .create_database("bench_soak")
        .map_err(|e| anyhow::anyhow!("cannot create the soak database: {e}"))?;
    let fleet = Fleet::start(
        waymark,
        BENCH_CONFIG,
        Some((cluster, url.clone())),
        workers,
        None,
    )?;
    let tables = || {
        cluster
            .psql(
                &url,
                "SELECT relname, n_live_tup, n_dead_tup, pg_total_relation_size(relid) \
                 FROM pg_stat_user_tables WHERE n_live_tup + n_dead_tup > 0 \
                    OR pg_total_relation_size(relid) > 65536 ORDER BY relname",
            )
            .unwrap_or_else(|e| format!("(psql failed: {e})"))
    };
    println!("\nsoak: {workers} worker(s) on PostgreSQL for {secs} s, one line a minute");
    let slices = secs.div_ceil(60);
    let mut start_tables = String::new();
    for slice in 1..=slices {
        let report = measure(runtime, &fleet, load, Duration::from_secs(58));
        if slice == 1 {
            start_tables = tables();
        }
        let rss: u64 = fleet.pid_list().iter().map(|p| rss_kib(*p)).sum();
        println!(
            "soak minute {slice}: {report}  {}  {}  rss {} MiB",
            per_request(&report, "waymark"),
            per_request(&report, "postgres"),
            rss / 1024
        );
    }
    println!(
        "\npg_stat_user_tables after the first minute (table|live|dead|bytes):\n{start_tables}"
    );
    println!("pg_stat_user_tables at the end:\n{}", tables());
    Ok(())
}
