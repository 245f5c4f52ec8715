//! `waymark-loadgen`: the ingest and edge benchmarks (`cargo xtask bench
//! ingest`, `cargo xtask bench edge`).
//!
//! - `ingest --waymark PATH`: the batch path (20 track events per request)
//!   against the real worker with a file destination and a bare axum
//!   server, in alternating rounds ([`ingest`]).
//! - `edge --waymark PATH --rule RENAME.wasm`: one page event per request
//!   on one core, the worker and a webhook sink on CPU 0, the generator on
//!   CPU 1 ([`edge`]).
//! - `sync --waymark PATH [--rows N]`: a Reverse-ETL sync of a large
//!   PostgreSQL model to a loopback webhook ([`syncs`]).
//! - `paced --waymark PATH [--seconds N] [--percent P]`: the batch load held
//!   at P% (80) of the SQLite worker's maximum, with latency and RSS per
//!   slice ([`paced`]).
//! - `load --url URL`: drive an already running worker (while profiling it).
//! - `bare-server`, `sink`: the baseline and the webhook sink alone.

mod edge;
mod ingest;
mod paced;
mod procs;
mod syncs;

use std::time::Duration;

use waymark_tests::loadgen::{self, Load, Report};
use waymark_tests::procstat::CpuUse;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn num(args: &[String], name: &str, default: u64) -> u64 {
    arg(args, name)
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args.get(1).map(String::as_str) {
        Some("bare-server") => runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            println!("bare listening on http://{}", listener.local_addr()?);
            loadgen::bare_server(listener).await?;
            Ok(())
        }),
        Some("sink") => runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            println!("sink listening on http://{}", listener.local_addr()?);
            loadgen::webhook_sink(listener).await?;
            Ok(())
        }),
        Some("load") => {
            let base = arg(&args, "--url").unwrap_or_else(|| "http://127.0.0.1:8080".into());
            let write_key = arg(&args, "--write-key").unwrap_or_else(|| "wk_demo".into());
            let mut load = Load::batch(vec![base], &write_key);
            load.duration = Duration::from_secs(num(&args, "--seconds", 10));
            load.concurrency = num(&args, "--concurrency", 32) as usize;
            load.random_ids = args.iter().any(|a| a == "--random-ids");
            if args.iter().any(|a| a == "--page") {
                load.shape = loadgen::Shape::Page;
            }
            load.cookie = arg(&args, "--cookie");
            println!("{}", runtime.block_on(loadgen::run(load)));
            Ok(())
        }
        Some("ingest") => ingest::ingest(&runtime, &args),
        Some("edge") => edge::edge(&runtime, &args),
        Some("sync") => syncs::sync(&args),
        Some("paced") => paced::paced(&runtime, &args),
        _ => {
            eprintln!(
                "usage: waymark-loadgen ingest [--waymark PATH] [--seconds N] [--rounds N] \
                 [--concurrency N] [--random-ids] [--backend sqlite|postgres] [--workers N] [--soak SECS]\n\
                 \x20      waymark-loadgen edge [--waymark PATH] [--rule RENAME.wasm] [--seconds N] [--concurrency N]\n\
                 \x20      waymark-loadgen sync [--waymark PATH] [--rows N]\n\
                 \x20      waymark-loadgen paced [--waymark PATH] [--seconds N] [--percent P] [--concurrency N]\n\
                 \x20      waymark-loadgen load --url URL [--write-key K] [--page] [--cookie C] [--random-ids]\n\
                 \x20      waymark-loadgen bare-server | sink"
            );
            std::process::exit(2);
        }
    }
}

/// The CPU `report` measured for the watched server `name`.
fn cpu_of<'a>(report: &'a Report, name: &str) -> Option<&'a CpuUse> {
    report.cpu.iter().find(|(n, _)| n == name).map(|(_, c)| c)
}

/// "NAME N µs/req M µs/event (C cores)" for the watched server `name`.
fn per_request(report: &Report, name: &str) -> String {
    let Some(cpu) = cpu_of(report, name) else {
        return String::new();
    };
    let per_req = cpu.micros_per(report.requests_per_sec);
    if report.events_per_request > 1 {
        format!(
            "{name} {per_req:>6.1} µs/req {:>5.2} µs/event ({:.2} cores)",
            cpu.micros_per(report.events_per_sec),
            cpu.cores()
        )
    } else {
        format!("{name} {per_req:>6.1} µs/req ({:.2} cores)", cpu.cores())
    }
}

/// A warning when the bare server left idle CPU it could have used: more
/// than a tenth of `cpus` (the whole machine when empty) idle over the
/// window. Then the generator, not the server, set the pace, and the ratio
/// flatters Waymark.
fn saturation(report: &Report, cpus: &[usize]) -> String {
    let cores = cpu_of(report, "bare").map_or(0.0, CpuUse::cores);
    let (idle, of): (f64, usize) = if cpus.is_empty() {
        (report.idle.iter().sum(), report.idle.len())
    } else {
        let idle = cpus.iter().filter_map(|c| report.idle.get(*c)).sum();
        (idle, cpus.len())
    };
    // What neither the bare server nor (machine-wide) the generator used.
    let generator = if cpus.is_empty() {
        report.generator.cores()
    } else {
        0.0
    };
    let others = (of as f64 - idle - cores - generator).max(0.0);
    let contended = if others > 0.1 * of as f64 {
        format!(
            "  ** other processes took {others:.2} cores of those {of}: a contended run, \
             compare its ratio with care **"
        )
    } else {
        String::new()
    };
    if idle > 0.1 * of as f64 {
        format!(
            "  ** bare server NOT saturated ({cores:.2} cores used, {idle:.2} of {of} left idle): \
             the ratio is an upper bound **{contended}"
        )
    } else {
        format!("  (saturated: {idle:.2} of {of} cores idle){contended}")
    }
}

fn print_median(what: &str, ratios: &mut [f64]) {
    if ratios.is_empty() {
        return;
    }
    ratios.sort_by(f64::total_cmp);
    let n = ratios.len();
    println!(
        "\nratio {what}: {:.3} median of {n} rounds (min {:.3}, max {:.3})",
        ratios[n / 2],
        ratios[0],
        ratios[n - 1]
    );
}
