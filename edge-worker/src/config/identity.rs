//! `[identity]`: the signed visitor cookie and its keys.

use schemars::JsonSchema;
use serde::Deserialize;

use super::{secret, ConfigError};

/// `[identity]`: how visitors are recognised.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// Name of the first-party visitor cookie. Default: `wm_vid`.
    #[serde(default = "default_cookie_name")]
    pub cookie_name: String,
    /// `Domain` attribute of the cookie, e.g. `example.com` to share it
    /// across subdomains. Default: none (host-only).
    #[serde(default)]
    pub cookie_domain: Option<String>,
    /// Cookie lifetime in days; browsers cap it at 400. Default: 400.
    #[serde(default = "default_cookie_max_age_days")]
    pub cookie_max_age_days: u32,
    /// The consent purpose the cookie needs before it is set or refreshed. Default: `analytics`.
    #[serde(default = "default_cookie_purpose")]
    pub cookie_purpose: String,
    /// Signing keys: the first signs new cookies, all of them verify, so a
    /// key can be rotated by putting a new one first. At least one is required.
    #[serde(default)]
    pub keys: Vec<CookieKeyConfig>,
    /// Traits whose values become identifiers of the identity graph, read
    /// from `traits` of identify calls and `context.traits` of any call. The
    /// value is trimmed, lowercased and stored only as its SHA-256, under a
    /// node `<trait>:<hash>`. Default: `["email"]`.
    #[serde(default = "default_trait_keys")]
    pub trait_keys: Vec<String>,
    /// Ids that never link, on top of the built-in deny-list (`undefined`,
    /// `null`, `0`, `-1`, `anonymous`, `guest`, empty, …); compared trimmed
    /// and case-insensitively. Default: none.
    #[serde(default)]
    pub junk_ids: Vec<String>,
    /// Inactivity after which a visitor's next event starts a new session,
    /// in seconds. Default: 1800 (30 minutes).
    #[serde(default = "default_session_timeout_secs")]
    pub session_timeout_secs: u64,
    /// Identifier lookups kept in memory (least recently used evicted), in
    /// entries; the graph itself stays on disk. Default: 100000.
    #[serde(default = "default_cache_entries")]
    pub cache_entries: usize,
}

/// One cookie signing key.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CookieKeyConfig {
    /// Short key id written into each cookie (letters, digits, `-`, `_`; at most 16).
    pub id: String,
    /// Environment variable holding the secret (at least 32 bytes).
    #[serde(default)]
    pub secret_env: Option<String>,
    /// The secret inline. For development only; prefer `secret_env`.
    #[serde(default)]
    pub secret: Option<String>,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            cookie_name: default_cookie_name(),
            cookie_domain: None,
            cookie_max_age_days: default_cookie_max_age_days(),
            cookie_purpose: default_cookie_purpose(),
            keys: Vec::new(),
            trait_keys: default_trait_keys(),
            junk_ids: Vec::new(),
            session_timeout_secs: default_session_timeout_secs(),
            cache_entries: default_cache_entries(),
        }
    }
}

impl IdentityConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let token_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if self.cookie_name.is_empty() || !self.cookie_name.chars().all(token_char) {
            return Err(ConfigError::invalid(
                "identity.cookie_name",
                format!(
                    "`{}` is not a valid cookie name; use letters, digits, `-` and `_`",
                    self.cookie_name
                ),
            ));
        }
        if self.cookie_max_age_days == 0 || self.cookie_max_age_days > 400 {
            return Err(ConfigError::invalid(
                "identity.cookie_max_age_days",
                format!(
                    "{} is out of range; browsers cap cookies at 400 days, use 1 to 400",
                    self.cookie_max_age_days
                ),
            ));
        }
        if self.keys.is_empty() {
            return Err(ConfigError::invalid(
                "identity.keys",
                "no cookie signing key; add keys = [{ id = \"k1\", secret_env = \"WAYMARK_COOKIE_KEY_K1\" }]",
            ));
        }
        for (i, key) in self.keys.iter().enumerate() {
            if key.id.is_empty() || key.id.len() > 16 || !key.id.chars().all(token_char) {
                return Err(ConfigError::invalid(
                    format!("identity.keys[{i}].id"),
                    format!(
                        "`{}` is not a valid key id; use 1 to 16 letters, digits, `-` or `_`",
                        key.id
                    ),
                ));
            }
            key.resolve(i)?;
        }
        self.validate_graph()
    }
}

impl CookieKeyConfig {
    /// The secret bytes, checked for length.
    pub fn resolve(&self, index: usize) -> Result<Vec<u8>, ConfigError> {
        let key = format!("identity.keys[{index}]");
        let value = secret(&key, self.secret.as_deref(), self.secret_env.as_deref())?
            .ok_or_else(|| ConfigError::invalid(&key, "no secret; set secret_env"))?;
        if value.len() < 32 {
            return Err(ConfigError::invalid(
                key,
                format!(
                    "the secret is {} bytes; use at least 32 random bytes (e.g. `openssl rand -hex 32`)",
                    value.len()
                ),
            ));
        }
        Ok(value.into_bytes())
    }
}

impl IdentityConfig {
    /// Checks the identity graph's settings.
    fn validate_graph(&self) -> Result<(), ConfigError> {
        for (i, name) in self.trait_keys.iter().enumerate() {
            let valid = !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !valid || ["user", "anon", "cookie"].contains(&name.as_str()) {
                return Err(ConfigError::invalid(
                    format!("identity.trait_keys[{i}]"),
                    format!(
                        "`{name}` is not a usable trait key; use a trait name of letters, digits, `_` or `-` other than user, anon and cookie"
                    ),
                ));
            }
        }
        if self.session_timeout_secs == 0 {
            return Err(ConfigError::invalid(
                "identity.session_timeout_secs",
                "0 would start a session per event; use e.g. 1800 (30 minutes)",
            ));
        }
        if self.cache_entries < 1_000 {
            return Err(ConfigError::invalid(
                "identity.cache_entries",
                format!(
                    "{} is too small to keep active visitors in memory; use at least 1000",
                    self.cache_entries
                ),
            ));
        }
        Ok(())
    }
}

fn default_trait_keys() -> Vec<String> {
    vec!["email".to_owned()]
}

fn default_session_timeout_secs() -> u64 {
    1_800
}

fn default_cache_entries() -> usize {
    100_000
}

fn default_cookie_name() -> String {
    "wm_vid".to_owned()
}

fn default_cookie_max_age_days() -> u32 {
    400
}

fn default_cookie_purpose() -> String {
    "analytics".to_owned()
}
