//! `[[sources]]`: who may send events, from where, with what defaults.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use super::ConfigError;

/// One source: a write key and the rules for traffic that carries it.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Unique name, used in metrics and logs.
    pub name: String,
    /// The write key clients send as the Basic-auth username or as `writeKey`.
    pub write_key: String,
    /// Origins allowed to call from a browser (CORS), such as
    /// `https://shop.example.com`. `"*"` allows any. Default: none (server-side only).
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Consent assumed per purpose when an event does not state it. Default: none.
    #[serde(default)]
    pub default_consent: BTreeMap<String, ConsentDefault>,
    /// How much of the client IP is kept in `context.ip`. Default: `truncate`.
    #[serde(default)]
    pub ip: IpPolicy,
    /// Whether the worker sets the `wm_vid` visitor cookie for this source. Default: true.
    #[serde(default = "yes")]
    pub set_cookie: bool,
    /// Whether events whose cookie purpose is not granted are still counted
    /// without a cookie: under a visitor key hashed from (client IP, user
    /// agent, source) with a key that changes every UTC day, never stored
    /// and never linked in the identity graph. Default: false.
    #[serde(default)]
    pub cookieless: bool,
    /// Whether duplicate `messageId`s are answered 200 and not routed again. Default: true.
    #[serde(default = "yes")]
    pub dedup: bool,
    /// Rule chain run on every event of this source, by rule name. Default: none.
    #[serde(default)]
    pub rules: Vec<String>,
}

/// Consent assumed for a purpose the event does not mention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConsentDefault {
    /// Granted unless the event says otherwise.
    Granted,
    /// Denied unless the event says otherwise.
    Denied,
    /// Unknown yet: destinations that wait hold the event.
    Pending,
}

/// How much of the client's IP address is kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum IpPolicy {
    /// Zero the last octet of IPv4 and the last 80 bits of IPv6.
    #[default]
    Truncate,
    /// Keep the whole address.
    Full,
    /// Do not record it.
    Drop,
}

fn yes() -> bool {
    true
}

impl SourceConfig {
    pub(crate) fn validate(&self, index: usize, rules: &[&str]) -> Result<(), ConfigError> {
        let at = |key: &str| format!("sources[{index}].{key}");
        if self.name.trim().is_empty() {
            return Err(ConfigError::invalid(
                at("name"),
                "empty; give the source a name",
            ));
        }
        if self.write_key.len() < 4 || self.write_key.contains(':') {
            return Err(ConfigError::invalid(
                at("write_key"),
                "must be at least 4 characters without `:`; use a random string such as \"wk_live_8f3a…\"",
            ));
        }
        for origin in &self.allowed_origins {
            if origin != "*" && url::Url::parse(origin).map(|u| u.origin().is_tuple()) != Ok(true) {
                return Err(ConfigError::invalid(
                    at("allowed_origins"),
                    format!("`{origin}` is not an origin; use scheme://host[:port], e.g. \"https://shop.example.com\""),
                ));
            }
        }
        for rule in &self.rules {
            if !rules.contains(&rule.as_str()) {
                return Err(ConfigError::invalid(
                    at("rules"),
                    format!("no rule named `{rule}`; define it in a [[rules]] table"),
                ));
            }
        }
        Ok(())
    }

    /// Whether a browser origin may call this source.
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.allowed_origins
            .iter()
            .any(|o| o == "*" || o.trim_end_matches('/').eq_ignore_ascii_case(origin))
    }
}
