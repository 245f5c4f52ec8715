//! Signals of sync runs (issue 18 §4): rows planned, not sent, and each
//! run's end with its settled rows and duration, per sync.

use std::time::Duration;

use crate::storage::syncs::{RunStatus, SyncRun};

/// Rows a run planned for sending.
pub(crate) struct RowsPlanned<'a> {
    pub sync: &'a str,
    pub count: u64,
}

impl RowsPlanned<'_> {
    pub(crate) fn emit(self) {
        metrics::counter!("waymark_sync_rows_total", "sync" => self.sync.to_owned(), "outcome" => "planned")
            .increment(self.count);
    }
}

/// Planned rows the pipeline did not take (invalid call, deleted person,
/// consent, filters): failed at once.
pub(crate) struct RowsNotSent<'a> {
    pub sync: &'a str,
    pub count: u64,
}

impl RowsNotSent<'_> {
    pub(crate) fn emit(self) {
        metrics::counter!("waymark_sync_rows_total", "sync" => self.sync.to_owned(), "outcome" => "not_sent")
            .increment(self.count);
    }
}

/// A run ended.
pub(crate) struct RunFinished<'a> {
    pub sync: &'a str,
    pub status: RunStatus,
    pub run: Option<&'a SyncRun>,
    pub duration: Duration,
}

impl RunFinished<'_> {
    pub(crate) fn emit(self) {
        let sync = self.sync.to_owned();
        metrics::counter!("waymark_sync_runs_total", "sync" => sync.clone(), "status" => self.status.as_str())
            .increment(1);
        metrics::histogram!("waymark_sync_run_duration_seconds", "sync" => sync.clone())
            .record(self.duration.as_secs_f64());
        if let Some(run) = self.run {
            metrics::counter!("waymark_sync_rows_total", "sync" => sync.clone(), "outcome" => "successful")
                .increment(run.successful.total());
            metrics::counter!("waymark_sync_rows_total", "sync" => sync, "outcome" => "failed")
                .increment(run.failed.total());
        }
    }
}
