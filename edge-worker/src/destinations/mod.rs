//! Destinations: the [`Destination`] trait, its error, and the registry
//! that builds one from a `[[destinations]]` table.
//!
//! Each type lives in its own module with a config struct (the reference
//! for its settings) and a runtime type that holds only prebuilt things, so
//! the per-batch path parses nothing.

mod amplitude;
pub(crate) mod encode;
mod file;
mod ga4;
pub(crate) mod http;
mod meta_capi;
mod mixpanel;
mod segment;
mod webhook;

use std::path::PathBuf;
use std::time::Duration;

use crate::config::{ConfigError, DestinationConfig};
use crate::storage::OutboxEntry;

pub use amplitude::AmplitudeConfig;
pub use file::FileConfig;
pub use ga4::Ga4Config;
pub use meta_capi::MetaCapiConfig;
pub use mixpanel::MixpanelConfig;
pub use segment::SegmentConfig;
pub use webhook::{signature as webhook_signature, WebhookConfig};

/// Each destination type with its example `[[destinations]]` table, for
/// the README reference and `waymark check` tests.
pub const EXAMPLES: &[(&str, &str)] = &[
    ("file", file::EXAMPLE),
    ("webhook", webhook::EXAMPLE),
    ("segment", segment::EXAMPLE),
    ("ga4", ga4::EXAMPLE),
    ("mixpanel", mixpanel::EXAMPLE),
    ("amplitude", amplitude::EXAMPLE),
    ("meta_capi", meta_capi::EXAMPLE),
];

/// What a destination is built with besides its own settings.
#[derive(Debug, Clone)]
pub struct BuildContext {
    /// `[storage] data_dir`: relative file paths are resolved against it.
    pub data_dir: PathBuf,
}

/// A delivery failure, classified so the deliver stage knows what to do.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct DeliveryError {
    /// Whether trying again later may succeed (429, 5xx, I/O, connect errors).
    pub retriable: bool,
    /// The vendor's `Retry-After`, when it sent one.
    pub retry_after: Option<Duration>,
    /// What happened, for logs and the dead-letter store (no secrets).
    pub message: String,
}

impl DeliveryError {
    /// A failure that may pass on a later attempt.
    #[cold]
    pub fn retriable(message: impl Into<String>) -> DeliveryError {
        DeliveryError {
            retriable: true,
            retry_after: None,
            message: message.into(),
        }
    }

    /// A failure that will fail again (the vendor rejected the payload).
    #[cold]
    pub fn permanent(message: impl Into<String>) -> DeliveryError {
        DeliveryError {
            retriable: false,
            retry_after: None,
            message: message.into(),
        }
    }

    /// Whether the deliver stage should retry.
    pub fn is_retriable(&self) -> bool {
        self.retriable
    }
}

/// Why an event does not apply to a destination (a bounded label of
/// `waymark_events_skipped_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SkipReason {
    /// The call type has no equivalent at the vendor (a `group` call to a
    /// destination without groups, `identify` to an events-only API).
    UnsupportedType,
    /// The event lacks the identity the vendor requires (no `userId` and no
    /// visitor).
    MissingIdentity,
}

impl SkipReason {
    /// Every reason, for registering metric handles.
    pub const ALL: [SkipReason; 2] = [SkipReason::UnsupportedType, SkipReason::MissingIdentity];

    /// The metric label and live-stream reason.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::UnsupportedType => "unsupported_type",
            SkipReason::MissingIdentity => "missing_identity",
        }
    }
}

/// What became of one event of a batch.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The vendor accepted it.
    Delivered,
    /// It may pass later: the error carries the vendor's reason and any
    /// `Retry-After`. The deliver stage reschedules it (or dead-letters it
    /// past the maximum age).
    Retry(DeliveryError),
    /// It will never pass (the vendor refused it, it cannot be encoded, it
    /// is over the vendor's size limit): the dead-letter store, with the reason.
    Rejected(String),
    /// It does not apply to this destination: it leaves the outbox, counted
    /// in `waymark_events_skipped_total{reason}`.
    Skipped(SkipReason),
}

impl Outcome {
    /// The outcome of every event of a request whose answer was `result`.
    pub fn of(result: &Result<(), DeliveryError>) -> Outcome {
        match result {
            Ok(()) => Outcome::Delivered,
            Err(e) if e.is_retriable() => Outcome::Retry(e.clone()),
            Err(e) => Outcome::Rejected(e.message.clone()),
        }
    }
}

/// A place events are delivered to.
///
/// The deliver stage owns batching, retries, backoff and the dead-letter
/// store; a destination only encodes and sends. It never sleeps.
#[async_trait::async_trait]
pub trait Destination: Send + Sync + 'static {
    /// Most events the vendor accepts in one call.
    fn max_batch(&self) -> usize;

    /// Delivers `events` (at most [`max_batch`](Self::max_batch), oldest
    /// first) and answers one [`Outcome`] per event, in the same order.
    ///
    /// One event never decides another's fate: an entry that cannot be
    /// encoded or is over the vendor's limit is [`Outcome::Rejected`] alone,
    /// and a vendor that answers per event (Amplitude, Mixpanel, Meta) is
    /// read so that only the events it refused are rejected. A failure of a
    /// whole request (connect error, 5xx, 429) applies to the events of
    /// that request only. The deliver stage treats a missing outcome as a
    /// retry.
    async fn send(&self, events: &[OutboxEntry]) -> Vec<Outcome>;
}

/// Builds the destination a config table describes, checking its settings.
pub fn build(
    config: &DestinationConfig,
    cx: &BuildContext,
    index: usize,
) -> Result<Box<dyn Destination>, ConfigError> {
    let settings = config.type_settings();
    let key = |k: &str| format!("destinations[{index}].{k}");
    match config.kind.as_str() {
        "file" => FileConfig::parse(settings, &key("settings"))?.build(cx),
        "webhook" => WebhookConfig::parse(settings, &key("settings"))?.build(cx, &key("settings")),
        "segment" => SegmentConfig::parse(settings, &key("settings"))?.build(cx, &key("settings")),
        "ga4" => Ga4Config::parse(settings, &key("settings"))?.build(cx, &key("settings")),
        "mixpanel" => MixpanelConfig::parse(settings, &key("settings"))?.build(cx, &key("settings")),
        "amplitude" => AmplitudeConfig::parse(settings, &key("settings"))?.build(cx, &key("settings")),
        "meta_capi" => MetaCapiConfig::parse(settings, &key("settings"))?.build(cx, &key("settings")),
        other => Err(ConfigError::invalid(
            key("type"),
            format!("`{other}` is not a destination type; use file, webhook, segment, ga4, mixpanel, amplitude or meta_capi"),
        )),
    }
}

/// Deserialises type settings with the key named on error.
pub(crate) fn parse_settings<T: serde::de::DeserializeOwned>(
    settings: toml::Table,
    key: &str,
) -> Result<T, ConfigError> {
    T::deserialize(toml::Value::Table(settings))
        .map_err(|e| ConfigError::invalid(key, e.to_string().trim_end().to_owned()))
}

/// The type settings of the one destination in a TOML example, extracted
/// the way the worker does (the keys common to every destination removed).
#[cfg(test)]
pub(crate) fn example_settings(example: &str) -> toml::Table {
    #[derive(serde::Deserialize)]
    struct Doc {
        destinations: Vec<DestinationConfig>,
    }
    let doc: Doc = toml::from_str(example).expect("the example parses");
    doc.destinations[0].type_settings()
}
