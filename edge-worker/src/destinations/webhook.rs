//! The `webhook` destination: events POSTed as JSON to a URL of yours,
//! signed so the receiver can trust them.
//!
//! Batched (default), the body is `{"sentAt": "<RFC 3339>", "batch": [event, …]}`;
//! single, the body is one event per request. Every request carries
//! `X-Waymark-Timestamp: <unix seconds>` and, with a secret,
//! `X-Waymark-Signature: sha256=<hex HMAC-SHA256 of the body>`. In batch
//! mode the body's `sentAt` is the same instant as the timestamp header, so
//! the signature covers it and a receiver can reject replays by age.
//!
//! An entry that is not a JSON object, or an event over `max_event_bytes`,
//! is dead-lettered alone; the rest of the batch is sent.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use schemars::JsonSchema;
use serde::Deserialize;
use sha2::Sha256;
use url::Url;

use super::encode;
use super::http::{self, default_timeout_ms};
use super::{parse_settings, BuildContext, Destination, Outcome};
use crate::config::ConfigError;
use crate::storage::OutboxEntry;

/// Header carrying the body's HMAC.
pub const SIGNATURE_HEADER: &str = "x-waymark-signature";
/// Header carrying the send time in Unix seconds.
pub const TIMESTAMP_HEADER: &str = "x-waymark-timestamp";

/// An example `webhook` destination.
pub const EXAMPLE: &str = r#"
[[destinations]]
name = "hook"
type = "webhook"
url = "https://hooks.example.com/waymark"
secret_env = "WAYMARK_WEBHOOK_SECRET"
batch = true
max_batch = 100
max_event_bytes = 1048576
headers = { "x-team" = "growth" }
timeout_ms = 10000
"#;

/// Settings for the `webhook` destination.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The URL events are POSTed to (this is the destination's `base_url`:
    /// tests point it at a loopback server). Required.
    pub url: String,
    /// Environment variable holding the HMAC-SHA256 signing secret. Default: none (unsigned).
    #[serde(default)]
    pub secret_env: Option<String>,
    /// The signing secret inline; for development only, prefer `secret_env`. Default: none.
    #[serde(default)]
    pub secret: Option<String>,
    /// Whether to send many events per request (`{"batch": [...]}`) or one
    /// event per request. Default: true.
    #[serde(default = "yes")]
    pub batch: bool,
    /// Most events per batched request, 1 to 10000. Default: 100.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// Largest event sent, in bytes of JSON; a larger one is dead-lettered
    /// alone. Default: 1048576 (1 MiB).
    #[serde(default = "default_max_event_bytes")]
    pub max_event_bytes: usize,
    /// Extra headers sent with every request. Default: none.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Longest a request may take, in milliseconds. Default: 10000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn yes() -> bool {
    true
}

fn default_max_batch() -> usize {
    100
}

fn default_max_event_bytes() -> usize {
    1024 * 1024
}

impl WebhookConfig {
    /// Parses the settings table.
    pub fn parse(settings: toml::Table, key: &str) -> Result<WebhookConfig, ConfigError> {
        parse_settings(settings, key)
    }

    /// Checks the settings and prebuilds the client and headers.
    pub fn build(
        &self,
        _cx: &BuildContext,
        key: &str,
    ) -> Result<Box<dyn Destination>, ConfigError> {
        let url = http::endpoint(&self.url, "", &format!("{key}.url"))?;
        let secret = crate::config::secret(
            &format!("{key}.secret"),
            self.secret.as_deref(),
            self.secret_env.as_deref(),
        )?;
        if !(1..=10_000).contains(&self.max_batch) {
            return Err(ConfigError::invalid(
                format!("{key}.max_batch"),
                format!("{} is out of range; use 1 to 10000", self.max_batch),
            ));
        }
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in &self.headers {
            let at = || format!("{key}.headers.{name}");
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| ConfigError::invalid(at(), "not a valid header name"))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| ConfigError::invalid(at(), "not a valid header value"))?;
            headers.insert(name, value);
        }
        Ok(Box::new(WebhookDestination {
            client: http::client(self.timeout_ms, key)?,
            url,
            secret: secret.map(String::into_bytes),
            batch: self.batch,
            max_batch: if self.batch { self.max_batch } else { 1 },
            max_event_bytes: self.max_event_bytes.max(1),
            headers,
        }))
    }
}

struct WebhookDestination {
    client: reqwest::Client,
    url: Url,
    secret: Option<Vec<u8>>,
    batch: bool,
    max_batch: usize,
    max_event_bytes: usize,
    headers: HeaderMap,
}

/// `sha256=<hex HMAC-SHA256(secret, body)>`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // NOTE: HMAC accepts keys of any length, so `new_from_slice` cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[async_trait::async_trait]
impl Destination for WebhookDestination {
    fn max_batch(&self) -> usize {
        self.max_batch
    }

    async fn send(&self, events: &[OutboxEntry]) -> Vec<Outcome> {
        let now = chrono::Utc::now();
        let mut batch = encode::check_raw(events, "webhook", self.max_event_bytes);
        let all: Vec<usize> = (0..batch.items.len()).collect();
        let requests: Vec<Vec<usize>> = if self.batch {
            vec![all]
        } else {
            all.into_iter().map(|p| vec![p]).collect()
        };
        let sent_at = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        for positions in requests {
            let build = |b: &encode::Encoded<()>, positions: &[usize]| {
                let parts = positions.iter().map(|&p| &*events[b.items[p].index].json);
                // The stored JSON is spliced in as is: no parse, no re-encode.
                let body = if self.batch {
                    encode::splice(&format!(r#"{{"sentAt":"{sent_at}","batch":["#), parts, "]}")
                } else {
                    encode::splice("", parts, "")
                };
                let mut request = self
                    .client
                    .post(self.url.clone())
                    .headers(self.headers.clone())
                    .header(TIMESTAMP_HEADER, now.timestamp().to_string());
                if let Some(secret) = &self.secret {
                    request = request.header(SIGNATURE_HEADER, signature(secret, body.as_bytes()));
                }
                request.body(body)
            };
            batch
                .send_items("webhook", positions, build, |_| None)
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
        assert!(WebhookConfig::parse(settings(), "x").is_ok());
        let mut s = settings();
        s.insert("secrett".into(), toml::Value::String("x".into()));
        let err = WebhookConfig::parse(s, "destinations[0].settings").unwrap_err();
        assert!(err.to_string().contains("secrett"), "{err}");
    }

    #[test]
    fn signature_is_hex_hmac_of_the_body() {
        // RFC 4231 test case 2.
        let sig = signature(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            sig,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn bad_header_names_fail_at_build() {
        let mut c = WebhookConfig::parse(settings(), "x").unwrap();
        c.secret_env = None;
        c.headers.insert("bad header".into(), "v".into());
        let cx = BuildContext {
            data_dir: std::env::temp_dir(),
        };
        let err = c.build(&cx, "destinations[0]").err().unwrap();
        assert!(err.to_string().contains("headers.bad header"), "{err}");
    }
}
