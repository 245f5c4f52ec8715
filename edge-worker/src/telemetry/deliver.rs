//! Signals of the deliver stage.

use std::time::Duration;

use crate::destinations::DeliveryError;

/// A batch reached its destination.
pub(crate) struct BatchDelivered<'a> {
    pub destination: &'a str,
    pub count: usize,
    pub duration: Duration,
    /// When the oldest event of the batch was committed, for end-to-end latency.
    pub oldest_enqueued_ms: i64,
}

impl BatchDelivered<'_> {
    pub(crate) fn emit(self) {
        let d = self.destination.to_owned();
        metrics::counter!("waymark_events_delivered_total", "destination" => d.clone())
            .increment(self.count as u64);
        metrics::histogram!("waymark_delivery_duration_seconds", "destination" => d.clone())
            .record(self.duration.as_secs_f64());
        let age_ms = (crate::time::now_ms() - self.oldest_enqueued_ms).max(0);
        metrics::histogram!("waymark_delivery_latency_seconds", "destination" => d)
            .record(age_ms as f64 / 1_000.0);
    }
}

/// A batch failed; it is retried or dead-lettered.
pub(crate) struct DeliveryFailed<'a> {
    pub destination: &'a str,
    pub count: usize,
    pub error: &'a DeliveryError,
}

impl DeliveryFailed<'_> {
    pub(crate) fn emit(self) {
        tracing::warn!(destination = self.destination, count = self.count, retriable = self.error.is_retriable(), error = %self.error, "Delivery failed.");
        metrics::counter!("waymark_events_failed_total", "destination" => self.destination.to_owned())
            .increment(self.count as u64);
    }
}

/// Events moved to the dead-letter store.
pub(crate) struct EventsDeadLettered<'a> {
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
        metrics::counter!(
            "waymark_events_dead_lettered_total",
            "destination" => self.destination.to_owned(),
            "reason" => reason,
        )
        .increment(self.count as u64);
    }
}
