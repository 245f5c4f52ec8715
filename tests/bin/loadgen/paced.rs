//! `cargo xtask bench paced`: the batch load held at a fraction of the
//! worker's maximum rate, for issue 17's latency and memory goals (p99
//! under 50 ms at 80% of the maximum; resident memory flat over ten
//! minutes). One SQLite worker: a saturated run finds its maximum, then
//! the paced load runs in slices (`--slice`, a minute), each printing its
//! latency, CPU per event and the worker's RSS. Latency counts from when
//! the schedule meant to send each request (see `Load::rate`).

use std::time::Duration;

use waymark_tests::loadgen::{self, Load};

use crate::ingest::BENCH_CONFIG;
use crate::procs::{check_delivered, rss_kib, Fleet};
use crate::{arg, num, per_request};

/// Runs the paced benchmark (`waymark-loadgen paced`).
pub fn paced(runtime: &tokio::runtime::Runtime, args: &[String]) -> anyhow::Result<()> {
    let waymark = arg(args, "--waymark").unwrap_or_else(|| "target/release/waymark".into());
    let secs = num(args, "--seconds", 60).max(1);
    let percent = num(args, "--percent", 80).clamp(1, 100);
    let concurrency = num(args, "--concurrency", 32) as usize;
    let fleet = Fleet::start(&waymark, BENCH_CONFIG, None, 1, None)?;
    let load = |rate: Option<f64>, duration: Duration| Load {
        concurrency,
        duration,
        rate,
        watch: vec![("waymark".into(), fleet.pids())],
        ..Load::batch(fleet.bases.clone(), "wk_bench")
    };
    let rss_mib = || fleet.pid_list().iter().map(|p| rss_kib(*p)).sum::<u64>() as f64 / 1024.0;
    println!(
        "paced benchmark: {concurrency} connections, POST /v1/batch of 20 track events, \
         file destination, one SQLite worker; {percent}% of its maximum for {secs} s\n"
    );

    // 1. The maximum, saturated.
    let max = runtime.block_on(loadgen::run(load(None, Duration::from_secs(10))));
    println!("maximum: {max}\n  {}", per_request(&max, "waymark"));
    let mut acked = max.acked_events;
    let rate = max.requests_per_sec * percent as f64 / 100.0;
    println!(
        "\npaced at {rate:.0} requests/s ({percent}%), latency from the scheduled send; \
         worker RSS {:.1} MiB",
        rss_mib()
    );

    // 2. The paced load, a slice at a time.
    let slice = num(args, "--slice", 60).clamp(1, secs);
    let (mut first_rss, mut worst_p99) = (None, Duration::ZERO);
    let mut left = secs;
    let mut n = 0;
    while left > 0 {
        n += 1;
        let this = left.min(slice);
        left -= this;
        let report = runtime.block_on(loadgen::run(load(Some(rate), Duration::from_secs(this))));
        acked += report.acked_events;
        worst_p99 = worst_p99.max(report.p99);
        let rss = rss_mib();
        first_rss.get_or_insert(rss);
        println!(
            "slice {n} ({this} s): {report}\n  {}  rss {rss:.1} MiB",
            per_request(&report, "waymark")
        );
    }
    println!(
        "\nworst p99 at {percent}%: {:.1} ms (goal: under 50 ms); worker RSS after the first \
         slice {:.1} MiB, at the end {:.1} MiB",
        worst_p99.as_secs_f64() * 1e3,
        first_rss.unwrap_or(0.0),
        rss_mib()
    );
    anyhow::ensure!(
        check_delivered("file", acked, || fleet.file_events()),
        "some acked events did not reach the file"
    );
    Ok(())
}
