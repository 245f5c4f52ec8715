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

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Deserialize;

use super::{secret, unique, ConfigError, DestinationConfig};

pub use cron::CronSchedule;

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
}

/// The Segment call a sync's rows become.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
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

    fn validate(&self, index: usize) -> Result<(), ConfigError> {
        let at = |key: &str| format!("warehouses[{index}].{key}");
        if self.name.trim().is_empty() {
            return Err(ConfigError::invalid(
                at("name"),
                "empty; give the warehouse a name",
            ));
        }
        match self.kind {
            WarehouseKind::Postgres => {
                if self.path.is_some() {
                    return Err(ConfigError::invalid(
                        at("path"),
                        "only for type = \"sqlite\"; a postgres warehouse takes url_env",
                    ));
                }
                if self.resolve_url(index)?.is_none() {
                    return Err(ConfigError::invalid(
                        at("url_env"),
                        "type = \"postgres\" needs a URL; set url_env to a variable holding postgres://user:password@host:port/database",
                    ));
                }
            }
            WarehouseKind::Sqlite => {
                if self.url.is_some() || self.url_env.is_some() {
                    return Err(ConfigError::invalid(
                        at("url_env"),
                        "only for type = \"postgres\"; a sqlite warehouse takes path",
                    ));
                }
                if self.path.is_none() {
                    return Err(ConfigError::invalid(
                        at("path"),
                        "type = \"sqlite\" needs the database file; set path",
                    ));
                }
            }
        }
        if self.connect_timeout_ms == 0 || self.connect_timeout_ms > 600_000 {
            return Err(ConfigError::invalid(
                at("connect_timeout_ms"),
                format!(
                    "{} is out of range; use 1 to 600000",
                    self.connect_timeout_ms
                ),
            ));
        }
        if self.batch_rows == 0 || self.batch_rows > 100_000 {
            return Err(ConfigError::invalid(
                at("batch_rows"),
                format!("{} is out of range; use 1 to 100000", self.batch_rows),
            ));
        }
        Ok(())
    }
}

impl ModelConfig {
    fn validate(&self, index: usize, warehouses: &[WarehouseConfig]) -> Result<(), ConfigError> {
        let at = |key: &str| format!("models[{index}].{key}");
        if self.name.trim().is_empty() {
            return Err(ConfigError::invalid(
                at("name"),
                "empty; give the model a name",
            ));
        }
        if !warehouses.iter().any(|w| w.name == self.warehouse) {
            return Err(ConfigError::invalid(
                at("warehouse"),
                format!(
                    "no warehouse named `{}`; define it in a [[warehouses]] table",
                    self.warehouse
                ),
            ));
        }
        if self.query.trim().is_empty() {
            return Err(ConfigError::invalid(
                at("query"),
                "empty; give the SQL query whose rows the model holds",
            ));
        }
        if self.primary_key.trim().is_empty() {
            return Err(ConfigError::invalid(
                at("primary_key"),
                "empty; name the result column that identifies a row",
            ));
        }
        Ok(())
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

    fn validate(
        &self,
        index: usize,
        models: &[ModelConfig],
        destinations: &[DestinationConfig],
    ) -> Result<(), ConfigError> {
        let at = |key: &str| format!("syncs[{index}].{key}");
        if self.name.is_empty()
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ConfigError::invalid(
                at("name"),
                format!(
                    "`{}` is not a slug; use letters, digits, `-` and `_`",
                    self.name
                ),
            ));
        }
        if !models.iter().any(|m| m.name == self.model) {
            return Err(ConfigError::invalid(
                at("model"),
                format!(
                    "no model named `{}`; define it in a [[models]] table",
                    self.model
                ),
            ));
        }
        let Some(destination) = destinations.iter().find(|d| d.name == self.destination) else {
            return Err(ConfigError::invalid(
                at("destination"),
                format!(
                    "no destination named `{}`; define it in a [[destinations]] table",
                    self.destination
                ),
            ));
        };
        if self.mode == SyncMode::Mirror
            && !MIRROR_DESTINATIONS.contains(&destination.kind.as_str())
        {
            return Err(ConfigError::invalid(
                at("mode"),
                format!(
                    "destination `{}` (type {}) cannot remove rows, so mode = \"mirror\" is refused; use upsert, or a file or webhook destination",
                    destination.name, destination.kind
                ),
            ));
        }
        match (self.call, &self.event) {
            (SyncCall::Track, None) => {
                return Err(ConfigError::invalid(
                    at("event"),
                    "call = \"track\" needs the event name; set event = \"...\"",
                ))
            }
            (SyncCall::Track, Some(name)) if name.trim().is_empty() => {
                return Err(ConfigError::invalid(at("event"), "empty; name the event"))
            }
            (SyncCall::Identify | SyncCall::Group, Some(_)) => {
                return Err(ConfigError::invalid(
                    at("event"),
                    "only for call = \"track\"; remove it",
                ))
            }
            _ => {}
        }
        self.validate_mapping(index)?;
        if let Some(schedule) = &self.schedule {
            match schedule {
                Schedule::EverySecs(0) => {
                    return Err(ConfigError::invalid(
                        at("schedule.every_secs"),
                        "0 is out of range; use at least 1",
                    ))
                }
                Schedule::EverySecs(_) => {}
                Schedule::Cron(text) => {
                    CronSchedule::parse(text)
                        .map_err(|problem| ConfigError::invalid(at("schedule.cron"), problem))?;
                }
            }
        }
        Ok(())
    }

    fn validate_mapping(&self, index: usize) -> Result<(), ConfigError> {
        let roots: &[&str] = match self.call {
            SyncCall::Identify => &["userId", "anonymousId", "timestamp", "traits", "context"],
            SyncCall::Track => &[
                "userId",
                "anonymousId",
                "timestamp",
                "properties",
                "context",
            ],
            SyncCall::Group => &[
                "userId",
                "anonymousId",
                "groupId",
                "timestamp",
                "traits",
                "context",
            ],
        };
        let call = match self.call {
            SyncCall::Identify => "identify",
            SyncCall::Track => "track",
            SyncCall::Group => "group",
        };
        for (field, column) in &self.mapping {
            let key = format!("syncs[{index}].mapping.\"{field}\"");
            let mut parts = field.split('.');
            let root = parts.next().unwrap_or_default();
            let rest: Vec<&str> = parts.collect();
            let nested = matches!(root, "traits" | "properties" | "context");
            if !roots.contains(&root)
                || (nested && rest.is_empty())
                || (!nested && !rest.is_empty())
            {
                return Err(ConfigError::invalid(
                    key,
                    format!(
                        "not a field of a {call} call; map to one of {}",
                        roots
                            .iter()
                            .map(|r| match *r {
                                "traits" | "properties" | "context" => format!("{r}.<name>"),
                                other => other.to_owned(),
                            })
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            if rest.iter().any(|p| p.is_empty()) {
                return Err(ConfigError::invalid(
                    key,
                    "has an empty path segment; write names separated by single dots",
                ));
            }
            if field == "context.waymark" || field.starts_with("context.waymark.") {
                return Err(ConfigError::invalid(
                    key,
                    "context.waymark is set by Waymark (it names the sync and run); map to another field",
                ));
            }
            if column.trim().is_empty() {
                return Err(ConfigError::invalid(key, "empty; name a result column"));
            }
        }
        let has = |f: &str| self.mapping.contains_key(f);
        if !has("userId") && !has("anonymousId") {
            return Err(ConfigError::invalid(
                format!("syncs[{index}].mapping"),
                "maps neither userId nor anonymousId; map one of them to a column",
            ));
        }
        if self.call == SyncCall::Group && !has("groupId") {
            return Err(ConfigError::invalid(
                format!("syncs[{index}].mapping"),
                "call = \"group\" needs groupId; map it to a column",
            ));
        }
        Ok(())
    }
}

/// Checks the three sections: unique names, each model's warehouse, each
/// sync's model and destination, and what each sync's call and mode allow.
pub(crate) fn validate(
    warehouses: &[WarehouseConfig],
    models: &[ModelConfig],
    syncs: &[SyncConfig],
    destinations: &[DestinationConfig],
) -> Result<(), ConfigError> {
    unique("warehouses", warehouses.iter().map(|w| w.name.as_str()))?;
    unique("models", models.iter().map(|m| m.name.as_str()))?;
    unique("syncs", syncs.iter().map(|s| s.name.as_str()))?;
    for (i, warehouse) in warehouses.iter().enumerate() {
        warehouse.validate(i)?;
    }
    for (i, model) in models.iter().enumerate() {
        model.validate(i, warehouses)?;
    }
    for (i, sync) in syncs.iter().enumerate() {
        sync.validate(i, models, destinations)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
