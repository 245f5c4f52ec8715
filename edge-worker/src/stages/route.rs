//! Route: which destinations an event goes to, by filter and by consent.

use std::sync::Arc;

use crate::config::DestinationConfig;
use crate::consent::{ConsentState, Decision, GrantedPurposes};
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
    /// The IAB vendor id that also needs consent when a TC string is present.
    tcf_vendor_id: Option<u16>,
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
    /// `Some(granted)` granted (release, carrying this event's decision),
    /// `None` denied (drop).
    pub settled: Vec<(Arc<str>, Option<GrantedPurposes>)>,
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
                    tcf_vendor_id: d.tcf_vendor_id,
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

    /// Routes one event by its filters and its consent `decision` (made
    /// once for the event by [`crate::consent::ConsentPolicy::decide`]).
    pub fn route(&self, event: &Event, decision: &Decision) -> Routes {
        let mut routes = Routes::default();
        let kind = event.event_type();
        let name = event.name();
        for target in &self.targets {
            if !target.accepts(kind, name) {
                continue;
            }
            let state = decision.for_destination(&target.consent, target.tcf_vendor_id);
            if target.hold_secs.is_some() && state != ConsentState::Pending {
                let granted = (state == ConsentState::Granted).then(|| decision.granted_purposes());
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
    use crate::consent::ConsentPolicy;
    use serde_json::{json, Value};

    /// Decides `event`'s consent as the pipeline does, then routes it.
    fn route(c: &Config, event: &Event) -> Routes {
        let decision = ConsentPolicy::from_config(c).decide(event, &c.sources[0].default_consent);
        Router::new(&c.destinations).route(event, &decision)
    }

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
        let pending = route(&c, &event(json!({"type":"track","event":"Buy"})));
        assert_eq!(pending.to, vec![Arc::from("all")]);
        assert_eq!(pending.consent_blocked, vec![(Arc::from("ads"), false)]);

        let granted = event(
            json!({"type":"track","event":"Buy","context":{"consent":{"categoryPreferences":{"marketing":true}}}}),
        );
        assert_eq!(route(&c, &granted).to.len(), 2);

        let page = event(
            json!({"type":"page","context":{"consent":{"categoryPreferences":{"marketing":true}}}}),
        );
        assert_eq!(route(&c, &page).to, vec![Arc::from("all")]);

        let debug = event(
            json!({"type":"track","event":"Debug","context":{"consent":{"categoryPreferences":{"marketing":true}}}}),
        );
        assert_eq!(route(&c, &debug).to, vec![Arc::from("all")]);
    }

    #[test]
    fn waiting_destinations_hold_pending_events_and_settle_on_decisions() {
        let mut c = config();
        c.destinations[1].wait_for_consent = true;
        c.destinations[1].consent_hold_secs = Some(60);
        let pending = route(&c, &event(json!({"type":"track","event":"Buy"})));
        assert!(pending.consent_blocked.is_empty());
        assert_eq!(pending.holds.held, vec![(Arc::from("ads"), 60)]);
        assert!(pending.holds.settled.is_empty());

        let granted = route(
            &c,
            &event(
                json!({"type":"track","event":"Buy","context":{"consent":{"categoryPreferences":{"marketing":true}}}}),
            ),
        );
        assert_eq!(granted.to.len(), 2);
        assert_eq!(granted.holds.settled.len(), 1);
        let released = granted.holds.settled[0].1.as_ref().expect("granted");
        assert!(released.contains("marketing"));

        let gpc = route(
            &c,
            &event(json!({"type":"track","event":"Buy","context":{"consent":{"gpc":true}}})),
        );
        assert_eq!(gpc.consent_blocked, vec![(Arc::from("ads"), true)]);
        assert_eq!(gpc.holds.settled, vec![(Arc::from("ads"), None)]);
    }

    /// Property: over random mixes of the four signals (categoryPreferences,
    /// a TC string, valid or not, Consent Mode fields and GPC), defaults,
    /// destination purposes and vendor ids, an event reaches a destination
    /// only when every purpose it needs is granted by at least one signal
    /// (or, when no signal mentions it, by the default) and denied by none,
    /// and its vendor has consent whenever a TC string is present.
    #[test]
    fn nothing_reaches_a_destination_without_its_purposes() {
        use crate::config::ConsentDefault;
        use crate::consent::tests::tc_string;
        use rand::{Rng, SeedableRng};
        let purposes = ["analytics", "marketing", "ads", "functional"];
        // The default mappings, plus `ads` on TCF purpose 2 and GCM's
        // ad_personalization.
        let tcf_map: [(&str, &[u8]); 3] = [
            ("analytics", &[1, 8]),
            ("marketing", &[1, 3, 4]),
            ("ads", &[2]),
        ];
        let gcm_map: [(&str, &[&str]); 3] = [
            ("analytics", &["analytics_storage"]),
            ("marketing", &["ad_storage", "ad_user_data"]),
            ("ads", &["ad_personalization"]),
        ];
        let gcm_fields = [
            "analytics_storage",
            "ad_storage",
            "ad_user_data",
            "ad_personalization",
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let (mut reached, mut checked) = (0, 0);
        for _ in 0..3_000 {
            let mut text = String::from(
                "[identity]\nkeys = [{ id = \"k1\", secret = \"0123456789abcdef0123456789abcdef\" }]\n[consent.tcf]\npurposes = { analytics = [1, 8], marketing = [1, 3, 4], ads = [2] }\n[consent.gcm]\npurposes = { analytics = [\"analytics_storage\"], marketing = [\"ad_storage\", \"ad_user_data\"], ads = [\"ad_personalization\"] }\n[[sources]]\nname = \"web\"\nwrite_key = \"wk_test\"\n",
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
                let vendor = if rng.gen_bool(0.4) {
                    format!("tcf_vendor_id = {}\n", rng.gen_range(1..8))
                } else {
                    String::new()
                };
                text.push_str(&format!(
                    "[[destinations]]\nname = \"d{d}\"\ntype = \"file\"\npath = \"d.ndjson\"\nconsent = [{}]\nwait_for_consent = {}\n{vendor}",
                    need.join(", "),
                    rng.gen_bool(0.5)
                ));
            }
            let c = Config::parse(&text).unwrap();
            // The four signals, each present or not.
            let mut consent = serde_json::Map::new();
            let mut prefs = serde_json::Map::new();
            for p in purposes {
                if rng.gen_bool(0.4) {
                    prefs.insert(p.into(), json!(rng.gen_bool(0.5)));
                }
            }
            if !prefs.is_empty() || rng.gen_bool(0.5) {
                consent.insert("categoryPreferences".into(), Value::Object(prefs.clone()));
            }
            // TC string: absent, valid (random purposes and vendors 1-7) or broken.
            let tc: Option<Option<(u32, Vec<u16>)>> = match rng.gen_range(0..3) {
                0 => None,
                1 => {
                    let mask = rng.gen_range(0..1u32 << 11);
                    let vendors: Vec<u16> = (1..8).filter(|_| rng.gen_bool(0.5)).collect();
                    consent.insert("tcf".into(), json!(tc_string(mask, &vendors)));
                    Some(Some((mask, vendors)))
                }
                _ => {
                    let broken = ["", "BOgarbage", "CO!!", "C"][rng.gen_range(0..4)];
                    consent.insert("tcf".into(), json!(broken));
                    Some(None)
                }
            };
            let mut gcm = serde_json::Map::new();
            for f in gcm_fields {
                match rng.gen_range(0..5) {
                    0 => drop(gcm.insert(f.into(), json!("granted"))),
                    1 => drop(gcm.insert(f.into(), json!("denied"))),
                    2 => drop(gcm.insert(f.into(), json!(rng.gen_bool(0.5)))),
                    3 if rng.gen_bool(0.2) => drop(gcm.insert(f.into(), json!("maybe"))),
                    _ => {}
                }
            }
            if !gcm.is_empty() {
                consent.insert("gcm".into(), Value::Object(gcm.clone()));
            }
            let gpc = rng.gen_bool(0.2);
            consent.insert("gpc".into(), json!(gpc));
            let e = event(json!({"type":"track","event":"Buy","context":{"consent":consent}}));
            let routes = route(&c, &e);

            // The oracle, written out from the rule.
            let gcm_says = |f: &str| match gcm.get(f) {
                None => None,
                Some(Value::Bool(b)) => Some(Some(*b)),
                Some(Value::String(s)) if s == "granted" => Some(Some(true)),
                Some(Value::String(s)) if s == "denied" => Some(Some(false)),
                Some(_) => Some(None),
            };
            let granted = |p: &str| -> bool {
                let mut votes: Vec<Option<bool>> = Vec::new(); // None: unreadable
                if let Some(v) = prefs.get(p).and_then(Value::as_bool) {
                    votes.push(Some(v));
                }
                if let Some((_, ids)) = tcf_map.iter().find(|(n, _)| *n == p) {
                    match &tc {
                        None => {}
                        Some(None) => votes.push(None),
                        Some(Some((mask, _))) => {
                            votes.push(Some(ids.iter().all(|id| mask & (1 << (id - 1)) != 0)))
                        }
                    }
                }
                if let Some((_, fields)) = gcm_map.iter().find(|(n, _)| *n == p) {
                    let says: Vec<_> = fields.iter().map(|f| gcm_says(f)).collect();
                    if says.contains(&Some(Some(false))) {
                        votes.push(Some(false));
                    } else if says.contains(&Some(None)) {
                        votes.push(None);
                    } else if says.iter().all(|s| *s == Some(Some(true))) {
                        votes.push(Some(true));
                    }
                }
                if gpc && p == "marketing" {
                    votes.push(Some(false));
                }
                if votes.contains(&Some(false)) || votes.contains(&None) {
                    return false;
                }
                if votes.contains(&Some(true)) {
                    return true;
                }
                c.sources[0].default_consent.get(p) == Some(&ConsentDefault::Granted)
            };
            for d in &c.destinations {
                let allowed = d.consent.iter().all(|p| granted(p))
                    && d.tcf_vendor_id.is_none_or(|v| match &tc {
                        None => true,
                        Some(None) => false,
                        Some(Some((_, vendors))) => vendors.contains(&v),
                    });
                let got = routes.to.iter().any(|n| **n == *d.name);
                assert_eq!(got, allowed, "{}: {e:?}\n{text}", d.name);
                checked += 1;
                reached += usize::from(got);
            }
            for (name, _) in &routes.holds.held {
                assert!(!routes.to.contains(name));
            }
        }
        // Both outcomes happen often enough for the property to mean something.
        assert!(
            reached > checked / 10 && reached < checked * 9 / 10,
            "{reached}/{checked}"
        );
    }
}
