//! Identifiers: which values of an event become nodes of the identity graph,
//! how they are spelt, and which never link.
//!
//! A node key is `<kind>:<value>`: `cookie:<visitor id>`, `anon:<anonymousId>`,
//! `user:<userId>`, or `<trait>:<hex SHA-256 of the normalised value>` for
//! each configured trait key (so `email:…` never holds the address itself).

use sha2::{Digest, Sha256};

use crate::config::IdentityConfig;

/// Kind prefix of the signed visitor cookie's id.
pub(crate) const COOKIE: &str = "cookie";
/// Kind prefix of a Segment `anonymousId`.
pub(crate) const ANON: &str = "anon";
/// Kind prefix of a Segment `userId`.
pub(crate) const USER: &str = "user";

/// Values that never link, compared trimmed and case-insensitively: what
/// broken integrations send when they have no id (PostHog keeps a similar list).
pub(crate) const BUILTIN_JUNK_IDS: &[&str] = &[
    "undefined",
    "null",
    "0",
    "-1",
    "anonymous",
    "guest",
    "none",
    "nil",
    "nan",
    "[object object]",
    "distinct_id",
    "id",
    "email",
    "not_authenticated",
    "true",
    "false",
];

/// The identifier rules from `[identity]`, prepared once.
#[derive(Debug, Clone)]
pub(crate) struct KeyRules {
    /// Lowercased junk values: the built-in list plus `junk_ids`.
    junk: Vec<String>,
    /// Trait names whose values become hashed identifiers, e.g. `email`.
    trait_keys: Vec<String>,
}

impl KeyRules {
    /// Prepares the rules from a validated `[identity]`.
    pub(crate) fn from_config(config: &IdentityConfig) -> KeyRules {
        let mut junk: Vec<String> = BUILTIN_JUNK_IDS.iter().map(|s| (*s).to_owned()).collect();
        junk.extend(config.junk_ids.iter().map(|s| s.trim().to_lowercase()));
        KeyRules {
            junk,
            trait_keys: config.trait_keys.clone(),
        }
    }

    /// The configured trait keys.
    pub(crate) fn trait_keys(&self) -> &[String] {
        &self.trait_keys
    }

    /// Whether `value` is a junk id that must never link.
    pub(crate) fn is_junk(&self, value: &str) -> bool {
        let value = value.trim();
        if value.is_empty() {
            return true;
        }
        // Most real ids are longer than any junk value: skip the scan.
        if value.len() > 20 {
            return false;
        }
        self.junk.iter().any(|j| j.eq_ignore_ascii_case(value))
    }

    /// The node key for `value` of `kind` (`user`, `anon`, `cookie`), or
    /// `None` for a junk value.
    pub(crate) fn key(&self, kind: &str, value: &str) -> Option<String> {
        if self.is_junk(value) {
            return None;
        }
        let mut key = String::with_capacity(kind.len() + 1 + value.len());
        key.push_str(kind);
        key.push(':');
        key.push_str(value);
        Some(key)
    }

    /// The node key of a trait value: trimmed, lowercased, SHA-256 hex.
    pub(crate) fn trait_key(&self, name: &str, value: &str) -> Option<String> {
        let normalised = value.trim().to_lowercase();
        if self.is_junk(&normalised) {
            return None;
        }
        Some(format!(
            "{name}:{}",
            hex::encode(Sha256::digest(normalised.as_bytes()))
        ))
    }
}

/// The suppression hash of a node key: hex SHA-256 of the key text.
pub(crate) fn suppression_hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The kind part of a node key (`user` for `user:42`).
pub(crate) fn kind_of(key: &str) -> &str {
    key.split_once(':').map(|(k, _)| k).unwrap_or(key)
}

/// The value part of a node key (`42` for `user:42`).
pub(crate) fn value_of(key: &str) -> &str {
    key.split_once(':').map(|(_, v)| v).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(extra: &[&str]) -> KeyRules {
        let config = IdentityConfig {
            junk_ids: extra.iter().map(|s| (*s).to_owned()).collect(),
            ..IdentityConfig::default()
        };
        KeyRules::from_config(&config)
    }

    #[test]
    fn junk_ids_never_become_keys() {
        let r = rules(&["Test-User"]);
        for junk in [
            "undefined",
            "NULL",
            " 0 ",
            "-1",
            "Anonymous",
            "guest",
            "",
            "   ",
            "test-user",
        ] {
            assert_eq!(r.key(USER, junk), None, "{junk:?}");
        }
        assert_eq!(r.key(USER, "42").as_deref(), Some("user:42"));
        assert_eq!(r.key(ANON, "00").as_deref(), Some("anon:00"));
    }

    #[test]
    fn trait_keys_are_normalised_and_hashed() {
        let r = rules(&[]);
        let a = r.trait_key("email", " Ada@Example.com ").unwrap();
        let b = r.trait_key("email", "ada@example.com").unwrap();
        assert_eq!(a, b);
        assert!(a.starts_with("email:") && !a.contains('@'));
        assert_eq!(a.len(), "email:".len() + 64);
        assert_eq!(r.trait_key("email", "  "), None);
        assert_eq!(r.trait_key("email", "NULL"), None);
    }

    #[test]
    fn key_parts_split_on_the_first_colon() {
        assert_eq!(kind_of("user:a:b"), "user");
        assert_eq!(value_of("user:a:b"), "a:b");
    }
}
