//! Identify: tie each event to its visitor.
//!
//! The request's verified `wm_vid` visitor id becomes the event's
//! `anonymousId` when it has none, and is always recorded in
//! `context.waymark.visitorId`.

use serde_json::Value;

use crate::event::Event;
use crate::visitor::VisitorId;

/// Applies the request's visitor id to `event`.
pub fn apply_visitor(event: &mut Event, visitor: Option<&VisitorId>) {
    let Some(visitor) = visitor else { return };
    let id = Value::String(visitor.as_str().to_owned());
    if event.anonymous_id().is_none() {
        let _ = event.set("anonymousId", id.clone());
    }
    let _ = event.set("context.waymark.visitorId", id);
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

    #[test]
    fn visitor_fills_a_missing_anonymous_id() {
        let v = VisitorId::mint();
        let mut e = event(json!({"userId":"u"}));
        apply_visitor(&mut e, Some(&v));
        assert_eq!(e.anonymous_id(), Some(v.as_str()));
        assert_eq!(e.str("context.waymark.visitorId"), Some(v.as_str()));
    }

    #[test]
    fn an_existing_anonymous_id_is_kept() {
        let v = VisitorId::mint();
        let mut e = event(json!({"anonymousId":"mine"}));
        apply_visitor(&mut e, Some(&v));
        assert_eq!(e.anonymous_id(), Some("mine"));
        assert_eq!(e.str("context.waymark.visitorId"), Some(v.as_str()));
    }
}
