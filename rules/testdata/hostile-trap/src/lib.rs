//! Hostile test rule: panics (a trap) on events with `properties.attack`
//! set to true, and keeps every other event. Also refuses a config with
//! `{"fail": true}` at init.
//!
//! Config: `fail` (bool, default false). Build: `cargo xtask build-rules`.

use waymark_rules_sdk::{export_rule, Event, Rule, Value, Verdict};

/// Panics when attacked.
pub struct Panic;

impl Rule for Panic {
    fn init(config: &str) -> Result<Self, String> {
        if config.contains("\"fail\":true") {
            return Err("asked to fail".to_owned());
        }
        Ok(Panic)
    }

    fn transform(&mut self, event: &mut dyn Event) -> Verdict {
        if event.get("properties.attack") == Some(Value::Bool(true)) {
            let _ = event.set("properties.touched", Value::Bool(true));
            panic!("attacked");
        }
        Verdict::Keep
    }
}

export_rule!(Panic);
