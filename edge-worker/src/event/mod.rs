//! The one event type that flows through every stage, and its path accessors.
//!
//! An [`Event`] is a Segment Spec message (`type`, `messageId`, `context`,
//! `properties`, …) held as a JSON object. Stages read and write it through
//! dotted paths such as `properties.price` or `context.page.url`; the WASM
//! rule host exposes the same accessors to rules.

mod path;

use std::sync::OnceLock;

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use path::{child_object, first_segment, not_an_object, put, set_in, split_path, Parent};

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

/// The top-level field an event may keep as received text ([`Event`]'s `# Design`).
pub const PROPERTIES: &str = "properties";

/// A Segment Spec event on its way through the pipeline.
///
/// # Design
/// `properties` is usually the largest part of an event and no stage of the
/// worker reads it, so an event parsed from a request keeps it as the text
/// it arrived in until a rule or a stage touches it: parsing it into values
/// and serialising it back cost about a tenth of the worker's time per
/// event (issue #2). Reading a path inside it parses it once, aside; writing
/// into it turns it into values for good. `body` holds a `null` in its
/// place meanwhile, so the key keeps its position.
#[derive(Debug, Clone)]
pub struct Event {
    body: Map<String, Value>,
    raw_properties: Option<RawProperties>,
}

/// `properties` as received: compact JSON text holding an object.
#[derive(Debug, Clone)]
struct RawProperties {
    text: Box<RawValue>,
    /// The parsed text, once something read inside it.
    parsed: OnceLock<Value>,
}

impl RawProperties {
    fn value(&self) -> &Value {
        self.parsed.get_or_init(|| parse_raw(&self.text))
    }

    fn into_value(self) -> Value {
        match self.parsed.into_inner() {
            Some(value) => value,
            None => parse_raw(&self.text),
        }
    }
}

/// Parses text that was valid JSON when it was captured.
fn parse_raw(text: &RawValue) -> Value {
    serde_json::from_str(text.get()).unwrap_or(Value::Null)
}

impl PartialEq for Event {
    fn eq(&self, other: &Event) -> bool {
        self.to_map() == other.to_map()
    }
}

impl Event {
    /// Wraps a JSON object. Normalization has checked its shape before any
    /// other stage sees it.
    pub fn from_map(body: Map<String, Value>) -> Event {
        Event {
            body,
            raw_properties: None,
        }
    }

    /// Wraps a JSON object whose `properties` is `text`, an object as
    /// received. `text` must be compact (no line breaks) so the event stays
    /// one line of NDJSON; `body`'s own `properties` entry, if any, only
    /// marks the position.
    pub(crate) fn with_raw_properties(mut body: Map<String, Value>, text: Box<RawValue>) -> Event {
        put(&mut body, PROPERTIES, Value::Null);
        Event {
            body,
            raw_properties: Some(RawProperties {
                text,
                parsed: OnceLock::new(),
            }),
        }
    }

    /// The event as a JSON object (a copy).
    pub fn to_map(&self) -> Map<String, Value> {
        self.clone().into_map()
    }

    /// Consumes the event into its JSON object.
    pub fn into_map(mut self) -> Map<String, Value> {
        self.materialize();
        self.body
    }

    /// Serialises the event as compact JSON.
    pub fn to_json(&self) -> String {
        let Some(raw) = &self.raw_properties else {
            // NOTE: serialising a `Map` of `Value`s cannot fail.
            return serde_json::to_string(&self.body).unwrap_or_default();
        };
        let mut out = Vec::with_capacity(raw.text.get().len() + 512);
        out.push(b'{');
        for (i, (key, value)) in self.body.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let _ = serde_json::to_writer(&mut out, key);
            out.push(b':');
            if key == PROPERTIES {
                out.extend_from_slice(raw.text.get().as_bytes());
            } else {
                let _ = serde_json::to_writer(&mut out, value);
            }
        }
        out.push(b'}');
        // NOTE: JSON written by serde_json and JSON text received as UTF-8.
        String::from_utf8(out).unwrap_or_default()
    }

    /// Sets `context.waymark.<key>`, one of the worker's own fields, creating
    /// the objects on the way; does nothing when the client sent `context`
    /// or `context.waymark` as something other than an object.
    pub fn stamp(&mut self, key: &str, value: Value) {
        let Some(Value::Object(context)) = child_object(&mut self.body, "context") else {
            return;
        };
        let Some(Value::Object(waymark)) = child_object(context, "waymark") else {
            return;
        };
        put(waymark, key, value);
    }

    /// Turns received `properties` text into values, before a write inside it.
    fn materialize(&mut self) {
        if let Some(raw) = self.raw_properties.take() {
            put(&mut self.body, PROPERTIES, raw.into_value());
        }
    }

    /// Materializes `properties` when `path` writes into it.
    fn prepare_write(&mut self, path: &str) {
        if self.raw_properties.is_some() && first_segment(path) == PROPERTIES {
            self.materialize();
        }
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
        let mut cur = match &self.raw_properties {
            Some(raw) if first == PROPERTIES => raw.value(),
            _ => self.body.get(first)?,
        };
        for segment in segments {
            cur = cur.as_object()?.get(segment)?;
        }
        Some(cur)
    }

    /// The value at a dotted path, mutably, if any (same lookup as [`Event::get`]).
    pub fn get_mut(&mut self, path: &str) -> Option<&mut Value> {
        self.prepare_write(path);
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
        split_path(path)?;
        self.prepare_write(path);
        set_in(&mut self.body, path, path, value)
    }

    /// Like [`Event::set`], and says how to undo the write
    /// (the WASM rule host journals rule writes with it).
    pub fn replace(&mut self, path: &str, value: Value) -> Result<Replaced, PathError> {
        let (dirs, leaf) = split_path(path)?;
        self.prepare_write(path);
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
        self.prepare_write(path);
        let (parent, leaf) = self.parent_mut(path)?;
        Ok(parent.and_then(|parent| parent.shift_remove(leaf)))
    }

    /// Finds the object that holds the last segment of `path`, or `None`
    /// when an intermediate object is missing.
    fn parent_mut<'p>(&mut self, path: &'p str) -> Result<Parent<'_, 'p>, PathError> {
        let (dirs, leaf) = split_path(path)?;
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

#[cfg(test)]
mod tests;
