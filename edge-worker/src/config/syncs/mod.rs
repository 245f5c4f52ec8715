//! `[[warehouses]]`, `[[models]]` and `[[syncs]]`: Reverse ETL (issue #18).
//!
//! A **warehouse** is a connection (PostgreSQL or a SQLite file), a
//! **model** is a SQL query over one warehouse with a primary key, and a
//! **sync** sends a model's rows to one destination as `identify`, `track`
//! or `group` calls, mapped column by column, in one of four modes. The
//! types here only say what the file may contain; [`validate`] checks the
//! references between the three sections and the destinations, and
//! `waymark check` later checks the warehouse itself (the query prepares,
//! the primary key and every mapped column exist).

mod cron;
mod validate;

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Deserialize;

use super::{secret, ConfigError};

pub use cron::CronSchedule;
pub(crate) use validate::validate;

/// An example of the three sections, checked by a test.
pub const EXAMPLE: &str = r#"
[[warehouses]]
name = "crm"
type = "postgres"
url_env = "CRM_PG_URL"

[[warehouses]]
name = "local"
type = "sqlite"
path = "crm.db"

[[models]]
name = "crm-users"
warehouse = "crm"
query = "select id, email, plan from crm_users"
primary_key = "id"

[[syncs]]
name = "crm-users-to-mixpanel"
model = "crm-users"
destination = "mixpanel"
call = "identify"
mode = "upsert"
mapping = { userId = "id", "traits.email" = "email", "traits.plan" = "plan" }
schedule = { every_secs = 3600 }

[[syncs]]
name = "plan-changes"
model = "crm-users"
destination = "mixpanel"
call = "track"
event = "Plan Changed"
mapping = { userId = "id", "properties.plan" = "plan" }
schedule = { cron = "0 * * * *" }
"#;

/// Where models are read from.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WarehouseConfig {
    /// Unique name, used by `[[models]] warehouse`.
    pub name: String,
    /// `postgres` or `sqlite`.
    #[serde(rename = "type")]
    pub kind: WarehouseKind,
    /// For `postgres`: name of the environment variable holding the
    /// `postgres://user:password@host:port/database` URL.
    #[serde(default)]
    pub url_env: Option<String>,
    /// For `postgres`: the URL inline. For development only; prefer `url_env`.
    #[serde(default)]
    pub url: Option<String>,
    /// For `sqlite`: the database file, relative to the working directory.
    /// It is opened read-only.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// How long to wait for a connection, in milliseconds. Default: 5000.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Rows read per batch while a run streams a model; memory is bounded
    /// by this times the row size. Default: 1000.
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
}

/// A warehouse's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WarehouseKind {
    /// A PostgreSQL database (`url_env` or `url`).
    Postgres,
    /// A SQLite file (`path`).
    Sqlite,
}

/// A SQL query over one warehouse, with the column that identifies a row.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Unique name, used by `[[syncs]] model`.
    pub name: String,
    /// The `[[warehouses]]` entry the query runs on.
    pub warehouse: String,
    /// The query, in the warehouse's SQL. It is run read-only.
    pub query: String,
    /// The result column whose value identifies a row across runs. Rows
    /// with a null or repeated key are counted as invalid and not sent.
    pub primary_key: String,
}

/// A model sent to one destination.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// Unique name; the sync's slug in the API (letters, digits, `-`, `_`).
    pub name: String,
    /// The `[[models]]` entry whose rows are sent.
    pub model: String,
    /// The `[[destinations]]` entry the rows go to.
    pub destination: String,
    /// The Segment call each row becomes: `identify`, `track` or `group`.
    pub call: SyncCall,
    /// Which rows are sent. Default: `upsert`.
    #[serde(default)]
    pub mode: SyncMode,
    /// Event field (a dotted path such as `traits.email`) to result column.
    pub mapping: BTreeMap<String, String>,
    /// For `call = "track"`: the event name.
    #[serde(default)]
    pub event: Option<String>,
    /// When runs start by themselves: `{ every_secs = 3600 }` or
    /// `{ cron = "0 * * * *" }` (UTC). Default: none, so runs start only
    /// from the API or the CLI.
    #[serde(default)]
    pub schedule: Option<Schedule>,
    /// Fail a run whose model returns no rows when the previous run had
    /// some, rather than treating every row as removed. Default: true.
    #[serde(default = "default_true")]
    pub fail_on_zero_rows: bool,
    /// Keep the sync configured but start no runs. Default: false.
    #[serde(default)]
    pub disabled: bool,
    /// How long a run waits, once every row is committed, for the last
    /// rows' outcomes before it ends (`warning` when some have none; they
    /// still settle later). Default: 600.
    #[serde(default = "default_report_timeout_secs")]
    pub report_timeout_secs: u64,
}

fn default_report_timeout_secs() -> u64 {
    600
}

/// The Segment call a sync's rows become.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SyncCall {
    /// `identify`: mapped to `userId`/`anonymousId` and `traits.*`.
    Identify,
    /// `track`: mapped to `userId`/`anonymousId` and `properties.*`, named by `event`.
    Track,
    /// `group`: mapped to `groupId`, `userId`/`anonymousId` and `traits.*`.
    Group,
}

/// Which planned rows a sync sends.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, serde::Serialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// Added and changed rows.
    #[default]
    Upsert,
    /// Added rows only.
    Insert,
    /// Changed rows only (the first run records what exists).
    Update,
    /// Added and changed rows, and a delete marker for removed ones; only
    /// for destinations that understand it (`file`, `webhook`).
    Mirror,
}

/// When a sync runs by itself.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// Every this many seconds.
    EverySecs(u64),
    /// A five-field cron expression in UTC (`minute hour day month weekday`).
    Cron(String),
}

/// Destination types that can take a removal (a delete marker).
pub const MIRROR_DESTINATIONS: &[&str] = &["file", "webhook"];

fn default_connect_timeout_ms() -> u64 {
    5_000
}

fn default_batch_rows() -> usize {
    1_000
}

fn default_true() -> bool {
    true
}

impl WarehouseConfig {
    /// The PostgreSQL URL from `url` or `url_env` (`None` for other types).
    pub fn resolve_url(&self, index: usize) -> Result<Option<String>, ConfigError> {
        secret(
            &format!("warehouses[{index}].url"),
            self.url.as_deref(),
            self.url_env.as_deref(),
        )
    }
}

impl SyncConfig {
    /// The result columns the sync reads: the mapped ones, sorted, without repeats.
    pub fn referenced_columns(&self) -> Vec<&str> {
        let mut columns: Vec<&str> = self.mapping.values().map(String::as_str).collect();
        columns.sort_unstable();
        columns.dedup();
        columns
    }
}

#[cfg(test)]
mod tests;
