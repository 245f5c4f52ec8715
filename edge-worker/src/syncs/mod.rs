//! Reverse ETL (issue #18): rows from a warehouse to every destination,
//! diffed against what each destination already has.
//!
//! A run of a sync reads its model from a [`Warehouse`] as a
//! [`RowStream`] of bounded batches. The fingerprint, the planner and the
//! run executor build on it.

pub mod warehouse;

pub use warehouse::{Row, RowStream, Warehouse, WarehouseError};
