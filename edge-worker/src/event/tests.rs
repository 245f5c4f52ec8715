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
    let map = e.to_map();
    assert_eq!(Value::Object(map.clone()), expected);
    let keys: Vec<&str> = map.keys().map(String::as_str).collect();
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
            .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
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

fn with_raw(props: &str) -> Event {
    let body = match json!({"type":"track","properties":null,"context":{"ip":"x"}}) {
        Value::Object(m) => m,
        _ => unreachable!(),
    };
    Event::with_raw_properties(body, RawValue::from_string(props.to_owned()).unwrap())
}

#[test]
fn received_properties_are_read_in_place_and_written_as_sent() {
    let e = with_raw(r#"{"price":18.990,"tags":["a", "b"]}"#);
    assert_eq!(e.get("properties.price"), Some(&json!(18.99)));
    assert_eq!(e.get("properties.tags"), Some(&json!(["a", "b"])));
    assert_eq!(e.get("properties.nope"), None);
    assert_eq!(
        e.to_json(),
        r#"{"type":"track","properties":{"price":18.990,"tags":["a", "b"]},"context":{"ip":"x"}}"#
    );
    assert_eq!(
        e,
        event(
            json!({"type":"track","properties":{"price":18.99,"tags":["a","b"]},"context":{"ip":"x"}})
        )
    );
}

#[test]
fn writing_into_received_properties_turns_them_into_values() {
    let mut e = with_raw(r#"{"a":1}"#);
    e.set("properties.b", json!(2)).unwrap();
    assert_eq!(e.get("properties"), Some(&json!({"a":1,"b":2})));
    assert_eq!(
        e.to_json(),
        r#"{"type":"track","properties":{"a":1,"b":2},"context":{"ip":"x"}}"#
    );
    let mut e = with_raw(r#"{"a":1}"#);
    let r = e.replace("properties.a", json!(3)).unwrap();
    assert_eq!(r.old, Some(json!(1)));
    let mut e = with_raw(r#"{"a":1}"#);
    assert_eq!(e.remove("properties.a").unwrap(), Some(json!(1)));
    assert_eq!(e.get("properties"), Some(&json!({})));
    let mut e = with_raw(r#"{"a":{"b":1}}"#);
    *e.get_mut("properties.a.b").unwrap() = json!(5);
    assert_eq!(e.into_map()["properties"], json!({"a":{"b":5}}));
    // Writes elsewhere leave the text alone.
    let mut e = with_raw(r#"{"a": 1}"#);
    e.set("context.ip", json!("y")).unwrap();
    assert!(e.to_json().contains(r#""properties":{"a": 1}"#));
}

#[test]
fn stamps_go_under_context_waymark() {
    let mut e = event(json!({"type":"page"}));
    e.stamp("visitorId", json!("v1"));
    e.stamp("profileId", json!("p1"));
    e.stamp("visitorId", json!("v2"));
    assert_eq!(
        e.get("context.waymark"),
        Some(&json!({"visitorId":"v2","profileId":"p1"}))
    );
    // A client's non-object `context.waymark` is left alone.
    let mut e = event(json!({"context":{"waymark":"mine"}}));
    e.stamp("visitorId", json!("v"));
    assert_eq!(e.get("context.waymark"), Some(&json!("mine")));
}
