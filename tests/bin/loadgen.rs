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

use waymark_tests::loadgen::{self, Load};

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
                base,
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
        Some("ingest") => {
            let waymark =
                arg(&args, "--waymark").unwrap_or_else(|| "target/release/waymark".into());
            let secs: u64 = arg(&args, "--seconds")
                .and_then(|s| s.parse().ok())
                .unwrap_or(10);
            let concurrency: usize = arg(&args, "--concurrency")
                .and_then(|s| s.parse().ok())
                .unwrap_or(32);
            let random_ids = args.iter().any(|a| a == "--random-ids");
            let load = |base: String| Load {
                base,
                write_key: "wk_bench".into(),
                concurrency,
                batch: 20,
                duration: Duration::from_secs(secs),
                warmup: Duration::from_secs(2),
                random_ids,
            };
            let rounds: usize = arg(&args, "--rounds")
                .and_then(|s| s.parse().ok())
                .unwrap_or(3)
                .max(1);
            let ids = if random_ids { "random" } else { "counting" };
            println!(
                "ingest benchmark: {concurrency} concurrent requests of 20 events (~600 B each, \
                 {ids} message ids), {rounds} rounds of {secs} s against each server\n"
            );

            // Rounds alternate the two servers, so a change in the machine's
            // speed (a shared VM) moves both sides of each round's ratio.
            let me = std::env::current_exe()?;
            let (mut bare, bare_base) =
                spawn(Command::new(&me).arg("bare-server"), "bare listening on ")?;
            let mut ratios = Vec::with_capacity(rounds);
            for round in 1..=rounds {
                let baseline = runtime.block_on(loadgen::run(load(bare_base.clone())));
                println!("round {round}: bare axum (reads body, 200): {baseline}");
                // A fresh worker and store each round: nothing it does in the
                // background runs during the next baseline.
                let data =
                    std::env::temp_dir().join(format!("waymark-bench-{}", uuid::Uuid::new_v4()));
                std::fs::create_dir_all(&data)?;
                let config = data.join("waymark.toml");
                std::fs::write(&config, BENCH_CONFIG)?;
                let (mut worker, base) = spawn(
                    Command::new(&waymark)
                        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
                        .arg(&config)
                        .arg("--data-dir")
                        .arg(&data)
                        .env("WAYMARK_LOG", "warn"),
                    "waymark listening on ",
                )?;
                let measured = runtime.block_on(loadgen::run(load(base)));
                let _ = worker.kill();
                let _ = worker.wait();
                let _ = std::fs::remove_dir_all(&data);
                let ratio = measured.requests_per_sec / baseline.requests_per_sec.max(1.0);
                println!(
                    "round {round}: waymark (durable acks):      {measured}  ratio {ratio:.2}"
                );
                ratios.push(ratio);
            }
            let _ = bare.kill();
            ratios.sort_by(f64::total_cmp);
            let median = ratios[ratios.len() / 2];
            println!(
                "\nratio waymark / bare: {median:.2} median of {rounds} rounds \
                 (min {:.2}, max {:.2}; target >= 0.50)",
                ratios[0],
                ratios[ratios.len() - 1]
            );
            Ok(())
        }
        _ => {
            eprintln!("usage: waymark-loadgen ingest [--waymark PATH] [--seconds N] [--rounds N] [--concurrency N] [--random-ids] | load --url URL [--write-key K] [--random-ids] | bare-server");
            std::process::exit(2);
        }
    }
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
