//! The event as a rule sees it: the [`Event`] trait and the values that
//! cross the boundary, plus the adapter over the host's `event` resource.

use crate::bindings::waymark::rules::types as wit;

/// A value at a path.
///
/// Scalars are typed; objects and arrays are JSON text in [`Value::Json`]
/// (WIT types cannot be recursive).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// JSON `null`.
    Null,
    /// JSON `true` or `false`.
    Bool(bool),
    /// An integral number that fits in an `i64`.
    Int(i64),
    /// Any other number.
    Float(f64),
    /// A string.
    Text(String),
    /// An object or array as compact JSON text. When written, any JSON text.
    Json(String),
}

impl Value {
    /// The string, when this is [`Value::Text`].
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    /// The string, when this is [`Value::Text`], without copying it.
    pub fn into_text(self) -> Option<String> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    /// The number as an `f64`, when this is [`Value::Int`] or [`Value::Float`].
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::Int(i) => Some(i as f64),
            Value::Float(f) => Some(f),
            _ => None,
        }
    }

    /// The number, when this is [`Value::Int`].
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::Int(i) => Some(i),
            _ => None,
        }
    }

    /// The boolean, when this is [`Value::Bool`].
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Text(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Text(s)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Value {
        Value::Int(i)
    }
}

impl From<f64> for Value {
    fn from(f: f64) -> Value {
        Value::Float(f)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}

/// Why a write was refused. The event is unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    /// Empty path or segment, longer than 256 bytes, or more than 16 segments.
    Malformed,
    /// A segment on the way (carried here) holds a scalar or array.
    NotAnObject(String),
    /// `type`, `messageId` and `receivedAt` belong to the worker.
    ReadOnly,
    /// JSON text that does not parse or nests too deep, or a NaN/infinite float.
    InvalidValue,
    /// The call has written more than 64 KiB into the event.
    TooLarge,
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathError::Malformed => f.write_str("malformed path"),
            PathError::NotAnObject(segment) => write!(f, "`{segment}` is not an object"),
            PathError::ReadOnly => f.write_str("path is read-only"),
            PathError::InvalidValue => f.write_str("invalid value"),
            PathError::TooLarge => f.write_str("write budget exceeded"),
        }
    }
}

impl std::error::Error for PathError {}

/// What happens to the event after the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Pass the event on.
    Keep,
    /// Drop the event; the reason is a short code such as `bot`.
    Drop(String),
}

/// The event being transformed, read and written by dotted path such as
/// `properties.price` or `context.page.url`.
///
/// Each method is one call into the worker: read what you need, not the
/// whole event.
pub trait Event {
    /// The Segment call type (`track`, `page`, …).
    fn event_type(&self) -> String;
    /// `event` for track, `name` for page and screen, none otherwise.
    fn name(&self) -> Option<String>;
    /// The `messageId`.
    fn message_id(&self) -> String;
    /// The value at `path`, if any.
    fn get(&self, path: &str) -> Option<Value>;
    /// Writes `value` at `path`, creating intermediate objects.
    fn set(&mut self, path: &str, value: Value) -> Result<(), PathError>;
    /// Removes the value at `path`; says whether there was one.
    fn remove(&mut self, path: &str) -> Result<bool, PathError>;
    /// Consent for `purpose`: granted, denied, or none when not stated.
    fn consent(&self, purpose: &str) -> Option<bool>;

    /// The string at `path`, when it is a string.
    fn get_str(&self, path: &str) -> Option<String> {
        self.get(path).and_then(Value::into_text)
    }
}

/// The host's `event` resource as an [`Event`].
pub(crate) struct HostEvent<'a>(pub(crate) &'a wit::Event);

impl Event for HostEvent<'_> {
    fn event_type(&self) -> String {
        self.0.event_type()
    }

    fn name(&self) -> Option<String> {
        self.0.name()
    }

    fn message_id(&self) -> String {
        self.0.message_id()
    }

    fn get(&self, path: &str) -> Option<Value> {
        self.0.get(path).map(Value::from)
    }

    fn set(&mut self, path: &str, value: Value) -> Result<(), PathError> {
        self.0.set(path, &value.into()).map_err(PathError::from)
    }

    fn remove(&mut self, path: &str) -> Result<bool, PathError> {
        self.0.remove(path).map_err(PathError::from)
    }

    fn consent(&self, purpose: &str) -> Option<bool> {
        self.0.consent(purpose)
    }
}

impl From<wit::Value> for Value {
    fn from(v: wit::Value) -> Value {
        match v {
            wit::Value::Null => Value::Null,
            wit::Value::Boolean(b) => Value::Bool(b),
            wit::Value::Integer(i) => Value::Int(i),
            wit::Value::Float(f) => Value::Float(f),
            wit::Value::Text(s) => Value::Text(s),
            wit::Value::Json(s) => Value::Json(s),
        }
    }
}

impl From<Value> for wit::Value {
    fn from(v: Value) -> wit::Value {
        match v {
            Value::Null => wit::Value::Null,
            Value::Bool(b) => wit::Value::Boolean(b),
            Value::Int(i) => wit::Value::Integer(i),
            Value::Float(f) => wit::Value::Float(f),
            Value::Text(s) => wit::Value::Text(s),
            Value::Json(s) => wit::Value::Json(s),
        }
    }
}

impl From<wit::PathError> for PathError {
    fn from(e: wit::PathError) -> PathError {
        match e {
            wit::PathError::Malformed => PathError::Malformed,
            wit::PathError::NotAnObject(s) => PathError::NotAnObject(s),
            wit::PathError::ReadOnly => PathError::ReadOnly,
            wit::PathError::InvalidValue => PathError::InvalidValue,
            wit::PathError::TooLarge => PathError::TooLarge,
        }
    }
}

impl From<Verdict> for wit::Verdict {
    fn from(v: Verdict) -> wit::Verdict {
        match v {
            Verdict::Keep => wit::Verdict::Keep,
            Verdict::Drop(reason) => wit::Verdict::Drop(reason),
        }
    }
}
