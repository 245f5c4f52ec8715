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
    /// Shared copy of `consent`, handed to releases.
    purposes: Arc<[String]>,
    /// How long a pending event is held, in seconds; `None`: not held, dropped.
    hold_secs: Option<u64>,
}

/// Default time a pending event is held for a `wait_for_consent` destination, in seconds.
pub const DEFAULT_CONSENT_HOLD_SECS: u64 = 1_800;

/// Where one event goes, and why it does not go elsewhere.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Routes {
    /// Destinations the event is enqueued for.
    pub to: Vec<Arc<str>>,
    /// Destinations that want the event but lack a granted purpose
    /// (`true` = denied, `false` = still pending and the destination does
    /// not wait). Held events are not in this list.
    pub consent_blocked: Vec<(Arc<str>, bool)>,
    /// What `wait_for_consent` destinations do with this event's visitor.
    pub holds: HoldRoutes,
}

/// Consent holds a routed event causes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HoldRoutes {
    /// Destinations that hold this (pending) event, with the hold in seconds.
    pub held: Vec<(Arc<str>, u64)>,
    /// Destinations whose earlier holds for this visitor this event settles:
    /// `Some(purposes)` granted (release), `None` denied (drop).
    pub settled: Vec<(Arc<str>, Option<Purposes>)>,
}

/// A destination's required purposes, shared.
pub type Purposes = Arc<[String]>;

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
                    purposes: Arc::from(d.consent.as_slice()),
                    hold_secs: d
                        .wait_for_consent
                        .then(|| d.consent_hold_secs.unwrap_or(DEFAULT_CONSENT_HOLD_SECS)),
                })
                .collect(),
        }
    }

    /// Whether a destination named `name` is configured.
    pub fn has_destination(&self, name: &str) -> bool {
        self.targets.iter().any(|t| &*t.name == name)
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
            let state = decide(event, &target.consent, &source.default_consent);
            if target.hold_secs.is_some() && state != ConsentState::Pending {
                let granted =
                    (state == ConsentState::Granted).then(|| Arc::clone(&target.purposes));
                routes
                    .holds
                    .settled
                    .push((Arc::clone(&target.name), granted));
            }
            match (state, target.hold_secs) {
                (ConsentState::Granted, _) => routes.to.push(Arc::clone(&target.name)),
                (ConsentState::Denied, _) => routes
                    .consent_blocked
                    .push((Arc::clone(&target.name), true)),
                (ConsentState::Pending, Some(secs)) => {
                    routes.holds.held.push((Arc::clone(&target.name), secs))
                }
                (ConsentState::Pending, None) => routes
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

    #[test]
    fn waiting_destinations_hold_pending_events_and_settle_on_decisions() {
        let mut c = config();
        c.destinations[1].wait_for_consent = true;
        c.destinations[1].consent_hold_secs = Some(60);
        let router = Router::new(&c.destinations);
        let source = &c.sources[0];
        let pending = router.route(&event(json!({"type":"track","event":"Buy"})), source);
        assert!(pending.consent_blocked.is_empty());
        assert_eq!(pending.holds.held, vec![(Arc::from("ads"), 60)]);
        assert!(pending.holds.settled.is_empty());

        let granted = router.route(&event(json!({"type":"track","event":"Buy","context":{"consent":{"categoryPreferences":{"marketing":true}}}})), source);
        assert_eq!(granted.to.len(), 2);
        assert_eq!(granted.holds.settled.len(), 1);
        assert_eq!(
            granted.holds.settled[0].1.as_deref(),
            Some(&["marketing".to_owned()][..])
        );

        let gpc = router.route(
            &event(json!({"type":"track","event":"Buy","context":{"consent":{"gpc":true}}})),
            source,
        );
        assert_eq!(gpc.consent_blocked, vec![(Arc::from("ads"), true)]);
        assert_eq!(gpc.holds.settled, vec![(Arc::from("ads"), None)]);
    }

    /// Property: over random consent states, defaults, GPC and destination
    /// purposes, an event is routed to a destination only when every one of
    /// its purposes is granted by the event or, when unmentioned, the default.
    #[test]
    fn nothing_reaches_a_destination_without_its_purposes() {
        use crate::config::ConsentDefault;
        use rand::{Rng, SeedableRng};
        let purposes = ["analytics", "marketing", "ads", "functional"];
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for _ in 0..2_000 {
            let mut text = String::from(
                "[identity]\nkeys = [{ id = \"k1\", secret = \"0123456789abcdef0123456789abcdef\" }]\n[[sources]]\nname = \"web\"\nwrite_key = \"wk_test\"\n",
            );
            let mut defaults = Vec::new();
            for p in purposes {
                match rng.gen_range(0..4) {
                    0 => defaults.push(format!("{p} = \"granted\"")),
                    1 => defaults.push(format!("{p} = \"denied\"")),
                    2 => defaults.push(format!("{p} = \"pending\"")),
                    _ => {}
                }
            }
            text.push_str(&format!(
                "default_consent = {{ {} }}\n",
                defaults.join(", ")
            ));
            for d in 0..rng.gen_range(1..5) {
                let need: Vec<String> = purposes
                    .iter()
                    .filter(|_| rng.gen_bool(0.4))
                    .map(|p| format!("\"{p}\""))
                    .collect();
                text.push_str(&format!(
                    "[[destinations]]\nname = \"d{d}\"\ntype = \"file\"\npath = \"d.ndjson\"\nconsent = [{}]\nwait_for_consent = {}\n",
                    need.join(", "),
                    rng.gen_bool(0.5)
                ));
            }
            let c = Config::parse(&text).unwrap();
            let mut prefs = serde_json::Map::new();
            for p in purposes {
                if rng.gen_bool(0.6) {
                    prefs.insert(p.into(), json!(rng.gen_bool(0.5)));
                }
            }
            let gpc = rng.gen_bool(0.2);
            let e = event(
                json!({"type":"track","event":"Buy","context":{"consent":{"gpc":gpc,"categoryPreferences":prefs}}}),
            );
            let routes = Router::new(&c.destinations).route(&e, &c.sources[0]);
            for name in &routes.to {
                let d = c.destinations.iter().find(|d| *d.name == **name).unwrap();
                for p in &d.consent {
                    let granted = match prefs.get(p.as_str()).and_then(Value::as_bool) {
                        Some(v) => v,
                        None => {
                            c.sources[0].default_consent.get(p) == Some(&ConsentDefault::Granted)
                        }
                    };
                    assert!(granted, "{name} got an event without `{p}`: {e:?}");
                    assert!(
                        !(gpc && p == "marketing"),
                        "{name} got marketing despite GPC"
                    );
                }
            }
            for (name, _) in &routes.holds.held {
                assert!(!routes.to.contains(name));
            }
        }
    }
}
