use super::*;
use serde_json::{json, Map};

fn event(v: Json) -> Event {
    match v {
        Json::Object(m) => Event::from_map(m),
        _ => Event::from_map(Map::new()),
    }
}

fn state() -> RuleState {
    RuleState::new(Arc::from("test"), Arc::new(LogBudget::new()), 1 << 20)
}

fn ev() -> Resource<EventView> {
    Resource::new_borrow(0)
}

#[test]
fn paths_are_checked_for_shape_and_read_only_fields() {
    assert_eq!(check_path("properties.price"), Ok(()));
    for bad in ["", ".", "a..b", "a.", ".a"] {
        assert_eq!(check_path(bad), Err(PathError::Malformed), "{bad}");
    }
    assert_eq!(check_path(&"x".repeat(257)), Err(PathError::Malformed));
    assert_eq!(check_path(&["a"; 17].join(".")), Err(PathError::Malformed));
    assert_eq!(check_path(&["a"; 16].join(".")), Ok(()));
    for field in READ_ONLY {
        assert_eq!(check_path(field), Err(PathError::ReadOnly));
    }
    assert_eq!(check_path("context.messageId"), Ok(()));
}

#[test]
fn values_convert_both_ways() {
    assert_eq!(to_wit(&json!(3)), Value::Integer(3));
    assert_eq!(to_wit(&json!(2.5)), Value::Float(2.5));
    assert_eq!(to_wit(&json!(u64::MAX)), Value::Float(u64::MAX as f64));
    assert_eq!(
        to_wit(&json!({"a":[1]})),
        Value::Json(r#"{"a":[1]}"#.into())
    );
    assert_eq!(
        from_wit(Value::Float(f64::NAN)),
        Err(PathError::InvalidValue)
    );
    assert_eq!(
        from_wit(Value::Json("{".into())),
        Err(PathError::InvalidValue)
    );
    let deep = "[".repeat(40) + &"]".repeat(40);
    assert_eq!(from_wit(Value::Json(deep)), Err(PathError::InvalidValue));
    assert_eq!(
        from_wit(Value::Json("[[1]]".into())).map(|v| v.0),
        Ok(json!([[1]]))
    );
}

#[test]
fn rollback_restores_the_event_exactly() {
    use types::HostEvent;
    let original =
        event(json!({"type":"track","properties":{"a":1,"b":{"c":2}},"context":{"ip":"x"}}));
    let mut s = state();
    s.begin(original.clone());
    s.set(ev(), "properties.a".into(), Value::Integer(9))
        .unwrap()
        .unwrap();
    s.set(ev(), "properties.new.deep.x".into(), Value::Null)
        .unwrap()
        .unwrap();
    s.set(ev(), "fresh".into(), Value::Text("t".into()))
        .unwrap()
        .unwrap();
    assert_eq!(s.remove(ev(), "properties.b".into()).unwrap(), Ok(true));
    s.set(ev(), "properties.b".into(), Value::Boolean(true))
        .unwrap()
        .unwrap();
    assert_eq!(
        s.set(ev(), "context.ip.v4".into(), Value::Null).unwrap(),
        Err(PathError::NotAnObject("ip".into()))
    );
    assert_eq!(s.refused_paths, 1);
    let rolled_back = s.finish(true).unwrap();
    assert_eq!(rolled_back, original);
}

#[test]
fn a_call_may_not_write_more_than_its_budget() {
    use types::HostEvent;
    let mut s = state();
    s.begin(event(json!({})));
    let chunk = "y".repeat(40 * 1024);
    assert_eq!(
        s.set(ev(), "a".into(), Value::Text(chunk.clone())).unwrap(),
        Ok(())
    );
    assert_eq!(
        s.set(ev(), "b".into(), Value::Text(chunk)).unwrap(),
        Err(PathError::TooLarge)
    );
    let e = s.finish(false).unwrap();
    assert!(e.get("b").is_none());
}

#[test]
fn the_event_is_only_reachable_during_a_call() {
    use types::HostEvent;
    let mut s = state();
    assert!(
        s.get(ev(), "type".into()).is_err(),
        "traps outside transform"
    );
    s.begin(event(json!({"type":"page","name":"Home"})));
    assert_eq!(s.name(ev()).unwrap().as_deref(), Some("Home"));
    assert!(s.finish(false).is_some());
    assert!(s.finish(false).is_none());
}

#[test]
fn logs_are_capped_per_call() {
    use log::Host;
    let mut s = state();
    s.begin(event(json!({})));
    for _ in 0..50 {
        s.log(log::Level::Debug, "x".repeat(2000)).unwrap();
    }
    assert_eq!(s.logged, MAX_LOGS_PER_CALL);
    assert_eq!(s.dropped_logs, 40);
}

#[test]
fn memory_growth_past_the_cap_traps() {
    let mut cap = MemoryCap::new(1 << 20);
    assert!(cap.memory_growing(0, 65_536, None).unwrap());
    assert!(cap.memory_growing(65_536, 2 << 20, None).is_err());
    assert!(cap.exceeded);
    assert_eq!(cap.peak_bytes, 65_536);
}
