//! The `amplitude` destination: Amplitude's HTTP V2 API, `POST /2/httpapi`
//! with `{"api_key": …, "events": [...]}`, at most 2000 events per request.
//!
//! Mapping:
//! - `track` keeps its `event` name as `event_type`; `page` and `screen`
//!   become `[Amplitude] Page Viewed` / `[Amplitude] Screen Viewed` (the
//!   names Amplitude's own SDKs use); `identify` becomes `$identify` with
//!   its traits under `user_properties.$set`. `group` and `alias` are skipped.
//! - `user_id` is `userId`, `device_id` is the visitor; Amplitude needs one
//!   of them. Ids shorter than Amplitude's default 5 characters lower
//!   `options.min_id_length` for that request instead of being refused.
//! - `insert_id` is the `messageId` (Amplitude dedups on it for 7 days),
//!   `time` the event time in milliseconds.

use reqwest::header::CONTENT_TYPE;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use url::Url;

use super::http::{self, default_timeout_ms, str_at};
use super::{parse_settings, BuildContext, DeliveryError, Destination};
use crate::config::ConfigError;
use crate::storage::OutboxEntry;

/// Amplitude's limit on events per request.
pub const MAX_EVENTS: usize = 2_000;
/// Amplitude's default shortest `user_id` / `device_id`.
pub const DEFAULT_MIN_ID_LENGTH: usize = 5;

/// An example `amplitude` destination.
pub const EXAMPLE: &str = r#"
[[destinations]]
name = "amplitude"
type = "amplitude"
consent = ["analytics"]
api_key_env = "AMPLITUDE_API_KEY"
base_url = "https://api2.amplitude.com"
timeout_ms = 10000
"#;

/// Settings for the `amplitude` destination.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AmplitudeConfig {
    /// Environment variable holding the project's API key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// The API key inline; for development only, prefer `api_key_env`.
    #[serde(default)]
    pub api_key: Option<String>,
    /// API root; `/2/httpapi` is appended. Tests point this at a loopback
    /// fake. Default: `https://api2.amplitude.com` (EU: `https://api.eu.amplitude.com`).
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// Longest a request may take, in milliseconds. Default: 10000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_base_url() -> String {
    "https://api2.amplitude.com".to_owned()
}

impl AmplitudeConfig {
    /// Parses the settings table.
    pub fn parse(settings: toml::Table, key: &str) -> Result<AmplitudeConfig, ConfigError> {
        parse_settings(settings, key)
    }

    /// Checks the settings and prebuilds the client and URL.
    pub fn build(
        &self,
        _cx: &BuildContext,
        key: &str,
    ) -> Result<Box<dyn Destination>, ConfigError> {
        let api_key = http::required_secret(
            &format!("{key}.api_key"),
            self.api_key.as_deref(),
            self.api_key_env.as_deref(),
        )?;
        Ok(Box::new(AmplitudeDestination {
            client: http::client(self.timeout_ms, key)?,
            url: http::endpoint(&self.base_url, "/2/httpapi", &format!("{key}.base_url"))?,
            api_key,
        }))
    }
}

struct AmplitudeDestination {
    client: reqwest::Client,
    url: Url,
    api_key: String,
}

/// One Amplitude event, or `None` when the call has none (or no id).
fn encode(event: &Map<String, Value>, message_id: &str) -> Option<Value> {
    let kind = str_at(event, "type").unwrap_or("track");
    let mut out = Map::new();
    let event_type = match kind {
        "track" => str_at(event, "event").unwrap_or("event").to_owned(),
        "page" => "[Amplitude] Page Viewed".to_owned(),
        "screen" => "[Amplitude] Screen Viewed".to_owned(),
        "identify" => {
            let traits = event.get("traits").cloned().unwrap_or_else(|| json!({}));
            out.insert("user_properties".into(), json!({ "$set": traits }));
            "$identify".to_owned()
        }
        _ => return None,
    };
    let user_id = str_at(event, "userId");
    let device_id = http::visitor_id(event);
    if user_id.is_none() && device_id.is_none() {
        return None;
    }
    out.insert("event_type".into(), json!(event_type));
    if let Some(u) = user_id {
        out.insert("user_id".into(), json!(u));
    }
    if let Some(d) = device_id {
        out.insert("device_id".into(), json!(d));
    }
    out.insert("time".into(), json!(http::event_time_ms(event)));
    out.insert("insert_id".into(), json!(message_id));
    if kind != "identify" {
        let mut props = event
            .get("properties")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        if kind == "page" {
            for (p, path) in [
                ("[Amplitude] Page URL", "context.page.url"),
                ("[Amplitude] Page Title", "context.page.title"),
            ] {
                if let Some(v) = str_at(event, path) {
                    props.entry(p).or_insert(json!(v));
                }
            }
        }
        out.insert("event_properties".into(), Value::Object(props));
    }
    for (field, path) in [
        ("ip", "context.ip"),
        ("language", "context.locale"),
        ("os_name", "context.os.name"),
        ("app_version", "context.app.version"),
    ] {
        if let Some(v) = str_at(event, path) {
            out.insert(field.into(), json!(v));
        }
    }
    Some(Value::Object(out))
}

/// Shortest id of an encoded event.
fn shortest_id(e: &Value) -> usize {
    ["user_id", "device_id"]
        .iter()
        .filter_map(|k| e.get(k).and_then(Value::as_str))
        .map(|s| s.chars().count())
        .min()
        .unwrap_or(DEFAULT_MIN_ID_LENGTH)
}

#[async_trait::async_trait]
impl Destination for AmplitudeDestination {
    fn max_batch(&self) -> usize {
        MAX_EVENTS
    }

    async fn send(&self, events: &[OutboxEntry]) -> Result<(), DeliveryError> {
        let mut out = Vec::with_capacity(events.len());
        for entry in events {
            let event = http::parse_event(entry)?;
            match encode(&event, &entry.message_id) {
                Some(e) => out.push(e),
                None => {
                    tracing::debug!(message_id = %entry.message_id, "Event has no Amplitude equivalent; skipped.")
                }
            }
        }
        if out.is_empty() {
            return Ok(());
        }
        let shortest = out
            .iter()
            .map(shortest_id)
            .min()
            .unwrap_or(DEFAULT_MIN_ID_LENGTH);
        let mut body = json!({ "api_key": self.api_key, "events": out });
        if shortest < DEFAULT_MIN_ID_LENGTH {
            if let Some(map) = body.as_object_mut() {
                map.insert(
                    "options".into(),
                    json!({ "min_id_length": shortest.max(1) }),
                );
            }
        }
        let request = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string());
        http::send(request, "amplitude").await.map(drop)
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
        assert!(AmplitudeConfig::parse(settings(), "x").is_ok());
        let mut s = settings();
        s.insert("apikey".into(), toml::Value::String("k".into()));
        let err = AmplitudeConfig::parse(s, "destinations[0].settings").unwrap_err();
        assert!(err.to_string().contains("apikey"), "{err}");
    }

    #[test]
    fn events_carry_ids_insert_id_and_time() {
        let e = json!({"type":"track","event":"Buy","userId":"user-1","anonymousId":"anon-1",
                       "timestamp":"2024-05-01T10:00:00Z","properties":{"price":3}});
        let a = encode(e.as_object().unwrap(), "m-1").unwrap();
        assert_eq!(a["event_type"], "Buy");
        assert_eq!(a["user_id"], "user-1");
        assert_eq!(a["device_id"], "anon-1");
        assert_eq!(a["insert_id"], "m-1");
        assert_eq!(a["time"], json!(1_714_557_600_000i64));
        assert_eq!(a["event_properties"]["price"], 3);
        let i = json!({"type":"identify","userId":"user-1","traits":{"plan":"pro"}});
        let a = encode(i.as_object().unwrap(), "m-2").unwrap();
        assert_eq!(a["event_type"], "$identify");
        assert_eq!(a["user_properties"]["$set"]["plan"], "pro");
    }
}
