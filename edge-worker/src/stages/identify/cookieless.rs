//! Cookieless counting: a visitor key for events whose cookie purpose is
//! not granted, on sources with `cookieless = true`.
//!
//! The key is HMAC-SHA256 of (client IP, user agent, source) under a day
//! key derived from the cookie signing secret and the UTC date
//! ([`CookieCodec::cookieless_day_key`](crate::visitor::CookieCodec::cookieless_day_key)).
//! It changes every day, the day key is never stored, and no cookie is
//! read or set for these events.
//!
//! # Design
//! A hash that rotates daily counts visits and sessions of the same day
//! without an identifier that outlives it (issue 13, as Plausible and
//! Fathom count). Deriving the day key from configured secrets, not from
//! randomness, gives every worker of a fleet the same key.

use std::net::IpAddr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::event::Event;

/// `context.waymark.cookieless`: set on events counted without a cookie.
pub const COOKIELESS_KEY: &str = "cookieless";

/// Prefix of cookieless visitor keys, so they never look like a cookie id.
pub const PREFIX: &str = "cl_";

/// One day's key; made per request (two HMACs), never stored.
pub struct CookielessKey([u8; 32]);

impl CookielessKey {
    /// The key for a day key from the cookie codec.
    pub fn new(day_key: [u8; 32]) -> CookielessKey {
        CookielessKey(day_key)
    }

    /// The visitor key of (`ip`, `user_agent`, `source`): `cl_` and 22
    /// base64url characters (128 bits).
    pub fn visitor(&self, ip: Option<IpAddr>, user_agent: &str, source: &str) -> String {
        let Ok(mut m) = Hmac::<Sha256>::new_from_slice(&self.0) else {
            // HMAC takes keys of any length; this branch cannot run.
            return String::new();
        };
        let ip = ip.map(|ip| ip.to_string()).unwrap_or_default();
        // Lengths first, so no two different triples hash alike.
        for part in [ip.as_bytes(), user_agent.as_bytes(), source.as_bytes()] {
            m.update(&(part.len() as u64).to_be_bytes());
            m.update(part);
        }
        let tag = m.finalize().into_bytes();
        let mut out = String::with_capacity(PREFIX.len() + 22);
        out.push_str(PREFIX);
        out.push_str(&URL_SAFE_NO_PAD.encode(&tag[..16]));
        out
    }
}

/// Makes `visitor` the event's `anonymousId` and `context.waymark.visitorId`
/// and marks it `context.waymark.cookieless = true`. The client's own
/// `anonymousId` is dropped: kept, it would be an identifier that outlives
/// the day.
pub fn apply(event: &mut Event, visitor: &str) {
    let id = Value::String(visitor.to_owned());
    let _ = event.set("anonymousId", id.clone());
    event.stamp("visitorId", id);
    event.stamp(COOKIELESS_KEY, Value::Bool(true));
}

/// Whether `apply` marked the event.
pub fn is_cookieless(event: &Event) -> bool {
    event
        .get("context.waymark.cookieless")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_stable_within_a_day_and_differs_by_day_ip_agent_and_source() {
        let day = CookielessKey::new([7; 32]);
        let ip: Option<IpAddr> = "198.51.100.7".parse().ok();
        let a = day.visitor(ip, "UA", "web");
        assert_eq!(a, day.visitor(ip, "UA", "web"));
        assert!(a.starts_with(PREFIX));
        assert_eq!(a.len(), PREFIX.len() + 22);
        assert_ne!(a, CookielessKey::new([8; 32]).visitor(ip, "UA", "web"));
        assert_ne!(a, day.visitor("198.51.100.8".parse().ok(), "UA", "web"));
        assert_ne!(a, day.visitor(ip, "UA2", "web"));
        assert_ne!(a, day.visitor(ip, "UA", "app"));
        // Lengths are hashed, so shifting bytes between parts changes the key.
        assert_ne!(day.visitor(None, "ab", "c"), day.visitor(None, "a", "bc"));
    }
}
