//! Hostile test rule: spins forever on events with `properties.attack`
//! set to true, and keeps every other event. The host's epoch deadline must
//! stop it.
//!
//! Config: none. Build: `cargo xtask build-rules`.

use waymark_rules_sdk::{export_rule, Event, Rule, Value, Verdict};

/// Loops forever when attacked.
pub struct Spin;

impl Rule for Spin {
    fn init(_config: &str) -> Result<Self, String> {
        Ok(Spin)
    }

    fn transform(&mut self, event: &mut dyn Event) -> Verdict {
        if event.get("properties.attack") == Some(Value::Bool(true)) {
            // Write first, so the host must roll the write back.
            let _ = event.set("properties.touched", Value::Bool(true));
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        Verdict::Keep
    }
}

export_rule!(Spin);
