//! Signals of the ingest, normalize and route stages.

/// Events passed validation and were committed (or found to be duplicates).
pub(crate) struct EventsAccepted<'a> {
    pub source: &'a str,
    pub count: usize,
}

impl EventsAccepted<'_> {
    pub(crate) fn emit(self) {
        if self.count > 0 {
            metrics::counter!("waymark_events_accepted_total", "source" => self.source.to_owned())
                .increment(self.count as u64);
        }
    }
}

/// Events failed validation and went to quarantine.
pub(crate) struct EventsRejected<'a> {
    pub source: &'a str,
    /// A stable reason code such as `missing_field`.
    pub reason: &'static str,
    pub count: usize,
}

impl EventsRejected<'_> {
    pub(crate) fn emit(self) {
        tracing::debug!(
            source = self.source,
            reason = self.reason,
            count = self.count,
            "Events rejected."
        );
        metrics::counter!(
            "waymark_events_rejected_total",
            "source" => self.source.to_owned(),
            "reason" => self.reason,
        )
        .increment(self.count as u64);
    }
}

/// Events were duplicates of ones seen within the dedup window: answered 200, not routed.
pub(crate) struct DuplicatesDropped<'a> {
    pub source: &'a str,
    pub count: usize,
}

impl DuplicatesDropped<'_> {
    pub(crate) fn emit(self) {
        if self.count > 0 {
            tracing::debug!(
                source = self.source,
                count = self.count,
                "Duplicate events dropped."
            );
            metrics::counter!("waymark_dedup_hits_total", "source" => self.source.to_owned())
                .increment(self.count as u64);
        }
    }
}

/// A stage removed events on purpose (consent, rule verdict, suppression).
pub(crate) struct EventsDropped<'a> {
    pub stage: &'static str,
    pub source: &'a str,
    pub reason: &'static str,
    pub count: usize,
}

impl EventsDropped<'_> {
    pub(crate) fn emit(self) {
        tracing::debug!(
            stage = self.stage,
            source = self.source,
            reason = self.reason,
            count = self.count,
            "Events dropped."
        );
        metrics::counter!(
            "waymark_events_dropped_total",
            "stage" => self.stage,
            "source" => self.source.to_owned(),
            "reason" => self.reason,
        )
        .increment(self.count as u64);
    }
}

/// A request came with a write key no source has.
pub(crate) struct UnknownWriteKey;

impl UnknownWriteKey {
    pub(crate) fn emit(self) {
        metrics::counter!("waymark_unknown_write_key_total").increment(1);
    }
}
