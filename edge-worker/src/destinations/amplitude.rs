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
//!
//! A 400 that lists events (`events_with_invalid_fields`,
//! `events_with_missing_fields`, `events_with_invalid_id_lengths`: field →
//! indices; `silenced_events`: indices) stores nothing: the listed events
//! are dead-lettered with the field at fault and the rest are sent again,
//! as Amplitude's batching guide says. Events without `userId` or visitor
//! are skipped (`missing_identity`), as are `group` and `alias`.

use reqwest::header::CONTENT_TYPE;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use url::Url;

use super::encode::{self, Mapped, Refusal};
use super::http::Answer;
use super::http::{self, default_timeout_ms, str_at};
use super::{parse_settings, BuildContext, Destination, Outcome, SkipReason};
use crate::config::ConfigError;
use crate::storage::OutboxEntry;

/// Amplitude's limit on events per request.
pub const MAX_EVENTS: usize = 2_000;
/// Amplitude's limit on one request, in bytes (1 MB; 413 beyond).
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// Largest event Waymark sends: a request of one event must stay under
/// [`MAX_REQUEST_BYTES`], envelope included.
pub const MAX_EVENT_BYTES: usize = MAX_REQUEST_BYTES - 1024;
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

/// One Amplitude event, or why the call has none.
fn encode(event: &Map<String, Value>, message_id: &str) -> Result<Value, SkipReason> {
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
        _ => return Err(SkipReason::UnsupportedType),
    };
    let user_id = str_at(event, "userId");
    let device_id = http::visitor_id(event);
    if user_id.is_none() && device_id.is_none() {
        return Err(SkipReason::MissingIdentity);
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
    Ok(Value::Object(out))
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

    async fn send(&self, events: &[OutboxEntry]) -> Vec<Outcome> {
        let mut batch = encode::encode_batch(
            events,
            "amplitude",
            MAX_EVENT_BYTES,
            |event, entry| match encode(event, &entry.message_id) {
                Ok(e) => {
                    let shortest = shortest_id(&e);
                    Mapped::Event(e, shortest)
                }
                Err(reason) => Mapped::Skip(reason),
            },
        );
        let envelope = self.api_key.len() + 64;
        let lens: Vec<usize> = batch.items.iter().map(|i| i.json.len()).collect();
        for range in encode::requests(lens, MAX_EVENTS, MAX_REQUEST_BYTES, envelope) {
            let build = |b: &encode::Encoded<usize>, positions: &[usize]| {
                let shortest = positions
                    .iter()
                    .map(|&p| b.items[p].meta)
                    .min()
                    .unwrap_or(DEFAULT_MIN_ID_LENGTH);
                let head = format!(r#"{{"api_key":{},"events":["#, json!(self.api_key));
                let tail = if shortest < DEFAULT_MIN_ID_LENGTH {
                    format!(r#"],"options":{{"min_id_length":{}}}}}"#, shortest.max(1))
                } else {
                    "]}".to_owned()
                };
                let body = encode::splice(
                    &head,
                    positions.iter().map(|&p| b.items[p].json.as_str()),
                    &tail,
                );
                self.client
                    .post(self.url.clone())
                    .header(CONTENT_TYPE, "application/json")
                    .body(body)
            };
            batch
                .send_items("amplitude", range.collect(), build, refused_events)
                .await;
        }
        batch.finish()
    }
}

/// The events a 400 names, by index in the request, with the field at
/// fault. Amplitude stores nothing of such a request.
fn refused_events(answer: &Answer) -> Option<Refusal> {
    let json = answer.json()?;
    let mut refused: Vec<(usize, String)> = Vec::new();
    let mut add = |index: &Value, why: String| {
        if let Some(i) = index.as_u64() {
            if !refused.iter().any(|(r, _)| *r == i as usize) {
                refused.push((i as usize, why));
            }
        }
    };
    for (key, what) in [
        ("events_with_invalid_fields", "invalid"),
        ("events_with_missing_fields", "missing"),
        ("events_with_invalid_id_lengths", "too short"),
    ] {
        if let Some(fields) = json.get(key).and_then(Value::as_object) {
            for (field, indices) in fields {
                for i in indices.as_array().into_iter().flatten() {
                    add(i, format!("HTTP 400: {field} {what}"));
                }
            }
        }
    }
    for i in json
        .get("silenced_events")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        add(
            i,
            "HTTP 400: silenced (device or user silenced by Amplitude)".to_owned(),
        );
    }
    Some(Refusal {
        refused,
        others_stored: false,
    })
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

    fn answer(body: serde_json::Value) -> Answer {
        Answer {
            status: reqwest::StatusCode::BAD_REQUEST,
            retry_after: None,
            body: body.to_string().into_bytes(),
        }
    }

    #[test]
    fn a_400_naming_events_refuses_only_those() {
        let r = refused_events(&answer(json!({
            "code": 400,
            "error": "Invalid field values on some events",
            "events_with_invalid_fields": {"time": [3, 17]},
            "events_with_missing_fields": {"event_type": [17, 4]},
            "silenced_events": [9],
        })))
        .unwrap();
        let mut at: Vec<usize> = r.refused.iter().map(|(i, _)| *i).collect();
        at.sort_unstable();
        assert_eq!(at, [3, 4, 9, 17]);
        assert!(!r.others_stored);
        assert!(r
            .refused
            .iter()
            .any(|(i, why)| *i == 3 && why.contains("time invalid")));
        assert!(
            refused_events(&answer(json!({"code": 400, "error": "Invalid API key"})))
                .unwrap()
                .refused
                .is_empty()
        );
    }

    #[test]
    fn calls_without_an_amplitude_event_are_skipped_with_their_reason() {
        let group = json!({"type":"group","userId":"user-1","groupId":"g"});
        assert_eq!(
            encode(group.as_object().unwrap(), "m").err(),
            Some(SkipReason::UnsupportedType)
        );
        let anonymous = json!({"type":"track","event":"Buy"});
        assert_eq!(
            encode(anonymous.as_object().unwrap(), "m").err(),
            Some(SkipReason::MissingIdentity)
        );
    }
}
