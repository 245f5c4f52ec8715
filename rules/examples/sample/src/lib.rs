//! sample: keeps a configured fraction of events and drops the rest with
//! the reason `sampled-out`. The choice is deterministic by `messageId`
//! (the first 8 bytes of its SHA-256, as a fraction of 2^64), so a retried
//! event gets the same verdict on every worker.
//!
//! Config keys:
//! - `rate` (number in 0..=1, required): the fraction to keep.
//! - `events` (list of event names, default `[]` = all): sample only these
//!   (`event` for track, `name` for page/screen); others are kept.
//!
//! Build: `cargo xtask build-rules` (writes `target/rules/components/sample.wasm`).

use serde::Deserialize;
use sha2::{Digest, Sha256};
use waymark_rules_sdk::{export_rule, parse_config, Event, Rule, Verdict};

/// The rule's config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Fraction of events to keep, 0 to 1.
    pub rate: f64,
    /// Names to sample; empty samples everything.
    #[serde(default)]
    pub events: Vec<String>,
}

/// Where a `messageId` falls in [0, 1).
pub fn bucket(message_id: &str) -> f64 {
    let digest = Sha256::digest(message_id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // 2^-64 scales the 64-bit prefix into [0, 1).
    u64::from_be_bytes(first) as f64 / 18_446_744_073_709_551_616.0
}

/// Keeps a deterministic fraction of events.
pub struct Sample {
    config: Config,
}

impl Rule for Sample {
    fn init(config: &str) -> Result<Self, String> {
        let config: Config = parse_config(config)?;
        if !(0.0..=1.0).contains(&config.rate) {
            return Err(format!("rate: {} is out of range; use 0 to 1", config.rate));
        }
        Ok(Sample { config })
    }

    fn transform(&mut self, event: &mut dyn Event) -> Verdict {
        if !self.config.events.is_empty() {
            let name = event.name().unwrap_or_default();
            if !self.config.events.contains(&name) {
                return Verdict::Keep;
            }
        }
        if bucket(&event.message_id()) < self.config.rate {
            Verdict::Keep
        } else {
            Verdict::Drop("sampled-out".to_owned())
        }
    }
}

export_rule!(Sample);

#[cfg(test)]
mod tests {
    use super::*;
    use waymark_rules_sdk::JsonEvent;

    fn event(id: &str, name: &str) -> JsonEvent {
        JsonEvent::from_json(&format!(
            r#"{{"type":"track","event":"{name}","messageId":"{id}"}}"#
        ))
        .unwrap()
    }

    #[test]
    fn keeps_about_the_configured_fraction_deterministically() {
        let mut rule = Sample::init(r#"{"rate":0.25}"#).unwrap();
        let kept = (0..4000)
            .filter(|i| rule.transform(&mut event(&format!("msg-{i}"), "x")) == Verdict::Keep)
            .count();
        assert!((850..1150).contains(&kept), "kept {kept} of 4000");
        let first = rule.transform(&mut event("msg-7", "x"));
        assert_eq!(rule.transform(&mut event("msg-7", "x")), first);
    }

    #[test]
    fn only_listed_events_are_sampled() {
        let mut rule = Sample::init(r#"{"rate":0.0,"events":["Scroll"]}"#).unwrap();
        assert_eq!(
            rule.transform(&mut event("a", "Scroll")),
            Verdict::Drop("sampled-out".into())
        );
        assert_eq!(rule.transform(&mut event("a", "Purchase")), Verdict::Keep);
    }

    #[test]
    fn rate_must_be_a_fraction() {
        assert!(Sample::init(r#"{"rate":1.5}"#).is_err());
        assert!(Sample::init(r#"{}"#).is_err());
        assert!(Sample::init(r#"{"rate":1}"#).is_ok());
    }
}
