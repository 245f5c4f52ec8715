//! Consent: decide, per purpose, whether an event may be used for it.
//!
//! The event's own `context.consent.categoryPreferences` wins; purposes it
//! does not mention take the source's `default_consent`; Global Privacy
//! Control (`context.consent.gpc = true`) denies `marketing` whatever else
//! is said. A purpose nobody mentions is pending: not granted.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::config::ConsentDefault;
use crate::event::Event;

/// The purpose Global Privacy Control denies.
pub const GPC_DENIED_PURPOSE: &str = "marketing";

/// The state of one purpose for one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentState {
    /// The visitor agreed.
    Granted,
    /// The visitor refused (or GPC refused for them).
    Denied,
    /// Not decided yet.
    Pending,
}

/// The state of `purpose` for `event` under the source's defaults.
pub fn purpose_state(
    event: &Event,
    purpose: &str,
    defaults: &BTreeMap<String, ConsentDefault>,
) -> ConsentState {
    if purpose == GPC_DENIED_PURPOSE
        && event.get("context.consent.gpc").and_then(Value::as_bool) == Some(true)
    {
        return ConsentState::Denied;
    }
    match event.consent(purpose) {
        Some(true) => ConsentState::Granted,
        Some(false) => ConsentState::Denied,
        None => match defaults.get(purpose) {
            Some(ConsentDefault::Granted) => ConsentState::Granted,
            Some(ConsentDefault::Denied) => ConsentState::Denied,
            Some(ConsentDefault::Pending) | None => ConsentState::Pending,
        },
    }
}

/// The combined state of every purpose in `required`: denied if any is
/// denied, else pending if any is pending, else granted.
pub fn decide(
    event: &Event,
    required: &[String],
    defaults: &BTreeMap<String, ConsentDefault>,
) -> ConsentState {
    let mut state = ConsentState::Granted;
    for purpose in required {
        match purpose_state(event, purpose, defaults) {
            ConsentState::Denied => return ConsentState::Denied,
            ConsentState::Pending => state = ConsentState::Pending,
            ConsentState::Granted => {}
        }
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(v: Value) -> Event {
        match v {
            Value::Object(m) => Event::from_map(m),
            _ => unreachable!(),
        }
    }

    fn defaults() -> BTreeMap<String, ConsentDefault> {
        BTreeMap::from([
            ("analytics".to_owned(), ConsentDefault::Granted),
            ("marketing".to_owned(), ConsentDefault::Pending),
            ("ads".to_owned(), ConsentDefault::Denied),
        ])
    }

    fn purposes(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_event_wins_over_defaults() {
        let e = event(
            json!({"context":{"consent":{"categoryPreferences":{"analytics":false,"marketing":true}}}}),
        );
        assert_eq!(
            decide(&e, &purposes(&["analytics"]), &defaults()),
            ConsentState::Denied
        );
        assert_eq!(
            decide(&e, &purposes(&["marketing"]), &defaults()),
            ConsentState::Granted
        );
    }

    #[test]
    fn unmentioned_purposes_take_the_default() {
        let e = event(json!({}));
        assert_eq!(
            decide(&e, &purposes(&["analytics"]), &defaults()),
            ConsentState::Granted
        );
        assert_eq!(
            decide(&e, &purposes(&["marketing"]), &defaults()),
            ConsentState::Pending
        );
        assert_eq!(
            decide(&e, &purposes(&["ads"]), &defaults()),
            ConsentState::Denied
        );
        assert_eq!(
            decide(&e, &purposes(&["unknown"]), &defaults()),
            ConsentState::Pending
        );
        assert_eq!(decide(&e, &[], &defaults()), ConsentState::Granted);
    }

    #[test]
    fn gpc_denies_marketing_even_when_granted() {
        let e = event(
            json!({"context":{"consent":{"gpc":true,"categoryPreferences":{"marketing":true,"analytics":true}}}}),
        );
        assert_eq!(
            decide(&e, &purposes(&["marketing"]), &defaults()),
            ConsentState::Denied
        );
        assert_eq!(
            decide(&e, &purposes(&["analytics"]), &defaults()),
            ConsentState::Granted
        );
    }

    #[test]
    fn denied_beats_pending() {
        let e = event(json!({}));
        assert_eq!(
            decide(&e, &purposes(&["marketing", "ads"]), &defaults()),
            ConsentState::Denied
        );
    }
}
