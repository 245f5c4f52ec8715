//! The `mixpanel` destination: Mixpanel's Import API, `POST /import?strict=1`,
//! a JSON array of at most 2000 events.
//!
//! Authentication is HTTP Basic: a service account (`service_account` and
//! its secret, with `project_id`), or the project secret as the username.
//! Mapping:
//! - `track` keeps its `event` name; `page` becomes `$mp_web_page_view`,
//!   `screen` becomes `Screen Viewed`. `identify`, `group` and `alias`
//!   update profiles, which `/import` does not take, and are skipped.
//! - `properties.time` is the event time in milliseconds;
//!   `properties.distinct_id` is `userId`, else the visitor;
//!   `$device_id` / `$user_id` let Mixpanel's ID merge join them.
//! - `properties.$insert_id` is the `messageId` when it fits Mixpanel's
//!   rule (at most 36 letters, digits and `-`), else the first 32 hex digits
//!   of its SHA-256: the same on every retry, so duplicates collapse.
//!
//! Strict mode validates each event: a 400 lists the refused ones in
//! `failed_records` (`index`, `field`, `message`) and imports the others,
//! so only the listed events are dead-lettered. An event over 1 MB is
//! dead-lettered without being sent; requests stay under 10 MB.

use base64::Engine as _;
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
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

/// Mixpanel's limit on events per import request.
pub const MAX_EVENTS: usize = 2_000;
/// Mixpanel's limit on one event, in bytes of uncompressed JSON (1 MB).
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;
/// Mixpanel's limit on one import request, in bytes of uncompressed JSON (10 MB).
pub const MAX_REQUEST_BYTES: usize = 10 * 1024 * 1024;

/// An example `mixpanel` destination.
pub const EXAMPLE: &str = r#"
[[destinations]]
name = "mixpanel"
type = "mixpanel"
consent = ["analytics"]
project_id = "1234567"
service_account = "waymark.abc123.mp-service-account"
secret_env = "MIXPANEL_SERVICE_ACCOUNT_SECRET"
base_url = "https://api.mixpanel.com"
timeout_ms = 10000
"#;

/// Settings for the `mixpanel` destination.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MixpanelConfig {
    /// The project id; required with a service account. Default: none.
    #[serde(default)]
    pub project_id: Option<String>,
    /// Service account username. Default: none, the secret is then the
    /// project secret, sent as the Basic username.
    #[serde(default)]
    pub service_account: Option<String>,
    /// Environment variable holding the service account secret (or the project secret).
    #[serde(default)]
    pub secret_env: Option<String>,
    /// The secret inline; for development only, prefer `secret_env`.
    #[serde(default)]
    pub secret: Option<String>,
    /// API root; `/import` is appended. Tests point this at a loopback
    /// fake. Default: `https://api.mixpanel.com` (EU: `https://api-eu.mixpanel.com`).
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// Longest a request may take, in milliseconds. Default: 10000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_base_url() -> String {
    "https://api.mixpanel.com".to_owned()
}

impl MixpanelConfig {
    /// Parses the settings table.
    pub fn parse(settings: toml::Table, key: &str) -> Result<MixpanelConfig, ConfigError> {
        parse_settings(settings, key)
    }

    /// Checks the settings and prebuilds the client, URL and auth header.
    pub fn build(
        &self,
        _cx: &BuildContext,
        key: &str,
    ) -> Result<Box<dyn Destination>, ConfigError> {
        let secret = http::required_secret(
            &format!("{key}.secret"),
            self.secret.as_deref(),
            self.secret_env.as_deref(),
        )?;
        if self.service_account.is_some() && self.project_id.is_none() {
            return Err(ConfigError::invalid(
                format!("{key}.project_id"),
                "required with a service account; copy it from Project settings",
            ));
        }
        let mut url = http::endpoint(&self.base_url, "/import", &format!("{key}.base_url"))?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("strict", "1");
            if let Some(id) = &self.project_id {
                q.append_pair("project_id", id);
            }
        }
        let user = self.service_account.as_deref().unwrap_or(&secret);
        let pass = if self.service_account.is_some() {
            secret.as_str()
        } else {
            ""
        };
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        let mut auth = HeaderValue::from_str(&format!("Basic {basic}")).map_err(|_| {
            ConfigError::invalid(format!("{key}.secret"), "not a valid header value")
        })?;
        auth.set_sensitive(true);
        Ok(Box::new(MixpanelDestination {
            client: http::client(self.timeout_ms, key)?,
            url,
            auth,
        }))
    }
}

struct MixpanelDestination {
    client: reqwest::Client,
    url: Url,
    auth: HeaderValue,
}

/// `$insert_id` for a `messageId`: itself when it fits Mixpanel's rule
/// (1 to 36 of `[A-Za-z0-9-]`), else 32 hex digits of its SHA-256.
pub fn insert_id(message_id: &str) -> String {
    let fits = !message_id.is_empty()
        && message_id.len() <= 36
        && message_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if fits {
        message_id.to_owned()
    } else {
        http::sha256_hex(message_id)[..32].to_owned()
    }
}

/// One Mixpanel event, or `None` when the call has no Mixpanel event.
fn encode(event: &Map<String, Value>, message_id: &str) -> Option<Value> {
    let name = match str_at(event, "type").unwrap_or("track") {
        "track" => str_at(event, "event").unwrap_or("event").to_owned(),
        "page" => "$mp_web_page_view".to_owned(),
        "screen" => "Screen Viewed".to_owned(),
        _ => return None,
    };
    let mut props = event
        .get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let user_id = str_at(event, "userId");
    let visitor = http::visitor_id(event);
    let distinct = user_id.or(visitor).unwrap_or("");
    props.insert("time".into(), json!(http::event_time_ms(event)));
    props.insert("distinct_id".into(), json!(distinct));
    props.insert("$insert_id".into(), json!(insert_id(message_id)));
    if let Some(v) = visitor {
        props.insert("$device_id".into(), json!(v));
    }
    if let Some(u) = user_id {
        props.insert("$user_id".into(), json!(u));
    }
    for (prop, path) in [
        ("$current_url", "context.page.url"),
        ("$referrer", "context.page.referrer"),
        ("ip", "context.ip"),
        ("$browser", "context.userAgentData.browser"),
    ] {
        if let Some(v) = str_at(event, path) {
            props.entry(prop).or_insert(json!(v));
        }
    }
    if str_at(event, "type") == Some("screen") {
        if let Some(n) = str_at(event, "name") {
            props.entry("screen_name").or_insert(json!(n));
        }
    }
    Some(json!({ "event": name, "properties": props }))
}

#[async_trait::async_trait]
impl Destination for MixpanelDestination {
    fn max_batch(&self) -> usize {
        MAX_EVENTS
    }

    async fn send(&self, events: &[OutboxEntry]) -> Vec<Outcome> {
        let mut batch = encode::encode_batch(
            events,
            "mixpanel",
            MAX_EVENT_BYTES,
            |event, entry| match encode(event, &entry.message_id) {
                Some(e) => Mapped::Event(e, ()),
                None => Mapped::Skip(SkipReason::UnsupportedType),
            },
        );
        let lens: Vec<usize> = batch.items.iter().map(|i| i.json.len()).collect();
        for range in encode::requests(lens, MAX_EVENTS, MAX_REQUEST_BYTES, 2) {
            let build = |b: &encode::Encoded<()>, positions: &[usize]| {
                let body = encode::splice(
                    "[",
                    positions.iter().map(|&p| b.items[p].json.as_str()),
                    "]",
                );
                self.client
                    .post(self.url.clone())
                    .header(AUTHORIZATION, self.auth.clone())
                    .header(CONTENT_TYPE, "application/json")
                    .body(body)
            };
            batch
                .send_items("mixpanel", range.collect(), build, failed_records)
                .await;
        }
        batch.finish()
    }
}

/// Strict mode's `failed_records`: the refused events by index in the
/// request; the others were imported.
fn failed_records(answer: &Answer) -> Option<Refusal> {
    let json = answer.json()?;
    let failed = json.get("failed_records")?.as_array()?;
    let refused = failed
        .iter()
        .map(|f| {
            let index = f.get("index").and_then(Value::as_u64)? as usize;
            let field = f.get("field").and_then(Value::as_str).unwrap_or("event");
            let message = f
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("invalid");
            Some((index, format!("HTTP 400: {field}: {message}")))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Refusal {
        refused,
        others_stored: true,
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
        assert!(MixpanelConfig::parse(settings(), "x").is_ok());
        let mut s = settings();
        s.insert("projectid".into(), toml::Value::String("1".into()));
        let err = MixpanelConfig::parse(s, "destinations[0].settings").unwrap_err();
        assert!(err.to_string().contains("projectid"), "{err}");
    }

    #[test]
    fn insert_ids_fit_mixpanels_rule_and_are_stable() {
        assert_eq!(
            insert_id("29fc2962-6d9c-455d-95ad-95b84f09b9e4"),
            "29fc2962-6d9c-455d-95ad-95b84f09b9e4"
        );
        let long = insert_id("ajs-next-1714557600000-0123456789abcdef0123");
        assert_eq!(long.len(), 32);
        assert_eq!(
            long,
            insert_id("ajs-next-1714557600000-0123456789abcdef0123")
        );
        assert_eq!(insert_id("a b").len(), 32);
    }

    #[test]
    fn track_maps_to_an_import_event() {
        let e = json!({"type":"track","event":"Buy","anonymousId":"a1","timestamp":"2024-05-01T10:00:00Z",
                       "properties":{"price":3},"context":{"page":{"url":"https://s.example/"}}});
        let m = encode(e.as_object().unwrap(), "m-1").unwrap();
        assert_eq!(m["event"], "Buy");
        assert_eq!(m["properties"]["time"], json!(1_714_557_600_000i64));
        assert_eq!(m["properties"]["distinct_id"], "a1");
        assert_eq!(m["properties"]["$insert_id"], "m-1");
        assert_eq!(m["properties"]["price"], 3);
        assert_eq!(m["properties"]["$current_url"], "https://s.example/");
    }

    fn answer(body: serde_json::Value) -> Answer {
        Answer {
            status: reqwest::StatusCode::BAD_REQUEST,
            retry_after: None,
            body: body.to_string().into_bytes(),
        }
    }

    #[test]
    fn strict_mode_failed_records_refuse_only_those_and_the_rest_is_imported() {
        let r = failed_records(&answer(json!({
            "code": 400, "error": "some data points in the request failed validation",
            "num_records_imported": 98, "status": "Bad Request",
            "failed_records": [
                {"index": 4, "$insert_id": "a", "field": "properties.time", "message": "'properties.time' is invalid"},
                {"index": 7, "$insert_id": "b", "field": "event", "message": "'event' is invalid"},
            ],
        })))
        .unwrap();
        assert!(r.others_stored);
        assert_eq!(
            r.refused.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            [4, 7]
        );
        assert!(r.refused[0].1.contains("properties.time"));
    }
}
