//! A dry run of a sync (issue 18 §4, §6): the model is read and diffed
//! against the sync's tracked state exactly as a run would, and the plan is
//! reported; nothing is sent and no state or run is written.

use serde::Serialize;

use super::plan::PlanError;
use super::run::{prepare, Prepared};
use super::warehouse::WarehouseError;
use crate::config::{Config, ConfigError};
use crate::storage::syncs::{InvalidRow, RowCounts};
use crate::storage::{StorageError, SyncStore};

/// Invalid rows a dry run lists (the rest are counted).
const INVALID_LISTED: usize = 20;

/// What a run of the sync would do now.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DryRun {
    /// The sync's name (its slug).
    pub sync: String,
    /// Rows the model returned, valid or not.
    pub query_size: u64,
    /// Rows a run would send, by change.
    pub planned: RowCounts,
    /// Of those, keys whose last delivery had failed.
    pub retried: u64,
    /// Keys whose row did not change.
    pub unchanged: u64,
    /// Differences the sync's mode does not send.
    pub skipped: u64,
    /// New keys `update` would record without sending.
    pub baselined: u64,
    /// Rows with a null, empty, non-scalar or repeated primary key.
    pub invalid: u64,
    /// The first invalid rows, with why.
    pub invalid_rows: Vec<InvalidRow>,
}

/// Why a dry run could not plan.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DryRunError {
    /// No `[[syncs]]` entry has that name.
    #[error("no sync named `{0}`; `waymark sync list` shows the configured ones")]
    UnknownSync(String),
    /// The warehouse's settings do not work.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The warehouse does not answer, or the query or its columns are wrong.
    #[error(transparent)]
    Warehouse(#[from] WarehouseError),
    /// The store holding the sync's state cannot be read.
    #[error("reading the sync's state: {0}")]
    Storage(#[from] StorageError),
    /// The plan is refused (a model that returned no rows).
    #[error(transparent)]
    Plan(#[from] PlanError),
}

/// Plans the sync `name` against `store` without sending anything; with
/// `full`, every current row is planned as added (`fullResync`).
pub async fn dry_run(
    config: &Config,
    store: &dyn SyncStore,
    name: &str,
    full: bool,
) -> Result<DryRun, DryRunError> {
    let Prepared {
        sync,
        mut rows,
        mut planner,
        ..
    } = prepare(config, store, name, full).await?;
    let mut invalid_rows = Vec::new();
    while let Some(batch) = rows.next_batch().await? {
        let plan = planner.plan_batch(batch);
        let room = INVALID_LISTED.saturating_sub(invalid_rows.len());
        invalid_rows.extend(plan.invalid.into_iter().take(room));
    }
    let counts = planner.finish()?.counts;
    Ok(DryRun {
        sync: sync.name.clone(),
        query_size: counts.rows,
        planned: counts.planned,
        retried: counts.retried,
        unchanged: counts.unchanged,
        skipped: counts.skipped,
        baselined: counts.baselined,
        invalid: counts.invalid,
        invalid_rows,
    })
}
