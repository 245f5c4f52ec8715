//! The diff: a run's current rows against the sync's tracked state.
//!
//! The [`Planner`] takes the model's rows a batch at a time, as the
//! warehouse streams them, and answers each batch with the rows to send
//! and the rows that are invalid; [`Planner::finish`] then yields the
//! removals (`mirror`) and the counts. Per key it compares the row's hash
//! with the [`TrackedState`]:
//!
//! | key is | upsert | insert | update | mirror |
//! | --- | --- | --- | --- | --- |
//! | not tracked | added | added | recorded, not sent | added |
//! | tracked, hash differs | changed | not sent | changed | changed |
//! | tracked, failed last time | retried | retried | retried | retried |
//! | tracked, not returned | kept | kept | kept | removed |
//!
//! A full resync plans every current row as added, in every mode (mirror
//! still removes). A retried key is sent with its current values, as
//! `added` when no delivery of it ever succeeded and `changed` otherwise.
//!
//! # Design
//! Memory holds the state's keys and hashes, never whole rows: each batch's
//! planned rows are handed back at once. So a repeated primary key is only
//! known at its second sighting; its first row may already be planned.
//! The planner keeps the first and counts every later one as invalid, the
//! way a unique index keeps the first insert.

mod state;

pub use state::TrackedState;
use state::Visit;

use super::hash::Mapping;
use super::warehouse::Row;
use crate::config::SyncMode;
use crate::storage::syncs::{Change, InvalidRow, KeyStatus, RowCounts, RowHash};
use crate::storage::{StorageError, SyncStore};

/// Tracked keys read per page when a run loads a sync's state.
pub const STATE_PAGE_KEYS: usize = 10_000;

/// Loads the tracked state of `sync` from the store, a page at a time,
/// with room for `expected` keys (the previous run's query size): the
/// first page's key lengths size the key arena, so a run that meets about
/// as many keys as the last one never regrows the state.
pub async fn load_state(
    store: &dyn SyncStore,
    sync: i64,
    expected: usize,
) -> Result<TrackedState, StorageError> {
    let mut state = TrackedState::new();
    let mut after = None;
    loop {
        let page = store
            .state_page(sync, after.take(), STATE_PAGE_KEYS)
            .await?;
        if state.is_empty() {
            let bytes: usize = page.iter().map(|k| k.key.len()).sum();
            let average = bytes.div_ceil(page.len().max(1)).max(8);
            let keys = expected.max(page.len());
            state.reserve(keys, keys.saturating_mul(average));
        }
        state.extend(&page);
        match page.last() {
            Some(last) if page.len() == STATE_PAGE_KEYS => after = Some(last.key.clone()),
            _ => return Ok(state),
        }
    }
}

/// Invalid rows a run lists with their reasons (all are counted).
pub const INVALID_ROWS_LISTED: usize = 1_000;

/// How a run plans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanOptions {
    /// The sync's mode.
    pub mode: SyncMode,
    /// Plan every current row as added (`fullResync`, `--full`).
    pub full_resync: bool,
    /// Fail when the model returns no rows but the previous run had some.
    pub fail_on_zero_rows: bool,
    /// Rows the previous finished run read (its query size), 0 for none.
    pub previous_rows: u64,
}

/// One row to send.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedRow {
    /// The primary key.
    pub key: String,
    /// The row's hash (for a removal, the tracked one).
    pub hash: RowHash,
    /// Added, changed or removed.
    pub change: Change,
    /// Whether the key's last delivery failed.
    pub retry: bool,
    /// The row's values (empty for a removal).
    pub row: Row,
}

/// What one batch of rows plans.
#[derive(Debug, Default, PartialEq)]
pub struct BatchPlan {
    /// Rows to send, in the batch's order.
    pub send: Vec<PlannedRow>,
    /// Keys to record as synced without sending (`update` mode's new keys).
    pub baseline: Vec<(String, RowHash)>,
    /// Invalid rows of this batch that are listed (see [`INVALID_ROWS_LISTED`]).
    pub invalid: Vec<InvalidRow>,
}

/// What a run planned in all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanCounts {
    /// Rows the model returned, valid or not (the query size).
    pub rows: u64,
    /// Rows to send, by change (removals included).
    pub planned: RowCounts,
    /// Of those, keys whose last delivery had failed.
    pub retried: u64,
    /// Keys whose row did not change.
    pub unchanged: u64,
    /// Differences the mode does not send (changes under `insert`).
    pub skipped: u64,
    /// New keys recorded without sending (`update`).
    pub baselined: u64,
    /// Rows with a null, empty, non-scalar or repeated primary key.
    pub invalid: u64,
}

/// The end of a run's plan.
#[derive(Debug, Default, PartialEq)]
pub struct FinalPlan {
    /// Keys to remove (`mirror`), from the tracked state.
    pub removed: Vec<PlannedRow>,
    /// Everything the run planned.
    pub counts: PlanCounts,
}

/// Why a plan is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The model returned nothing although the previous run read rows.
    #[error("the model returned no rows but the previous run read {previous}; nothing was removed. If the model is meant to be empty, set fail_on_zero_rows = false on the sync")]
    ZeroRows {
        /// The previous run's query size.
        previous: u64,
    },
}

/// Diffs a run's rows against its sync's state.
pub struct Planner {
    mapping: Mapping,
    state: TrackedState,
    options: PlanOptions,
    counts: PlanCounts,
    listed_invalid: usize,
    scratch: Vec<u8>,
}

impl Planner {
    /// A planner over the sync's loaded `state`.
    pub fn new(mapping: Mapping, state: TrackedState, options: PlanOptions) -> Planner {
        Planner {
            mapping,
            state,
            options,
            counts: PlanCounts::default(),
            listed_invalid: 0,
            scratch: Vec::with_capacity(256),
        }
    }

    /// The counts so far.
    pub fn counts(&self) -> PlanCounts {
        self.counts
    }

    /// Heap bytes the tracked state holds (see [`TrackedState::heap_bytes`]).
    pub fn state_bytes(&self) -> usize {
        self.state.heap_bytes()
    }

    /// The mapping the planner reads rows with.
    pub fn mapping(&self) -> &Mapping {
        &self.mapping
    }

    fn sends(&self, change: Change) -> bool {
        match self.options.mode {
            SyncMode::Upsert => change != Change::Removed,
            SyncMode::Insert => change == Change::Added,
            SyncMode::Update => change == Change::Changed,
            SyncMode::Mirror => true,
        }
    }

    fn invalid(&mut self, out: &mut BatchPlan, key: String, reason: &str) {
        self.counts.invalid += 1;
        if self.listed_invalid < INVALID_ROWS_LISTED {
            self.listed_invalid += 1;
            out.invalid.push(InvalidRow {
                key,
                reason: reason.to_owned(),
            });
        }
    }

    /// Plans one batch of the model's rows, in the stream's column order.
    pub fn plan_batch(&mut self, rows: Vec<Row>) -> BatchPlan {
        let mut out = BatchPlan::default();
        for row in rows {
            self.counts.rows += 1;
            let key = match self.mapping.key_of(&row) {
                Ok(key) => key,
                Err(problem) => {
                    self.invalid(&mut out, String::new(), problem.reason());
                    continue;
                }
            };
            let hash = self.mapping.hash(&row, &mut self.scratch);
            let (change, retry) = match self.state.visit(&key, hash) {
                Visit::Duplicate => {
                    self.invalid(&mut out, key, "duplicate primary key");
                    continue;
                }
                Visit::Fresh if self.options.full_resync || self.sends(Change::Added) => {
                    (Change::Added, false)
                }
                Visit::Fresh => {
                    self.counts.baselined += 1;
                    out.baseline.push((key, hash));
                    continue;
                }
                Visit::Tracked(_, status) if self.options.full_resync => {
                    (Change::Added, status.is_failed())
                }
                Visit::Tracked(_, KeyStatus::FailedNew) => (Change::Added, true),
                Visit::Tracked(_, KeyStatus::Failed) => (Change::Changed, true),
                Visit::Tracked(tracked, KeyStatus::Synced) if tracked == hash => {
                    self.counts.unchanged += 1;
                    continue;
                }
                Visit::Tracked(_, KeyStatus::Synced) => {
                    if !self.sends(Change::Changed) {
                        self.counts.skipped += 1;
                        continue;
                    }
                    (Change::Changed, false)
                }
            };
            self.counts.planned.count(change);
            self.counts.retried += retry as u64;
            out.send.push(PlannedRow {
                key,
                hash,
                change,
                retry,
                row,
            });
        }
        out
    }

    /// Ends the plan once every row was read: the removals (`mirror`) and
    /// the counts, or [`PlanError::ZeroRows`] when the model came back
    /// empty after a run that read rows (unless the sync allows it).
    pub fn finish(mut self) -> Result<FinalPlan, PlanError> {
        if self.counts.rows == 0 && self.options.previous_rows > 0 && self.options.fail_on_zero_rows
        {
            return Err(PlanError::ZeroRows {
                previous: self.options.previous_rows,
            });
        }
        let mut removed = Vec::new();
        if self.options.mode == SyncMode::Mirror {
            for (key, hash, status) in self.state.unseen() {
                removed.push(PlannedRow {
                    key: key.to_owned(),
                    hash,
                    change: Change::Removed,
                    retry: status.is_failed(),
                    row: Vec::new(),
                });
            }
            self.counts.planned.removed += removed.len() as u64;
            self.counts.retried += removed.iter().filter(|r| r.retry).count() as u64;
        }
        Ok(FinalPlan {
            removed,
            counts: self.counts,
        })
    }
}

#[cfg(test)]
mod tests;
