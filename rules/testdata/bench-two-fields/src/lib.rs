//! Benchmark rule: reads two fields and writes two fields, the case the
//! issue's "2 µs per event" target is about: `properties.price` (number)
//! becomes `properties.price_cents` (integer), and `properties.currency`
//! is upper-cased in place.
//!
//! Config: none. Build: `cargo xtask build-rules`.

use waymark_rules_sdk::{export_rule, Event, Rule, Value, Verdict};

/// Reads and writes two fields.
pub struct TwoFields;

impl Rule for TwoFields {
    fn init(_config: &str) -> Result<Self, String> {
        Ok(TwoFields)
    }

    fn transform(&mut self, event: &mut dyn Event) -> Verdict {
        if let Some(price) = event.get("properties.price").and_then(|v| v.as_f64()) {
            let _ = event.set(
                "properties.price_cents",
                Value::Int((price * 100.0).round() as i64),
            );
        }
        if let Some(currency) = event.get_str("properties.currency") {
            let _ = event.set(
                "properties.currency",
                Value::Text(currency.to_ascii_uppercase()),
            );
        }
        Verdict::Keep
    }
}

export_rule!(TwoFields);
