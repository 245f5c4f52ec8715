//! Benchmark rule for the alternative ABI (the whole event as JSON text in
//! and out): the same two-field change as `bench-two-fields`, so the two
//! ABIs can be compared in `edge-worker/benches/rules.rs`.
//!
//! Config: none. Build: `cargo xtask build-rules`.

#[allow(missing_docs)]
mod bindings {
    wit_bindgen::generate!({ path: "wit", world: "json-rule" });
}

use bindings::Outcome;
use serde_json::{Map, Value};

/// Applies the two-field change to a parsed event.
pub fn change(event: &mut Map<String, Value>) {
    let Some(Value::Object(props)) = event.get_mut("properties") else {
        return;
    };
    if let Some(price) = props.get("price").and_then(Value::as_f64) {
        props.insert(
            "price_cents".into(),
            Value::from((price * 100.0).round() as i64),
        );
    }
    if let Some(currency) = props.get("currency").and_then(Value::as_str) {
        let upper = currency.to_ascii_uppercase();
        props.insert("currency".into(), Value::String(upper));
    }
}

/// The exported rule (exported on wasm32 only).
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
struct JsonRule;

impl bindings::Guest for JsonRule {
    fn init(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn transform(event: String) -> Outcome {
        let mut parsed: Map<String, Value> = match serde_json::from_str(&event) {
            Ok(map) => map,
            Err(e) => return Outcome::Drop(e.to_string()),
        };
        change(&mut parsed);
        match serde_json::to_string(&parsed) {
            Ok(text) => Outcome::Keep(text),
            Err(e) => Outcome::Drop(e.to_string()),
        }
    }
}

#[cfg(target_arch = "wasm32")]
bindings::export!(JsonRule with_types_in bindings);
