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

/// One request's events went through the identity graph.
pub(crate) struct IdentityLinked<'a> {
    /// Events in the request.
    pub events: usize,
    /// What the graph did.
    pub report: &'a crate::identity::graph::BatchReport,
    /// Time from queueing the write job to its durable commit.
    pub duration: std::time::Duration,
}

impl IdentityLinked<'_> {
    pub(crate) fn emit(self) {
        let r = self.report;
        metrics::counter!("waymark_identity_events_total").increment(self.events as u64);
        metrics::counter!("waymark_identity_cache_hits_total").increment(r.cache_hits);
        metrics::counter!("waymark_identity_cache_misses_total").increment(r.cache_misses);
        if r.nodes_created > 0 {
            metrics::counter!("waymark_identity_nodes_created_total").increment(r.nodes_created);
        }
        if r.profiles_created > 0 {
            metrics::counter!("waymark_identity_profiles_created_total")
                .increment(r.profiles_created);
        }
        if r.merges > 0 {
            tracing::debug!(merges = r.merges, "Profiles merged.");
            metrics::counter!("waymark_identity_merges_total", "cause" => "event")
                .increment(r.merges);
        }
        if r.refusals > 0 {
            tracing::info!(
                refusals = r.refusals,
                "Identity links refused by the merge guards."
            );
            metrics::counter!("waymark_identity_links_refused_total").increment(r.refusals);
        }
        metrics::histogram!("waymark_identity_link_duration_seconds")
            .record(self.duration.as_secs_f64());
    }
}

/// The identity cache was cleared because a write failed (its rows were rolled back).
pub(crate) struct IdentityStateReset;

impl IdentityStateReset {
    pub(crate) fn emit(self) {
        tracing::warn!("Identity cache cleared after a failed write.");
        metrics::counter!("waymark_identity_cache_resets_total").increment(1);
    }
}

/// An admin changed or read a person's data (delete, export, split, merge).
pub(crate) struct PersonAudited<'a> {
    /// `delete`, `export`, `split` or `merge`.
    pub action: &'static str,
    /// Who asked (admin-chosen label, never a user id).
    pub actor: &'a str,
    /// The audit entry id, when the action writes one.
    pub audit_id: Option<i64>,
}

impl PersonAudited<'_> {
    pub(crate) fn emit(self) {
        tracing::info!(action = self.action, actor = self.actor, audit_id = ?self.audit_id, "Identity admin action.");
        metrics::counter!("waymark_identity_admin_actions_total", "action" => self.action)
            .increment(1);
    }
}

/// A job on a store several workers write conflicted with another worker's
/// and runs again.
pub(crate) struct IdentityJobConflict {
    /// `new` (a job over new identifiers found a row it did not write, or
    /// met another's on a unique key, and runs again serializable) or
    /// `other` (a serialization failure, deadlock or unique violation).
    pub job: &'static str,
}

impl IdentityJobConflict {
    pub(crate) fn emit(self) {
        tracing::debug!(job = self.job, "Identity job conflicted; it runs again.");
        metrics::counter!("waymark_identity_job_conflicts_total", "job" => self.job).increment(1);
    }
}
