//! The processes a benchmark starts: servers that print a "listening on"
//! line, workers on one store (a [`Fleet`]), CPU pinning with `taskset`,
//! and what reached a destination.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use waymark_tests::loadgen::Pids;
use waymark_tests::pg::Cluster;

/// `program` as a command, under `taskset -c CPU` when `cpu` is set.
pub fn pinned(cpu: Option<usize>, program: impl AsRef<std::ffi::OsStr>) -> Command {
    match cpu {
        Some(cpu) => {
            let mut cmd = Command::new("taskset");
            cmd.arg("-c").arg(cpu.to_string()).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

/// Pins every thread of this process to `cpu` (`taskset -a -p`).
pub fn pin_self(cpu: usize) -> anyhow::Result<()> {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", &cpu.to_string()])
        .arg(std::process::id().to_string())
        .stdout(Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "taskset failed ({status})");
    Ok(())
}

/// Spawns a server and waits for its "listening on" line; returns it and
/// the address after `prefix`.
pub fn spawn(cmd: &mut Command, prefix: &str) -> anyhow::Result<(Child, String)> {
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

/// A server process killed on drop.
pub struct Server {
    /// The process.
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

impl Server {
    /// Starts `cmd` and waits for its line starting `prefix`.
    pub fn start(cmd: &mut Command, prefix: &str) -> anyhow::Result<Server> {
        let (child, base) = spawn(cmd, prefix)?;
        Ok(Server { child, base })
    }

    /// The server's pid, for a CPU meter.
    pub fn pids(&self) -> Pids {
        let pid = self.child.id();
        Arc::new(move || vec![pid])
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Workers on one store, stopped and removed on drop.
pub struct Fleet {
    workers: Vec<Child>,
    /// `http://127.0.0.1:PORT` of each worker.
    pub bases: Vec<String>,
    dirs: Vec<PathBuf>,
    /// PostgreSQL's postmaster (its backends are its children).
    pub postmaster: Option<u32>,
}

impl Fleet {
    /// `n` workers with `config` on SQLite (`db` none, one worker) or on
    /// PostgreSQL, pinned to `cpu` when set.
    pub fn start(
        waymark: &str,
        config: &str,
        db: Option<(&Cluster, String)>,
        n: usize,
        cpu: Option<usize>,
    ) -> anyhow::Result<Fleet> {
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
            let file = data.join("waymark.toml");
            std::fs::write(&file, format!("{storage}{config}"))?;
            let (worker, base) = spawn(
                pinned(cpu, waymark)
                    .args(["serve", "--listen", "127.0.0.1:0", "--config"])
                    .arg(&file)
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

    /// The workers' pids.
    pub fn pid_list(&self) -> Vec<u32> {
        self.workers.iter().map(Child::id).collect()
    }

    /// The workers' pids, for a CPU meter.
    pub fn pids(&self) -> Pids {
        let pids = self.pid_list();
        Arc::new(move || pids.clone())
    }

    /// PostgreSQL's processes, for a CPU meter.
    pub fn db_pids(&self) -> Option<Pids> {
        let pm = self.postmaster?;
        Some(Arc::new(move || waymark_tests::procstat::with_children(pm)))
    }

    /// Events in the workers' file destinations (`events*.ndjson`, rotated
    /// files included).
    pub fn file_events(&self) -> u64 {
        self.dirs.iter().map(|d| ndjson_lines(d)).sum()
    }
}

fn ndjson_lines(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("events") && name.ends_with(".ndjson")
        })
        .map(|e| {
            std::fs::read(e.path())
                .map(|b| b.iter().filter(|&&c| c == b'\n').count() as u64)
                .unwrap_or(0)
        })
        .sum()
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

/// Waits until `count()` reaches `acked` (or stops moving for 20 s) and
/// prints what reached `what`.
pub fn check_delivered(what: &str, acked: u64, count: impl Fn() -> u64) -> bool {
    let mut last = (count(), Instant::now());
    while last.0 < acked && last.1.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(200));
        let now = count();
        if now != last.0 {
            last = (now, Instant::now());
        }
    }
    let ok = last.0 >= acked;
    println!(
        "  delivered: {} of {acked} acked events in the {what}{}",
        last.0,
        if ok { "" } else { "  ** EVENTS MISSING **" }
    );
    ok
}

/// Resident memory of `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
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
