//! The load generator of the benchmarks: keep-alive HTTP/1.1 connections,
//! each sending one prebuilt request over and over, with only its
//! `messageId`s and `sentAt` patched in place (see [`body`]), so the client
//! costs a small fraction of the server it measures. Reports requests/s,
//! events/s, latency percentiles from a histogram, and the CPU of the
//! generator and of the watched server processes over the measured window.

pub mod body;
mod conn;
pub mod histogram;
mod servers;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use body::Shape;
use body::{Ids, Template};
use conn::Conn;
use histogram::Histogram;
pub use servers::{bare_server, count_events, webhook_sink};

use crate::procstat::{idle_cores, idle_ticks, CpuMeter, CpuUse};

/// A function listing the pids of a watched server (asked at start and end).
pub type Pids = Arc<dyn Fn() -> Vec<u32> + Send + Sync>;

/// Load settings.
#[derive(Clone)]
pub struct Load {
    /// `http://127.0.0.1:PORT` of each server; connections are spread over
    /// them in turn (a fleet of workers behind no load balancer).
    pub bases: Vec<String>,
    /// Write key sent as the Basic username.
    pub write_key: String,
    /// Connections, each with one request in flight.
    pub concurrency: usize,
    /// What each request carries.
    pub shape: Shape,
    /// A `Cookie` header sent with every request (a returning visitor).
    pub cookie: Option<String>,
    /// How long to send, after warm-up.
    pub duration: Duration,
    /// Random message ids (spread over a B-tree, as UUIDs are) instead of
    /// ids that count up per connection.
    pub random_ids: bool,
    /// Warm-up before measuring.
    pub warmup: Duration,
    /// Server processes whose CPU is measured over the measured window.
    pub watch: Vec<(String, Pids)>,
    /// Requests per second over all connections, each on a fixed schedule
    /// (`None`: as fast as the server answers). A paced request's latency
    /// counts from when the schedule meant to send it, so a server that
    /// falls behind is not flattered by the requests it delayed (the
    /// coordinated omission `wrk2` corrects).
    pub rate: Option<f64>,
}

impl Load {
    /// The batch load: 32 connections of 20 track events per request,
    /// 10 s after 2 s of warm-up, counting ids, nothing watched.
    pub fn batch(bases: Vec<String>, write_key: &str) -> Load {
        Load {
            bases,
            write_key: write_key.to_owned(),
            concurrency: 32,
            shape: Shape::Batch(20),
            cookie: None,
            duration: Duration::from_secs(10),
            random_ids: false,
            warmup: Duration::from_secs(2),
            watch: Vec::new(),
            rate: None,
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// Requests answered 200 in the measured window.
    pub requests: u64,
    /// Requests answered otherwise (or failed) in the measured window.
    pub errors: u64,
    /// Events acknowledged (answered 200) over the whole run, warm-up included.
    pub acked_events: u64,
    /// Events per request.
    pub events_per_request: usize,
    /// Events per second (200 answers × events per request / elapsed).
    pub events_per_sec: f64,
    /// Requests per second.
    pub requests_per_sec: f64,
    /// Median request latency.
    pub p50: Duration,
    /// 99th percentile request latency.
    pub p99: Duration,
    /// 99.9th percentile request latency.
    pub p999: Duration,
    /// CPU of this process (the generator) over the measured window.
    pub generator: CpuUse,
    /// CPU of each watched server over the measured window.
    pub cpu: Vec<(String, CpuUse)>,
    /// Idle cores of each CPU of the machine over the measured window.
    pub idle: Vec<f64>,
}

impl Report {
    /// CPU microseconds per request of the generator.
    pub fn generator_us_per_request(&self) -> f64 {
        self.generator.micros_per(self.requests_per_sec)
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        write!(
            f,
            "{:>8.0} req/s {:>9.0} events/s  p50 {:>6.2} p99 {:>6.2} p99.9 {:>6.2} ms  \
             ({} ok, {} errors; generator {:.2} cores, {:.1} µs/req)",
            self.requests_per_sec,
            self.events_per_sec,
            ms(self.p50),
            ms(self.p99),
            ms(self.p999),
            self.requests,
            self.errors,
            self.generator.cores(),
            self.generator_us_per_request(),
        )
    }
}

/// One ~750-byte track event with a unique messageId, as a JSON value (for
/// benches that add fields per event; the generator itself patches bytes).
pub fn bench_event(i: u64, worker: usize) -> serde_json::Value {
    serde_json::json!({
        "type": "track",
        "event": "Product Added",
        "messageId": format!("bench-{worker}-{i}-{}", uuid::Uuid::new_v4()),
        // Each sender its own 1 000 visitors: senders in step must not
        // all move the same visitors' sessions at once.
        "anonymousId": format!("anon-{worker}-{}", i % 1000),
        "timestamp": "2024-05-01T12:00:00.000Z",
        "properties": {
            "product_id": "507f1f77bcf86cd799439011",
            "sku": "G-32",
            "category": "Games",
            "name": "Monopoly: 3rd Edition",
            "brand": "Hasbro",
            "variant": "200 pieces",
            "price": 18.99,
            "quantity": 1,
            "coupon": "MAYDEALS",
            "position": 3,
            "url": "https://www.example.com/product/path",
            "image_url": "https://www.example.com/product/path.jpg"
        },
        "context": {
            "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
            "page": {"path": "/product/path", "url": "https://www.example.com/product/path"},
            "library": {"name": "waymark-loadgen", "version": "0.1.0"}
        }
    })
}

/// What one connection saw.
#[derive(Default)]
struct Tally {
    ok: u64,
    errors: u64,
    acked_events: u64,
    latency: Histogram,
}

/// When one connection sends: back to back, or every `interval` from `next`.
struct Pace {
    interval: Option<Duration>,
    next: Instant,
}

impl Pace {
    /// Connection `index` of `connections` sharing `rate` requests/s; paced
    /// connections start spread over one interval.
    fn new(rate: Option<f64>, index: usize, connections: usize) -> Pace {
        let interval = rate
            .filter(|r| *r > 0.0)
            .map(|r| Duration::from_secs_f64(connections as f64 / r));
        let offset = interval.map_or(Duration::ZERO, |i| {
            i.mul_f64(index as f64 / connections.max(1) as f64)
        });
        Pace {
            interval,
            next: Instant::now() + offset,
        }
    }

    /// Waits for the next send and returns the instant latency counts from.
    async fn wait(&mut self) -> Instant {
        let Some(interval) = self.interval else {
            return Instant::now();
        };
        tokio::time::sleep_until(self.next.into()).await;
        let due = self.next;
        self.next += interval;
        due
    }
}

/// Sends on one connection until `stop`; counts while `measuring`.
async fn connection(
    host: String,
    mut template: Template,
    mut ids: Ids,
    mut pace: Pace,
    stop: Arc<AtomicBool>,
    measuring: Arc<AtomicBool>,
) -> Tally {
    let mut tally = Tally::default();
    let mut conn: Option<Conn> = None;
    while !stop.load(Ordering::Relaxed) {
        let Some(c) = conn.as_mut() else {
            match Conn::connect(&host).await {
                Ok(c) => conn = Some(c),
                Err(_) => {
                    tally.errors += u64::from(measuring.load(Ordering::Relaxed));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            continue;
        };
        for slot in 0..template.id_slots() {
            let id = *ids.next_id();
            template.set_id(slot, &id);
        }
        let started = pace.wait().await;
        template.set_time(&body::now_rfc3339());
        let answer = tokio::time::timeout(Duration::from_secs(30), c.send(&template.bytes)).await;
        let elapsed = started.elapsed();
        let good = matches!(answer, Ok(Ok(200)));
        if !matches!(answer, Ok(Ok(_))) {
            conn = None;
        }
        if good {
            tally.acked_events += template.id_slots() as u64;
        }
        if measuring.load(Ordering::Relaxed) {
            if good {
                tally.ok += 1;
                tally.latency.record(elapsed);
            } else {
                tally.errors += 1;
            }
        }
    }
    tally
}

/// Runs the load and returns what it measured.
pub async fn run(load: Load) -> Report {
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    // A run id in every messageId keeps ids unique across runs too.
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u32)
        .unwrap_or(0);
    let mut tasks = Vec::new();
    for i in 0..load.concurrency {
        let base = &load.bases[i % load.bases.len().max(1)];
        let host = base.trim_start_matches("http://").trim_end_matches('/');
        let template = Template::new(load.shape, i, host, &load.write_key, load.cookie.as_deref());
        let ids = Ids::new(run_id, i as u16, load.random_ids);
        tasks.push(tokio::spawn(connection(
            host.to_owned(),
            template,
            ids,
            Pace::new(load.rate, i, load.concurrency),
            Arc::clone(&stop),
            Arc::clone(&measuring),
        )));
    }
    tokio::time::sleep(load.warmup).await;
    let me = CpuMeter::start(|| vec![std::process::id()]);
    let meters: Vec<(String, CpuMeter)> = load
        .watch
        .iter()
        .map(|(name, pids)| {
            let pids = Arc::clone(pids);
            (name.clone(), CpuMeter::start(move || pids()))
        })
        .collect();
    let idle_before = idle_ticks();
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(load.duration).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let generator = me.stop();
    let idle = idle_cores(&idle_before, &idle_ticks(), elapsed);
    let cpu = meters.iter().map(|(n, m)| (n.clone(), m.stop())).collect();
    stop.store(true, Ordering::Relaxed);
    let mut all = Tally::default();
    for t in tasks {
        if let Ok(t) = t.await {
            all.ok += t.ok;
            all.errors += t.errors;
            all.acked_events += t.acked_events;
            all.latency.merge(&t.latency);
        }
    }
    let secs = elapsed.as_secs_f64();
    let per = load.shape.events();
    Report {
        requests: all.ok,
        errors: all.errors,
        acked_events: all.acked_events,
        events_per_request: per,
        events_per_sec: all.ok as f64 * per as f64 / secs,
        requests_per_sec: all.ok as f64 / secs,
        p50: all.latency.quantile(0.50),
        p99: all.latency.quantile(0.99),
        p999: all.latency.quantile(0.999),
        generator,
        cpu,
        idle,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paced_sends_keep_their_schedule_when_late() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        // 4 connections sharing 100 requests/s: each every 40 ms, the second
        // a quarter interval after the first.
        let mut pace = Pace::new(Some(100.0), 1, 4);
        let start = pace.next;
        std::thread::sleep(Duration::from_millis(100));
        let (first, second) = runtime.block_on(async { (pace.wait().await, pace.wait().await) });
        // Both were due before the sleep ended: latency counts from then,
        // not from the late send.
        assert_eq!(first, start);
        assert_eq!(second - first, Duration::from_millis(40));
        assert!(second < Instant::now());
        let unpaced = Pace::new(None, 1, 4);
        assert!(unpaced.interval.is_none());
    }
}
