//! The `ga4` destination: Google Analytics 4 Measurement Protocol,
//! `POST /mp/collect?measurement_id=…&api_secret=…`.
//!
//! One request carries one `client_id` and at most 25 events, so a batch is
//! grouped by visitor. Mapping:
//! - `client_id` is the visitor (`context.waymark.visitorId`, else
//!   `anonymousId`); `user_id` is `userId`.
//! - `consent.ad_user_data` / `consent.ad_personalization` come from the
//!   event's Google Consent Mode fields (`context.consent.gcm`), else from
//!   the configured purpose in `categoryPreferences`.
//! - `page` becomes `page_view`, `screen` becomes `screen_view`, `track`
//!   keeps its name mapped to GA4's rules (letters, digits and `_`, starting
//!   with a letter, at most 40 characters, not reserved). `identify`,
//!   `group` and `alias` have no GA4 event and are skipped (debug log).
//! - Scalar properties become params (names mapped the same way, string
//!   values cut to 100 characters, at most 25 params); `session_id` and
//!   `engagement_time_msec` are always set.
//!
//! `/mp/collect` answers 2xx even to payloads it drops, so what GA4's
//! validation server would refuse is refused here, per event, before
//! sending: a `user_id` over 256 characters, or an event whose request
//! would pass GA4's 130 kB body limit (a huge `client_id`). Events without
//! a visitor or `userId` are skipped (`missing_identity`). A 4xx or 5xx
//! from GA4 settles only the events of that request.

use std::collections::BTreeMap;

use reqwest::header::CONTENT_TYPE;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use url::Url;

use super::encode::{self, Mapped};
use super::http::{self, default_timeout_ms, str_at};
use super::{parse_settings, BuildContext, Destination, Outcome, SkipReason};
use crate::config::ConfigError;
use crate::consent::GrantedPurposes;
use crate::storage::OutboxEntry;

/// GA4's limit on events per request.
pub const MAX_EVENTS: usize = 25;
/// GA4's limit on params per event.
pub const MAX_PARAMS: usize = 25;
/// GA4's limit on event and param names, in characters.
pub const MAX_NAME_CHARS: usize = 40;
/// GA4's limit on string param values, in characters.
pub const MAX_VALUE_CHARS: usize = 100;
/// GA4's limit on `user_id`, in characters.
pub const MAX_USER_ID_CHARS: usize = 256;
/// GA4's limit on one request body, in bytes (130 kB).
pub const MAX_BODY_BYTES: usize = 130_000;

/// Event names GA4 reserves.
pub const RESERVED_EVENTS: &[&str] = &[
    "ad_activeview",
    "ad_click",
    "ad_exposure",
    "ad_query",
    "ad_reward",
    "adunit_exposure",
    "app_background",
    "app_clear_data",
    "app_exception",
    "app_remove",
    "app_store_refund",
    "app_store_subscription_cancel",
    "app_store_subscription_convert",
    "app_store_subscription_renew",
    "app_update",
    "app_upgrade",
    "dynamic_link_app_open",
    "dynamic_link_app_update",
    "dynamic_link_first_open",
    "error",
    "firebase_campaign",
    "firebase_in_app_message_action",
    "firebase_in_app_message_dismiss",
    "firebase_in_app_message_impression",
    "first_open",
    "first_visit",
    "in_app_purchase",
    "notification_dismiss",
    "notification_foreground",
    "notification_open",
    "notification_receive",
    "os_update",
    "session_start",
    "session_start_with_rollout",
    "user_engagement",
];

/// Name prefixes GA4 reserves for events and params.
pub const RESERVED_PREFIXES: &[&str] = &["_", "firebase_", "ga_", "google_", "gtag."];

/// An example `ga4` destination.
pub const EXAMPLE: &str = r#"
[[destinations]]
name = "ga4"
type = "ga4"
consent = ["analytics"]
measurement_id = "G-ABC123XYZ"
api_secret_env = "GA4_API_SECRET"
ads_purpose = "marketing"
base_url = "https://www.google-analytics.com"
timeout_ms = 10000
"#;

/// Settings for the `ga4` destination.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Ga4Config {
    /// The web stream's measurement ID, such as `G-ABC123XYZ`. Required.
    pub measurement_id: String,
    /// Environment variable holding the Measurement Protocol API secret.
    #[serde(default)]
    pub api_secret_env: Option<String>,
    /// The API secret inline; for development only, prefer `api_secret_env`.
    #[serde(default)]
    pub api_secret: Option<String>,
    /// Purpose whose grant sets `ad_user_data` and `ad_personalization` to
    /// `GRANTED` when the event carries no Consent Mode fields. Default: `marketing`.
    #[serde(default = "default_ads_purpose")]
    pub ads_purpose: String,
    /// API root; `/mp/collect` is appended. Tests point this at a loopback
    /// fake. Default: `https://www.google-analytics.com` (EU:
    /// `https://region1.google-analytics.com`).
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// Longest a request may take, in milliseconds. Default: 10000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_ads_purpose() -> String {
    "marketing".to_owned()
}

fn default_base_url() -> String {
    "https://www.google-analytics.com".to_owned()
}

impl Ga4Config {
    /// Parses the settings table.
    pub fn parse(settings: toml::Table, key: &str) -> Result<Ga4Config, ConfigError> {
        parse_settings(settings, key)
    }

    /// Checks the settings and prebuilds the client and URL.
    pub fn build(
        &self,
        _cx: &BuildContext,
        key: &str,
    ) -> Result<Box<dyn Destination>, ConfigError> {
        if self.measurement_id.trim().is_empty() {
            return Err(ConfigError::invalid(
                format!("{key}.measurement_id"),
                "empty; copy it from Admin > Data streams > your stream",
            ));
        }
        let secret = http::required_secret(
            &format!("{key}.api_secret"),
            self.api_secret.as_deref(),
            self.api_secret_env.as_deref(),
        )?;
        let mut url = http::endpoint(&self.base_url, "/mp/collect", &format!("{key}.base_url"))?;
        url.query_pairs_mut()
            .append_pair("measurement_id", &self.measurement_id)
            .append_pair("api_secret", &secret);
        Ok(Box::new(Ga4Destination {
            client: http::client(self.timeout_ms, key)?,
            url,
            ads_purpose: self.ads_purpose.clone(),
        }))
    }
}

struct Ga4Destination {
    client: reqwest::Client,
    url: Url,
    ads_purpose: String,
}

/// Maps a name to GA4's rules: lowercase snake case of letters, digits and
/// `_`, starting with a letter, at most 40 characters, never reserved.
pub fn ga4_name(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len().min(MAX_NAME_CHARS));
    let mut last_underscore = false;
    for c in raw.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
            last_underscore = false;
        } else if !last_underscore && !out.is_empty() {
            out.push('_');
            last_underscore = true;
        }
    }
    while out.ends_with('_') {
        out.pop();
    }
    if !out.starts_with(|c: char| c.is_ascii_alphabetic()) {
        out.insert_str(0, "e_");
    }
    if RESERVED_EVENTS.contains(&out.as_str())
        || RESERVED_PREFIXES.iter().any(|p| out.starts_with(p))
    {
        out.insert_str(0, "wm_");
    }
    out.truncate(MAX_NAME_CHARS);
    out
}

/// `GRANTED` / `DENIED` for a Consent Mode field: granted only when the
/// edge granted the event `purpose` (the decision stored with it) and the
/// event's own `gcm` field does not deny it (a denial only narrows).
fn consent_signal(
    event: &Map<String, Value>,
    granted: &GrantedPurposes,
    gcm_field: &str,
    purpose: &str,
) -> &'static str {
    let gcm = http::at(event, &format!("context.consent.gcm.{gcm_field}"));
    let denied = match gcm {
        Some(Value::String(v)) => v.eq_ignore_ascii_case("denied"),
        Some(Value::Bool(b)) => !b,
        _ => false,
    };
    if granted.contains(purpose) && !denied {
        "GRANTED"
    } else {
        "DENIED"
    }
}

/// A deterministic session: the worker's session (`context.waymark.session.id`,
/// its start in Unix milliseconds), else `context.waymark.sessionId` or
/// `context.sessionId` when the event has one, else the 30-minute window the
/// event falls in. GA4 session ids are the session's start in seconds.
fn session_id(event: &Map<String, Value>, time_ms: i64) -> Value {
    if let Some(start_ms) = http::at(event, "context.waymark.session.id").and_then(Value::as_i64) {
        return json!(start_ms.div_euclid(1_000));
    }
    for path in ["context.waymark.sessionId", "context.sessionId"] {
        match http::at(event, path) {
            Some(Value::Number(n)) => return Value::Number(n.clone()),
            Some(Value::String(s)) if !s.is_empty() => return Value::String(s.clone()),
            _ => {}
        }
    }
    let secs = time_ms.div_euclid(1_000);
    json!(secs - secs.rem_euclid(1_800))
}

/// One GA4 event and the client it belongs to, or why the call has none.
fn encode(
    event: &Map<String, Value>,
    granted: &GrantedPurposes,
    ads_purpose: &str,
) -> Result<(String, Option<String>, Value, Value), SkipReason> {
    let kind = str_at(event, "type").unwrap_or("track");
    let time_ms = http::event_time_ms(event);
    let mut params = Map::new();
    let name = match kind {
        "track" => ga4_name(str_at(event, "event").unwrap_or("event")),
        "page" => {
            for (param, path) in [
                ("page_location", "context.page.url"),
                ("page_title", "context.page.title"),
                ("page_referrer", "context.page.referrer"),
            ] {
                if let Some(v) = str_at(event, path) {
                    params.insert(param.into(), json!(cut(v)));
                }
            }
            "page_view".to_owned()
        }
        "screen" => {
            if let Some(v) = str_at(event, "name") {
                params.insert("screen_name".into(), json!(cut(v)));
            }
            "screen_view".to_owned()
        }
        _ => return Err(SkipReason::UnsupportedType),
    };
    params.insert("session_id".into(), session_id(event, time_ms));
    params.insert("engagement_time_msec".into(), json!(1));
    if let Some(props) = event.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            if params.len() >= MAX_PARAMS {
                break;
            }
            let value = match v {
                Value::String(s) => json!(cut(s)),
                Value::Number(_) | Value::Bool(_) => v.clone(),
                _ => continue,
            };
            params.entry(ga4_name(k)).or_insert(value);
        }
    }
    let client_id = http::visitor_id(event)
        .or_else(|| str_at(event, "userId"))
        .ok_or(SkipReason::MissingIdentity)?
        .to_owned();
    let user_id = str_at(event, "userId").map(str::to_owned);
    let consent = json!({
        "ad_user_data": consent_signal(event, granted, "ad_user_data", ads_purpose),
        "ad_personalization": consent_signal(event, granted, "ad_personalization", ads_purpose),
    });
    let ga_event = json!({
        "name": name,
        "params": params,
        "timestamp_micros": time_ms.saturating_mul(1_000),
    });
    Ok((client_id, user_id, consent, ga_event))
}

/// Cuts a string value to GA4's 100 characters.
fn cut(s: &str) -> String {
    s.chars().take(MAX_VALUE_CHARS).collect()
}

/// The request an event belongs to: one client, one user, one consent state.
struct Client {
    client_id: String,
    user_id: Option<String>,
    consent: Value,
}

impl Client {
    /// The request body's envelope around the events: head and tail.
    fn envelope(&self) -> (String, &'static str) {
        let mut head = json!({ "client_id": self.client_id, "consent": self.consent });
        if let (Some(user_id), Some(map)) = (&self.user_id, head.as_object_mut()) {
            map.insert("user_id".into(), json!(user_id));
        }
        let mut head = head.to_string();
        head.pop();
        head.push_str(r#","events":["#);
        (head, "]}")
    }
}

#[async_trait::async_trait]
impl Destination for Ga4Destination {
    fn max_batch(&self) -> usize {
        // Events of many visitors share a batch; each request holds one.
        250
    }

    async fn send(&self, events: &[OutboxEntry]) -> Vec<Outcome> {
        // 1. Encode; what GA4 would refuse is refused here, per event. The
        //    consent signals are what the edge decided (`entry.granted`).
        let mut batch = encode::encode_batch(events, "ga4", MAX_BODY_BYTES, |event, entry| {
            let (client_id, user_id, consent, ga_event) =
                match encode(event, &entry.granted, &self.ads_purpose) {
                    Ok(encoded) => encoded,
                    Err(reason) => return Mapped::Skip(reason),
                };
            if user_id
                .as_deref()
                .is_some_and(|u| u.chars().count() > MAX_USER_ID_CHARS)
            {
                return Mapped::Reject(format!(
                    "user_id is over GA4's {MAX_USER_ID_CHARS} characters"
                ));
            }
            let client = Client {
                client_id,
                user_id,
                consent,
            };
            let (head, tail) = client.envelope();
            let alone = head.len() + tail.len() + ga_event.to_string().len();
            if alone > MAX_BODY_BYTES {
                return Mapped::Reject(format!(
                    "a request holding only this event is {alone} bytes, over GA4's {MAX_BODY_BYTES}-byte body limit"
                ));
            }
            Mapped::Event(ga_event, client)
        });
        // 2. Group by client (and user and consent), in order, 25 events
        //    and 130 kB per request.
        let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
        let mut open: BTreeMap<(String, Option<String>, String), usize> = BTreeMap::new();
        for (p, item) in batch.items.iter().enumerate() {
            let c = &item.meta;
            let key = (
                c.client_id.clone(),
                c.user_id.clone(),
                c.consent.to_string(),
            );
            match open.get(&key).copied() {
                Some(g) => groups[g].1.push(p),
                None => {
                    open.insert(key, groups.len());
                    groups.push((c.envelope().0, vec![p]));
                }
            }
        }
        let mut requests: Vec<Vec<usize>> = Vec::new();
        for (head, positions) in groups {
            let lens = positions.iter().map(|&p| batch.items[p].json.len());
            for range in encode::requests(lens, MAX_EVENTS, MAX_BODY_BYTES, head.len() + 2) {
                requests.push(positions[range].to_vec());
            }
        }
        // 3. Send each; its answer settles its events.
        for positions in requests {
            let build = |b: &encode::Encoded<Client>, positions: &[usize]| {
                let (head, tail) = b.items[positions[0]].meta.envelope();
                let body = encode::splice(
                    &head,
                    positions.iter().map(|&p| b.items[p].json.as_str()),
                    tail,
                );
                self.client
                    .post(self.url.clone())
                    .header(CONTENT_TYPE, "application/json")
                    .body(body)
            };
            batch.send_items("ga4", positions, build, |_| None).await;
        }
        batch.finish()
    }
}

#[cfg(test)]
mod tests;
