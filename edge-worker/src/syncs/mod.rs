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
mod tests {
    use super::*;

    fn config(path: &std::path::Path, mapping: &str) -> Config {
        Config::parse(&format!(
            r#"
[identity]
keys = [{{ id = "k1", secret = "0123456789abcdef0123456789abcdef" }}]
[[sources]]
name = "web"
write_key = "wk_test"
[[destinations]]
name = "hook"
type = "webhook"
url = "http://127.0.0.1:9/"
[[warehouses]]
name = "local"
type = "sqlite"
path = "{}"
[[models]]
name = "users"
warehouse = "local"
query = "select id, email from users"
primary_key = "id"
[[syncs]]
name = "users-to-hook"
model = "users"
destination = "hook"
call = "identify"
mapping = {mapping}
"#,
            path.display()
        ))
        .expect("the config parses")
    }

    #[tokio::test]
    async fn check_prepares_each_model_and_names_what_is_wrong() {
        let path = crate::storage::conformance_tempdir().join("crm.db");
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE users (id INTEGER, email TEXT)")
            .unwrap();
        let good = config(&path, r#"{ userId = "id", "traits.email" = "email" }"#);
        check(&good).await.expect("a good model checks");
        let bad = config(&path, r#"{ userId = "id", "traits.plan" = "plan" }"#);
        let err = check(&bad).await.unwrap_err().to_string();
        assert!(
            err.contains("`plan`") && err.contains("users-to-hook"),
            "{err}"
        );
        let missing = config(&path.with_file_name("gone.db"), r#"{ userId = "id" }"#);
        let err = check(&missing).await.unwrap_err().to_string();
        assert!(err.contains("gone.db"), "{err}");
    }
}
