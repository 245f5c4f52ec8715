//! Benchmark rule: does nothing and keeps every event. Measures the host's
//! per-call overhead.
//!
//! Config: none. Build: `cargo xtask build-rules`.

use waymark_rules_sdk::{export_rule, Event, Rule, Verdict};

/// Keeps every event untouched.
pub struct Noop;

impl Rule for Noop {
    fn init(_config: &str) -> Result<Self, String> {
        Ok(Noop)
    }

    fn transform(&mut self, _event: &mut dyn Event) -> Verdict {
        Verdict::Keep
    }
}

export_rule!(Noop);
