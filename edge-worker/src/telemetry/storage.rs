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
