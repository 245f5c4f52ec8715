//! What the sync state store keeps (issue #18), in the syncs' words: the
//! numeric ids of syncs, models and destinations, one state row per
//! primary key of a sync, and the runs with their counts. The boundary is
//! [`super::SyncStore`]; each backend keeps these in its own tables.

/// A row's 128-bit fingerprint: a hash of its canonically serialised
/// mapped columns (see `crate::syncs::hash`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct RowHash(pub [u8; 16]);

impl RowHash {
    /// From a stored blob; `None` when it is not 16 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<RowHash> {
        Some(RowHash(bytes.try_into().ok()?))
    }

    /// Lowercase hex, 32 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// Where a key stands with its destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyStatus {
    /// The destination got the row with the recorded hash.
    Synced,
    /// The last delivery was dead-lettered; an earlier one succeeded.
    /// Retried next run.
    Failed,
    /// The last delivery was dead-lettered and none ever succeeded.
    /// Retried next run as an addition.
    FailedNew,
}

impl KeyStatus {
    /// The stored code.
    pub(crate) fn code(self) -> i32 {
        match self {
            KeyStatus::Synced => 0,
            KeyStatus::Failed => 1,
            KeyStatus::FailedNew => 2,
        }
    }

    /// From the stored code (unknown codes read as failed, so they are retried).
    pub(crate) fn from_code(code: i64) -> KeyStatus {
        match code {
            0 => KeyStatus::Synced,
            2 => KeyStatus::FailedNew,
            _ => KeyStatus::Failed,
        }
    }

    /// Whether the next run sends the key again even when unchanged.
    pub fn is_failed(self) -> bool {
        self != KeyStatus::Synced
    }
}

/// One primary key's state in a sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackedKey {
    /// The primary key, as text.
    pub key: String,
    /// The hash of the row last sent (delivered or dead-lettered).
    pub hash: RowHash,
    /// Whether the destination has it.
    pub status: KeyStatus,
    /// Failed deliveries since the last success.
    pub attempts: u32,
    /// Why the last delivery failed.
    pub last_error: Option<String>,
    /// The run that last moved this state.
    pub run: i64,
}

/// How a planned row differs from the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Change {
    /// A key the state does not have (or never delivered).
    Added,
    /// A key whose row hash differs from the state's (or whose last delivery failed).
    Changed,
    /// A key of the state the model no longer returns (`mirror` only).
    Removed,
}

/// What the destination did with one planned row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Delivered (or skipped by the destination on purpose).
    Delivered,
    /// Rejected for good or out of retries: in the dead-letter store.
    DeadLettered {
        /// Why, for the run's failed rows.
        reason: String,
    },
}

/// The outcome of one row of a sync run, as the outbox learns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowOutcome {
    /// The sync's id.
    pub sync: i64,
    /// The run that planned the row.
    pub run: i64,
    /// The primary key.
    pub key: String,
    /// The hash of the row that was sent.
    pub hash: RowHash,
    /// What the row was to the plan.
    pub change: Change,
    /// What happened to it.
    pub delivery: Delivery,
}

/// A sync row's outcome tied to the outbox entry that carried it, as the
/// delivery queue records it while settling that entry.
///
/// # Design
/// The entry id lets the store record the outcome only when this very
/// write settles the entry: an entry already settled (by another worker
/// after a lease overlap, or twice by a retried call) or no longer in the
/// outbox records nothing, so a row is never counted twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettledRow {
    /// The outbox entry's id.
    pub entry: i64,
    /// What happened to the row it carried.
    pub outcome: RowOutcome,
}

/// Added, changed and removed counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RowCounts {
    /// Keys new to the destination.
    pub added: u64,
    /// Keys whose row changed (or were retried).
    pub changed: u64,
    /// Keys removed from the model (`mirror`).
    pub removed: u64,
}

impl RowCounts {
    /// All three together.
    pub fn total(&self) -> u64 {
        self.added + self.changed + self.removed
    }

    /// Counts one row of `change`.
    pub fn count(&mut self, change: Change) {
        match change {
            Change::Added => self.added += 1,
            Change::Changed => self.changed += 1,
            Change::Removed => self.removed += 1,
        }
    }
}

/// A run's status: Hightouch's set, so orchestrators read it unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunStatus {
    /// Waiting for the sync's active run to end.
    Queued,
    /// Reading the model.
    Querying,
    /// Sending planned rows.
    Processing,
    /// Waiting for the last outcomes.
    Reporting,
    /// Every planned row was delivered.
    Success,
    /// Done, but some rows failed.
    Warning,
    /// The run could not complete (query failed, zero rows, warehouse down).
    Failed,
    /// Stopped by an operator.
    Cancelled,
    /// The worker stopped during the run.
    Interrupted,
}

impl RunStatus {
    /// Every status, in Hightouch's words.
    pub const ALL: [RunStatus; 9] = [
        RunStatus::Queued,
        RunStatus::Querying,
        RunStatus::Processing,
        RunStatus::Reporting,
        RunStatus::Success,
        RunStatus::Warning,
        RunStatus::Failed,
        RunStatus::Cancelled,
        RunStatus::Interrupted,
    ];

    /// The API and stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Querying => "querying",
            RunStatus::Processing => "processing",
            RunStatus::Reporting => "reporting",
            RunStatus::Success => "success",
            RunStatus::Warning => "warning",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Interrupted => "interrupted",
        }
    }

    /// From the stored name.
    pub fn parse(text: &str) -> Option<RunStatus> {
        RunStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Running: querying, processing or reporting (at most one per sync).
    pub fn is_active(self) -> bool {
        matches!(
            self,
            RunStatus::Querying | RunStatus::Processing | RunStatus::Reporting
        )
    }

    /// Ended: success, warning, failed, cancelled or interrupted.
    pub fn is_finished(self) -> bool {
        !self.is_active() && self != RunStatus::Queued
    }
}

/// One run of a sync, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncRun {
    /// Numeric id, increasing, stable across restarts.
    pub id: i64,
    /// The sync's id.
    pub sync: i64,
    /// Where it stands.
    pub status: RunStatus,
    /// Whether every current row is planned as added.
    pub full_resync: bool,
    /// When it was queued, in Unix milliseconds.
    pub created_at_ms: i64,
    /// When it started, once it has.
    pub started_at_ms: Option<i64>,
    /// When it ended, once it has.
    pub finished_at_ms: Option<i64>,
    /// Rows the model returned, once planned.
    pub query_size: Option<u64>,
    /// Rows planned for sending.
    pub planned: RowCounts,
    /// Planned rows the destination got.
    pub successful: RowCounts,
    /// Planned rows that were dead-lettered.
    pub failed: RowCounts,
    /// Rows not sent because their primary key was null or repeated.
    pub invalid: u64,
    /// Why the run failed, when it did.
    pub error: Option<String>,
}

impl SyncRun {
    /// Share of planned rows with an outcome, 0 to 1; 1 for a finished
    /// run that planned nothing.
    pub fn completion_ratio(&self) -> f64 {
        let planned = self.planned.total();
        if planned == 0 {
            return if self.status.is_finished() { 1.0 } else { 0.0 };
        }
        let done = self.successful.total() + self.failed.total();
        (done as f64 / planned as f64).clamp(0.0, 1.0)
    }
}

/// What a run planned, recorded once its model has been read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunPlan {
    /// Rows the model returned, valid or not.
    pub query_size: u64,
    /// Rows planned for sending.
    pub planned: RowCounts,
    /// How many rows were invalid (may exceed `invalid_rows`).
    pub invalid: u64,
    /// Invalid rows with their reasons; callers cap the list.
    pub invalid_rows: Vec<InvalidRow>,
}

/// A row not sent because of its primary key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InvalidRow {
    /// The key as text (empty when null).
    pub key: String,
    /// Why, e.g. `null primary key`.
    pub reason: String,
}

/// Which runs to list. Runs come newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFilter {
    /// Only this run.
    pub run: Option<i64>,
    /// At most this many (0 means 100).
    pub limit: usize,
    /// Skip this many first.
    pub offset: usize,
    /// Only runs created after this time (Unix ms).
    pub after_ms: Option<i64>,
    /// Only runs created before this time (Unix ms).
    pub before_ms: Option<i64>,
}

impl RunFilter {
    /// The limit to apply.
    pub(crate) fn effective_limit(&self) -> i64 {
        if self.limit == 0 {
            100
        } else {
            self.limit.min(10_000) as i64
        }
    }
}

/// What a numeric id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    /// A `[[syncs]]` entry.
    Sync,
    /// A `[[models]]` entry.
    Model,
    /// A `[[destinations]]` entry.
    Destination,
}

impl ObjectKind {
    /// The stored name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Sync => "sync",
            ObjectKind::Model => "model",
            ObjectKind::Destination => "destination",
        }
    }
}

/// A configured object's stable numeric id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectId {
    /// The id, never reused.
    pub id: i64,
    /// The configured name.
    pub name: String,
    /// When the name was first seen, in Unix milliseconds.
    pub created_at_ms: i64,
}

/// The outcomes that move state, one per key (the latest run's wins), and
/// the run counters they add up to.
pub(crate) struct OutcomeBatch<'a> {
    /// Per (sync, key), the outcome of the highest run.
    pub latest: Vec<&'a RowOutcome>,
    /// Per run: successful and failed counts.
    pub counters: Vec<(i64, RowCounts, RowCounts)>,
}

impl<'a> OutcomeBatch<'a> {
    /// Groups `outcomes` for one write.
    pub(crate) fn of(outcomes: &'a [RowOutcome]) -> OutcomeBatch<'a> {
        let mut by_key: std::collections::HashMap<(i64, &str), &RowOutcome> =
            std::collections::HashMap::with_capacity(outcomes.len());
        let mut counters: Vec<(i64, RowCounts, RowCounts)> = Vec::new();
        for o in outcomes {
            by_key
                .entry((o.sync, o.key.as_str()))
                .and_modify(|seen| {
                    if o.run >= seen.run {
                        *seen = o;
                    }
                })
                .or_insert(o);
            let slot = match counters.iter_mut().position(|(run, _, _)| *run == o.run) {
                Some(i) => &mut counters[i],
                None => {
                    counters.push((o.run, RowCounts::default(), RowCounts::default()));
                    let last = counters.len() - 1;
                    &mut counters[last]
                }
            };
            match o.delivery {
                Delivery::Delivered => slot.1.count(o.change),
                Delivery::DeadLettered { .. } => slot.2.count(o.change),
            }
        }
        let mut latest: Vec<&RowOutcome> = by_key.into_values().collect();
        latest.sort_by(|a, b| (a.sync, &a.key).cmp(&(b.sync, &b.key)));
        OutcomeBatch { latest, counters }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_and_only_three_are_active() {
        for s in RunStatus::ALL {
            assert_eq!(RunStatus::parse(s.as_str()), Some(s));
        }
        let active: Vec<_> = RunStatus::ALL
            .into_iter()
            .filter(|s| s.is_active())
            .collect();
        assert_eq!(
            active,
            [
                RunStatus::Querying,
                RunStatus::Processing,
                RunStatus::Reporting
            ]
        );
        assert!(!RunStatus::Queued.is_finished());
        assert!(RunStatus::Interrupted.is_finished());
        assert_eq!(RunStatus::parse("completed_with_errors"), None);
    }

    #[test]
    fn the_latest_run_wins_per_key_and_every_outcome_counts() {
        let o = |run, key: &str, delivery| RowOutcome {
            sync: 1,
            run,
            key: key.into(),
            hash: RowHash([run as u8; 16]),
            change: Change::Changed,
            delivery,
        };
        let outcomes = [
            o(2, "a", Delivery::Delivered),
            o(1, "a", Delivery::DeadLettered { reason: "x".into() }),
            o(2, "b", Delivery::Delivered),
        ];
        let batch = OutcomeBatch::of(&outcomes);
        assert_eq!(batch.latest.len(), 2);
        assert_eq!(batch.latest[0].run, 2);
        assert_eq!(batch.counters.len(), 2);
        assert_eq!(batch.counters[0].1.changed, 2);
        assert_eq!(batch.counters[1].2.changed, 1);
    }
}
