//! Enrich: add what the worker knows about the client to `context`.
//!
//! - `context.userAgent` is parsed with the uap-core regexes (vendored in
//!   `assets/uap-core/` with their Apache-2.0 licence) into `context.browser`,
//!   `context.os` and `context.device`, each with `family` and `version`
//!   (device: `family`, `brand`, `model`). Fields the client sent are kept.
//! - `context.ip` is the client address (the event's own `context.ip`, the
//!   trusted proxy header, or the connection), truncated per the source's
//!   `ip` policy.
//!
//! # Design
//! UA parsing walks hundreds of regexes, but real traffic repeats a few
//! hundred user agents, so results are cached by UA string (issue #2).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use serde_json::{json, Map, Value};
use uaparser::{Parser, UserAgentParser};

use crate::config::IpPolicy;
use crate::event::Event;

/// The uap-core regexes, vendored with their licence.
const UAP_REGEXES: &[u8] = include_bytes!("../../assets/uap-core/regexes.yaml");

/// Distinct user agents remembered before the cache is cleared.
const UA_CACHE_CAPACITY: usize = 10_000;

/// Parsed user agent fields, ready to merge into `context`. Fields the
/// parser could not fill (null) are left out, as they are never merged.
#[derive(Debug)]
struct UaFields {
    browser: Map<String, Value>,
    os: Map<String, Value>,
    device: Map<String, Value>,
}

/// Enriches events with user agent and IP fields.
pub struct Enricher {
    parser: UserAgentParser,
    cache: RwLock<HashMap<String, Arc<UaFields>>>,
}

impl std::fmt::Debug for Enricher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enricher").finish_non_exhaustive()
    }
}

impl Enricher {
    /// Compiles the uap-core regexes (about a second; done once at start).
    pub fn new() -> Result<Enricher, String> {
        let parser = UserAgentParser::builder()
            .with_unicode_support(false)
            .build_from_bytes(UAP_REGEXES)
            .map_err(|e| format!("uap-core regexes: {e}"))?;
        Ok(Enricher {
            parser,
            cache: RwLock::new(HashMap::new()),
        })
    }

    /// Adds UA and IP fields to `event`; `ip` is the request's client
    /// address under the source's policy ([`IpField::new`]).
    pub fn enrich(&self, event: &mut Event, ip: &IpField) {
        // The cached fields are shared; only the ones an event lacks are cloned into it.
        if let Some(fields) = event
            .str("context.userAgent")
            .map(|ua| self.parse_cached(ua))
        {
            // `context` holds `userAgent`, so it is an object.
            if let Some(Value::Object(context)) = event.get_mut("context") {
                merge_missing(context, "browser", &fields.browser);
                merge_missing(context, "os", &fields.os);
                merge_missing(context, "device", &fields.device);
            }
        }
        let stated = event
            .str("context.ip")
            .and_then(|s| s.parse::<IpAddr>().ok());
        let shown = match stated {
            Some(stated) if Some(stated) != ip.client => ip.show(stated),
            _ => ip.client_shown.clone(),
        };
        match shown {
            Some(text) => {
                let _ = event.set("context.ip", Value::String(text));
            }
            None => {
                let _ = event.remove("context.ip");
            }
        }
    }

    fn parse_cached(&self, ua: &str) -> Arc<UaFields> {
        if let Some(hit) = self.cache.read().ok().and_then(|c| c.get(ua).cloned()) {
            return hit;
        }
        let fields = Arc::new(self.parse(ua));
        if let Ok(mut cache) = self.cache.write() {
            if cache.len() >= UA_CACHE_CAPACITY {
                cache.clear();
            }
            cache.insert(ua.to_owned(), Arc::clone(&fields));
        }
        fields
    }

    fn parse(&self, ua: &str) -> UaFields {
        let client = self.parser.parse(ua);
        let version = |parts: [Option<&str>; 3]| -> Value {
            let joined: Vec<&str> = parts.into_iter().map_while(|p| p).collect();
            if joined.is_empty() {
                Value::Null
            } else {
                Value::String(joined.join("."))
            }
        };
        let ua_v = &client.user_agent;
        let os_v = &client.os;
        UaFields {
            browser: non_null(json!({
                "family": ua_v.family.as_ref(),
                "version": version([ua_v.major.as_deref(), ua_v.minor.as_deref(), ua_v.patch.as_deref()]),
            })),
            os: non_null(json!({
                "family": os_v.family.as_ref(),
                "version": version([os_v.major.as_deref(), os_v.minor.as_deref(), os_v.patch.as_deref()]),
            })),
            device: non_null(json!({
                "family": client.device.family.as_ref(),
                "brand": client.device.brand.as_deref(),
                "model": client.device.model.as_deref(),
            })),
        }
    }
}

/// The non-null fields of a parsed object.
fn non_null(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(mut fields) => {
            fields.retain(|_, v| !v.is_null());
            fields
        }
        _ => Map::new(),
    }
}

/// Adds each of `fields` to the object `context[key]` unless the client
/// already sent it; a `key` the client set to a non-object is kept as is.
/// Only the inserted values are cloned.
fn merge_missing(context: &mut Map<String, Value>, key: &str, fields: &Map<String, Value>) {
    match context.get_mut(key) {
        Some(Value::Object(existing)) => {
            for (k, v) in fields {
                if !existing.contains_key(k) {
                    existing.insert(k.clone(), v.clone());
                }
            }
        }
        Some(_) => {}
        None => {
            context.insert(key.to_owned(), Value::Object(fields.clone()));
        }
    }
}

/// The `context.ip` a request's events get: the client address under a
/// source's policy, formatted once per request.
#[derive(Debug, Clone)]
pub struct IpField {
    policy: IpPolicy,
    client: Option<IpAddr>,
    client_shown: Option<String>,
}

impl IpField {
    /// The field for a request from `client` (after trusted-proxy resolution).
    pub fn new(client: Option<IpAddr>, policy: IpPolicy) -> IpField {
        let mut field = IpField {
            policy,
            client,
            client_shown: None,
        };
        field.client_shown = client.and_then(|ip| field.show(ip));
        field
    }

    /// How `ip` is written into an event: whole, truncated, or not at all.
    fn show(&self, ip: IpAddr) -> Option<String> {
        match self.policy {
            IpPolicy::Drop => None,
            IpPolicy::Full => Some(ip.to_string()),
            IpPolicy::Truncate => Some(truncate_ip(ip).to_string()),
        }
    }
}

/// Zeroes the host part: the last octet of IPv4, the last 80 bits of IPv6 (a /48).
pub fn truncate_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::from([a, b, c, 0])
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return truncate_ip(IpAddr::V4(v4));
            }
            let s = v6.segments();
            IpAddr::from([s[0], s[1], s[2], 0, 0, 0, 0, 0])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    fn enricher() -> &'static Enricher {
        static E: OnceLock<Enricher> = OnceLock::new();
        E.get_or_init(|| Enricher::new().unwrap())
    }

    fn event(v: Value) -> Event {
        match v {
            Value::Object(m) => Event::from_map(m),
            _ => unreachable!(),
        }
    }

    const CHROME_MAC: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.109 Safari/537.36";
    const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1";

    #[test]
    fn user_agents_become_browser_os_and_device() {
        let mut e = event(json!({"context":{"userAgent": CHROME_MAC}}));
        enricher().enrich(&mut e, &IpField::new(None, IpPolicy::Truncate));
        assert_eq!(e.str("context.browser.family"), Some("Chrome"));
        assert_eq!(e.str("context.browser.version"), Some("120.0.6099"));
        assert_eq!(e.str("context.os.family"), Some("Mac OS X"));
        assert_eq!(e.str("context.device.family"), Some("Mac"));

        let mut e = event(json!({"context":{"userAgent": IPHONE}}));
        enricher().enrich(&mut e, &IpField::new(None, IpPolicy::Truncate));
        assert_eq!(e.str("context.browser.family"), Some("Mobile Safari"));
        assert_eq!(e.str("context.os.family"), Some("iOS"));
        assert_eq!(e.str("context.device.brand"), Some("Apple"));
        assert_eq!(e.str("context.device.model"), Some("iPhone"));
    }

    #[test]
    fn client_supplied_fields_are_kept() {
        let mut e = event(json!({"context":{"userAgent": IPHONE, "os":{"family":"custom"}}}));
        enricher().enrich(&mut e, &IpField::new(None, IpPolicy::Truncate));
        assert_eq!(e.str("context.os.family"), Some("custom"));
        assert_eq!(e.str("context.os.version"), Some("17.1"));
    }

    #[test]
    fn merge_keeps_client_fields_and_order() {
        let mut e = event(json!({"context":{
            "userAgent": CHROME_MAC,
            "device": {"model": "mine", "extra": 1},
            "browser": "not an object",
            "locale": "en",
        }}));
        enricher().enrich(&mut e, &IpField::new(None, IpPolicy::Drop));
        let expected = json!({
            "userAgent": CHROME_MAC,
            "device": {"model": "mine", "extra": 1, "family": "Mac", "brand": "Apple"},
            "browser": "not an object",
            "locale": "en",
            "os": {"family": "Mac OS X", "version": "10.15.7"},
        });
        let context = e.get("context").unwrap();
        assert_eq!(context, &expected);
        let keys: Vec<&str> = context
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["userAgent", "device", "browser", "locale", "os"]);
        let device: Vec<&str> = context["device"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(device, ["model", "extra", "family", "brand"]);
    }

    #[test]
    fn unparsed_fields_are_left_out() {
        let mut e = event(json!({"context":{"userAgent": "nothing-known/x"}}));
        enricher().enrich(&mut e, &IpField::new(None, IpPolicy::Drop));
        assert_eq!(e.str("context.browser.family"), Some("Other"));
        assert_eq!(e.get("context.browser.version"), None);
        assert_eq!(e.get("context.device.brand"), None);
    }

    #[test]
    fn ip_policies() {
        let ip: IpAddr = "203.0.113.77".parse().unwrap();
        let mut e = event(json!({}));
        enricher().enrich(&mut e, &IpField::new(Some(ip), IpPolicy::Truncate));
        assert_eq!(e.str("context.ip"), Some("203.0.113.0"));
        let mut e = event(json!({}));
        enricher().enrich(&mut e, &IpField::new(Some(ip), IpPolicy::Full));
        assert_eq!(e.str("context.ip"), Some("203.0.113.77"));
        let mut e = event(json!({"context":{"ip":"198.51.100.1"}}));
        enricher().enrich(&mut e, &IpField::new(Some(ip), IpPolicy::Drop));
        assert_eq!(e.get("context.ip"), None);
        // An address the event states itself is shown under the same policy.
        let mut e = event(json!({"context":{"ip":"198.51.100.9"}}));
        enricher().enrich(&mut e, &IpField::new(Some(ip), IpPolicy::Truncate));
        assert_eq!(e.str("context.ip"), Some("198.51.100.0"));
        let v6: IpAddr = "2001:db8:85a3:1234:5678:8a2e:370:7334".parse().unwrap();
        assert_eq!(truncate_ip(v6).to_string(), "2001:db8:85a3::");
    }
}
