//! The one event type that flows through every stage, and its path accessors.
//!
//! An [`Event`] is a Segment Spec message (`type`, `messageId`, `context`,
//! `properties`, …) held as a JSON object, plus the little metadata the
//! worker needs beside it (which source sent it). Stages read and write it
//! through dotted paths such as `properties.price` or `context.page.url`;
//! the WASM rule host exposes the same accessors to rules.

use serde_json::{Map, Value};

/// The Segment call an event represents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// `track`: a named action with properties.
    Track,
    /// `page`: a web page view.
    Page,
    /// `screen`: a mobile screen view.
    Screen,
    /// `identify`: ties a user id and traits to the visitor.
    Identify,
    /// `group`: ties the user to a group (account, company).
    Group,
    /// `alias`: merges a previous id into a user id.
    Alias,
}

impl EventType {
    /// Every call type, in Segment's order.
    pub const ALL: [EventType; 6] = [
        EventType::Track,
        EventType::Page,
        EventType::Screen,
        EventType::Identify,
        EventType::Group,
        EventType::Alias,
    ];

    /// Parses the wire name (`"track"`, `"page"`, …).
    pub fn parse(name: &str) -> Option<EventType> {
        Some(match name {
            "track" => EventType::Track,
            "page" => EventType::Page,
            "screen" => EventType::Screen,
            "identify" => EventType::Identify,
            "group" => EventType::Group,
            "alias" => EventType::Alias,
            _ => return None,
        })
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Track => "track",
            EventType::Page => "page",
            EventType::Screen => "screen",
            EventType::Identify => "identify",
            EventType::Group => "group",
            EventType::Alias => "alias",
        }
    }
}

/// Why a path could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path was empty or had an empty segment (`a..b`, `.a`).
    #[error("path `{0}` is empty or has an empty segment")]
    Malformed(String),
    /// A segment on the way is a scalar or array, so a field cannot be set below it.
    #[error("path `{path}`: `{segment}` is not an object")]
    NotAnObject {
        /// The whole path.
        path: String,
        /// The segment that is not an object.
        segment: String,
    },
    /// Top-level fields the worker owns cannot be changed by rules or stages.
    #[error("path `{0}` is read-only")]
    ReadOnly(String),
}

/// What [`Event::replace`] changed, to undo it.
#[derive(Debug, Clone, PartialEq)]
pub struct Replaced {
    /// The value the path held before, if any.
    pub old: Option<Value>,
    /// When the write created intermediate objects: the length of the path
    /// prefix that names the first of them (removing it undoes the write).
    pub created: Option<usize>,
}

/// A Segment Spec event on its way through the pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    body: Map<String, Value>,
}

impl Event {
    /// Wraps a JSON object. Normalization has checked its shape before any
    /// other stage sees it.
    pub fn from_map(body: Map<String, Value>) -> Event {
        Event { body }
    }

    /// The JSON object, for serialising into the outbox or a destination payload.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.body
    }

    /// Consumes the event into its JSON object.
    pub fn into_map(self) -> Map<String, Value> {
        self.body
    }

    /// Serialises the event as compact JSON.
    pub fn to_json(&self) -> String {
        // NOTE: serialising a `Map` of `Value`s cannot fail.
        serde_json::to_string(&self.body).unwrap_or_default()
    }

    /// The call type. Normalization guarantees a valid one; `Track` is the fallback.
    pub fn event_type(&self) -> EventType {
        self.str("type")
            .and_then(EventType::parse)
            .unwrap_or(EventType::Track)
    }

    /// The event's name: `event` for track, `name` for page and screen, none otherwise.
    pub fn name(&self) -> Option<&str> {
        match self.event_type() {
            EventType::Track => self.str("event"),
            EventType::Page | EventType::Screen => self.str("name"),
            _ => None,
        }
    }

    /// `messageId` (always present after normalization).
    pub fn message_id(&self) -> &str {
        self.str("messageId").unwrap_or("")
    }

    /// `userId`, when set and a string.
    pub fn user_id(&self) -> Option<&str> {
        self.str("userId")
    }

    /// `anonymousId`, when set and a string.
    pub fn anonymous_id(&self) -> Option<&str> {
        self.str("anonymousId")
    }

    /// The consent the event carries for `purpose` in
    /// `context.consent.categoryPreferences`: `Some(true)` granted,
    /// `Some(false)` denied, `None` not stated.
    pub fn consent(&self, purpose: &str) -> Option<bool> {
        self.get("context.consent.categoryPreferences")
            .and_then(|prefs| prefs.get(purpose))
            .and_then(Value::as_bool)
    }

    /// A top-level or nested string field.
    pub fn str(&self, path: &str) -> Option<&str> {
        self.get(path).and_then(Value::as_str)
    }

    /// The value at a dotted path such as `properties.price`, if any.
    ///
    /// Segments index into objects only; a path through an array or scalar
    /// yields `None`.
    pub fn get(&self, path: &str) -> Option<&Value> {
        let mut segments = path.split('.');
        let first = segments.next()?;
        let mut cur = self.body.get(first)?;
        for segment in segments {
            cur = cur.as_object()?.get(segment)?;
        }
        Some(cur)
    }

    /// Sets the value at a dotted path, creating intermediate objects.
    ///
    /// Fails, leaving the event unchanged, when a segment is empty or an
    /// intermediate value exists and is not an object.
    pub fn set(&mut self, path: &str, value: Value) -> Result<(), PathError> {
        // With `create`, the parent always exists once the path checks out.
        let (Some(parent), leaf) = self.parent_mut(path, true)? else {
            return Err(malformed(path));
        };
        parent.insert(leaf.to_owned(), value);
        Ok(())
    }

    /// Like [`Event::set`], in a single walk, and says how to undo the write
    /// (the WASM rule host journals rule writes with it).
    pub fn replace(&mut self, path: &str, value: Value) -> Result<Replaced, PathError> {
        if path.is_empty() || path.split('.').any(str::is_empty) {
            return Err(malformed(path));
        }
        let (dirs, leaf) = match path.rsplit_once('.') {
            Some((dirs, leaf)) => (Some(dirs), leaf),
            None => (None, path),
        };
        let mut cur = &mut self.body;
        let mut created = None;
        let mut end = 0;
        for segment in dirs.into_iter().flat_map(|dirs| dirs.split('.')) {
            end += if end == 0 {
                segment.len()
            } else {
                segment.len() + 1
            };
            // Once one segment is missing, every later one is created, so
            // the not-an-object error below can only happen before any change.
            if !cur.contains_key(segment) {
                created.get_or_insert(end);
                cur.insert(segment.to_owned(), Value::Object(Map::new()));
            }
            cur = match cur.get_mut(segment) {
                Some(Value::Object(next)) => next,
                _ => return Err(not_an_object(path, segment)),
            };
        }
        let old = cur.insert(leaf.to_owned(), value);
        Ok(Replaced { old, created })
    }

    /// Removes and returns the value at a dotted path. Missing paths yield `Ok(None)`.
    pub fn remove(&mut self, path: &str) -> Result<Option<Value>, PathError> {
        let (parent, leaf) = self.parent_mut(path, false)?;
        Ok(parent.and_then(|parent| parent.shift_remove(leaf)))
    }

    /// Finds the object that holds the last segment of `path`. With
    /// `create`, missing intermediate objects are inserted; without it, a
    /// missing one yields `None`.
    fn parent_mut<'p>(&mut self, path: &'p str, create: bool) -> Result<Parent<'_, 'p>, PathError> {
        if path.is_empty() || path.split('.').any(str::is_empty) {
            return Err(malformed(path));
        }
        let (dirs, leaf) = match path.rsplit_once('.') {
            Some((dirs, leaf)) => (Some(dirs), leaf),
            None => (None, path),
        };
        let Some(dirs) = dirs else {
            return Ok((Some(&mut self.body), leaf));
        };
        // Check the whole path first so a failed set leaves no half-built objects.
        let mut probe = Some(&self.body);
        for segment in dirs.split('.') {
            probe = match probe.and_then(|m| m.get(segment)) {
                Some(Value::Object(next)) => Some(next),
                Some(_) => return Err(not_an_object(path, segment)),
                None => None,
            };
        }
        let mut cur = &mut self.body;
        for segment in dirs.split('.') {
            if !cur.contains_key(segment) {
                if !create {
                    return Ok((None, leaf));
                }
                cur.insert(segment.to_owned(), Value::Object(Map::new()));
            }
            cur = match cur.get_mut(segment) {
                Some(Value::Object(next)) => next,
                _ => return Err(not_an_object(path, segment)),
            };
        }
        Ok((Some(cur), leaf))
    }
}

/// The object holding a path's last segment (if it exists), and that segment.
type Parent<'e, 'p> = (Option<&'e mut Map<String, Value>>, &'p str);

#[cold]
fn malformed(path: &str) -> PathError {
    PathError::Malformed(path.to_owned())
}

#[cold]
fn not_an_object(path: &str, segment: &str) -> PathError {
    PathError::NotAnObject {
        path: path.to_owned(),
        segment: segment.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(v: Value) -> Event {
        match v {
            Value::Object(m) => Event::from_map(m),
            _ => panic!("test event must be an object"),
        }
    }

    #[test]
    fn get_reads_nested_paths() {
        let e = event(json!({"type":"track","properties":{"price":9.5,"tags":[1]}}));
        assert_eq!(e.get("properties.price"), Some(&json!(9.5)));
        assert_eq!(e.get("properties.missing"), None);
        assert_eq!(e.get("properties.tags.0"), None, "arrays are not indexed");
        assert_eq!(e.get("type.x"), None);
    }

    #[test]
    fn set_creates_intermediate_objects() {
        let mut e = event(json!({"type":"page"}));
        e.set("context.page.url", json!("https://a.example/"))
            .unwrap();
        assert_eq!(e.str("context.page.url"), Some("https://a.example/"));
    }

    #[test]
    fn set_through_a_scalar_fails_without_changing_the_event() {
        let mut e = event(json!({"context":{"ip":"1.2.3.4"}}));
        let before = e.clone();
        let err = e.set("context.ip.v4.x", json!(1)).unwrap_err();
        assert!(matches!(err, PathError::NotAnObject { ref segment, .. } if segment == "ip"));
        assert_eq!(e, before);
    }

    #[test]
    fn replace_says_how_to_undo_the_write() {
        let mut e = event(json!({"properties":{"a":1},"context":{"ip":"x"}}));
        let r = e.replace("properties.a", json!(2)).unwrap();
        assert_eq!((r.old, r.created), (Some(json!(1)), None));
        let r = e.replace("properties.b.c.d", json!(3)).unwrap();
        assert_eq!((r.old, r.created), (None, Some("properties.b".len())));
        assert_eq!(e.get("properties.b.c.d"), Some(&json!(3)));
        let r = e.replace("top", json!(4)).unwrap();
        assert_eq!((r.old, r.created), (None, None));
        let before = e.clone();
        assert!(matches!(
            e.replace("context.ip.v4", json!(1)),
            Err(PathError::NotAnObject { .. })
        ));
        assert!(matches!(
            e.replace("a..b", json!(1)),
            Err(PathError::Malformed(_))
        ));
        assert_eq!(e, before);
    }

    #[test]
    fn malformed_paths_are_rejected() {
        let mut e = event(json!({}));
        for p in ["", ".", "a..b", ".a", "a."] {
            assert!(
                matches!(e.set(p, json!(1)), Err(PathError::Malformed(_))),
                "{p}"
            );
        }
    }

    #[test]
    fn remove_returns_the_old_value() {
        let mut e = event(json!({"traits":{"email":"a@b.c","name":"A"}}));
        assert_eq!(e.remove("traits.email").unwrap(), Some(json!("a@b.c")));
        assert_eq!(e.remove("traits.email").unwrap(), None);
        assert_eq!(e.remove("nope.deeper").unwrap(), None);
        assert_eq!(e.get("traits"), Some(&json!({"name":"A"})));
    }

    #[test]
    fn name_depends_on_type() {
        let t = event(json!({"type":"track","event":"Order Completed","name":"x"}));
        assert_eq!(t.name(), Some("Order Completed"));
        let p = event(json!({"type":"page","name":"Home"}));
        assert_eq!(p.name(), Some("Home"));
        let i = event(json!({"type":"identify","event":"x"}));
        assert_eq!(i.name(), None);
    }

    #[test]
    fn consent_reads_category_preferences() {
        let e = event(
            json!({"context":{"consent":{"categoryPreferences":{"analytics":true,"marketing":false}}}}),
        );
        assert_eq!(e.consent("analytics"), Some(true));
        assert_eq!(e.consent("marketing"), Some(false));
        assert_eq!(e.consent("functional"), None);
    }
}
