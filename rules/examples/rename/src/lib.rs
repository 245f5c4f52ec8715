//! rename: config-driven renaming of events and mapping of properties, for
//! destinations that expect other names (`Order Completed` → `Purchase`,
//! `properties.total` → `properties.value`).
//!
//! Event renames apply to `track` events (`event`) and to `page`/`screen`
//! names (`name`). Property moves apply to every event; a move whose source
//! is missing does nothing, and a move onto an existing field overwrites it.
//!
//! Config keys:
//! - `events` (table of old name → new name, default `{}`)
//! - `properties` (table of source path → target path, default `{}`),
//!   for example `{ "properties.total" = "properties.value" }`
//! - `drop_unmapped` (bool, default `false`): drop `track` events whose name
//!   is not in `events`, with the reason `unmapped`.
//!
//! Build: `cargo xtask build-rules` (writes `target/rules/components/rename.wasm`).

use std::collections::BTreeMap;

use serde::Deserialize;
use waymark_rules_sdk::{export_rule, log, parse_config, Event, Rule, Value, Verdict};

/// The rule's config.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Old event name → new event name.
    #[serde(default)]
    pub events: BTreeMap<String, String>,
    /// Source path → target path.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Drop track events with no mapping.
    #[serde(default)]
    pub drop_unmapped: bool,
}

/// Renames events and moves properties.
pub struct Rename {
    config: Config,
}

impl Rule for Rename {
    fn init(config: &str) -> Result<Self, String> {
        let config: Config = parse_config(config)?;
        for (from, to) in &config.properties {
            if from == to {
                return Err(format!("properties: `{from}` maps onto itself"));
            }
        }
        Ok(Rename { config })
    }

    fn transform(&mut self, event: &mut dyn Event) -> Verdict {
        // Step 1: rename the event itself.
        let field = match event.event_type().as_str() {
            "track" => "event",
            "page" | "screen" => "name",
            _ => "",
        };
        if !field.is_empty() {
            if let Some(name) = event.name() {
                match self.config.events.get(&name) {
                    Some(new_name) => {
                        let _ = event.set(field, Value::Text(new_name.clone()));
                    }
                    None if self.config.drop_unmapped && field == "event" => {
                        return Verdict::Drop("unmapped".to_owned());
                    }
                    None => {}
                }
            }
        }
        // Step 2: move properties.
        for (from, to) in &self.config.properties {
            let Some(value) = event.get(from) else {
                continue;
            };
            match event.set(to, value) {
                Ok(()) => {
                    let _ = event.remove(from);
                }
                Err(e) => log::warn(&format!("cannot move `{from}` to `{to}`: {e}")),
            }
        }
        Verdict::Keep
    }
}

export_rule!(Rename);

#[cfg(test)]
mod tests {
    use super::*;
    use waymark_rules_sdk::JsonEvent;

    const CONFIG: &str = r#"{"events":{"Order Completed":"Purchase","Home":"Landing"},"properties":{"properties.total":"properties.value","context.page.path":"properties.path"}}"#;

    #[test]
    fn track_events_are_renamed_and_properties_moved() {
        let mut rule = Rename::init(CONFIG).unwrap();
        let mut e = JsonEvent::from_json(
            r#"{"type":"track","event":"Order Completed","properties":{"total":42.5,"currency":"EUR"}}"#,
        )
        .unwrap();
        assert_eq!(rule.transform(&mut e), Verdict::Keep);
        assert_eq!(e.name().as_deref(), Some("Purchase"));
        assert_eq!(e.get("properties.value"), Some(Value::Float(42.5)));
        assert_eq!(e.get("properties.total"), None);
        assert_eq!(e.get_str("properties.currency").as_deref(), Some("EUR"));
    }

    #[test]
    fn page_names_are_renamed_and_subtrees_move_whole() {
        let mut rule = Rename::init(CONFIG).unwrap();
        let mut e = JsonEvent::from_json(
            r#"{"type":"page","name":"Home","context":{"page":{"path":"/"}}}"#,
        )
        .unwrap();
        rule.transform(&mut e);
        assert_eq!(e.name().as_deref(), Some("Landing"));
        assert_eq!(e.get_str("properties.path").as_deref(), Some("/"));
    }

    #[test]
    fn unmapped_events_are_dropped_when_asked() {
        let mut rule = Rename::init(r#"{"events":{"A":"B"},"drop_unmapped":true}"#).unwrap();
        let mut e = JsonEvent::from_json(r#"{"type":"track","event":"Z"}"#).unwrap();
        assert_eq!(rule.transform(&mut e), Verdict::Drop("unmapped".into()));
        assert!(Rename::init(r#"{"properties":{"a":"a"}}"#).is_err());
    }
}
