//! `GET /admin/stats`: the worker's counters as JSON, for the console's
//! Overview (mounted inside the admin router, behind the admin token).
//!
//! The answer is a snapshot of monotonic counters and current gauges; the
//! console polls it and turns the differences between two snapshots into
//! rates. Shape:
//!
//! ```json
//! {"atMs": 1764620000000,
//!  "sources": {"web": {"accepted": 10, "duplicates": 1,
//!                      "rejected": {"missing_field": 2}, "dropped": {"consent": 1}}},
//!  "destinations": {"lake": {"delivered": 9, "failed": 0, "retried": 0,
//!                            "deadLettered": 0, "outboxDepth": 0, "deadLetters": 0,
//!                            "held": 0, "skipped": 0,
//!                            "latency": {"count": 9, "sumSeconds": 0.4,
//!                                        "p50Seconds": 0.03, "p99Seconds": 0.09,
//!                                        "buckets": [[0.0001, 0], …, [10.0, 9]]}}},
//!  "unknownWriteKeys": 0}
//! ```
//!
//! `accepted` counts events that passed validation, duplicates included;
//! events in = `accepted + Σ rejected`. Latency is ingest commit to the
//! vendor's 2xx; `buckets` are cumulative (upper bound in seconds, count),
//! so the console can compute quantiles over any window.
//!
//! # Design
//! The numbers come from the same metrics registry `/metrics` renders
//! (read back by [`prom`]), so the console and Prometheus never disagree
//! and a counter added to the telemetry vocabulary needs no second
//! bookkeeping here.

mod prom;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::AppState;
use prom::Sample;

/// The stats route (relative to `/admin`).
pub fn routes() -> Router<AppState> {
    Router::new().route("/stats", get(stats))
}

async fn stats(State(state): State<AppState>) -> impl IntoResponse {
    let text = state.metrics.render();
    // Each destination's handles are registered when its worker starts,
    // so every destination has a row, at zero until it moves.
    let mut snapshot = snapshot(&prom::parse(&text));
    snapshot.at_ms = crate::time::now_ms();
    Json(snapshot)
}

/// What the Overview charts.
#[derive(Debug, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Snapshot {
    /// When it was taken, Unix ms.
    pub at_ms: i64,
    /// Per source.
    pub sources: BTreeMap<String, SourceStats>,
    /// Per destination.
    pub destinations: BTreeMap<String, DestinationStats>,
    /// Requests with a write key no source has.
    pub unknown_write_keys: u64,
}

/// One source's counters.
#[derive(Debug, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SourceStats {
    /// Passed validation (duplicates included).
    pub accepted: u64,
    /// Duplicates of events seen within the dedup window.
    pub duplicates: u64,
    /// Failed validation and went to quarantine, per reason code.
    pub rejected: BTreeMap<String, u64>,
    /// Removed on purpose (consent, rules, suppression), per reason code.
    pub dropped: BTreeMap<String, u64>,
}

/// One destination's counters and gauges.
#[derive(Debug, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DestinationStats {
    /// Events the vendor answered 2xx for.
    pub delivered: u64,
    /// Events in failed attempts (each attempt counts).
    pub failed: u64,
    /// Events rescheduled for another attempt.
    pub retried: u64,
    /// Events moved to the dead-letter store.
    pub dead_lettered: u64,
    /// Events the destination found not applicable (skipped).
    pub skipped: u64,
    /// Events waiting in the outbox now.
    pub outbox_depth: u64,
    /// Dead letters stored now.
    pub dead_letters: u64,
    /// Events held for consent now.
    pub held: u64,
    /// Ingest-to-2xx latency.
    pub latency: Latency,
}

/// A latency histogram.
#[derive(Debug, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Latency {
    /// Observations.
    pub count: u64,
    /// Their sum, seconds.
    pub sum_seconds: f64,
    /// Median since start, seconds.
    pub p50_seconds: Option<f64>,
    /// 99th percentile since start, seconds.
    pub p99_seconds: Option<f64>,
    /// Cumulative buckets: (upper bound in seconds, count), `+Inf` left out.
    pub buckets: Vec<(f64, u64)>,
}

/// Folds samples into the snapshot (`at_ms` left 0).
pub(crate) fn snapshot(samples: &[Sample]) -> Snapshot {
    let mut s = Snapshot::default();
    let mut latency: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for sample in samples {
        let n = sample.value.max(0.0) as u64;
        let source = || sample.label("source").unwrap_or("").to_owned();
        let reason = || sample.label("reason").unwrap_or("unknown").to_owned();
        let destination = sample.label("destination").map(str::to_owned);
        match (sample.name.as_str(), destination) {
            ("waymark_events_accepted_total", _) => {
                s.sources.entry(source()).or_default().accepted += n
            }
            ("waymark_dedup_hits_total", _) => {
                s.sources.entry(source()).or_default().duplicates += n
            }
            ("waymark_events_rejected_total", _) => {
                *s.sources
                    .entry(source())
                    .or_default()
                    .rejected
                    .entry(reason())
                    .or_default() += n
            }
            ("waymark_events_dropped_total", None) => {
                *s.sources
                    .entry(source())
                    .or_default()
                    .dropped
                    .entry(reason())
                    .or_default() += n
            }
            ("waymark_unknown_write_key_total", _) => s.unknown_write_keys += n,
            ("waymark_events_delivered_total", Some(d)) => {
                s.destinations.entry(d).or_default().delivered += n
            }
            ("waymark_events_failed_total", Some(d)) => {
                s.destinations.entry(d).or_default().failed += n
            }
            ("waymark_events_retried_total", Some(d)) => {
                s.destinations.entry(d).or_default().retried += n
            }
            ("waymark_events_dead_lettered_total", Some(d)) => {
                s.destinations.entry(d).or_default().dead_lettered += n
            }
            ("waymark_events_skipped_total", Some(d)) => {
                s.destinations.entry(d).or_default().skipped += n
            }
            ("waymark_outbox_depth", Some(d)) => {
                s.destinations.entry(d).or_default().outbox_depth = n
            }
            ("waymark_dead_letters", Some(d)) => {
                s.destinations.entry(d).or_default().dead_letters = n
            }
            ("waymark_consent_held", Some(d)) => s.destinations.entry(d).or_default().held = n,
            ("waymark_delivery_latency_seconds_bucket", Some(d)) => {
                let bound = match sample.label("le").map(str::parse::<f64>) {
                    Some(Ok(b)) => b,
                    _ if sample.label("le") == Some("+Inf") => f64::INFINITY,
                    _ => continue,
                };
                latency.entry(d).or_default().push((bound, sample.value));
            }
            ("waymark_delivery_latency_seconds_sum", Some(d)) => {
                s.destinations.entry(d).or_default().latency.sum_seconds = sample.value
            }
            ("waymark_delivery_latency_seconds_count", Some(d)) => {
                s.destinations.entry(d).or_default().latency.count = n
            }
            _ => {}
        }
    }
    for (d, mut buckets) in latency {
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let l = &mut s.destinations.entry(d).or_default().latency;
        l.p50_seconds = prom::quantile(&buckets, 0.5);
        l.p99_seconds = prom::quantile(&buckets, 0.99);
        l.buckets = buckets
            .into_iter()
            .filter(|(b, _)| b.is_finite())
            .map(|(b, c)| (b, c.max(0.0) as u64))
            .collect();
    }
    s
}
