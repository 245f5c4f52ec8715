//! SQLite warehouses: a database file opened read-only.
//!
//! The query runs on a blocking thread of its own that steps through the
//! rows and hands them over `batch_rows` at a time, waiting while the
//! consumer is a batch behind, so memory stays bounded.

use std::path::PathBuf;

use base64::Engine as _;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, oneshot};

use super::{Row, RowStream, Warehouse, WarehouseError, BATCHES_AHEAD};
use crate::config::{ConfigError, WarehouseConfig};

/// A SQLite file models are read from.
pub struct SqliteWarehouse {
    name: String,
    path: PathBuf,
    busy_timeout_ms: u64,
}

impl SqliteWarehouse {
    /// The file of `config` (the `index`th warehouse); opened per call.
    pub fn new(config: &WarehouseConfig, index: usize) -> Result<SqliteWarehouse, ConfigError> {
        let path = config.path.clone().ok_or_else(|| {
            ConfigError::invalid(
                format!("warehouses[{index}].path"),
                "type = \"sqlite\" needs the database file; set path",
            )
        })?;
        Ok(SqliteWarehouse {
            name: config.name.clone(),
            path,
            busy_timeout_ms: config.connect_timeout_ms,
        })
    }

    fn open(&self) -> Result<Connection, WarehouseError> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| WarehouseError::Unavailable {
            warehouse: self.name.clone(),
            reason: format!(
                "cannot open {}: {e}; check the path and that the file is readable",
                self.path.display()
            ),
        })?;
        let _ = conn.busy_timeout(std::time::Duration::from_millis(self.busy_timeout_ms));
        Ok(conn)
    }

    fn query_error(&self, e: rusqlite::Error) -> WarehouseError {
        WarehouseError::Query {
            warehouse: self.name.clone(),
            reason: e.to_string(),
        }
    }

    fn cloned(&self) -> SqliteWarehouse {
        SqliteWarehouse {
            name: self.name.clone(),
            path: self.path.clone(),
            busy_timeout_ms: self.busy_timeout_ms,
        }
    }
}

/// One SQLite value as JSON: integers and reals as numbers (a non-finite
/// real as null), text as a string, a blob as base64 text.
fn json_of(value: ValueRef<'_>) -> serde_json::Value {
    match value {
        ValueRef::Null => serde_json::Value::Null,
        ValueRef::Integer(n) => n.into(),
        ValueRef::Real(f) => serde_json::Number::from_f64(f)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null),
        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned().into(),
        ValueRef::Blob(b) => base64::engine::general_purpose::STANDARD.encode(b).into(),
    }
}

fn columns_of(stmt: &rusqlite::Statement<'_>) -> Vec<String> {
    stmt.column_names().into_iter().map(str::to_owned).collect()
}

#[async_trait::async_trait]
impl Warehouse for SqliteWarehouse {
    fn name(&self) -> &str {
        &self.name
    }

    async fn describe(&self, query: &str) -> Result<Vec<String>, WarehouseError> {
        let this = self.cloned();
        let query = query.to_owned();
        tokio::task::spawn_blocking(move || {
            let conn = this.open()?;
            let stmt = conn.prepare(&query).map_err(|e| this.query_error(e))?;
            if !stmt.readonly() {
                return Err(WarehouseError::Query {
                    warehouse: this.name.clone(),
                    reason: "the query writes to the database, but a model is read-only".into(),
                });
            }
            Ok(columns_of(&stmt))
        })
        .await
        .map_err(|e| WarehouseError::Unavailable {
            warehouse: self.name.clone(),
            reason: format!("the reader thread failed: {e}"),
        })?
    }

    async fn stream(&self, query: &str, batch_rows: usize) -> Result<RowStream, WarehouseError> {
        let this = self.cloned();
        let query = query.to_owned();
        let batch_rows = batch_rows.max(1);
        let (tx, rx) = mpsc::channel(BATCHES_AHEAD);
        let (columns_tx, columns_rx) = oneshot::channel();
        tokio::task::spawn_blocking(move || {
            // 1. Open and prepare; the columns (or the error) go back first.
            let conn = match this.open() {
                Ok(conn) => conn,
                Err(e) => {
                    let _ = columns_tx.send(Err(e));
                    return;
                }
            };
            let mut stmt = match conn.prepare(&query) {
                Ok(stmt) => stmt,
                Err(e) => {
                    let _ = columns_tx.send(Err(this.query_error(e)));
                    return;
                }
            };
            if columns_tx.send(Ok(columns_of(&stmt))).is_err() {
                return;
            }
            // 2. Step through the rows, a batch at a time.
            let width = stmt.column_count();
            let result = (|| -> Result<(), rusqlite::Error> {
                let mut rows = stmt.query([])?;
                let mut batch: Vec<Row> = Vec::with_capacity(batch_rows);
                while let Some(row) = rows.next()? {
                    let mut values = Vec::with_capacity(width);
                    for i in 0..width {
                        values.push(json_of(row.get_ref(i)?));
                    }
                    batch.push(values);
                    if batch.len() == batch_rows {
                        let full = std::mem::replace(&mut batch, Vec::with_capacity(batch_rows));
                        // 3. Waits while the consumer is a batch behind; a
                        //    dropped stream stops the query.
                        if tx.blocking_send(Ok(full)).is_err() {
                            return Ok(());
                        }
                    }
                }
                if !batch.is_empty() {
                    let _ = tx.blocking_send(Ok(batch));
                }
                Ok(())
            })();
            if let Err(e) = result {
                let _ = tx.blocking_send(Err(this.query_error(e)));
            }
        });
        let columns = columns_rx.await.map_err(|_| WarehouseError::Unavailable {
            warehouse: self.name.clone(),
            reason: "the reader thread stopped".into(),
        })??;
        Ok(RowStream::new(columns, rx))
    }
}
