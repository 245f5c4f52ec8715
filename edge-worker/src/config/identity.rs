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
        Ok(())
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

fn default_cookie_name() -> String {
    "wm_vid".to_owned()
}

fn default_cookie_max_age_days() -> u32 {
    400
}

fn default_cookie_purpose() -> String {
    "analytics".to_owned()
}
