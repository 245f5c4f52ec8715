//! Named signals: one struct per thing that happens, each with an `emit()`
//! that logs and moves its metrics. Stage code only ever calls `emit()`.
//!
//! Metrics follow Prometheus naming (`waymark_*`, base units, `_total` on
//! counters) and carry only bounded labels: stage, source, destination,
//! route, status and reason codes.

pub(crate) mod consent;
pub(crate) mod deliver;
pub(crate) mod http;
pub(crate) mod identity;
pub(crate) mod ingest;
pub(crate) mod rules;
pub(crate) mod storage;
pub(crate) mod syncs;

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Latency buckets in seconds, from 100 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// How often recorded histogram samples are folded into their buckets.
///
/// The exporter keeps every sample a histogram records until it renders or
/// runs its upkeep, so a worker nobody scrapes would grow by 8 bytes per
/// delivered event (a million-row sync kept 14 MiB of samples) without it.
const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Installs the process-wide Prometheus recorder (once), starts its upkeep
/// thread and returns its handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .map(|b| b.build_recorder());
            match recorder {
                Ok(recorder) => {
                    let handle = recorder.handle();
                    // A second recorder (another test in the process) is harmless.
                    if metrics::set_global_recorder(recorder).is_ok() {
                        start_upkeep(handle.clone());
                    }
                    handle
                }
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

/// Runs the recorder's upkeep every [`UPKEEP_INTERVAL`] on a thread of its
/// own, for the life of the process.
fn start_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("waymark-metrics".into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_INTERVAL);
            handle.run_upkeep();
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "Cannot start the metrics upkeep thread; histogram samples are folded only when /metrics is scraped.");
    }
}
