//! PostgreSQL warehouses.
//!
//! # Design
//! Each row is read as one `jsonb` value (`SELECT to_jsonb(m) FROM (<query>) m`),
//! so PostgreSQL itself turns every column type (numeric, timestamps,
//! arrays, enums, composite types) into JSON the way its users know, and
//! Waymark needs no per-type decoding. Rows are fetched from a portal in
//! a read-only transaction, `batch_rows` at a time, on a connection of the
//! run's own (a run is rare and long; it should not hold a pool slot).

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_postgres::NoTls;

use super::{Row, RowStream, Warehouse, WarehouseError, BATCHES_AHEAD};
use crate::config::{ConfigError, WarehouseConfig};
use crate::storage::pg_error_message;

/// A PostgreSQL database models are read from.
pub struct PgWarehouse {
    name: String,
    config: tokio_postgres::Config,
}

impl PgWarehouse {
    /// Checks the URL of `config` (the `index`th warehouse); connects later.
    pub fn new(config: &WarehouseConfig, index: usize) -> Result<PgWarehouse, ConfigError> {
        let url = config.resolve_url(index)?.ok_or_else(|| {
            ConfigError::invalid(
                format!("warehouses[{index}].url_env"),
                "type = \"postgres\" needs a URL; set url_env",
            )
        })?;
        let mut pg: tokio_postgres::Config = url.parse().map_err(|e| {
            ConfigError::invalid(
                format!("warehouses[{index}].url"),
                format!(
                    "not a postgres:// URL ({e}); use postgres://user:password@host:port/database"
                ),
            )
        })?;
        pg.connect_timeout(Duration::from_millis(config.connect_timeout_ms));
        if pg.get_application_name().is_none() {
            pg.application_name("waymark-sync");
        }
        Ok(PgWarehouse {
            name: config.name.clone(),
            config: pg,
        })
    }

    async fn connect(&self) -> Result<tokio_postgres::Client, WarehouseError> {
        let (client, connection) =
            self.config
                .connect(NoTls)
                .await
                .map_err(|e| WarehouseError::Unavailable {
                    warehouse: self.name.clone(),
                    reason: format!(
                        "cannot connect to PostgreSQL: {}; check the URL, the credentials and that the server is running",
                        pg_error_message(&e)
                    ),
                })?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    fn query_error(&self, e: &tokio_postgres::Error) -> WarehouseError {
        if e.as_db_error().is_none() || e.is_closed() {
            WarehouseError::Unavailable {
                warehouse: self.name.clone(),
                reason: format!("the connection failed: {}", pg_error_message(e)),
            }
        } else {
            WarehouseError::Query {
                warehouse: self.name.clone(),
                reason: pg_error_message(e),
            }
        }
    }
}

/// The model's query as one `jsonb` per row. A trailing `;` is dropped so
/// the query fits in a subquery.
fn as_json_rows(query: &str) -> String {
    let inner = query.trim().trim_end_matches(';').trim_end();
    format!("SELECT to_jsonb(m) FROM (\n{inner}\n) AS m")
}

/// A row's values in `columns` order, from its `jsonb` object.
fn row_of(columns: &[String], value: serde_json::Value) -> Row {
    match value {
        serde_json::Value::Object(mut object) => columns
            .iter()
            .map(|c| object.remove(c).unwrap_or(serde_json::Value::Null))
            .collect(),
        _ => vec![serde_json::Value::Null; columns.len()],
    }
}

#[async_trait::async_trait]
impl Warehouse for PgWarehouse {
    fn name(&self) -> &str {
        &self.name
    }

    async fn describe(&self, query: &str) -> Result<Vec<String>, WarehouseError> {
        let client = self.connect().await?;
        let statement = client
            .prepare(query)
            .await
            .map_err(|e| self.query_error(&e))?;
        // The wrapped form must prepare too (it refuses e.g. two statements).
        client
            .prepare(&as_json_rows(query))
            .await
            .map_err(|e| self.query_error(&e))?;
        Ok(statement
            .columns()
            .iter()
            .map(|c| c.name().to_owned())
            .collect())
    }

    async fn stream(&self, query: &str, batch_rows: usize) -> Result<RowStream, WarehouseError> {
        let mut client = self.connect().await?;
        let columns: Vec<String> = client
            .prepare(query)
            .await
            .map_err(|e| self.query_error(&e))?
            .columns()
            .iter()
            .map(|c| c.name().to_owned())
            .collect();
        let (tx, rx) = mpsc::channel(BATCHES_AHEAD);
        let wrapped = as_json_rows(query);
        let this = PgWarehouse {
            name: self.name.clone(),
            config: self.config.clone(),
        };
        let names = columns.clone();
        let batch_rows = batch_rows.clamp(1, i32::MAX as usize) as i32;
        tokio::spawn(async move {
            // 1. A read-only transaction: the model cannot write.
            let result = async {
                let transaction = client.build_transaction().read_only(true).start().await?;
                // 2. A portal over the wrapped query, drained a batch at a time.
                let statement = transaction.prepare(&wrapped).await?;
                let portal = transaction.bind(&statement, &[]).await?;
                loop {
                    let rows = transaction.query_portal(&portal, batch_rows).await?;
                    if rows.is_empty() {
                        break;
                    }
                    let mut batch = Vec::with_capacity(rows.len());
                    for row in rows {
                        let value: Option<serde_json::Value> = row.try_get(0)?;
                        batch.push(row_of(&names, value.unwrap_or_default()));
                    }
                    // 3. Waits while the consumer is a batch behind; a
                    //    dropped stream ends the query (the transaction
                    //    rolls back with the connection).
                    if tx.send(Ok(batch)).await.is_err() {
                        return Ok(());
                    }
                }
                transaction.commit().await
            }
            .await;
            if let Err(e) = result {
                let _ = tx.send(Err(this.query_error(&e))).await;
            }
        });
        Ok(RowStream::new(columns, rx))
    }
}
