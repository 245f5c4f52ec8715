//! `[[destinations]]`: where events go, under which consent, filters and delivery settings.
//!
//! The keys common to every destination are typed here. Everything else in
//! the table (and in its `settings` sub-table) belongs to the destination's
//! type and is checked by that type's own config struct when the destination
//! is built, so a misspelt vendor key is still an error naming the key.

use schemars::JsonSchema;
use serde::Deserialize;

use super::ConfigError;
use crate::event::EventType;

/// One destination.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct DestinationConfig {
    /// Unique name, used in metrics, logs, the dead-letter store and the CLI.
    pub name: String,
    /// Destination type: `file`, `webhook`, `segment`, `ga4`, `mixpanel`, `amplitude` or `meta_capi`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Consent purposes that must all be granted for an event to reach this
    /// destination, such as `["marketing"]`. Default: none.
    #[serde(default)]
    pub consent: Vec<String>,
    /// Hold events whose required consent is still pending (rather than
    /// dropping them) until the visitor decides or the hold expires. Default: false.
    #[serde(default)]
    pub wait_for_consent: bool,
    /// With `wait_for_consent`, how long a pending event is held before it
    /// is dropped, in seconds. Default: 1800.
    #[serde(default)]
    pub consent_hold_secs: Option<u64>,
    /// This vendor's IAB Global Vendor List id: when an event carries a TC
    /// string, the vendor must also have the visitor's consent in it.
    /// Default: none (only the purposes are checked).
    #[serde(default)]
    pub tcf_vendor_id: Option<u16>,
    /// Which events this destination receives. Default: all.
    #[serde(default)]
    pub filter: FilterConfig,
    /// Rule chain run before delivery to this destination, by rule name. Default: none.
    #[serde(default)]
    pub rules: Vec<String>,
    /// Batching, concurrency and retry. Defaults depend on the type.
    #[serde(default)]
    pub delivery: DeliveryConfig,
    /// Type-specific settings. Keys may also be written at the top level of
    /// the table (e.g. `path` for `file`); both are merged.
    #[serde(default)]
    #[schemars(with = "serde_json::Value")]
    pub settings: toml::Table,
    #[serde(flatten)]
    #[schemars(skip)]
    extra: toml::Table,
}

/// Which events a destination receives. An empty include list includes all.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Event types to include (`track`, `page`, …). Default: all.
    #[serde(default)]
    pub include_types: Vec<String>,
    /// Event types to exclude. Default: none.
    #[serde(default)]
    pub exclude_types: Vec<String>,
    /// Event names (track `event`, page/screen `name`) to include. Default: all.
    #[serde(default)]
    pub include_events: Vec<String>,
    /// Event names to exclude. Default: none.
    #[serde(default)]
    pub exclude_events: Vec<String>,
}

/// Batching and retry for one destination. Unset values take the type's defaults.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Most events per request; capped at what the vendor accepts.
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// Requests in flight at once. Default: 2.
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// Longest an event is retried before it goes to the dead-letter store, in seconds. Default: 86400.
    #[serde(default)]
    pub max_age_secs: Option<u64>,
    /// First retry delay, in milliseconds; doubles per attempt with jitter. Default: 500.
    #[serde(default)]
    pub initial_backoff_ms: Option<u64>,
    /// Longest retry delay, in milliseconds. Default: 300000.
    #[serde(default)]
    pub max_backoff_ms: Option<u64>,
}

impl DestinationConfig {
    /// The type-specific settings: the `settings` table merged with any
    /// other top-level keys.
    pub fn type_settings(&self) -> toml::Table {
        let mut merged = self.settings.clone();
        for (key, value) in &self.extra {
            merged.insert(key.clone(), value.clone());
        }
        merged
    }

    pub(crate) fn validate(&self, index: usize, rules: &[&str]) -> Result<(), ConfigError> {
        let at = |key: &str| format!("destinations[{index}].{key}");
        if self.name.trim().is_empty() {
            return Err(ConfigError::invalid(
                at("name"),
                "empty; give the destination a name",
            ));
        }
        for (key, list) in [
            ("filter.include_types", &self.filter.include_types),
            ("filter.exclude_types", &self.filter.exclude_types),
        ] {
            for name in list {
                if EventType::parse(name).is_none() {
                    return Err(ConfigError::invalid(
                        at(key),
                        format!("`{name}` is not an event type; use track, page, screen, identify, group or alias"),
                    ));
                }
            }
        }
        if self.tcf_vendor_id == Some(0) {
            return Err(ConfigError::invalid(
                at("tcf_vendor_id"),
                "0 is not a vendor id; use the vendor's id in IAB's Global Vendor List (1-65535)",
            ));
        }
        for rule in &self.rules {
            if !rules.contains(&rule.as_str()) {
                return Err(ConfigError::invalid(
                    at("rules"),
                    format!("no rule named `{rule}`; define it in a [[rules]] table"),
                ));
            }
        }
        if self.delivery.concurrency == Some(0) || self.delivery.batch_size == Some(0) {
            return Err(ConfigError::invalid(
                at("delivery"),
                "batch_size and concurrency must be at least 1",
            ));
        }
        Ok(())
    }
}
