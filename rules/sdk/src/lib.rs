//! Write Waymark transform rules in Rust.
//!
//! A rule is a type implementing [`Rule`], exported with [`export_rule!`]
//! and built as a WebAssembly component for the `waymark:rules@0.1.0` world
//! (see `rules/wit/rules.wit`). The worker calls [`Rule::init`] once per
//! instance with the rule's `config` table as JSON, then
//! [`Rule::transform`] once per event.
//!
//! # Overview
//!
//! * [`Rule`]: the trait a rule implements.
//! * [`Event`]: the event, read and written by dotted path. In the worker it
//!   is the host's `event` resource; in unit tests it is a [`JsonEvent`].
//! * [`Value`]: a value at a path (typed scalars, JSON text for subtrees).
//! * [`Verdict`]: keep the event, or drop it with a reason.
//! * [`log`]: rate-limited logging into the worker's log.
//!
//! # Example
//!
//! ```
//! use waymark_rules_sdk::{export_rule, Event, Rule, Value, Verdict};
//!
//! /// Adds `properties.price_cents` from `properties.price`.
//! struct Cents;
//!
//! impl Rule for Cents {
//!     fn init(_config: &str) -> Result<Self, String> {
//!         Ok(Cents)
//!     }
//!
//!     fn transform(&mut self, event: &mut dyn Event) -> Verdict {
//!         if let Some(price) = event.get("properties.price").and_then(|v| v.as_f64()) {
//!             let _ = event.set("properties.price_cents", Value::Int((price * 100.0).round() as i64));
//!         }
//!         Verdict::Keep
//!     }
//! }
//!
//! export_rule!(Cents);
//!
//! // Unit tests run the same logic on a JSON-backed event.
//! let mut event = waymark_rules_sdk::JsonEvent::from_json(r#"{"type":"track","properties":{"price":9.99}}"#).unwrap();
//! assert_eq!(Cents.transform(&mut event), Verdict::Keep);
//! assert_eq!(event.get("properties.price_cents"), Some(Value::Int(999)));
//! ```
//!
//! # Building
//!
//! Rules target `wasm32-unknown-unknown` and are turned into components with
//! `wit-component` (no WASI at all, so the worker grants nothing beyond the
//! WIT): `cargo xtask build-rules` does both for the examples. For your own
//! crate (`crate-type = ["cdylib", "rlib"]`):
//!
//! ```text
//! cargo build --release --target wasm32-unknown-unknown
//! wasm-tools component new target/wasm32-unknown-unknown/release/my_rule.wasm -o my_rule.wasm
//! ```
#![deny(missing_docs)]

mod event;
mod json_event;
pub mod log;

pub use event::{Event, PathError, Value, Verdict};
pub use json_event::JsonEvent;

/// A transform rule.
///
/// One value of the type lives in each warm instance in the worker. The
/// worker may run several instances of a rule side by side and recycles
/// them (after a number of calls, above a memory mark, after any trap), so
/// state kept in `self` is per instance and best-effort.
pub trait Rule: Sized + 'static {
    /// Builds the rule from its `config` table in `waymark.toml`, given as
    /// JSON text (`{}` when the table is absent). An error refuses the rule
    /// at start or on reload and is logged with the rule's name.
    ///
    /// [`parse_config`] turns the text into a `serde` type.
    fn init(config: &str) -> Result<Self, String>;

    /// Transforms one event in place and says whether it goes on.
    ///
    /// A panic here traps: the worker discards the instance and applies the
    /// rule's `on_error` policy to the event (pass it on unchanged, drop it
    /// or quarantine it).
    fn transform(&mut self, event: &mut dyn Event) -> Verdict;
}

/// Parses a rule's config JSON into `T`, with an error that names the
/// problem (unknown field, wrong type) for the worker's log.
pub fn parse_config<T: serde::de::DeserializeOwned>(config: &str) -> Result<T, String> {
    serde_json::from_str(config).map_err(|e| format!("invalid config: {e}"))
}

/// Exports a [`Rule`] type as the component's `init` and `transform`.
///
/// Use it once per crate, at the top level. On targets other than wasm32
/// it expands to nothing, so the crate's unit tests build natively.
#[macro_export]
macro_rules! export_rule {
    ($rule:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct WaymarkRuleExport;

            ::std::thread_local! {
                static RULE: ::std::cell::RefCell<::std::option::Option<$rule>> =
                    const { ::std::cell::RefCell::new(::std::option::Option::None) };
            }

            impl $crate::__private::Guest for WaymarkRuleExport {
                fn init(
                    config: ::std::string::String,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    let rule = <$rule as $crate::Rule>::init(&config)?;
                    RULE.with(|slot| *slot.borrow_mut() = ::std::option::Option::Some(rule));
                    ::std::result::Result::Ok(())
                }

                fn transform(event: &$crate::__private::WitEvent) -> $crate::__private::WitVerdict {
                    RULE.with(|slot| {
                        $crate::__private::transform::<$rule>(&mut slot.borrow_mut(), event)
                    })
                }
            }

    $crate::__private::export!(WaymarkRuleExport with_types_in $crate::__private::bindings);
        };
    };
}

/// Glue used by [`export_rule!`]; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::bindings;
    pub use crate::bindings::export;
    pub use crate::bindings::waymark::rules::types::{Event as WitEvent, Verdict as WitVerdict};
    pub use crate::bindings::Guest;

    /// Runs the rule on the host's event; an uninitialised rule traps.
    pub fn transform<R: crate::Rule>(rule: &mut Option<R>, event: &WitEvent) -> WitVerdict {
        let Some(rule) = rule.as_mut() else {
            panic!("transform called before init");
        };
        let mut view = crate::event::HostEvent(event);
        rule.transform(&mut view).into()
    }
}

/// The bindings `wit-bindgen` generates from `rules/wit/`.
#[doc(hidden)]
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "rule",
        pub_export_macro: true,
        default_bindings_module: "waymark_rules_sdk::__private::bindings",
    });
}
