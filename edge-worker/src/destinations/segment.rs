//! The `segment` destination: Segment's HTTP Tracking API, `POST /v1/batch`
//! with the write key as the HTTP Basic username.
//!
//! Events are Segment Spec already, so they are forwarded unchanged (their
//! `messageId` is Segment's dedup key). Point `base_url` at another Waymark
//! to chain workers. A request stays under Segment's 500 KB batch limit: a
//! batch that would pass it is split into several requests. An entry that
//! is not a JSON object, or an event over Segment's 32 KB, is dead-lettered
//! alone; a failed request settles only its own events.

use base64::Engine as _;
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use schemars::JsonSchema;
use serde::Deserialize;
use url::Url;

use super::encode;
use super::http::{self, default_timeout_ms};
use super::{parse_settings, BuildContext, Destination, Outcome};
use crate::config::ConfigError;
use crate::storage::OutboxEntry;

/// Segment's limit on one batch request, in bytes.
pub const MAX_BATCH_BYTES: usize = 500 * 1024;
/// Segment's limit on one event, in bytes.
pub const MAX_EVENT_BYTES: usize = 32 * 1024;

/// An example `segment` destination.
pub const EXAMPLE: &str = r#"
[[destinations]]
name = "segment"
type = "segment"
write_key_env = "SEGMENT_WRITE_KEY"
base_url = "https://api.segment.io"
timeout_ms = 10000
"#;

/// Settings for the `segment` destination.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SegmentConfig {
    /// Environment variable holding the source's write key.
    #[serde(default)]
    pub write_key_env: Option<String>,
    /// The write key inline; for development only, prefer `write_key_env`.
    #[serde(default)]
    pub write_key: Option<String>,
    /// API root; `/v1/batch` is appended. Tests point this at a loopback
    /// fake; another Waymark works too. Default: `https://api.segment.io`.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// Longest a request may take, in milliseconds. Default: 10000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_base_url() -> String {
    "https://api.segment.io".to_owned()
}

impl SegmentConfig {
    /// Parses the settings table.
    pub fn parse(settings: toml::Table, key: &str) -> Result<SegmentConfig, ConfigError> {
        parse_settings(settings, key)
    }

    /// Checks the settings and prebuilds the client and auth header.
    pub fn build(
        &self,
        _cx: &BuildContext,
        key: &str,
    ) -> Result<Box<dyn Destination>, ConfigError> {
        let write_key = http::required_secret(
            &format!("{key}.write_key"),
            self.write_key.as_deref(),
            self.write_key_env.as_deref(),
        )?;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{write_key}:"));
        let mut auth = HeaderValue::from_str(&format!("Basic {basic}")).map_err(|_| {
            ConfigError::invalid(format!("{key}.write_key"), "not a valid header value")
        })?;
        auth.set_sensitive(true);
        Ok(Box::new(SegmentDestination {
            client: http::client(self.timeout_ms, key)?,
            url: http::endpoint(&self.base_url, "/v1/batch", &format!("{key}.base_url"))?,
            auth,
        }))
    }
}

struct SegmentDestination {
    client: reqwest::Client,
    url: Url,
    auth: HeaderValue,
}

#[async_trait::async_trait]
impl Destination for SegmentDestination {
    fn max_batch(&self) -> usize {
        500
    }

    async fn send(&self, events: &[OutboxEntry]) -> Vec<Outcome> {
        const HEAD: &str = r#"{"batch":["#;
        const TAIL: &str = "]}";
        let mut batch = encode::check_raw(events, "segment", MAX_EVENT_BYTES);
        let lens: Vec<usize> = batch
            .items
            .iter()
            .map(|i| events[i.index].json.len())
            .collect();
        let overhead = HEAD.len() + TAIL.len();
        for range in encode::requests(lens, usize::MAX, MAX_BATCH_BYTES, overhead) {
            // The stored JSON is spliced in as is: no parse, no re-encode.
            let build = |b: &encode::Encoded<()>, positions: &[usize]| {
                let parts = positions.iter().map(|&p| &*events[b.items[p].index].json);
                self.client
                    .post(self.url.clone())
                    .header(AUTHORIZATION, self.auth.clone())
                    .header(CONTENT_TYPE, "application/json")
                    .body(encode::splice(HEAD, parts, TAIL))
            };
            batch
                .send_items("segment", range.collect(), build, |_| None)
                .await;
        }
        batch.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> toml::Table {
        crate::destinations::example_settings(EXAMPLE)
    }

    #[test]
    fn the_example_parses_and_a_misspelt_key_is_named() {
        assert!(SegmentConfig::parse(settings(), "x").is_ok());
        let mut s = settings();
        s.insert("writekey".into(), toml::Value::String("x".into()));
        let err = SegmentConfig::parse(s, "destinations[0].settings").unwrap_err();
        assert!(err.to_string().contains("writekey"), "{err}");
    }

    #[test]
    fn a_missing_write_key_fails_at_build_naming_the_fix() {
        let mut c = SegmentConfig::parse(settings(), "x").unwrap();
        c.write_key_env = None;
        let cx = BuildContext {
            data_dir: std::env::temp_dir(),
        };
        let err = c.build(&cx, "destinations[0]").err().unwrap();
        assert!(err.to_string().contains("write_key_env"), "{err}");
    }
}
