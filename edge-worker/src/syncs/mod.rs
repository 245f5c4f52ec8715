//! Reverse ETL (issue #18): rows from a warehouse to every destination,
//! diffed against what each destination already has.
//!
//! A run of a sync reads its model from a [`Warehouse`] as a
//! [`RowStream`] of bounded batches, fingerprints each row's mapped columns
//! ([`Mapping`], [`RowHash`]), and lets the [`Planner`] compare them by
//! primary key with the sync's tracked state from the
//! [`SyncStore`](crate::storage::SyncStore): added, changed, removed and
//! retried rows, according to the sync's mode. The planned rows then go
//! through the destination's outbox, whose outcomes move the state
//! (`SyncStore::record_outcomes`).
//!
//! The pieces here are the warehouse boundary, the fingerprint, the
//! planner and a dry run ([`dry_run::dry_run`], `waymark sync run NAME
//! --dry-run`); the run executor and the Hightouch-compatible API build on
//! them.

pub mod api_types;
pub mod dry_run;
pub mod hash;
pub mod plan;
pub mod run;
pub mod schedule;
pub mod service;
pub mod warehouse;

pub use hash::Mapping;
pub use plan::{
    load_state, BatchPlan, FinalPlan, PlanError, PlanOptions, PlannedRow, Planner, TrackedState,
};
pub use service::{Syncs, TriggerError};
pub use warehouse::{Row, RowStream, Warehouse, WarehouseError};

pub use crate::storage::syncs::RowHash;

use crate::config::{Config, ConfigError};

/// Why `waymark check` refuses the syncs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// A warehouse's settings do not work (a URL that does not parse).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A warehouse does not answer, or a model's query or columns are wrong.
    #[error(transparent)]
    Warehouse(#[from] WarehouseError),
}

/// What `waymark check` verifies of `[[models]]` and `[[syncs]]`: every
/// model's warehouse answers, its query prepares, and its result has the
/// primary key and every column its syncs map, under distinct names.
/// References between sections were checked when the config loaded.
pub async fn check(config: &Config) -> Result<(), CheckError> {
    for model in &config.models {
        let Some((index, warehouse)) = config
            .warehouses
            .iter()
            .enumerate()
            .find(|(_, w)| w.name == model.warehouse)
        else {
            continue;
        };
        let warehouse = warehouse::open(warehouse, index)?;
        let syncs: Vec<_> = config
            .syncs
            .iter()
            .filter(|s| s.model == model.name)
            .collect();
        warehouse::check_model(warehouse.as_ref(), model, &syncs).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
