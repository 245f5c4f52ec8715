//! [`JsonEvent`]: an [`Event`] backed by a JSON object, for unit tests that
//! run a rule's logic natively, without the worker.

use serde_json::{Map, Number, Value as Json};

use crate::{Event, PathError, Value};

/// Longest path the worker accepts, in bytes.
const MAX_PATH_BYTES: usize = 256;
/// Most segments the worker accepts in one path.
const MAX_PATH_SEGMENTS: usize = 16;
/// Top-level fields only the worker may write.
const READ_ONLY: [&str; 3] = ["type", "messageId", "receivedAt"];

/// The object holding a path's last segment, and that segment.
type Parent<'e, 'p> = (&'e mut Map<String, Json>, &'p str);

/// An event held as a JSON object, following the worker's path rules
/// (malformed paths, read-only fields, writing through scalars).
///
/// ```
/// use waymark_rules_sdk::{Event, JsonEvent, PathError, Value};
///
/// let mut e = JsonEvent::from_json(r#"{"type":"track","messageId":"m1"}"#).unwrap();
/// e.set("properties.plan", Value::from("pro")).unwrap();
/// assert_eq!(e.get_str("properties.plan").as_deref(), Some("pro"));
/// assert_eq!(e.set("messageId", Value::from("x")), Err(PathError::ReadOnly));
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JsonEvent {
    body: Map<String, Json>,
}

impl JsonEvent {
    /// Parses a JSON object.
    pub fn from_json(text: &str) -> Result<JsonEvent, String> {
        match serde_json::from_str(text) {
            Ok(Json::Object(body)) => Ok(JsonEvent { body }),
            Ok(_) => Err("event must be a JSON object".to_owned()),
            Err(e) => Err(format!("invalid event JSON: {e}")),
        }
    }

    /// The event as a JSON value, for assertions.
    pub fn to_json(&self) -> Json {
        Json::Object(self.body.clone())
    }

    fn lookup(&self, path: &str) -> Option<&Json> {
        let mut segments = path.split('.');
        let mut cur = self.body.get(segments.next()?)?;
        for segment in segments {
            cur = cur.as_object()?.get(segment)?;
        }
        Some(cur)
    }

    /// Checks a path for writing and returns the parent object of its leaf.
    fn parent_mut<'p>(
        &mut self,
        path: &'p str,
        create: bool,
    ) -> Result<Option<Parent<'_, 'p>>, PathError> {
        check_path(path)?;
        let mut segments: Vec<&str> = path.split('.').collect();
        let leaf = segments.pop().ok_or(PathError::Malformed)?;
        // Refuse writes through scalars before touching anything.
        let mut probe = Some(&self.body);
        for segment in &segments {
            probe = match probe.and_then(|m| m.get(*segment)) {
                Some(Json::Object(next)) => Some(next),
                Some(_) => return Err(PathError::NotAnObject((*segment).to_owned())),
                None => None,
            };
        }
        let mut cur = &mut self.body;
        for segment in segments {
            if !cur.contains_key(segment) {
                if !create {
                    return Ok(None);
                }
                cur.insert(segment.to_owned(), Json::Object(Map::new()));
            }
            cur = match cur.get_mut(segment) {
                Some(Json::Object(next)) => next,
                _ => return Err(PathError::NotAnObject(segment.to_owned())),
            };
        }
        Ok(Some((cur, leaf)))
    }
}

fn check_path(path: &str) -> Result<(), PathError> {
    if path.is_empty()
        || path.len() > MAX_PATH_BYTES
        || path.split('.').count() > MAX_PATH_SEGMENTS
        || path.split('.').any(str::is_empty)
    {
        return Err(PathError::Malformed);
    }
    if READ_ONLY.contains(&path) {
        return Err(PathError::ReadOnly);
    }
    Ok(())
}

fn to_value(json: &Json) -> Value {
    match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::Text(s.clone()),
        other => Value::Json(other.to_string()),
    }
}

fn from_value(value: Value) -> Result<Json, PathError> {
    Ok(match value {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(b),
        Value::Int(i) => Json::Number(i.into()),
        Value::Float(f) => Json::Number(Number::from_f64(f).ok_or(PathError::InvalidValue)?),
        Value::Text(s) => Json::String(s),
        Value::Json(text) => serde_json::from_str(&text).map_err(|_| PathError::InvalidValue)?,
    })
}

impl Event for JsonEvent {
    fn event_type(&self) -> String {
        self.lookup("type")
            .and_then(Json::as_str)
            .unwrap_or("track")
            .to_owned()
    }

    fn name(&self) -> Option<String> {
        let field = match self.event_type().as_str() {
            "track" => "event",
            "page" | "screen" => "name",
            _ => return None,
        };
        self.lookup(field).and_then(Json::as_str).map(str::to_owned)
    }

    fn message_id(&self) -> String {
        self.lookup("messageId")
            .and_then(Json::as_str)
            .unwrap_or("")
            .to_owned()
    }

    fn get(&self, path: &str) -> Option<Value> {
        self.lookup(path).map(to_value)
    }

    fn set(&mut self, path: &str, value: Value) -> Result<(), PathError> {
        check_path(path)?;
        let json = from_value(value)?;
        let (parent, leaf) = self.parent_mut(path, true)?.ok_or(PathError::Malformed)?;
        parent.insert(leaf.to_owned(), json);
        Ok(())
    }

    fn remove(&mut self, path: &str) -> Result<bool, PathError> {
        Ok(match self.parent_mut(path, false)? {
            Some((parent, leaf)) => parent.remove(leaf).is_some(),
            None => false,
        })
    }

    fn consent(&self, purpose: &str) -> Option<bool> {
        self.lookup("context.consent.categoryPreferences")?
            .get(purpose)?
            .as_bool()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> JsonEvent {
        JsonEvent::from_json(
            r#"{"type":"page","name":"Home","messageId":"m1","context":{"ip":"1.2.3.4","consent":{"categoryPreferences":{"ads":false}}},"properties":{"n":3,"x":1.5,"tags":["a"]}}"#,
        )
        .unwrap()
    }

    #[test]
    fn get_returns_typed_scalars_and_json_subtrees() {
        let e = event();
        assert_eq!(e.get("properties.n"), Some(Value::Int(3)));
        assert_eq!(e.get("properties.x"), Some(Value::Float(1.5)));
        assert_eq!(
            e.get("properties.tags"),
            Some(Value::Json(r#"["a"]"#.into()))
        );
        assert_eq!(e.get("properties.none"), None);
        assert_eq!(e.name().as_deref(), Some("Home"));
        assert_eq!(e.consent("ads"), Some(false));
        assert_eq!(e.consent("analytics"), None);
    }

    #[test]
    fn set_follows_the_worker_path_rules() {
        let mut e = event();
        assert_eq!(e.set("", Value::Null), Err(PathError::Malformed));
        assert_eq!(e.set("a..b", Value::Null), Err(PathError::Malformed));
        assert_eq!(
            e.set(&"a.".repeat(20), Value::Null),
            Err(PathError::Malformed)
        );
        assert_eq!(e.set("type", Value::Null), Err(PathError::ReadOnly));
        assert_eq!(
            e.set("context.ip.v4", Value::Null),
            Err(PathError::NotAnObject("ip".into()))
        );
        assert_eq!(
            e.set("a.b", Value::Float(f64::NAN)),
            Err(PathError::InvalidValue)
        );
        assert_eq!(
            e.set("a.b", Value::Json("{".into())),
            Err(PathError::InvalidValue)
        );
        e.set("a.b", Value::Json(r#"{"c":1}"#.into())).unwrap();
        assert_eq!(e.get("a.b.c"), Some(Value::Int(1)));
        assert_eq!(e.remove("a.b.c"), Ok(true));
        assert_eq!(e.remove("a.b.c"), Ok(false));
        assert_eq!(e.remove("zz.yy"), Ok(false));
    }
}
