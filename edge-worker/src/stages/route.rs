//! Route: which destinations an event goes to, by filter and by consent.

use std::sync::Arc;

use super::consent::{decide, ConsentState};
use crate::config::{DestinationConfig, SourceConfig};
use crate::event::{Event, EventType};

/// One destination's routing rules, prepared at build.
#[derive(Debug, Clone)]
struct Target {
    name: Arc<str>,
    include_types: Vec<EventType>,
    exclude_types: Vec<EventType>,
    include_events: Vec<String>,
    exclude_events: Vec<String>,
    consent: Vec<String>,
}

/// Where one event goes, and why it does not go elsewhere.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Routes {
    /// Destinations the event is enqueued for.
    pub to: Vec<Arc<str>>,
    /// Destinations that want the event but lack a granted purpose
    /// (`true` = denied, `false` = still pending).
    pub consent_blocked: Vec<(Arc<str>, bool)>,
}

/// The routing table for all destinations.
#[derive(Debug, Clone, Default)]
pub struct Router {
    targets: Vec<Target>,
}

impl Router {
    /// Prepares the table from config (already validated).
    pub fn new(destinations: &[DestinationConfig]) -> Router {
        let types = |names: &[String]| names.iter().filter_map(|n| EventType::parse(n)).collect();
        Router {
            targets: destinations
                .iter()
                .map(|d| Target {
                    name: Arc::from(d.name.as_str()),
                    include_types: types(&d.filter.include_types),
                    exclude_types: types(&d.filter.exclude_types),
                    include_events: d.filter.include_events.clone(),
                    exclude_events: d.filter.exclude_events.clone(),
                    consent: d.consent.clone(),
                })
                .collect(),
        }
    }

    /// Routes one event from `source`.
    pub fn route(&self, event: &Event, source: &SourceConfig) -> Routes {
        let mut routes = Routes::default();
        let kind = event.event_type();
        let name = event.name();
        for target in &self.targets {
            if !target.accepts(kind, name) {
                continue;
            }
            match decide(event, &target.consent, &source.default_consent) {
                ConsentState::Granted => routes.to.push(Arc::clone(&target.name)),
                ConsentState::Denied => routes
                    .consent_blocked
                    .push((Arc::clone(&target.name), true)),
                ConsentState::Pending => routes
                    .consent_blocked
                    .push((Arc::clone(&target.name), false)),
            }
        }
        routes
    }
}

impl Target {
    fn accepts(&self, kind: EventType, name: Option<&str>) -> bool {
        if !self.include_types.is_empty() && !self.include_types.contains(&kind) {
            return false;
        }
        if self.exclude_types.contains(&kind) {
            return false;
        }
        let listed = |list: &[String]| name.is_some_and(|n| list.iter().any(|e| e == n));
        if !self.include_events.is_empty() && !listed(&self.include_events) {
            return false;
        }
        !listed(&self.exclude_events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use serde_json::{json, Value};

    fn config() -> Config {
        Config::parse(
            r#"
[identity]
keys = [{ id = "k1", secret = "0123456789abcdef0123456789abcdef" }]
[[sources]]
name = "web"
write_key = "wk_test"
default_consent = { analytics = "granted", marketing = "pending" }
[[destinations]]
name = "all"
type = "file"
path = "a.ndjson"
[[destinations]]
name = "ads"
type = "file"
path = "b.ndjson"
consent = ["marketing"]
filter = { include_types = ["track"], exclude_events = ["Debug"] }
"#,
        )
        .unwrap()
    }

    fn event(v: Value) -> Event {
        match v {
            Value::Object(m) => Event::from_map(m),
            _ => unreachable!(),
        }
    }

    #[test]
    fn filters_and_consent_decide_routes() {
        let c = config();
        let router = Router::new(&c.destinations);
        let source = &c.sources[0];
        let pending = router.route(&event(json!({"type":"track","event":"Buy"})), source);
        assert_eq!(pending.to, vec![Arc::from("all")]);
        assert_eq!(pending.consent_blocked, vec![(Arc::from("ads"), false)]);

        let granted = event(
            json!({"type":"track","event":"Buy","context":{"consent":{"categoryPreferences":{"marketing":true}}}}),
        );
        assert_eq!(router.route(&granted, source).to.len(), 2);

        let page = event(
            json!({"type":"page","context":{"consent":{"categoryPreferences":{"marketing":true}}}}),
        );
        assert_eq!(router.route(&page, source).to, vec![Arc::from("all")]);

        let debug = event(
            json!({"type":"track","event":"Debug","context":{"consent":{"categoryPreferences":{"marketing":true}}}}),
        );
        assert_eq!(router.route(&debug, source).to, vec![Arc::from("all")]);
    }
}
