//! pii-hash: normalises email addresses and phone numbers and replaces them
//! with their SHA-256 hex digest, the form ad platforms (Meta CAPI, Google
//! Enhanced Conversions) match on.
//!
//! Normalisation: emails are trimmed and lowercased; phones keep their
//! digits only (a leading `+` is dropped, as Meta expects). Values that
//! already look like a SHA-256 hex digest are left alone, so the rule is
//! idempotent.
//!
//! Config keys:
//! - `email_fields` (list of paths, default `["traits.email", "context.traits.email", "properties.email"]`)
//! - `phone_fields` (list of paths, default `["traits.phone", "context.traits.phone", "properties.phone"]`)
//!
//! Build: `cargo xtask build-rules` (writes `target/rules/components/pii-hash.wasm`).

use serde::Deserialize;
use sha2::{Digest, Sha256};
use waymark_rules_sdk::{export_rule, parse_config, Event, Rule, Value, Verdict};

/// The rule's config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Paths holding email addresses.
    #[serde(default = "default_email_fields")]
    pub email_fields: Vec<String>,
    /// Paths holding phone numbers.
    #[serde(default = "default_phone_fields")]
    pub phone_fields: Vec<String>,
}

fn default_email_fields() -> Vec<String> {
    ["traits.email", "context.traits.email", "properties.email"]
        .map(String::from)
        .to_vec()
}

fn default_phone_fields() -> Vec<String> {
    ["traits.phone", "context.traits.phone", "properties.phone"]
        .map(String::from)
        .to_vec()
}

/// Lowercases and trims an email address.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Keeps the digits of a phone number.
pub fn normalize_phone(phone: &str) -> String {
    phone.chars().filter(char::is_ascii_digit).collect()
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    let mut out = String::with_capacity(64);
    for byte in digest {
        out.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(byte & 0xf)]));
    }
    out
}

/// Whether a value is already a SHA-256 hex digest.
pub fn is_hashed(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Hashes PII fields in place.
pub struct PiiHash {
    config: Config,
}

impl PiiHash {
    fn hash_fields(event: &mut dyn Event, fields: &[String], normalize: fn(&str) -> String) {
        for path in fields {
            let Some(raw) = event.get_str(path) else {
                continue;
            };
            if is_hashed(&raw) {
                continue;
            }
            let normalized = normalize(&raw);
            if normalized.is_empty() {
                // Nothing identifying is left: remove rather than hash "".
                let _ = event.remove(path);
                continue;
            }
            let _ = event.set(path, Value::Text(sha256_hex(&normalized)));
        }
    }
}

impl Rule for PiiHash {
    fn init(config: &str) -> Result<Self, String> {
        Ok(PiiHash {
            config: parse_config(config)?,
        })
    }

    fn transform(&mut self, event: &mut dyn Event) -> Verdict {
        Self::hash_fields(event, &self.config.email_fields, normalize_email);
        Self::hash_fields(event, &self.config.phone_fields, normalize_phone);
        Verdict::Keep
    }
}

export_rule!(PiiHash);

#[cfg(test)]
mod tests {
    use super::*;
    use waymark_rules_sdk::JsonEvent;

    #[test]
    fn emails_are_normalised_then_hashed() {
        let mut rule = PiiHash::init("{}").unwrap();
        let mut e = JsonEvent::from_json(
            r#"{"type":"identify","traits":{"email":"  Jane.Doe@Example.COM ","phone":"+1 (555) 010-0000","name":"Jane"}}"#,
        )
        .unwrap();
        assert_eq!(rule.transform(&mut e), Verdict::Keep);
        assert_eq!(
            e.get_str("traits.email").unwrap(),
            sha256_hex("jane.doe@example.com")
        );
        assert_eq!(
            e.get_str("traits.phone").unwrap(),
            sha256_hex("15550100000")
        );
        assert_eq!(e.get_str("traits.name").as_deref(), Some("Jane"));
    }

    #[test]
    fn known_digest_matches_sha256() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn hashing_twice_changes_nothing() {
        let mut rule =
            PiiHash::init(r#"{"email_fields":["properties.e"],"phone_fields":[]}"#).unwrap();
        let mut e = JsonEvent::from_json(r#"{"properties":{"e":"a@b.co"}}"#).unwrap();
        rule.transform(&mut e);
        let once = e.clone();
        rule.transform(&mut e);
        assert_eq!(e, once);
    }

    #[test]
    fn empty_phone_is_removed_and_unknown_config_is_refused() {
        let mut rule = PiiHash::init("{}").unwrap();
        let mut e = JsonEvent::from_json(r#"{"traits":{"phone":"n/a"}}"#).unwrap();
        rule.transform(&mut e);
        assert_eq!(e.get("traits.phone"), None);
        assert!(PiiHash::init(r#"{"emails":[]}"#).is_err());
    }
}
