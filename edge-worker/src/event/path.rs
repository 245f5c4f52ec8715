//! Path helpers behind [`Event`](super::Event)'s accessors: splitting a
//! dotted path, walking and creating objects along it, and its errors.

use serde_json::{Map, Value};

use super::PathError;

/// `map[key]`, an empty object put there first when the key is missing.
pub(super) fn child_object<'m>(
    map: &'m mut Map<String, Value>,
    key: &str,
) -> Option<&'m mut Value> {
    if !map.contains_key(key) {
        map.insert(key.to_owned(), Value::Object(Map::new()));
    }
    map.get_mut(key)
}

/// Sets `map[key]`, overwriting in place (the key keeps its position) and
/// allocating the key only when it is new.
pub(super) fn put(map: &mut Map<String, Value>, key: &str, value: Value) {
    match map.get_mut(key) {
        Some(slot) => *slot = value,
        None => {
            map.insert(key.to_owned(), value);
        }
    }
}

/// The top-level field a path starts in.
pub(super) fn first_segment(path: &str) -> &str {
    path.split_once('.').map_or(path, |(first, _)| first)
}

/// A well-formed path's parent segments (if any) and last segment.
pub(super) fn split_path(path: &str) -> Result<(Option<&str>, &str), PathError> {
    if path.is_empty() || path.split('.').any(str::is_empty) {
        return Err(malformed(path));
    }
    Ok(match path.rsplit_once('.') {
        Some((dirs, leaf)) => (Some(dirs), leaf),
        None => (None, path),
    })
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
pub(super) fn set_in(
    map: &mut Map<String, Value>,
    path: &str,
    rest: &str,
    value: Value,
) -> Result<(), PathError> {
    let Some((segment, rest)) = rest.split_once('.') else {
        put(map, rest, value);
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
pub(super) type Parent<'e, 'p> = (Option<&'e mut Map<String, Value>>, &'p str);

#[cold]
fn malformed(path: &str) -> PathError {
    PathError::Malformed(path.to_owned())
}

#[cold]
pub(super) fn not_an_object(path: &str, segment: &str) -> PathError {
    PathError::NotAnObject {
        path: path.to_owned(),
        segment: segment.to_owned(),
    }
}
