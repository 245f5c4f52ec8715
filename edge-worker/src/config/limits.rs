//! `[limits]`: sizes and windows on ingest.

use schemars::JsonSchema;
use serde::Deserialize;

use super::ConfigError;

/// `[limits]`: what one request and one event may hold.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest event, in bytes of JSON. Default: 32768 (Segment's limit).
    #[serde(default = "default_max_event_bytes")]
    pub max_event_bytes: usize,
    /// Largest request body after decompression, in bytes. Default: 512000 (Segment's 500 KB).
    #[serde(default = "default_max_batch_bytes")]
    pub max_batch_bytes: usize,
    /// Deepest nesting of objects and arrays in an event. Default: 32.
    #[serde(default = "default_max_depth")]
    pub max_depth: usize,
    /// How long a `messageId` is remembered for dedup, in seconds. Default: 172800 (48 h).
    #[serde(default = "default_dedup_window_secs")]
    pub dedup_window_secs: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_event_bytes: default_max_event_bytes(),
            max_batch_bytes: default_max_batch_bytes(),
            max_depth: default_max_depth(),
            dedup_window_secs: default_dedup_window_secs(),
        }
    }
}

impl LimitsConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_event_bytes < 1_024 || self.max_event_bytes > self.max_batch_bytes {
            return Err(ConfigError::invalid(
                "limits.max_event_bytes",
                format!(
                    "{} is out of range; use 1024 up to limits.max_batch_bytes ({})",
                    self.max_event_bytes, self.max_batch_bytes
                ),
            ));
        }
        if self.max_batch_bytes > 16 * 1024 * 1024 {
            return Err(ConfigError::invalid(
                "limits.max_batch_bytes",
                format!("{} is above 16 MiB; lower it", self.max_batch_bytes),
            ));
        }
        if self.max_depth == 0 || self.max_depth > 128 {
            return Err(ConfigError::invalid(
                "limits.max_depth",
                format!("{} is out of range; use 1 to 128", self.max_depth),
            ));
        }
        if self.dedup_window_secs < 86_400 {
            return Err(ConfigError::invalid(
                "limits.dedup_window_secs",
                format!(
                    "{} is below 24 hours; use at least 86400",
                    self.dedup_window_secs
                ),
            ));
        }
        Ok(())
    }
}

fn default_max_event_bytes() -> usize {
    32 * 1024
}

fn default_max_batch_bytes() -> usize {
    500 * 1024
}

fn default_max_depth() -> usize {
    32
}

fn default_dedup_window_secs() -> u64 {
    48 * 3600
}
