//! Signals of routing, consent holds, the deliver stage and the live stream.
//!
//! Per-destination metric handles are registered once, when the
//! destination's worker starts ([`DestinationMetrics::register`]); each
//! emit then covers a whole batch without looking anything up.

use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};

use crate::destinations::{DeliveryError, SkipReason};

/// One destination's metric handles.
#[derive(Clone)]
pub(crate) struct DestinationMetrics {
    delivered: Counter,
    failed: Counter,
    retried: Counter,
    dead_rejected: Counter,
    dead_max_age: Counter,
    rule_dropped: Counter,
    rule_quarantined: Counter,
    skipped: [Counter; SkipReason::ALL.len()],
    duration: Histogram,
    latency: Histogram,
    queue_depth: Gauge,
    held: Gauge,
    dead_letters: Gauge,
}

impl DestinationMetrics {
    /// Registers the handles of `destination`.
    pub(crate) fn register(destination: &str) -> DestinationMetrics {
        let d = destination.to_owned();
        DestinationMetrics {
            delivered: metrics::counter!("waymark_events_delivered_total", "destination" => d.clone()),
            failed: metrics::counter!("waymark_events_failed_total", "destination" => d.clone()),
            retried: metrics::counter!("waymark_events_retried_total", "destination" => d.clone()),
            dead_rejected: metrics::counter!("waymark_events_dead_lettered_total", "destination" => d.clone(), "reason" => "rejected"),
            dead_max_age: metrics::counter!("waymark_events_dead_lettered_total", "destination" => d.clone(), "reason" => "max_age"),
            rule_dropped: metrics::counter!("waymark_events_dropped_total", "stage" => "deliver", "destination" => d.clone(), "reason" => "rule"),
            rule_quarantined: metrics::counter!("waymark_events_quarantined_total", "stage" => "deliver", "destination" => d.clone(), "reason" => "rule"),
            skipped: SkipReason::ALL.map(|r| metrics::counter!("waymark_events_skipped_total", "destination" => d.clone(), "reason" => r.as_str())),
            duration: metrics::histogram!("waymark_delivery_duration_seconds", "destination" => d.clone()),
            latency: metrics::histogram!("waymark_delivery_latency_seconds", "destination" => d.clone()),
            queue_depth: metrics::gauge!("waymark_outbox_depth", "destination" => d.clone()),
            held: metrics::gauge!("waymark_consent_held", "destination" => d.clone()),
            dead_letters: metrics::gauge!("waymark_dead_letters", "destination" => d),
        }
    }
}

/// A batch reached its destination (the vendor answered 2xx).
pub(crate) struct BatchDelivered<'a> {
    pub metrics: &'a DestinationMetrics,
    pub count: usize,
    /// How long the vendor call took.
    pub duration: Duration,
    /// When each event was committed, in Unix ms: ingest→2xx latency per event.
    pub enqueued_ms: &'a [i64],
}

impl BatchDelivered<'_> {
    pub(crate) fn emit(self) {
        self.metrics.delivered.increment(self.count as u64);
        self.metrics.duration.record(self.duration.as_secs_f64());
        let now = crate::time::now_ms();
        for at in self.enqueued_ms {
            self.metrics
                .latency
                .record((now - at).max(0) as f64 / 1_000.0);
        }
    }
}

/// A batch failed; it is retried or dead-lettered.
pub(crate) struct DeliveryFailed<'a> {
    pub metrics: &'a DestinationMetrics,
    pub destination: &'a str,
    pub count: usize,
    pub error: &'a DeliveryError,
}

impl DeliveryFailed<'_> {
    pub(crate) fn emit(self) {
        tracing::warn!(destination = self.destination, count = self.count, retriable = self.error.is_retriable(), error = %self.error, "Delivery failed.");
        self.metrics.failed.increment(self.count as u64);
    }
}

/// Events rescheduled for another attempt.
pub(crate) struct EventsRetried<'a> {
    pub metrics: &'a DestinationMetrics,
    pub destination: &'a str,
    pub count: usize,
    pub delay: Duration,
}

impl EventsRetried<'_> {
    pub(crate) fn emit(self) {
        tracing::debug!(
            destination = self.destination,
            count = self.count,
            delay_ms = self.delay.as_millis() as u64,
            "Events scheduled for retry."
        );
        self.metrics.retried.increment(self.count as u64);
    }
}

/// Events moved to the dead-letter store.
pub(crate) struct EventsDeadLettered<'a> {
    pub metrics: &'a DestinationMetrics,
    pub destination: &'a str,
    pub count: usize,
    /// Whether they expired while retrying (else the vendor refused them).
    pub retriable: bool,
}

impl EventsDeadLettered<'_> {
    pub(crate) fn emit(self) {
        let reason = if self.retriable {
            "max_age"
        } else {
            "rejected"
        };
        tracing::error!(
            destination = self.destination,
            count = self.count,
            reason,
            "Events dead-lettered."
        );
        if self.retriable {
            self.metrics.dead_max_age.increment(self.count as u64);
        } else {
            self.metrics.dead_rejected.increment(self.count as u64);
        }
    }
}

/// Events a destination's rule chain dropped before delivery, on purpose
/// (counted in `waymark_events_dropped_total{stage="deliver",reason="rule"}`).
pub(crate) struct EventsDroppedByRule<'a> {
    pub metrics: &'a DestinationMetrics,
    pub destination: &'a str,
    pub count: usize,
    /// The first drop's reason (`rule <name>: <why>`), for the log only.
    pub first_reason: &'a str,
}

impl EventsDroppedByRule<'_> {
    pub(crate) fn emit(self) {
        tracing::debug!(
            destination = self.destination,
            count = self.count,
            intentional = true,
            reason = self.first_reason,
            "Events dropped by the destination's rules."
        );
        self.metrics.rule_dropped.increment(self.count as u64);
    }
}

/// Events a destination's rule chain quarantined: in the quarantine store,
/// replayable to the destination.
pub(crate) struct EventsQuarantinedByRule<'a> {
    pub metrics: &'a DestinationMetrics,
    pub destination: &'a str,
    pub count: usize,
    /// The first quarantine's reason, for the log only.
    pub first_reason: &'a str,
}

impl EventsQuarantinedByRule<'_> {
    pub(crate) fn emit(self) {
        tracing::warn!(
            destination = self.destination,
            count = self.count,
            reason = self.first_reason,
            "Events quarantined by the destination's rules."
        );
        self.metrics.rule_quarantined.increment(self.count as u64);
    }
}

/// Events that do not apply to a destination (no vendor equivalent, no
/// identity the vendor needs): they leave its outbox, counted per reason.
pub(crate) struct EventsSkipped<'a> {
    pub metrics: &'a DestinationMetrics,
    pub destination: &'a str,
    pub reason: SkipReason,
    pub count: usize,
}

impl EventsSkipped<'_> {
    pub(crate) fn emit(self) {
        if self.count == 0 {
            return;
        }
        tracing::debug!(
            destination = self.destination,
            reason = self.reason.as_str(),
            count = self.count,
            "Events skipped: not applicable to the destination."
        );
        if let Some(i) = SkipReason::ALL.iter().position(|r| *r == self.reason) {
            self.metrics.skipped[i].increment(self.count as u64);
        }
    }
}

/// The sizes of a destination's queues, measured periodically.
pub(crate) struct QueueMeasured<'a> {
    pub metrics: &'a DestinationMetrics,
    pub outbox: u64,
    pub held: u64,
    pub dead_letters: u64,
}

impl QueueMeasured<'_> {
    pub(crate) fn emit(self) {
        self.metrics.queue_depth.set(self.outbox as f64);
        self.metrics.held.set(self.held as f64);
        self.metrics.dead_letters.set(self.dead_letters as f64);
    }
}

/// Events a destination wanted but could not have for lack of consent,
/// per request. `denied` false means pending (and the destination does not wait).
pub(crate) struct ConsentBlocked<'a> {
    pub destination: &'a str,
    pub denied: bool,
    pub count: usize,
}

impl ConsentBlocked<'_> {
    pub(crate) fn emit(self) {
        let state = if self.denied { "denied" } else { "pending" };
        tracing::debug!(
            destination = self.destination,
            state,
            count = self.count,
            "Events blocked by consent."
        );
        metrics::counter!("waymark_consent_blocked_total", "destination" => self.destination.to_owned(), "state" => state)
            .increment(self.count as u64);
    }
}

/// What became of consent holds: `held`, `released`, `dropped` (denied) or `expired`.
pub(crate) struct ConsentHolds<'a> {
    pub destination: &'a str,
    pub outcome: &'static str,
    pub count: usize,
}

impl ConsentHolds<'_> {
    pub(crate) fn emit(self) {
        if self.count == 0 {
            return;
        }
        tracing::debug!(
            destination = self.destination,
            outcome = self.outcome,
            count = self.count,
            "Consent holds changed."
        );
        metrics::counter!("waymark_consent_holds_total", "destination" => self.destination.to_owned(), "outcome" => self.outcome)
            .increment(self.count as u64);
    }
}

/// A live-stream viewer fell behind and skipped frames (never events).
pub(crate) struct LiveFramesSkipped {
    pub count: u64,
}

impl LiveFramesSkipped {
    pub(crate) fn emit(self) {
        tracing::debug!(count = self.count, "Live viewer lagged; frames skipped.");
        metrics::counter!("waymark_live_frames_skipped_total").increment(self.count);
    }
}
