//! Schedules: syncs that start by themselves (`schedule = { every_secs }`
//! or `{ cron }`, UTC).
//!
//! # Design
//! Whether a sync is due is decided from the store, not from a timer of
//! this process: an interval is due once its latest run was created that
//! long ago, a cron minute once no run was created since it began. So the
//! workers of a fleet agree, a restart does not reset the clock, and two
//! workers queueing at once get the same run (a sync has at most one
//! queued run).

use chrono::{DateTime, Utc};

use crate::config::{CronSchedule, Schedule};
use crate::storage::syncs::RunFilter;
use crate::storage::SyncStore;

const MINUTE_MS: i64 = 60_000;
/// Cron minutes looked back on when checks were late (a busy or paused process).
const CRON_CATCH_UP_MINUTES: i64 = 5;

/// Whether an interval of `every_secs` is due at `now_ms` after a latest
/// run created at `last_created_ms` (none: due at once).
pub fn interval_due(every_secs: u64, last_created_ms: Option<i64>, now_ms: i64) -> bool {
    let every_ms = i64::try_from(every_secs.saturating_mul(1_000)).unwrap_or(i64::MAX);
    last_created_ms.is_none_or(|last| now_ms.saturating_sub(last) >= every_ms)
}

/// Whether `cron` fires in the minute starting at `minute_ms` and no run
/// was created since that minute began.
pub fn cron_due(cron: &CronSchedule, last_created_ms: Option<i64>, minute_ms: i64) -> bool {
    let Some(minute) = DateTime::<Utc>::from_timestamp_millis(minute_ms) else {
        return false;
    };
    cron.fires_at(minute) && last_created_ms.is_none_or(|last| last < minute_ms)
}

/// Queues the runs of scheduled syncs as they fall due.
#[derive(Debug, Default)]
pub struct Scheduler {
    /// The last cron minute checked (its start, Unix ms).
    checked_minute_ms: Option<i64>,
}

impl Scheduler {
    /// The syncs among `syncs` (name, id, schedule) due at `now_ms`.
    pub async fn due(
        &mut self,
        store: &dyn SyncStore,
        syncs: &[(String, i64, Schedule)],
        now_ms: i64,
    ) -> Vec<i64> {
        let this_minute = now_ms - now_ms.rem_euclid(MINUTE_MS);
        let first_minute = match self.checked_minute_ms {
            Some(checked) => {
                (checked + MINUTE_MS).max(this_minute - CRON_CATCH_UP_MINUTES * MINUTE_MS)
            }
            None => this_minute,
        };
        let mut due = Vec::new();
        for (name, id, schedule) in syncs {
            let last = RunFilter {
                limit: 1,
                ..RunFilter::default()
            };
            let last_created = match store.runs(*id, last).await {
                Ok(runs) => runs.first().map(|r| r.created_at_ms),
                Err(error) => {
                    tracing::warn!(sync = %name, %error, "Cannot read the sync's last run; its schedule is checked again in a second.");
                    continue;
                }
            };
            let is_due = match schedule {
                Schedule::EverySecs(every) => interval_due(*every, last_created, now_ms),
                Schedule::Cron(text) => match CronSchedule::parse(text) {
                    // Checked at config load; an expression that no longer parses never fires.
                    Err(_) => false,
                    Ok(cron) => (0..)
                        .map(|i| first_minute + i * MINUTE_MS)
                        .take_while(|m| *m <= this_minute)
                        .any(|m| cron_due(&cron, last_created, m)),
                },
            };
            if is_due {
                due.push(*id);
            }
        }
        self.checked_minute_ms = Some(this_minute);
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interval_is_due_once_its_latest_run_is_that_old() {
        assert!(interval_due(60, None, 1_000));
        assert!(!interval_due(60, Some(0), 59_999));
        assert!(interval_due(60, Some(0), 60_000));
    }

    #[test]
    fn a_cron_minute_is_due_until_a_run_is_created_in_it() {
        let hourly = CronSchedule::parse("0 * * * *").unwrap();
        let five_pm = chrono::DateTime::parse_from_rfc3339("2026-12-02T17:00:00Z")
            .unwrap()
            .timestamp_millis();
        assert!(cron_due(&hourly, None, five_pm));
        assert!(cron_due(&hourly, Some(five_pm - 1), five_pm));
        assert!(!cron_due(&hourly, Some(five_pm + 10), five_pm));
        assert!(!cron_due(&hourly, None, five_pm + MINUTE_MS));
    }
}
