//! The shape of `waymark.toml`, and the embedded default used without one.
//!
//! Each section has its own module. Every struct derives `Deserialize` with
//! `deny_unknown_fields`, so a misspelt key fails at start with an error that
//! names it; [`Config::validate`] then checks what types cannot (references
//! between sections, secrets present in the environment, limits in range).

mod consent;
mod destinations;
mod identity;
mod limits;
mod server;
mod sources;
mod syncs;

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::Deserialize;

pub use consent::{ConsentConfig, GcmConfig, TcfConfig};
pub use destinations::{DeliveryConfig, DestinationConfig, FilterConfig};
pub use identity::{CookieKeyConfig, IdentityConfig};
pub use limits::LimitsConfig;
pub use server::{AdminConfig, ServerConfig, StorageBackend, StorageConfig};
pub use sources::{ConsentDefault, IpPolicy, SourceConfig};
pub use syncs::{
    CronSchedule, ModelConfig, Schedule, SyncCall, SyncConfig, SyncMode, WarehouseConfig,
    WarehouseKind, EXAMPLE as SYNCS_EXAMPLE, MIRROR_DESTINATIONS,
};

/// The embedded default configuration, used when `waymark serve` gets no `--config`.
///
/// It serves the demo site, accepts the write key `wk_demo` from the local
/// origins and writes every accepted event to `<data_dir>/events.ndjson`.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// A whole `waymark.toml`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listening address, proxy trust and static files.
    #[serde(default)]
    pub server: ServerConfig,
    /// Where the embedded store keeps its files.
    #[serde(default)]
    pub storage: StorageConfig,
    /// The visitor cookie and its signing keys.
    #[serde(default)]
    pub identity: IdentityConfig,
    /// The admin API's bearer tokens.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Size and time limits on ingest.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Who may send events: one entry per write key.
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
    /// WASM transform rules, referenced by name from sources and destinations.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Where events go.
    #[serde(default)]
    pub destinations: Vec<DestinationConfig>,
    /// How the TC string and Consent Mode map onto Waymark's purposes.
    #[serde(default)]
    pub consent: ConsentConfig,
    /// Databases that models read from (Reverse ETL).
    #[serde(default)]
    pub warehouses: Vec<WarehouseConfig>,
    /// SQL queries over a warehouse, each with a primary key.
    #[serde(default)]
    pub models: Vec<ModelConfig>,
    /// Models sent to destinations: call, mode, mapping and schedule.
    #[serde(default)]
    pub syncs: Vec<SyncConfig>,
}

/// A WASM rule: a component file, its config and its failure policy.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Unique name, used in `rules = [...]` chains.
    pub name: String,
    /// Path of the `.wasm` component, relative to the working directory.
    pub path: PathBuf,
    /// Table handed to the rule's `init` as JSON text. Default: `{}`.
    #[serde(default)]
    #[schemars(with = "serde_json::Value")]
    pub config: toml::Table,
    /// What happens to an event when the rule fails. Default: `pass`.
    #[serde(default)]
    pub on_error: OnError,
    /// Wall-clock deadline per call, in milliseconds. Default: 2.
    #[serde(default = "default_rule_timeout_ms")]
    pub timeout_ms: u64,
    /// Memory cap per instance, in MiB. Default: 16.
    #[serde(default = "default_rule_memory_mb")]
    pub memory_mb: u64,
}

/// A rule's failure policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Pass the event on unchanged by the failed call.
    #[default]
    Pass,
    /// Drop the event, counted.
    Drop,
    /// Put the event in quarantine with the failure as its reason.
    Quarantine,
}

fn default_rule_timeout_ms() -> u64 {
    2
}

fn default_rule_memory_mb() -> u64 {
    16
}

/// A configuration problem: where it is, and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config: cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML did not parse or did not fit the schema (names the key).
    #[error("config: {0}")]
    Parse(String),
    /// A value parsed but is not acceptable.
    #[error("config: {key}: {problem}")]
    Invalid {
        /// Dotted key, such as `sources[0].write_key`.
        key: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
}

impl ConfigError {
    /// An invalid value at `key`; `problem` should end with the fix.
    #[cold]
    pub fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

impl Config {
    /// The embedded default.
    pub fn embedded_default() -> Config {
        // NOTE: the default is checked by a unit test, so this cannot fail in a release.
        Config::parse(DEFAULT_TOML).unwrap_or_else(|e| panic!("embedded default config: {e}"))
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text)
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config =
            toml::from_str(text).map_err(|e| ConfigError::Parse(toml_error(&e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what the types cannot: unique names, references, secrets, ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.identity.validate()?;
        self.admin.validate()?;
        self.limits.validate()?;
        self.storage.validate()?;
        self.consent.validate()?;
        if self.sources.is_empty() {
            return Err(ConfigError::invalid(
                "sources",
                "no source is configured; add a [[sources]] table with a name and a write_key",
            ));
        }
        unique("sources", self.sources.iter().map(|s| s.name.as_str()))?;
        unique("sources", self.sources.iter().map(|s| s.write_key.as_str()))?;
        unique("rules", self.rules.iter().map(|r| r.name.as_str()))?;
        unique(
            "destinations",
            self.destinations.iter().map(|d| d.name.as_str()),
        )?;
        let rule_names: Vec<&str> = self.rules.iter().map(|r| r.name.as_str()).collect();
        for (i, source) in self.sources.iter().enumerate() {
            source.validate(i, &rule_names)?;
        }
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.timeout_ms == 0 || rule.timeout_ms > 1_000 {
                return Err(ConfigError::invalid(
                    format!("rules[{i}].timeout_ms"),
                    format!("{} is out of range; use 1 to 1000", rule.timeout_ms),
                ));
            }
            if rule.memory_mb == 0 || rule.memory_mb > 4_096 {
                return Err(ConfigError::invalid(
                    format!("rules[{i}].memory_mb"),
                    format!("{} is out of range; use 1 to 4096", rule.memory_mb),
                ));
            }
        }
        for (i, destination) in self.destinations.iter().enumerate() {
            destination.validate(i, &rule_names)?;
        }
        syncs::validate(
            &self.warehouses,
            &self.models,
            &self.syncs,
            &self.destinations,
        )?;
        Ok(())
    }

    /// Overrides the data directory (`--data-dir`).
    pub fn with_data_dir(mut self, dir: PathBuf) -> Config {
        self.storage.data_dir = dir;
        self
    }
}

/// Fails when two entries share a name.
fn unique<'a>(section: &str, names: impl Iterator<Item = &'a str>) -> Result<(), ConfigError> {
    let mut seen = std::collections::HashSet::new();
    for (i, name) in names.enumerate() {
        if !seen.insert(name) {
            return Err(ConfigError::invalid(
                format!("{section}[{i}]"),
                format!("`{name}` is used twice; names and write keys must be unique"),
            ));
        }
    }
    Ok(())
}

/// Renders a TOML error with its line, column and the offending key.
fn toml_error(e: &toml::de::Error) -> String {
    e.to_string().trim_end().to_owned()
}

/// Resolves a secret given inline or through an environment variable.
pub(crate) fn secret(
    key: &str,
    inline: Option<&str>,
    env: Option<&str>,
) -> Result<Option<String>, ConfigError> {
    match (inline, env) {
        (Some(_), Some(_)) => Err(ConfigError::invalid(
            key,
            "both an inline secret and an environment variable are set; keep one",
        )),
        (Some(value), None) => Ok(Some(value.to_owned())),
        (None, Some(var)) => match std::env::var(var) {
            Ok(value) if !value.is_empty() => Ok(Some(value)),
            _ => Err(ConfigError::invalid(
                key,
                format!("environment variable {var} is not set; export it before starting waymark"),
            )),
        },
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests;
