//! Normalize: validate a raw event against the Segment Spec and bring it to
//! the one shape every later stage can rely on.
//!
//! After this stage an event is a JSON object with a valid `type`, a string
//! `messageId`, `userId` and/or `anonymousId` as strings, the call's required
//! field, object-typed `context`/`properties`/`traits`/`integrations`,
//! `receivedAt`, and a `timestamp` corrected for client clock skew.

use chrono::{DateTime, Utc};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::ingest::RawEvent;
use crate::event::{Event, EventType, PROPERTIES};
use crate::time::{format_rfc3339, parse_rfc3339};

/// Why an event was rejected. Boxed on the hot path (see [`Rejected`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Stable reason code for metrics and the quarantine table.
    pub reason: &'static str,
    /// The field at fault (dotted path), or `event` for the whole event.
    pub field: String,
    /// What is wrong and how to fix it.
    pub problem: String,
}

/// A rejection, boxed so the `Result` stays one word wide.
pub type Rejected = Box<Rejection>;

#[cold]
fn reject(reason: &'static str, field: &str, problem: impl Into<String>) -> Rejected {
    Box::new(Rejection {
        reason,
        field: field.to_owned(),
        problem: problem.into(),
    })
}

/// Request-wide inputs to normalization.
#[derive(Debug, Clone, Copy)]
pub struct NormalizeContext<'a> {
    /// When the request arrived.
    pub received_at: DateTime<Utc>,
    /// `received_at` as written into events ([`format_rfc3339`]).
    pub received_at_text: &'a str,
    /// `sentAt` of the batch, for events without their own.
    pub batch_sent_at: Option<&'a str>,
    /// Largest event in bytes of JSON.
    pub max_event_bytes: usize,
    /// Deepest nesting allowed.
    pub max_depth: usize,
    /// Whether the request carries a visitor id that the identify stage will
    /// use as `anonymousId`, so an event without ids is still valid.
    pub has_visitor: bool,
}

/// Fields that must be objects when present (`properties` too, checked as text).
const OBJECT_FIELDS: [&str; 3] = ["context", "traits", "integrations"];
/// Fields that must be strings when present.
const STRING_FIELDS: [&str; 3] = ["event", "name", "category"];
/// Fields that must be RFC 3339 timestamps when present.
const TIME_FIELDS: [&str; 3] = ["timestamp", "sentAt", "originalTimestamp"];
/// Longest id accepted for `messageId`, `userId`, `anonymousId` and the like.
const MAX_ID_LEN: usize = 255;

/// Validates and normalizes one raw event.
pub fn normalize(raw: &RawEvent<'_>, cx: &NormalizeContext<'_>) -> Result<Event, Rejected> {
    // 1. Size first: nothing else is worth doing on an oversized event.
    let text = raw.raw.get();
    if text.len() > cx.max_event_bytes {
        return Err(reject(
            "too_large",
            "event",
            format!(
                "event is {} bytes, over the {}-byte limit; send less data per event",
                text.len(),
                cx.max_event_bytes
            ),
        ));
    }
    // The text is valid JSON (ingest split it), so it is an object or not one.
    if !text.trim_start().starts_with('{') {
        return Err(reject(
            "not_an_object",
            "event",
            "each event must be a JSON object",
        ));
    }
    let TopLevel(mut body, properties) =
        serde_json::from_str(text).map_err(|e| reject("invalid_json", "event", e.to_string()))?;
    let properties = take_properties(&mut body, properties)?;
    let depth = max_depth(&body).max(properties.as_deref().map_or(0, |p| 1 + raw_depth(p.get())));
    if depth > cx.max_depth {
        return Err(reject(
            "too_deep",
            "event",
            format!(
                "nesting depth {depth} is over the limit of {}; flatten nested objects",
                cx.max_depth
            ),
        ));
    }

    // 2. The call type: from the endpoint, or the event's own `type`.
    let kind = match (raw.endpoint_type, body.get("type")) {
        (Some(kind), None) => kind,
        (Some(kind), Some(Value::String(t))) if t == kind.as_str() => kind,
        (Some(kind), Some(_)) => {
            return Err(reject(
                "invalid_type",
                "type",
                format!("must be `{}` on this endpoint, or left out", kind.as_str()),
            ))
        }
        (None, Some(Value::String(t))) => EventType::parse(t).ok_or_else(|| {
            reject(
                "invalid_type",
                "type",
                format!(
                    "`{t}` is not a call type; use track, page, screen, identify, group or alias"
                ),
            )
        })?,
        (None, Some(_)) => return Err(reject("wrong_type", "type", "must be a string")),
        (None, None) => {
            return Err(reject(
                "missing_field",
                "type",
                "is required in a batch; use track, page, screen, identify, group or alias",
            ))
        }
    };
    if !matches!(body.get("type"), Some(Value::String(t)) if t == kind.as_str()) {
        body.insert("type".into(), Value::String(kind.as_str().into()));
    }
    body.shift_remove("writeKey");

    // 3. Field types.
    for field in OBJECT_FIELDS {
        match body.get(field) {
            None | Some(Value::Object(_)) => {}
            Some(Value::Null) => {
                body.remove(field);
            }
            Some(_) => return Err(reject("wrong_type", field, "must be an object")),
        }
    }
    for field in STRING_FIELDS {
        if matches!(body.get(field), Some(v) if !v.is_string() && !v.is_null()) {
            return Err(reject("wrong_type", field, "must be a string"));
        }
    }
    for field in [
        "userId",
        "anonymousId",
        "groupId",
        "previousId",
        "messageId",
    ] {
        id_field(&mut body, field)?;
    }

    // 4. Required fields per call.
    if !body.contains_key("userId") && !body.contains_key("anonymousId") && !cx.has_visitor {
        return Err(reject(
            "missing_field",
            "userId",
            "userId or anonymousId is required",
        ));
    }
    let required = match kind {
        EventType::Track => Some("event"),
        EventType::Group => Some("groupId"),
        EventType::Alias => Some("previousId"),
        _ => None,
    };
    if let Some(field) = required {
        let present = match body.get(field) {
            Some(Value::String(s)) => !s.trim().is_empty(),
            _ => false,
        };
        if !present {
            return Err(reject(
                "missing_field",
                field,
                format!("is required for {} calls", kind.as_str()),
            ));
        }
    }

    // 5. Times: parse, then correct the client clock skew as Segment does.
    let mut times: [Option<DateTime<Utc>>; 3] = [None; 3];
    for (slot, field) in times.iter_mut().zip(TIME_FIELDS) {
        match body.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => {
                *slot = Some(parse_rfc3339(s).ok_or_else(|| {
                    reject(
                        "invalid_timestamp",
                        field,
                        format!(
                            "`{s}` is not an ISO 8601 timestamp such as 2024-05-01T12:00:00.000Z"
                        ),
                    )
                })?);
            }
            Some(_) => return Err(reject("wrong_type", field, "must be an ISO 8601 string")),
        }
    }
    let [timestamp, sent_at, original] = times;
    let sent_at = sent_at.or_else(|| cx.batch_sent_at.and_then(parse_rfc3339));
    let client_time = original.or(timestamp);
    let corrected = match (client_time, sent_at) {
        (Some(client), Some(sent)) => {
            body.insert(
                "originalTimestamp".into(),
                Value::String(format_rfc3339(client)),
            );
            cx.received_at - (sent - client)
        }
        (Some(client), None) => client,
        (None, _) => cx.received_at,
    };
    if let Some(sent) = sent_at {
        body.insert("sentAt".into(), Value::String(format_rfc3339(sent)));
    }
    body.insert("timestamp".into(), Value::String(format_rfc3339(corrected)));
    body.insert(
        "receivedAt".into(),
        Value::String(cx.received_at_text.to_owned()),
    );

    // 6. A messageId for every event.
    if !body.contains_key("messageId") {
        body.insert(
            "messageId".into(),
            Value::String(format!("wm-{}", uuid::Uuid::now_v7())),
        );
    }
    Ok(match properties {
        Some(text) => Event::with_raw_properties(body, text),
        None => Event::from_map(body),
    })
}

/// An event object as parsed by [`normalize`]: every field as values, but
/// `properties` as the text it arrived in (see [`Event`]'s `# Design`); the
/// map holds a `null` at its position.
struct TopLevel(Map<String, Value>, Option<Box<RawValue>>);

impl<'de> Deserialize<'de> for TopLevel {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<TopLevel, D::Error> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = TopLevel;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an event object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut fields: A) -> Result<TopLevel, A::Error> {
                // Room for a typical event's top-level fields and the ones
                // normalize adds, so the map does not grow as it fills.
                let mut body = Map::with_capacity(16);
                let mut properties = None;
                while let Some(key) = fields.next_key::<String>()? {
                    if key == PROPERTIES {
                        properties = Some(fields.next_value::<Box<RawValue>>()?);
                        body.insert(key, Value::Null);
                    } else {
                        let value = fields.next_value::<Value>()?;
                        body.insert(key, value);
                    }
                }
                Ok(TopLevel(body, properties))
            }
        }
        deserializer.deserialize_map(Fields)
    }
}

/// Checks `properties` (received as text) is an object or null. Returns the
/// text to keep as it is; a `null` is removed, and an object spread over
/// several lines is parsed into `body` so the event stays one line.
fn take_properties(
    body: &mut Map<String, Value>,
    text: Option<Box<RawValue>>,
) -> Result<Option<Box<RawValue>>, Rejected> {
    let Some(text) = text else { return Ok(None) };
    let json = text.get();
    match json.as_bytes().first() {
        Some(b'{') if memchr::memchr2(b'\n', b'\r', json.as_bytes()).is_none() => Ok(Some(text)),
        Some(b'{') => {
            let value = serde_json::from_str(json)
                .map_err(|e| reject("invalid_json", PROPERTIES, e.to_string()))?;
            body.insert(PROPERTIES.to_owned(), value);
            Ok(None)
        }
        Some(b'n') => {
            body.shift_remove(PROPERTIES);
            Ok(None)
        }
        _ => Err(reject("wrong_type", PROPERTIES, "must be an object")),
    }
}

/// Nesting depth of JSON text, counted as [`max_depth`] counts values: an
/// object of scalars is 1. Strings are skipped with `memchr`, so the bytes
/// looked at one by one are only those between strings.
fn raw_depth(json: &str) -> usize {
    let bytes = json.as_bytes();
    let (mut at, mut depth, mut deepest) = (0usize, 0usize, 0usize);
    while let Some(&b) = bytes.get(at) {
        at += 1;
        match b {
            b'"' => loop {
                // Past the closing quote, stepping over escapes.
                let Some(rest) = bytes.get(at..) else {
                    return deepest;
                };
                match memchr::memchr2(b'"', b'\\', rest) {
                    Some(off) if rest.get(off) == Some(&b'\\') => at += off + 2,
                    Some(off) => {
                        at += off + 1;
                        break;
                    }
                    None => return deepest,
                }
            },
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Ids may be strings or numbers (Segment accepts both); numbers become
/// strings, empty strings count as absent.
fn id_field(body: &mut Map<String, Value>, field: &str) -> Result<(), Rejected> {
    let normalized = match body.get(field) {
        None => return Ok(()),
        Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) if s.len() > MAX_ID_LEN => {
            return Err(reject(
                "too_long",
                field,
                format!("is {} bytes; ids may be at most {MAX_ID_LEN}", s.len()),
            ))
        }
        Some(Value::String(_)) => return Ok(()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(_) => return Err(reject("wrong_type", field, "must be a string or a number")),
    };
    match normalized {
        Some(s) => {
            body.insert(field.to_owned(), Value::String(s));
        }
        None => {
            body.remove(field);
        }
    }
    Ok(())
}

/// Nesting depth of a JSON object: an object of scalars is 1.
fn max_depth(map: &Map<String, Value>) -> usize {
    fn depth(v: &Value) -> usize {
        match v {
            Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
            Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }
    1 + map.values().map(depth).max().unwrap_or(0)
}

#[cfg(test)]
mod tests;
