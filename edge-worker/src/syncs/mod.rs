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
//! The pieces here are the warehouse boundary, the fingerprint and the
//! planner; the run executor, the Hightouch-compatible API and the CLI
//! build on them.

pub mod api_types;
pub mod hash;
pub mod plan;
pub mod warehouse;

pub use hash::Mapping;
pub use plan::{BatchPlan, FinalPlan, PlanError, PlanOptions, PlannedRow, Planner, TrackedState};
pub use warehouse::{Row, RowStream, Warehouse, WarehouseError};

pub use crate::storage::syncs::RowHash;
