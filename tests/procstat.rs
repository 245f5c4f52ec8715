//! CPU time of processes from `/proc` (Linux), for benchmarks that report
//! CPU per event of the worker and of PostgreSQL.

use std::time::{Duration, Instant};

/// `/proc` counts CPU time in clock ticks of 1/100 s (`USER_HZ`, fixed at
/// 100 on every Linux architecture Waymark runs on).
const TICKS_PER_SEC: f64 = 100.0;

/// User plus system CPU time of `pid` so far, in ticks; 0 when it is gone.
pub fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the command name, which may hold spaces: state is the
    // first, utime the 12th and stime the 13th.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

/// The parent pid of `pid`.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// `pid` and its direct children (PostgreSQL's postmaster and backends).
pub fn with_children(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            if let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) {
                if parent_of(child) == Some(pid) {
                    out.push(child);
                }
            }
        }
    }
    out
}

/// CPU used by a set of processes between [`CpuMeter::start`] and
/// [`CpuMeter::stop`].
pub struct CpuMeter {
    pids: Box<dyn Fn() -> Vec<u32>>,
    ticks: u64,
    started: Instant,
}

/// What a [`CpuMeter`] saw.
#[derive(Debug, Clone, Copy)]
pub struct CpuUse {
    /// CPU seconds used.
    pub cpu: Duration,
    /// Wall time measured.
    pub wall: Duration,
}

impl CpuUse {
    /// Cores kept busy on average.
    pub fn cores(&self) -> f64 {
        self.cpu.as_secs_f64() / self.wall.as_secs_f64().max(1e-9)
    }

    /// CPU microseconds per unit of work done at `rate` per second.
    pub fn micros_per(&self, rate: f64) -> f64 {
        self.cores() * 1e6 / rate.max(1e-9)
    }
}

impl CpuMeter {
    /// Starts measuring the processes `pids` lists (asked again at the end,
    /// so processes started meanwhile count; those that exit meanwhile do not).
    pub fn start(pids: impl Fn() -> Vec<u32> + 'static) -> CpuMeter {
        let ticks = pids().into_iter().map(cpu_ticks).sum();
        CpuMeter {
            pids: Box::new(pids),
            ticks,
            started: Instant::now(),
        }
    }

    /// What was used since the start.
    pub fn stop(&self) -> CpuUse {
        let now: u64 = (self.pids)().into_iter().map(cpu_ticks).sum();
        CpuUse {
            cpu: Duration::from_secs_f64(now.saturating_sub(self.ticks) as f64 / TICKS_PER_SEC),
            wall: self.started.elapsed(),
        }
    }
}

/// Idle time (idle plus iowait) of each CPU so far, in ticks, from `/proc/stat`.
pub fn idle_ticks() -> Vec<u64> {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return Vec::new();
    };
    stat.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            let f: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .map(|v| v.parse().unwrap_or(0))
                .collect();
            f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0)
        })
        .collect()
}

/// Idle cores of each CPU between two [`idle_ticks`] readings `wall` apart.
pub fn idle_cores(before: &[u64], after: &[u64], wall: Duration) -> Vec<f64> {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| a.saturating_sub(*b) as f64 / TICKS_PER_SEC / wall.as_secs_f64().max(1e-9))
        .collect()
}
