//! Hostile test rule: allocates without bound on events with
//! `properties.attack` set to true, and keeps every other event. The host's
//! memory cap must stop it.
//!
//! Config: none. Build: `cargo xtask build-rules`.

use waymark_rules_sdk::{export_rule, Event, Rule, Value, Verdict};

/// Grows memory forever when attacked.
pub struct Grow {
    hoard: Vec<Vec<u8>>,
}

impl Rule for Grow {
    fn init(_config: &str) -> Result<Self, String> {
        Ok(Grow { hoard: Vec::new() })
    }

    fn transform(&mut self, event: &mut dyn Event) -> Verdict {
        if event.get("properties.attack") == Some(Value::Bool(true)) {
            loop {
                // 1 MiB at a time, touched so it is really committed.
                self.hoard.push(std::hint::black_box(vec![7u8; 1 << 20]));
            }
        }
        Verdict::Keep
    }
}

export_rule!(Grow);
