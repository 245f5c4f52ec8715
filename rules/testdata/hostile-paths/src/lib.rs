//! Hostile test rule: writes garbage paths and values (empty, too long, too
//! deep, read-only, through scalars, invalid JSON, NaN, oversized), ignores
//! every error, then records how many writes were refused in
//! `properties.refused` and keeps the event.
//!
//! Config: none. Build: `cargo xtask build-rules`.

use waymark_rules_sdk::{export_rule, Event, Rule, Value, Verdict};

/// Tries every kind of bad write.
pub struct Garbage;

impl Rule for Garbage {
    fn init(_config: &str) -> Result<Self, String> {
        Ok(Garbage)
    }

    fn transform(&mut self, event: &mut dyn Event) -> Verdict {
        let long = "x".repeat(300);
        let deep = vec!["d"; 40].join(".");
        let big = "y".repeat(40 * 1024);
        let attempts: Vec<(&str, Value)> = vec![
            ("", Value::Null),
            (".", Value::Null),
            ("a..b", Value::Null),
            ("trailing.", Value::Null),
            (&long, Value::Null),
            (&deep, Value::Null),
            ("type", Value::from("identify")),
            ("messageId", Value::from("forged")),
            ("receivedAt", Value::from("1970-01-01T00:00:00Z")),
            ("context.ip.inner", Value::Null),
            ("properties.bad_json", Value::Json("{\"unclosed\":".into())),
            (
                "properties.deep_json",
                Value::Json("[".repeat(100) + &"]".repeat(100)),
            ),
            ("properties.nan", Value::Float(f64::NAN)),
            ("properties.big1", Value::Text(big.clone())),
            ("properties.big2", Value::Text(big.clone())),
        ];
        let mut refused: i64 = 0;
        for (path, value) in attempts {
            if event.set(path, value).is_err() {
                refused += 1;
            }
        }
        for path in ["", "messageId", "x..y"] {
            if event.remove(path).is_err() {
                refused += 1;
            }
        }
        // Strange but legal: unicode keys work.
        let _ = event.set("properties.ünï.cødé", Value::Int(1));
        let _ = event.remove("properties.big1");
        let _ = event.set("properties.refused", Value::Int(refused));
        Verdict::Keep
    }
}

export_rule!(Garbage);
