//! The warehouse boundary: where models are read from.
//!
//! A [`Warehouse`] prepares a model's query to report its result columns
//! (what `waymark check` verifies) and streams its rows in batches of at
//! most `batch_rows`, each value as JSON. A stream holds at most a couple
//! of batches in memory whatever the model's size: the reader waits while
//! its consumer has not taken the last batch (a bounded channel), and the
//! database hands rows out a batch at a time (a PostgreSQL portal, SQLite
//! stepping). Each backend is a module; a new one implements the trait.

mod postgres;
mod sqlite;

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::config::{ModelConfig, SyncConfig, WarehouseConfig, WarehouseKind};

pub use postgres::PgWarehouse;
pub use sqlite::SqliteWarehouse;

/// One result row: one JSON value per column, in the stream's column order.
pub type Row = Vec<serde_json::Value>;

/// A database that models are read from.
#[async_trait::async_trait]
pub trait Warehouse: Send + Sync + 'static {
    /// The warehouse's configured name.
    fn name(&self) -> &str;

    /// Prepares `query` without running it and returns its result columns,
    /// in order. Called by `waymark check` and before each run; an error
    /// says whether the warehouse is unreachable or the query is wrong.
    async fn describe(&self, query: &str) -> Result<Vec<String>, WarehouseError>;

    /// Starts `query` read-only and returns its rows as a stream of
    /// batches of at most `batch_rows`. Dropping the stream stops the query.
    async fn stream(&self, query: &str, batch_rows: usize) -> Result<RowStream, WarehouseError>;
}

/// A query's rows, a batch at a time.
#[derive(Debug)]
pub struct RowStream {
    columns: Vec<String>,
    batches: mpsc::Receiver<Result<Vec<Row>, WarehouseError>>,
    done: bool,
}

impl RowStream {
    /// A stream of `columns` fed by a reader task through `batches`; the
    /// reader ends the stream by dropping its sender.
    pub(crate) fn new(
        columns: Vec<String>,
        batches: mpsc::Receiver<Result<Vec<Row>, WarehouseError>>,
    ) -> RowStream {
        RowStream {
            columns,
            batches,
            done: false,
        }
    }

    /// The result columns, in the order of each row's values.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// The next batch (never empty), or `None` once every row was read. An
    /// error ends the stream: the run fails with it.
    pub async fn next_batch(&mut self) -> Result<Option<Vec<Row>>, WarehouseError> {
        if self.done {
            return Ok(None);
        }
        match self.batches.recv().await {
            Some(Ok(batch)) => Ok(Some(batch)),
            Some(Err(e)) => {
                self.done = true;
                Err(e)
            }
            None => {
                self.done = true;
                Ok(None)
            }
        }
    }
}

/// Batches a reader may have ready before its consumer takes them.
pub(crate) const BATCHES_AHEAD: usize = 1;

/// A warehouse failure.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum WarehouseError {
    /// The warehouse cannot be reached or opened now; a later run may succeed.
    #[error("warehouse {warehouse}: {reason}")]
    Unavailable {
        /// The warehouse's name.
        warehouse: String,
        /// Why, with what to check.
        reason: String,
    },
    /// The query does not prepare or failed while running.
    #[error("warehouse {warehouse}: the query failed: {reason}; fix the model's query")]
    Query {
        /// The warehouse's name.
        warehouse: String,
        /// The database's message.
        reason: String,
    },
    /// A column the model or a sync needs is not in the query's result.
    #[error("model {model}: {key} names column `{column}`, which the query does not return (it returns {columns}); fix the query or that key")]
    MissingColumn {
        /// The model's name.
        model: String,
        /// What needs it: `primary_key`, or `sync <name> mapping."traits.email"`.
        key: String,
        /// The missing column.
        column: String,
        /// The columns the query returns, comma-separated.
        columns: String,
    },
    /// Two result columns share a name, so a row cannot be read by name.
    #[error("model {model}: the query returns two columns named `{column}`; give them distinct names with AS")]
    DuplicateColumn {
        /// The model's name.
        model: String,
        /// The repeated name.
        column: String,
    },
}

impl WarehouseError {
    /// Whether a later attempt may succeed (the warehouse was down).
    pub fn is_retriable(&self) -> bool {
        matches!(self, WarehouseError::Unavailable { .. })
    }
}

/// Opens the warehouse `config` describes (connections are made per call).
pub fn open(
    config: &WarehouseConfig,
    index: usize,
) -> Result<Arc<dyn Warehouse>, crate::config::ConfigError> {
    Ok(match config.kind {
        WarehouseKind::Postgres => Arc::new(PgWarehouse::new(config, index)?),
        WarehouseKind::Sqlite => Arc::new(SqliteWarehouse::new(config, index)?),
    })
}

/// What `waymark check` verifies of a model and the syncs reading it: the
/// query prepares, its columns are distinct, and the primary key and every
/// mapped column are among them. Returns the result columns.
pub async fn check_model(
    warehouse: &dyn Warehouse,
    model: &ModelConfig,
    syncs: &[&SyncConfig],
) -> Result<Vec<String>, WarehouseError> {
    let columns = warehouse.describe(&model.query).await?;
    check_columns(model, syncs, &columns)?;
    Ok(columns)
}

/// The column checks of [`check_model`] on a known result.
pub fn check_columns(
    model: &ModelConfig,
    syncs: &[&SyncConfig],
    columns: &[String],
) -> Result<(), WarehouseError> {
    let mut seen = std::collections::HashSet::new();
    for c in columns {
        if !seen.insert(c.as_str()) {
            return Err(WarehouseError::DuplicateColumn {
                model: model.name.clone(),
                column: c.clone(),
            });
        }
    }
    let missing = |key: String, column: &str| WarehouseError::MissingColumn {
        model: model.name.clone(),
        key,
        column: column.to_owned(),
        columns: columns.join(", "),
    };
    if !seen.contains(model.primary_key.as_str()) {
        return Err(missing("primary_key".into(), &model.primary_key));
    }
    for sync in syncs {
        for (field, column) in &sync.mapping {
            if !seen.contains(column.as_str()) {
                return Err(missing(
                    format!("sync {} mapping.\"{field}\"", sync.name),
                    column,
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
