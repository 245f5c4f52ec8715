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

    /// The value at a dotted path, mutably, if any (same lookup as [`Event::get`]).
    pub fn get_mut(&mut self, path: &str) -> Option<&mut Value> {
        let mut segments = path.split('.');
        let first = segments.next()?;
        let mut cur = self.body.get_mut(first)?;
        for segment in segments {
            cur = cur.as_object_mut()?.get_mut(segment)?;
        }
        Some(cur)
    }

    /// Sets the value at a dotted path, creating intermediate objects.
    ///
    /// Fails, leaving the event unchanged, when a segment is empty or an
    /// intermediate value exists and is not an object.
    pub fn set(&mut self, path: &str, value: Value) -> Result<(), PathError> {
        if path.is_empty() || path.split('.').any(str::is_empty) {
            return Err(malformed(path));
        }
        set_in(&mut self.body, path, path, value)
    }

    /// Like [`Event::set`], and says how to undo the write
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
        let (parent, leaf) = self.parent_mut(path)?;
        Ok(parent.and_then(|parent| parent.shift_remove(leaf)))
    }

    /// Finds the object that holds the last segment of `path`, or `None`
    /// when an intermediate object is missing.
    fn parent_mut<'p>(&mut self, path: &'p str) -> Result<Parent<'_, 'p>, PathError> {
        if path.is_empty() || path.split('.').any(str::is_empty) {
            return Err(malformed(path));
        }
        let (dirs, leaf) = match path.rsplit_once('.') {
            Some((dirs, leaf)) => (Some(dirs), leaf),
            None => (None, path),
        };
        let mut cur = &mut self.body;
        for segment in dirs.into_iter().flat_map(|dirs| dirs.split('.')) {
            cur = match cur.get_mut(segment) {
                Some(Value::Object(next)) => next,
                Some(_) => return Err(not_an_object(path, segment)),
                None => return Ok((None, leaf)),
            };
        }
        Ok((Some(cur), leaf))
    }
}

/// [`Event::set`] below `map`, where `rest` is what is left of the
/// well-formed `path`: one walk, one lookup per segment.
///
/// Once a segment is missing, it and everything below it are created in one
/// insert, so the not-an-object error can only happen before any change: a
/// failed set leaves the event unchanged.
///
/// NOTE: recursive rather than a loop because the borrow checker rejects
/// inserting into a map after a missed `get_mut` whose hit is carried to the
/// next iteration. The depth is bounded by the number of segments in `path`.
fn set_in(
    map: &mut Map<String, Value>,
    path: &str,
    rest: &str,
    value: Value,
) -> Result<(), PathError> {
    let Some((segment, rest)) = rest.split_once('.') else {
        // The leaf: overwrite in place (keeping the key and its position),
        // allocating a key only when it is new.
        match map.get_mut(rest) {
            Some(slot) => *slot = value,
            None => {
                map.insert(rest.to_owned(), value);
            }
        }
        return Ok(());
    };
    match map.get_mut(segment) {
        Some(Value::Object(next)) => set_in(next, path, rest, value),
        Some(_) => Err(not_an_object(path, segment)),
        None => {
            map.insert(segment.to_owned(), nested(rest, value));
            Ok(())
        }
    }
}

/// `value` under one new object per segment of `rest`:
/// `nested("a.b", v)` is `{"a": {"b": v}}`, `nested("a", v)` is `{"a": v}`.
fn nested(rest: &str, value: Value) -> Value {
    rest.rsplit('.').fold(value, |inner, segment| {
        let mut map = Map::new();
        map.insert(segment.to_owned(), inner);
        Value::Object(map)
    })
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
    use proptest::prelude::*;
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
    fn set_creates_nested_objects_and_overwrites_in_place() {
        let mut e = event(json!({"type":"track","context":{"ip":"x","page":{"url":"u"}}}));
        e.set("context.waymark.visitor.id", json!("v")).unwrap();
        e.set("properties.a", json!(1)).unwrap();
        e.set("top", json!(true)).unwrap();
        // Overwriting keeps the key where it was.
        e.set("context.ip", json!("y")).unwrap();
        e.set("type", json!("page")).unwrap();
        let expected = json!({
            "type": "page",
            "context": {"ip": "y", "page": {"url": "u"}, "waymark": {"visitor": {"id": "v"}}},
            "properties": {"a": 1},
            "top": true,
        });
        assert_eq!(Value::Object(e.as_map().clone()), expected);
        let keys: Vec<&str> = e.as_map().keys().map(String::as_str).collect();
        assert_eq!(keys, ["type", "context", "properties", "top"]);
        let ctx: Vec<&str> = e
            .get("context")
            .and_then(Value::as_object)
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(ctx, ["ip", "page", "waymark"]);
    }

    #[test]
    fn set_through_a_non_object_reports_the_segment_and_changes_nothing() {
        let mut e = event(json!({"context":{"page":{"url":"u"},"tags":[1]}, "n": 1}));
        let before = e.clone();
        for (path, bad) in [
            ("context.page.url.x", "url"),
            ("context.tags.x.y", "tags"),
            ("n.x", "n"),
        ] {
            let err = e.set(path, json!(1)).unwrap_err();
            assert_eq!(
                err,
                PathError::NotAnObject {
                    path: path.into(),
                    segment: bad.into()
                }
            );
        }
        assert_eq!(e, before);
    }

    /// Small nested objects over the keys `a`, `b`, `c`, with scalar and array leaves.
    fn arb_object() -> impl Strategy<Value = Map<String, Value>> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<i8>().prop_map(Value::from),
            Just(json!([1]))
        ];
        let value = leaf.prop_recursive(3, 24, 3, |inner| {
            prop::collection::vec((prop::sample::select(&["a", "b", "c"][..]), inner), 0..3)
                .prop_map(|kv| {
                    Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
                })
        });
        prop::collection::vec((prop::sample::select(&["a", "b", "c"][..]), value), 0..3)
            .prop_map(|kv| kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }

    /// Paths over the same keys; an empty segment now and then makes one malformed.
    fn arb_path() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop::sample::select(&["a", "b", "c", "a", "b", "c", ""][..]),
            1..6,
        )
        .prop_map(|segments| segments.join("."))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn set_agrees_with_replace(body in arb_object(), path in arb_path()) {
            let mut by_set = Event::from_map(body.clone());
            let mut by_replace = Event::from_map(body);
            let before = by_set.clone();
            let set = by_set.set(&path, json!("new"));
            let replaced = by_replace.replace(&path, json!("new"));
            prop_assert_eq!(set.clone().err(), replaced.err());
            prop_assert_eq!(&by_set, &by_replace);
            if set.is_err() {
                prop_assert_eq!(&by_set, &before);
            } else {
                prop_assert_eq!(by_set.get(&path), Some(&json!("new")));
            }
        }
    }

    #[test]
    fn get_mut_reads_nested_paths() {
        let mut e = event(json!({"context":{"os":{"family":"x"}},"n":1}));
        *e.get_mut("context.os.family").unwrap() = json!("y");
        assert_eq!(e.str("context.os.family"), Some("y"));
        assert_eq!(e.get_mut("context.missing"), None);
        assert_eq!(e.get_mut("n.x"), None);
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
        let before = e.clone();
        assert!(matches!(
            e.remove("traits.name.x"),
            Err(PathError::NotAnObject { ref segment, .. }) if segment == "name"
        ));
        assert!(matches!(e.remove("a..b"), Err(PathError::Malformed(_))));
        assert_eq!(e.remove("nope.x.y").unwrap(), None);
        assert_eq!(e, before);
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
