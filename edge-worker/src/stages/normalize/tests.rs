use super::*;
use serde_json::json;
use serde_json::value::RawValue;

fn cx() -> NormalizeContext<'static> {
    NormalizeContext {
        received_at: parse_rfc3339("2024-05-01T12:00:10.000Z").unwrap(),
        received_at_text: "2024-05-01T12:00:10.000Z",
        batch_sent_at: None,
        max_event_bytes: 32 * 1024,
        max_depth: 8,
        has_visitor: false,
    }
}

fn run(v: Value, endpoint: Option<EventType>) -> Result<Event, Rejected> {
    let text = v.to_string();
    let raw: Box<RawValue> = RawValue::from_string(text).unwrap();
    normalize(
        &RawEvent {
            raw: &raw,
            endpoint_type: endpoint,
        },
        &cx(),
    )
}

#[test]
fn a_valid_track_gets_ids_and_times() {
    let e = run(
        json!({"type":"track","event":"Signed Up","anonymousId":"a1"}),
        None,
    )
    .unwrap();
    assert!(e.message_id().starts_with("wm-"));
    assert_eq!(e.str("receivedAt"), Some("2024-05-01T12:00:10.000Z"));
    assert_eq!(e.str("timestamp"), Some("2024-05-01T12:00:10.000Z"));
}

#[test]
fn clock_skew_is_corrected_from_sent_at() {
    // The client clock is 1 hour fast; the event happened 5 s before sending.
    let e = run(
        json!({"type":"page","anonymousId":"a","timestamp":"2024-05-01T13:00:00.000Z","sentAt":"2024-05-01T13:00:05.000Z"}),
        None,
    )
    .unwrap();
    assert_eq!(e.str("timestamp"), Some("2024-05-01T12:00:05.000Z"));
    assert_eq!(e.str("originalTimestamp"), Some("2024-05-01T13:00:00.000Z"));
}

#[test]
fn required_fields_per_call() {
    let cases = [
        (json!({"type":"track","event":"x"}), "userId"),
        (json!({"type":"track","userId":"u"}), "event"),
        (json!({"type":"track","userId":"u","event":"  "}), "event"),
        (json!({"type":"group","userId":"u"}), "groupId"),
        (json!({"type":"alias","userId":"u"}), "previousId"),
        (json!({"userId":"u"}), "type"),
    ];
    for (v, field) in cases {
        let err = run(v.clone(), None).unwrap_err();
        assert_eq!(err.reason, "missing_field", "{v}");
        assert_eq!(err.field, field, "{v}");
    }
}

#[test]
fn wrong_types_are_named() {
    let cases = [
        (json!({"type":"track","userId":"u","event":1}), "event"),
        (
            json!({"type":"track","userId":"u","event":"e","properties":[1]}),
            "properties",
        ),
        (json!({"type":"identify","userId":{"a":1}}), "userId"),
        (
            json!({"type":"identify","userId":"u","traits":"x"}),
            "traits",
        ),
        (
            json!({"type":"page","userId":"u","timestamp":5}),
            "timestamp",
        ),
        (json!({"type":7,"userId":"u"}), "type"),
    ];
    for (v, field) in cases {
        let err = run(v.clone(), None).unwrap_err();
        assert_eq!(err.field, field, "{v}: {err:?}");
    }
    let err = run(
        json!({"type":"page","userId":"u","timestamp":"yesterday"}),
        None,
    )
    .unwrap_err();
    assert_eq!(err.reason, "invalid_timestamp");
    let err = run(json!({"type":"click","userId":"u"}), None).unwrap_err();
    assert_eq!(err.reason, "invalid_type");
}

#[test]
fn numeric_ids_become_strings_and_endpoint_sets_type() {
    let e = run(json!({"userId":42,"event":"x"}), Some(EventType::Track)).unwrap();
    assert_eq!(e.user_id(), Some("42"));
    assert_eq!(e.event_type(), EventType::Track);
    let err = run(json!({"type":"page","userId":"u"}), Some(EventType::Track)).unwrap_err();
    assert_eq!(err.reason, "invalid_type");
}

#[test]
fn depth_and_size_limits() {
    let deep = json!({"type":"track","userId":"u","event":"e","properties":{"a":{"b":{"c":{"d":{"e":{"f":{"g":{"h":1}}}}}}}}});
    assert_eq!(run(deep, None).unwrap_err().reason, "too_deep");
    let big =
        json!({"type":"track","userId":"u","event":"e","properties":{"s":"x".repeat(40_000)}});
    assert_eq!(run(big, None).unwrap_err().reason, "too_large");
}

fn run_text(text: &str) -> Result<Event, Rejected> {
    let raw: Box<RawValue> = serde_json::from_str(text).unwrap();
    normalize(
        &RawEvent {
            raw: &raw,
            endpoint_type: None,
        },
        &cx(),
    )
}

#[test]
fn properties_pass_through_as_sent() {
    let props = r#"{"price":18.990,"name":"Caf\u00e9","tags":["a", "b"]}"#;
    let e = run_text(&format!(
        r#"{{"type":"track","event":"e","properties":{props},"userId":"u"}}"#
    ))
    .unwrap();
    let json = e.to_json();
    assert!(json.contains(&format!(r#""properties":{props}"#)), "{json}");
    // Its place among the keys is kept, and paths inside it read as values.
    let keys: Vec<String> = e.to_map().keys().cloned().collect();
    assert_eq!(&keys[..4], ["type", "event", "properties", "userId"]);
    assert_eq!(e.get("properties.name"), Some(&json!("Café")));
    assert_eq!(
        serde_json::from_str::<Value>(&json).unwrap()["properties"],
        json!({"price": 18.99, "name": "Café", "tags": ["a", "b"]})
    );
}

#[test]
fn properties_over_several_lines_become_one() {
    let e = run_text(
        "{\"type\":\"track\",\"event\":\"e\",\"userId\":\"u\",\"properties\":{\n  \"a\": 1\r\n}}",
    )
    .unwrap();
    let json = e.to_json();
    assert!(!json.contains('\n') && !json.contains('\r'), "{json}");
    assert!(json.contains(r#""properties":{"a":1}"#), "{json}");
}

#[test]
fn properties_must_be_an_object_or_null() {
    let e = run(
        json!({"type":"track","event":"e","userId":"u","properties":null}),
        None,
    )
    .unwrap();
    assert_eq!(e.get("properties"), None);
    assert!(!e.to_json().contains("properties"));
    for bad in [json!([1]), json!("x"), json!(3), json!(true)] {
        let err = run(
            json!({"type":"track","event":"e","userId":"u","properties":bad}),
            None,
        )
        .unwrap_err();
        assert_eq!(
            (err.reason, err.field.as_str()),
            ("wrong_type", "properties")
        );
    }
}

fn arb_json() -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<i32>().prop_map(Value::from),
        "[a-z\\\\\"{}\\[\\] ]{0,6}".prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 48, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec(("[a-z{\\[\"]{1,3}", inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

proptest::proptest! {
    #[test]
    fn text_depth_agrees_with_value_depth(value in arb_json()) {
        let mut map = Map::new();
        map.insert("v".to_owned(), value);
        let text = serde_json::to_string(&Value::Object(map.clone())).unwrap();
        proptest::prop_assert_eq!(raw_depth(&text), max_depth(&map));
    }
}
