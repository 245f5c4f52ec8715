//! `waymark-loadgen`: the ingest benchmark (`cargo xtask bench ingest`).
//!
//! `waymark-loadgen ingest --waymark PATH` starts the real worker (durable
//! acks, one file destination) and a bare axum server that only reads the
//! body, drives both with the same load in alternating rounds, and prints
//! the median ratio.
//! `waymark-loadgen bare-server` runs the baseline alone.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use waymark_tests::loadgen::{self, Load, Report};
use waymark_tests::pg::Cluster;
use waymark_tests::procstat::{CpuMeter, CpuUse};

const BENCH_CONFIG: &str = r#"
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

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
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
        Some("load") => {
            // Drive an already running worker, e.g. while profiling it.
            let base = arg(&args, "--url").unwrap_or_else(|| "http://127.0.0.1:8080".into());
            let write_key = arg(&args, "--write-key").unwrap_or_else(|| "wk_demo".into());
            let secs: u64 = arg(&args, "--seconds")
                .and_then(|s| s.parse().ok())
                .unwrap_or(10);
            let concurrency: usize = arg(&args, "--concurrency")
                .and_then(|s| s.parse().ok())
                .unwrap_or(32);
            let report = runtime.block_on(loadgen::run(Load {
                bases: vec![base],
                write_key,
                concurrency,
                batch: 20,
                duration: Duration::from_secs(secs),
                warmup: Duration::from_secs(1),
                random_ids: args.iter().any(|a| a == "--random-ids"),
            }));
            println!("{report}");
            Ok(())
        }
        Some("ingest") => ingest(&runtime, &args),
        _ => {
            eprintln!("usage: waymark-loadgen ingest [--waymark PATH] [--seconds N] [--rounds N] [--concurrency N] [--random-ids] [--backend sqlite|postgres] [--workers N] [--soak SECS] | load --url URL [--write-key K] [--random-ids] | bare-server");
            std::process::exit(2);
        }
    }
}

/// The ingest benchmark: the bare server, the SQLite worker and (with
/// `--backend postgres`) `--workers` workers on a throwaway PostgreSQL, in
/// alternating rounds of the same load, with CPU per event from /proc.
fn ingest(runtime: &tokio::runtime::Runtime, args: &[String]) -> anyhow::Result<()> {
    let num = |name: &str, default: u64| -> u64 {
        arg(args, name)
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    let waymark = arg(args, "--waymark").unwrap_or_else(|| "target/release/waymark".into());
    let secs = num("--seconds", 10);
    let concurrency = num("--concurrency", 32) as usize;
    let rounds = num("--rounds", 3).max(1) as usize;
    let workers = num("--workers", 1).max(1) as usize;
    let soak = num("--soak", 0);
    let postgres = arg(args, "--backend").as_deref() == Some("postgres");
    let random_ids = args.iter().any(|a| a == "--random-ids");
    let load = |bases: Vec<String>, duration: Duration| Load {
        bases,
        write_key: "wk_bench".into(),
        concurrency,
        batch: 20,
        duration,
        warmup: Duration::from_secs(2),
        random_ids,
    };
    let ids = if random_ids { "random" } else { "counting" };
    println!(
        "ingest benchmark: {concurrency} concurrent requests of 20 events (~600 B each, \
         {ids} message ids), {rounds} rounds of {secs} s against each server\n"
    );
    let cluster = if postgres {
        Some(Cluster::start().map_err(|e| anyhow::anyhow!("cannot start PostgreSQL: {e}"))?)
    } else {
        None
    };

    // Rounds alternate the servers, so a change in the machine's speed (a
    // shared VM) moves every side of each round's ratio.
    let me = std::env::current_exe()?;
    let (mut bare, bare_base) = spawn(Command::new(&me).arg("bare-server"), "bare listening on ")?;
    let bare_pid = bare.id();
    let mut sqlite_ratios = Vec::with_capacity(rounds);
    let mut pg_ratios = Vec::with_capacity(rounds);
    let duration = Duration::from_secs(secs);
    for round in 1..=rounds {
        let (baseline, cpu) = measured(
            runtime,
            load(vec![bare_base.clone()], duration),
            move || vec![bare_pid],
        );
        println!(
            "round {round}: bare axum (reads body, 200):  {baseline}  {}",
            per_event(&cpu, &baseline)
        );
        // A fresh worker and store each round: nothing it does in the
        // background runs during the next server's turn.
        let sqlite = Fleet::start(&waymark, None, 1)?;
        let (report, cpu, _) = sqlite.measure(runtime, &load, duration);
        let ratio = report.requests_per_sec / baseline.requests_per_sec.max(1.0);
        println!(
            "round {round}: waymark sqlite (durable acks): {report}  {}  ratio {ratio:.2}",
            per_event(&cpu, &report)
        );
        sqlite_ratios.push(ratio);
        drop(sqlite);
        if let Some(cluster) = &cluster {
            let url = cluster
                .create_database(&format!("bench_r{round}"))
                .map_err(|e| anyhow::anyhow!("cannot create the bench database: {e}"))?;
            let fleet = Fleet::start(&waymark, Some((cluster, url)), workers)?;
            let (pg, cpu, db_cpu) = fleet.measure(runtime, &load, duration);
            let vs_sqlite = pg.requests_per_sec / report.requests_per_sec.max(1.0);
            println!(
                "round {round}: waymark postgres x{workers}:       {pg}  {}  postgres {}  vs sqlite {vs_sqlite:.2}",
                per_event(&cpu, &pg),
                db_cpu.map(|c| per_event(&c, &pg)).unwrap_or_default()
            );
            pg_ratios.push(vs_sqlite);
        }
    }
    let _ = bare.kill();
    print_median("waymark sqlite / bare", &mut sqlite_ratios);
    if postgres {
        print_median(
            &format!("waymark postgres x{workers} / sqlite"),
            &mut pg_ratios,
        );
    }
    if let (Some(cluster), true) = (&cluster, soak > 0) {
        soak_run(runtime, &waymark, cluster, workers, soak, &load)?;
    }
    Ok(())
}

fn print_median(what: &str, ratios: &mut [f64]) {
    ratios.sort_by(f64::total_cmp);
    let n = ratios.len();
    println!(
        "\nratio {what}: {:.2} median of {n} rounds (min {:.2}, max {:.2})",
        ratios[n / 2],
        ratios[0],
        ratios[n - 1]
    );
}

/// "cpu N µs/event (M cores)". CPU is measured over warm-up and run and
/// divided by the run's rate, which assumes the warm-up runs at that rate.
fn per_event(cpu: &CpuUse, report: &Report) -> String {
    format!(
        "cpu {:>6.1} µs/event ({:.2} cores)",
        cpu.micros_per(report.events_per_sec),
        cpu.cores()
    )
}

fn measured(
    runtime: &tokio::runtime::Runtime,
    load: Load,
    pids: impl Fn() -> Vec<u32> + 'static,
) -> (Report, CpuUse) {
    let meter = CpuMeter::start(pids);
    let report = runtime.block_on(loadgen::run(load));
    (report, meter.stop())
}

/// Workers on one store, stopped and removed on drop.
struct Fleet {
    workers: Vec<std::process::Child>,
    bases: Vec<String>,
    dirs: Vec<std::path::PathBuf>,
    /// PostgreSQL's postmaster (its backends are its children).
    postmaster: Option<u32>,
}

impl Fleet {
    /// `n` workers on SQLite (`db` none, one worker) or on PostgreSQL.
    fn start(waymark: &str, db: Option<(&Cluster, String)>, n: usize) -> anyhow::Result<Fleet> {
        let mut fleet = Fleet {
            workers: Vec::new(),
            bases: Vec::new(),
            dirs: Vec::new(),
            postmaster: None,
        };
        let storage = match &db {
            Some((_, url)) => format!("[storage]\nbackend = \"postgres\"\nurl = \"{url}\"\n"),
            None => String::new(),
        };
        for _ in 0..n {
            let data = std::env::temp_dir().join(format!("waymark-bench-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&data)?;
            let config = data.join("waymark.toml");
            std::fs::write(&config, format!("{storage}{BENCH_CONFIG}"))?;
            let (worker, base) = spawn(
                Command::new(waymark)
                    .args(["serve", "--listen", "127.0.0.1:0", "--config"])
                    .arg(&config)
                    .arg("--data-dir")
                    .arg(&data)
                    .env("WAYMARK_LOG", "warn"),
                "waymark listening on ",
            )?;
            fleet.workers.push(worker);
            fleet.bases.push(base);
            fleet.dirs.push(data);
        }
        if let Some((cluster, _)) = db {
            fleet.postmaster = Some(
                cluster
                    .postmaster_pid()
                    .ok_or_else(|| anyhow::anyhow!("PostgreSQL is not running"))?,
            );
        }
        Ok(fleet)
    }

    fn pids(&self) -> Vec<u32> {
        self.workers.iter().map(|w| w.id()).collect()
    }

    fn measure(
        &self,
        runtime: &tokio::runtime::Runtime,
        load: &dyn Fn(Vec<String>, Duration) -> Load,
        duration: Duration,
    ) -> (Report, CpuUse, Option<CpuUse>) {
        let pids = self.pids();
        let db = self
            .postmaster
            .map(|pm| CpuMeter::start(move || waymark_tests::procstat::with_children(pm)));
        let (report, cpu) = measured(runtime, load(self.bases.clone(), duration), move || {
            pids.clone()
        });
        (report, cpu, db.map(|m| m.stop()))
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for w in &mut self.workers {
            let _ = w.kill();
            let _ = w.wait();
        }
        for d in &self.dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    }
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
    let fleet = Fleet::start(waymark, Some((cluster, url.clone())), workers)?;
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
        let (report, cpu, db_cpu) = fleet.measure(runtime, load, Duration::from_secs(58));
        if slice == 1 {
            start_tables = tables();
        }
        let rss: u64 = fleet.pids().iter().map(|p| rss_kib(*p)).sum();
        println!(
            "soak minute {slice}: {report}  {}  postgres {}  rss {} MiB",
            per_event(&cpu, &report),
            db_cpu.map(|c| per_event(&c, &report)).unwrap_or_default(),
            rss / 1024
        );
    }
    println!(
        "\npg_stat_user_tables after the first minute (table|live|dead|bytes):\n{start_tables}"
    );
    println!("pg_stat_user_tables at the end:\n{}", tables());
    Ok(())
}

/// Resident memory of `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Spawns a server and waits for its "listening on" line.
fn spawn(cmd: &mut Command, prefix: &str) -> anyhow::Result<(std::process::Child, String)> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    while reader.read_line(&mut line)? > 0 {
        if let Some(base) = line.trim().strip_prefix(prefix) {
            let base = base.to_owned();
            std::thread::spawn(move || {
                let mut sink = String::new();
                while reader.read_line(&mut sink).unwrap_or(0) > 0 {
                    sink.clear();
                }
            });
            return Ok((child, base));
        }
        line.clear();
    }
    anyhow::bail!("server exited before listening")
}
