//! Signals of the identify stage.

/// A visitor cookie failed verification (tampered, malformed or signed by
/// an unknown key) and a new visitor id was issued.
pub(crate) struct CookieRejected {
    /// `malformed`, `bad_signature`, `unknown_key` or `expired`.
    pub reason: &'static str,
}

impl CookieRejected {
    pub(crate) fn emit(self) {
        tracing::debug!(reason = self.reason, "Visitor cookie rejected.");
        metrics::counter!("waymark_cookie_rejected_total", "reason" => self.reason).increment(1);
    }
}

/// A new visitor id was minted.
pub(crate) struct VisitorMinted;

impl VisitorMinted {
    pub(crate) fn emit(self) {
        metrics::counter!("waymark_visitors_minted_total").increment(1);
    }
}
