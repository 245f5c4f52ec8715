//! The `meta_capi` destination: Meta's Conversions API,
//! `POST /{api_version}/{pixel_id}/events?access_token=…` with `{"data": [...]}`,
//! at most 1000 events per request.
//!
//! Mapping:
//! - `event_name`: Segment's e-commerce names become Meta standard events
//!   (`Order Completed` → `Purchase`, `Product Added` → `AddToCart`, …),
//!   `page` becomes `PageView`, other track names are custom events.
//!   `identify`, `group` and `alias` are skipped.
//! - `event_id` is the `messageId` (Meta dedups pixel and server events on
//!   it), `event_time` the event time in Unix seconds, `action_source` the
//!   configured one, `event_source_url` the page URL.
//! - `user_data.em` / `ph` are normalised (email trimmed and lowercased;
//!   phone reduced to digits without leading zeros) and SHA-256 hashed;
//!   values that already are SHA-256 hex (from a `hash-pii` rule) pass as
//!   they are. `external_id` is the hashed `userId` or visitor.
//!   `client_ip_address` and `client_user_agent` are sent only when the
//!   edge granted the event `ip_ua_purpose` (the decision stored with it,
//!   which includes the source's `default_consent`).
//! - `custom_data` holds the properties, with `value` and `currency`.
//! - With `ldu_purpose` set, an event the edge did not grant that purpose
//!   (for example `marketing` denied by Global Privacy Control) carries
//!   Meta's Limited Data Use flag (`data_processing_options: ["LDU"]`,
//!   country and state `0`: Meta geolocates); a granted one carries
//!   `data_processing_options: []`. Without it the field is not sent.
//!
//! Meta refuses a request that holds an invalid event with a 400 whose
//! `error.error_data` names the event (`event_index`, with a `message`).
//! Those events are dead-lettered with Meta's message and the others sent
//! again without them.

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
use crate::consent::GrantedPurposes;
use crate::storage::OutboxEntry;

/// Meta's limit on events per request.
pub const MAX_EVENTS: usize = 1_000;
/// Largest event Waymark sends, in bytes. Meta publishes no byte limit per
/// server event; this cap keeps one runaway event (a huge `custom_data`)
/// from making a whole request fail.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;
/// Largest request body Waymark sends, in bytes.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024 * 1024;

/// Segment Spec event names and the Meta standard events they are.
pub const STANDARD_EVENTS: &[(&str, &str)] = &[
    ("Order Completed", "Purchase"),
    ("Product Added", "AddToCart"),
    ("Product Added to Wishlist", "AddToWishlist"),
    ("Checkout Started", "InitiateCheckout"),
    ("Payment Info Entered", "AddPaymentInfo"),
    ("Product Viewed", "ViewContent"),
    ("Products Searched", "Search"),
    ("Signed Up", "CompleteRegistration"),
    ("Lead Generated", "Lead"),
    ("Subscription Started", "Subscribe"),
    ("Trial Started", "StartTrial"),
];

/// An example `meta_capi` destination.
pub const EXAMPLE: &str = r#"
[[destinations]]
name = "ads"
type = "meta_capi"
consent = ["marketing"]
pixel_id = "123456789012345"
access_token_env = "META_TOKEN"
action_source = "website"
ip_ua_purpose = "marketing"
api_version = "v21.0"
base_url = "https://graph.facebook.com"
timeout_ms = 10000
"#;

/// Settings for the `meta_capi` destination.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetaCapiConfig {
    /// The dataset (pixel) id. Required.
    pub pixel_id: String,
    /// Environment variable holding the Conversions API access token.
    #[serde(default)]
    pub access_token_env: Option<String>,
    /// The access token inline; for development only, prefer `access_token_env`.
    #[serde(default)]
    pub access_token: Option<String>,
    /// Where the conversions happened: `website`, `app`, `email`,
    /// `phone_call`, `chat`, `physical_store`, `system_generated`,
    /// `business_messaging` or `other`. Default: `website`.
    #[serde(default = "default_action_source")]
    pub action_source: String,
    /// Purpose whose grant allows sending the client's IP address and user
    /// agent. Default: `marketing`.
    #[serde(default = "default_ip_ua_purpose")]
    pub ip_ua_purpose: String,
    /// Purpose whose absence from the edge's decision marks the event for
    /// Meta's Limited Data Use (`data_processing_options: ["LDU"]`).
    /// Default: none (the field is not sent).
    #[serde(default)]
    pub ldu_purpose: Option<String>,
    /// Graph API version. Default: `v21.0`.
    #[serde(default = "default_api_version")]
    pub api_version: String,
    /// `test_event_code` from Events Manager, to see events in Test Events. Default: none.
    #[serde(default)]
    pub test_event_code: Option<String>,
    /// API root. Tests point this at a loopback fake. Default: `https://graph.facebook.com`.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// Longest a request may take, in milliseconds. Default: 10000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_action_source() -> String {
    "website".to_owned()
}

fn default_ip_ua_purpose() -> String {
    "marketing".to_owned()
}

fn default_api_version() -> String {
    "v21.0".to_owned()
}

fn default_base_url() -> String {
    "https://graph.facebook.com".to_owned()
}

/// Meta's `action_source` values.
pub const ACTION_SOURCES: &[&str] = &[
    "website",
    "app",
    "email",
    "phone_call",
    "chat",
    "physical_store",
    "system_generated",
    "business_messaging",
    "other",
];

impl MetaCapiConfig {
    /// Parses the settings table.
    pub fn parse(settings: toml::Table, key: &str) -> Result<MetaCapiConfig, ConfigError> {
        parse_settings(settings, key)
    }

    /// Checks the settings and prebuilds the client and URL.
    pub fn build(
        &self,
        _cx: &BuildContext,
        key: &str,
    ) -> Result<Box<dyn Destination>, ConfigError> {
        if self.pixel_id.is_empty() || !self.pixel_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ConfigError::invalid(
                format!("{key}.pixel_id"),
                "must be the numeric dataset id from Events Manager",
            ));
        }
        if !ACTION_SOURCES.contains(&self.action_source.as_str()) {
            return Err(ConfigError::invalid(
                format!("{key}.action_source"),
                format!(
                    "`{}` is not one of {}",
                    self.action_source,
                    ACTION_SOURCES.join(", ")
                ),
            ));
        }
        let token = http::required_secret(
            &format!("{key}.access_token"),
            self.access_token.as_deref(),
            self.access_token_env.as_deref(),
        )?;
        let path = format!(
            "/{}/{}/events",
            self.api_version.trim_matches('/'),
            self.pixel_id
        );
        let mut url = http::endpoint(&self.base_url, &path, &format!("{key}.base_url"))?;
        url.query_pairs_mut().append_pair("access_token", &token);
        Ok(Box::new(MetaCapiDestination {
            client: http::client(self.timeout_ms, key)?,
            url,
            action_source: self.action_source.clone(),
            ip_ua_purpose: self.ip_ua_purpose.clone(),
            ldu_purpose: self.ldu_purpose.clone(),
            test_event_code: self.test_event_code.clone(),
        }))
    }
}

struct MetaCapiDestination {
    client: reqwest::Client,
    url: Url,
    action_source: String,
    ip_ua_purpose: String,
    ldu_purpose: Option<String>,
    test_event_code: Option<String>,
}

/// Whether `s` already is a lowercase or uppercase SHA-256 hex digest.
fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Meta's email normalisation (trim, lowercase), then SHA-256.
pub fn hash_email(email: &str) -> Option<String> {
    let e = email.trim();
    if is_sha256_hex(e) {
        return Some(e.to_ascii_lowercase());
    }
    let e = e.to_lowercase();
    (e.contains('@')).then(|| http::sha256_hex(&e))
}

/// Meta's phone normalisation (digits only, with country code, no leading
/// zeros), then SHA-256.
pub fn hash_phone(phone: &str) -> Option<String> {
    let p = phone.trim();
    if is_sha256_hex(p) {
        return Some(p.to_ascii_lowercase());
    }
    let digits: String = p.chars().filter(char::is_ascii_digit).collect();
    let digits = digits.trim_start_matches('0');
    (!digits.is_empty()).then(|| http::sha256_hex(digits))
}

fn first_str<'a>(event: &'a Map<String, Value>, paths: &[&str]) -> Option<&'a str> {
    paths.iter().find_map(|p| str_at(event, p))
}

impl MetaCapiDestination {
    /// One Meta server event, or `None` when the call has none.
    fn encode(
        &self,
        event: &Map<String, Value>,
        granted: &GrantedPurposes,
        message_id: &str,
    ) -> Option<Value> {
        let name = match str_at(event, "type").unwrap_or("track") {
            "track" => {
                let n = str_at(event, "event").unwrap_or("event");
                STANDARD_EVENTS
                    .iter()
                    .find(|(segment, _)| segment.eq_ignore_ascii_case(n))
                    .map_or(n, |(_, meta)| *meta)
                    .to_owned()
            }
            "page" => "PageView".to_owned(),
            _ => return None,
        };
        let mut user = Map::new();
        if let Some(em) = first_str(
            event,
            &["traits.email", "context.traits.email", "properties.email"],
        )
        .and_then(hash_email)
        {
            user.insert("em".into(), json!([em]));
        }
        if let Some(ph) = first_str(
            event,
            &["traits.phone", "context.traits.phone", "properties.phone"],
        )
        .and_then(hash_phone)
        {
            user.insert("ph".into(), json!([ph]));
        }
        if let Some(id) = str_at(event, "userId").or_else(|| http::visitor_id(event)) {
            user.insert("external_id".into(), json!([http::sha256_hex(id)]));
        }
        if granted.contains(&self.ip_ua_purpose) {
            if let Some(ip) = str_at(event, "context.ip") {
                user.insert("client_ip_address".into(), json!(ip));
            }
            if let Some(ua) = str_at(event, "context.userAgent") {
                user.insert("client_user_agent".into(), json!(ua));
            }
        }
        for (field, paths) in [
            ("fbp", ["context.fbp", "properties.fbp"]),
            ("fbc", ["context.fbc", "properties.fbc"]),
        ] {
            if let Some(v) = first_str(event, &paths) {
                user.insert(field.into(), json!(v));
            }
        }
        let mut custom = event
            .get("properties")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        custom.remove("email");
        custom.remove("phone");
        if !custom.contains_key("value") {
            if let Some(v) = ["revenue", "total", "price"]
                .iter()
                .find_map(|k| custom.get(*k).filter(|v| v.is_number()).cloned())
            {
                custom.insert("value".into(), v);
            }
        }
        let mut out = json!({
            "event_name": name,
            "event_time": http::event_time_ms(event).div_euclid(1_000),
            "event_id": message_id,
            "action_source": self.action_source,
            "user_data": user,
            "custom_data": custom,
        });
        if let (Some(url), Some(map)) = (str_at(event, "context.page.url"), out.as_object_mut()) {
            map.insert("event_source_url".into(), json!(url));
        }
        if let (Some(purpose), Some(map)) = (&self.ldu_purpose, out.as_object_mut()) {
            if granted.contains(purpose) {
                map.insert("data_processing_options".into(), json!([]));
            } else {
                map.insert("data_processing_options".into(), json!(["LDU"]));
                map.insert("data_processing_options_country".into(), json!(0));
                map.insert("data_processing_options_state".into(), json!(0));
            }
        }
        Some(out)
    }
}

#[async_trait::async_trait]
impl Destination for MetaCapiDestination {
    fn max_batch(&self) -> usize {
        MAX_EVENTS
    }

    async fn send(&self, events: &[OutboxEntry]) -> Vec<Outcome> {
        let mut batch = encode::encode_batch(
            events,
            "meta_capi",
            MAX_EVENT_BYTES,
            |event, entry| match self.encode(event, &entry.granted, &entry.message_id) {
                Some(e) => Mapped::Event(e, ()),
                None => Mapped::Skip(SkipReason::UnsupportedType),
            },
        );
        let tail = match &self.test_event_code {
            Some(code) => format!(r#"],"test_event_code":{}}}"#, json!(code)),
            None => "]}".to_owned(),
        };
        let lens: Vec<usize> = batch.items.iter().map(|i| i.json.len()).collect();
        for range in encode::requests(lens, MAX_EVENTS, MAX_REQUEST_BYTES, tail.len() + 16) {
            let build = |b: &encode::Encoded<()>, positions: &[usize]| {
                let body = encode::splice(
                    r#"{"data":["#,
                    positions.iter().map(|&p| b.items[p].json.as_str()),
                    &tail,
                );
                self.client
                    .post(self.url.clone())
                    .header(CONTENT_TYPE, "application/json")
                    .body(body)
            };
            batch
                .send_items("meta_capi", range.collect(), build, refused_events)
                .await;
        }
        batch.finish()
    }
}

/// The events a 400 names: every object under `error.error_data` (an
/// object, a list, or JSON text of either) with an `event_index`. Meta
/// stores nothing of such a request.
fn refused_events(answer: &Answer) -> Option<Refusal> {
    fn collect(value: &Value, out: &mut Vec<(usize, String)>, depth: usize) {
        if depth > 4 {
            return;
        }
        match value {
            Value::String(text) => {
                if let Ok(inner) = serde_json::from_str::<Value>(text) {
                    if !inner.is_string() {
                        collect(&inner, out, depth + 1);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| collect(v, out, depth + 1)),
            Value::Object(map) => {
                if let Some(i) = map.get("event_index").and_then(Value::as_u64) {
                    let message = map
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("invalid event");
                    if !out.iter().any(|(r, _)| *r == i as usize) {
                        out.push((i as usize, format!("HTTP 400: {message}")));
                    }
                } else {
                    map.values().for_each(|v| collect(v, out, depth + 1));
                }
            }
            _ => {}
        }
    }
    let json = answer.json()?;
    let mut refused = Vec::new();
    collect(json.get("error")?.get("error_data")?, &mut refused, 0);
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
        assert!(MetaCapiConfig::parse(settings(), "x").is_ok());
        let mut s = settings();
        s.insert("pixelid".into(), toml::Value::String("1".into()));
        let err = MetaCapiConfig::parse(s, "destinations[0].settings").unwrap_err();
        assert!(err.to_string().contains("pixelid"), "{err}");
    }

    #[test]
    fn emails_and_phones_are_normalised_then_hashed() {
        let expected = http::sha256_hex("jane.doe@example.com");
        assert_eq!(hash_email("  Jane.Doe@Example.COM ").unwrap(), expected);
        assert_eq!(hash_email(&expected.to_uppercase()).unwrap(), expected);
        assert_eq!(hash_email("no-at-sign"), None);
        assert_eq!(
            hash_phone("+1 (650) 555-1212").unwrap(),
            http::sha256_hex("16505551212")
        );
        assert_eq!(
            hash_phone("0044 20 7946 0958").unwrap(),
            http::sha256_hex("442079460958")
        );
    }

    fn dest() -> MetaCapiDestination {
        MetaCapiDestination {
            client: reqwest::Client::new(),
            url: Url::parse("http://127.0.0.1:9/v21.0/1/events").unwrap(),
            action_source: "website".into(),
            ip_ua_purpose: "marketing".into(),
            ldu_purpose: None,
            test_event_code: None,
        }
    }

    #[test]
    fn ip_and_user_agent_need_their_purpose() {
        let mut e = json!({"type":"track","event":"Order Completed","userId":"u1","timestamp":"2024-05-01T10:00:00Z",
            "traits":{"email":"A@B.co"},"properties":{"revenue":9.5,"currency":"EUR"},
            "context":{"ip":"1.2.3.0","userAgent":"UA","page":{"url":"https://s.example/"},
                       "consent":{"categoryPreferences":{"marketing":true}}}});
        let marketing = GrantedPurposes::from_stored("marketing");
        let m = dest()
            .encode(e.as_object().unwrap(), &marketing, "m-1")
            .unwrap();
        assert_eq!(m["event_name"], "Purchase");
        assert_eq!(m["event_id"], "m-1");
        assert_eq!(m["event_time"], 1_714_557_600);
        assert_eq!(m["user_data"]["em"][0], http::sha256_hex("a@b.co"));
        assert_eq!(m["user_data"]["client_user_agent"], "UA");
        assert_eq!(m["custom_data"]["value"], 9.5);
        assert_eq!(m["event_source_url"], "https://s.example/");
        // GPC: the edge did not grant marketing, whatever the event says.
        e["context"]["consent"]["gpc"] = json!(true);
        let none = GrantedPurposes::default();
        let m = dest().encode(e.as_object().unwrap(), &none, "m-1").unwrap();
        assert!(m["user_data"].get("client_ip_address").is_none());
        assert!(m["user_data"].get("client_user_agent").is_none());
    }

    fn answer(body: serde_json::Value) -> Answer {
        Answer {
            status: reqwest::StatusCode::BAD_REQUEST,
            retry_after: None,
            body: body.to_string().into_bytes(),
        }
    }

    #[test]
    fn a_400_naming_events_by_event_index_refuses_only_those() {
        let listed = refused_events(&answer(json!({"error": {
            "message": "Invalid parameter", "type": "OAuthException", "code": 100,
            "error_data": [{"event_index": 2, "message": "event_time too old"}, {"event_index": 5, "message": "bad em"}],
        }})))
        .unwrap();
        assert_eq!(
            listed.refused,
            [
                (2, "HTTP 400: event_time too old".to_owned()),
                (5, "HTTP 400: bad em".to_owned())
            ]
        );
        // Graph API errors may carry `error_data` as JSON text.
        let text = refused_events(&answer(json!({"error": {
            "message": "Invalid parameter", "code": 100,
            "error_data": "{\"event_index\":14,\"message\":\"Limited Data Use required\",\"code\":2804030}",
        }})))
        .unwrap();
        assert_eq!(text.refused[0].0, 14);
        assert!(refused_events(&answer(
            json!({"error": {"message": "Invalid OAuth access token.", "code": 190}})
        ))
        .is_none());
    }

    #[test]
    fn limited_data_use_follows_the_edge_decision_when_configured() {
        let e = json!({"type":"track","event":"Order Completed","userId":"u1",
            "timestamp":"2024-05-01T10:00:00Z",
            "context":{"consent":{"categoryPreferences":{"marketing":true}}}});
        let e = e.as_object().unwrap();
        // Not configured: the field is not sent.
        let plain = dest()
            .encode(e, &GrantedPurposes::default(), "m-1")
            .unwrap();
        assert!(plain.get("data_processing_options").is_none());
        let mut d = dest();
        d.ldu_purpose = Some("marketing".into());
        // The event claims marketing; the edge did not grant it: LDU.
        let denied = d.encode(e, &GrantedPurposes::default(), "m-1").unwrap();
        assert_eq!(denied["data_processing_options"], json!(["LDU"]));
        assert_eq!(denied["data_processing_options_country"], json!(0));
        assert_eq!(denied["data_processing_options_state"], json!(0));
        let granted = GrantedPurposes::from_stored("analytics,marketing");
        let open = d.encode(e, &granted, "m-1").unwrap();
        assert_eq!(open["data_processing_options"], json!([]));
        assert!(open.get("data_processing_options_country").is_none());
    }

    #[test]
    fn a_purpose_granted_by_the_source_default_opens_the_ip_and_ua_gate() {
        // The event says nothing about consent; the source's default
        // granted marketing at the edge (the bug: the gate read the event).
        let e = json!({"type":"track","event":"Order Completed","userId":"u1",
            "timestamp":"2024-05-01T10:00:00Z","context":{"ip":"1.2.3.0","userAgent":"UA"}});
        let granted = GrantedPurposes::from_stored("analytics,marketing");
        let m = dest()
            .encode(e.as_object().unwrap(), &granted, "m-1")
            .unwrap();
        assert_eq!(m["user_data"]["client_ip_address"], "1.2.3.0");
        assert_eq!(m["user_data"]["client_user_agent"], "UA");
    }
}
