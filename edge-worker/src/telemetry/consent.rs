//! Signals of the consent decision.

/// A consent signal on an event could not be read; it granted nothing and
/// the event was still accepted.
pub(crate) struct ConsentSignalInvalid {
    /// `tcf` or `gcm`.
    pub signal: &'static str,
}

impl ConsentSignalInvalid {
    pub(crate) fn emit(self) {
        tracing::debug!(
            signal = self.signal,
            "Consent signal unreadable; it grants nothing."
        );
        metrics::counter!("waymark_consent_signal_invalid_total", "signal" => self.signal)
            .increment(1);
    }
}
