//! `cargo xtask bench sync`: a Reverse-ETL sync of a large model (1 000 000
//! rows by default) on a throwaway PostgreSQL warehouse to a loopback
//! webhook sink (issue 18's benchmark). Four phases, each `waymark sync
//! run` as a process: a dry run and a real first run, then 1% of the rows
//! changed, a dry run and a real run again. The dry runs time reading and
//! diffing alone; the real ones add delivery. For each: wall time, rows/s,
//! the worker's CPU per row and its peak RSS, both from /proc.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use waymark_tests::pg::Cluster;
use waymark_tests::procstat::cpu_ticks;

use super::procs::Server;
use super::{arg, num};

/// A finished phase.
struct Phase {
    wall: Duration,
    cpu: Duration,
    peak_rss_kib: u64,
    run: serde_json::Value,
}

/// Peak resident memory so far (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Runs `waymark sync run` with `extra` args; samples its CPU and peak RSS
/// from /proc until it exits (the last sample is at most 20 ms old).
fn phase(waymark: &Path, config: &Path, url: &str, extra: &[&str]) -> anyhow::Result<Phase> {
    let started = Instant::now();
    let mut child: Child = Command::new(waymark)
        .args(["sync", "run", "bench-sync", "--config"])
        .arg(config)
        .args(extra)
        .env("BENCH_PG_URL", url)
        .env("WAYMARK_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let ticks_per_sec = 100.0;
    let (mut ticks, mut peak) = (0, 0);
    loop {
        if let Some(status) = child.try_wait()? {
            let mut out = String::new();
            if let Some(mut stdout) = child.stdout.take() {
                use std::io::Read;
                stdout.read_to_string(&mut out)?;
            }
            anyhow::ensure!(
                status.success(),
                "waymark sync run failed ({status}): {out}"
            );
            let run = serde_json::from_str(out.trim()).unwrap_or(serde_json::Value::Null);
            return Ok(Phase {
                wall: started.elapsed(),
                cpu: Duration::from_secs_f64(ticks as f64 / ticks_per_sec),
                peak_rss_kib: peak,
                run,
            });
        }
        ticks = cpu_ticks(pid).max(ticks);
        peak = peak_rss_kib(pid).max(peak);
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn report(name: &str, rows_read: u64, rows_sent: u64, p: &Phase) {
    let secs = p.wall.as_secs_f64().max(1e-9);
    let per_row = if rows_read > 0 {
        p.cpu.as_secs_f64() * 1e6 / rows_read as f64
    } else {
        0.0
    };
    println!(
        "{name}: {:.2} s, {rows_read} rows read ({:.0} rows/s read and diffed), {rows_sent} sent ({:.0} rows/s delivered), \
         worker CPU {:.2} s ({per_row:.2} µs per row read), peak RSS {:.1} MiB, status {}",
        secs,
        rows_read as f64 / secs,
        rows_sent as f64 / secs,
        p.cpu.as_secs_f64(),
        p.peak_rss_kib as f64 / 1024.0,
        p.run["status"].as_str().unwrap_or("(dry run)")
    );
}

fn sent_of(run: &serde_json::Value) -> u64 {
    let s = &run["successfulRows"];
    ["addedCount", "changedCount", "removedCount"]
        .iter()
        .map(|k| s[k].as_u64().unwrap_or(0))
        .sum()
}

/// The benchmark; `args` as given to `waymark-loadgen sync`.
pub fn sync(args: &[String]) -> anyhow::Result<()> {
    let waymark = arg(args, "--waymark").unwrap_or_else(|| "target/release/waymark".into());
    let rows = num(args, "--rows", 1_000_000);
    let cluster = Cluster::start().map_err(|e| anyhow::anyhow!("cannot start PostgreSQL: {e}"))?;
    let url = cluster
        .create_database("bench_crm")
        .map_err(|e| anyhow::anyhow!("cannot create the warehouse database: {e}"))?;
    let load = Instant::now();
    cluster
        .psql(
            &url,
            &format!(
                "CREATE TABLE crm_users (id bigint PRIMARY KEY, email text, plan text, ltv numeric);
                 INSERT INTO crm_users SELECT i, 'user' || i || '@example.com', 'free', i % 1000
                 FROM generate_series(1, {rows}) i;"
            ),
        )
        .map_err(|e| anyhow::anyhow!("cannot fill the warehouse: {e}"))?;
    println!(
        "sync benchmark: {rows} rows in PostgreSQL (loaded in {:.1} s), upsert identify to a loopback webhook (batches of 500)\n",
        load.elapsed().as_secs_f64()
    );
    let me = std::env::current_exe()?;
    let sink = Server::start(Command::new(&me).arg("sink"), "sink listening on ")?;
    let dir = std::env::temp_dir().join(format!("waymark-bench-sync-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("waymark.toml");
    std::fs::write(
        &config,
        format!(
            r#"[storage]
data_dir = "{data}"
[identity]
keys = [{{ id = "k1", secret = "0123456789abcdef0123456789abcdef" }}]
[[sources]]
name = "web"
write_key = "wk_bench"
[[destinations]]
name = "hook"
type = "webhook"
url = "{sink}/hook"
max_batch = 500
[[warehouses]]
name = "crm"
type = "postgres"
url_env = "BENCH_PG_URL"
batch_rows = 1000
[[models]]
name = "users"
warehouse = "crm"
query = "select id, email, plan, ltv from crm_users"
primary_key = "id"
[[syncs]]
name = "bench-sync"
model = "users"
destination = "hook"
call = "identify"
mapping = {{ userId = "id", "traits.email" = "email", "traits.plan" = "plan", "traits.ltv" = "ltv" }}
report_timeout_secs = 3600
"#,
            data = dir.join("data").display(),
            sink = sink.base
        ),
    )?;
    let waymark = Path::new(&waymark);
    let dry = phase(waymark, &config, &url, &["--dry-run"])?;
    report("first run, dry (read + diff)", rows, 0, &dry);
    let first = phase(waymark, &config, &url, &[])?;
    report("first run", rows, sent_of(&first.run), &first);
    let changed = rows / 100;
    cluster
        .psql(
            &url,
            &format!("UPDATE crm_users SET plan = 'pro' WHERE id % 100 = 0 AND id <= {rows}"),
        )
        .map_err(|e| anyhow::anyhow!("cannot change the warehouse: {e}"))?;
    let dry = phase(waymark, &config, &url, &["--dry-run"])?;
    report("1% changed, dry (read + diff)", rows, 0, &dry);
    let second = phase(waymark, &config, &url, &[])?;
    report("1% changed", rows, sent_of(&second.run), &second);
    let ok = sent_of(&first.run) == rows && sent_of(&second.run) == changed;
    println!(
        "\n  check: first run sent {} of {rows}, the 1% run sent {} of {changed} changed rows{}",
        sent_of(&first.run),
        sent_of(&second.run),
        if ok { "" } else { "  ** MISMATCH **" }
    );
    let _ = std::fs::remove_dir_all(&dir);
    anyhow::ensure!(ok, "the sync did not send what it planned");
    Ok(())
}
