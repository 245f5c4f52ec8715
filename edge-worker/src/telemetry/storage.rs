//! Signals of the embedded store.

use std::time::Duration;

/// A group commit finished; its jobs' writes are durable.
pub(crate) struct StoreCommitted {
    pub jobs: usize,
    pub duration: Duration,
}

impl StoreCommitted {
    pub(crate) fn emit(self) {
        metrics::histogram!("waymark_store_commit_duration_seconds")
            .record(self.duration.as_secs_f64());
        metrics::counter!("waymark_store_commit_jobs_total").increment(self.jobs as u64);
    }
}

/// A group commit failed; none of its writes happened and every caller got an error.
pub(crate) struct StoreCommitError<'a> {
    pub error: &'a rusqlite::Error,
}

impl StoreCommitError<'_> {
    pub(crate) fn emit(self) {
        tracing::error!(error = %self.error, "Store commit failed.");
        metrics::counter!("waymark_store_commit_errors_total").increment(1);
    }
}

/// Recently seen dedup keys were folded into long-term storage.
pub(crate) struct DedupFolded {
    pub moved: usize,
    /// Keys still recent (in memory) after the fold.
    pub recent: usize,
    /// Bytes the dedup filter's generations take.
    pub filter_bytes: usize,
    /// Live runs after the fold and its merges.
    pub runs: usize,
}

impl DedupFolded {
    pub(crate) fn emit(self) {
        metrics::counter!("waymark_dedup_folded_total").increment(self.moved as u64);
        metrics::gauge!("waymark_dedup_recent_keys").set(self.recent as f64);
        metrics::gauge!("waymark_dedup_filter_bytes").set(self.filter_bytes as f64);
        metrics::gauge!("waymark_dedup_runs").set(self.runs as f64);
    }
}
