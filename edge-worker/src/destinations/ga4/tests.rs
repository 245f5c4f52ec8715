use super::*;

fn settings() -> toml::Table {
    crate::destinations::example_settings(EXAMPLE)
}

#[test]
fn the_example_parses_and_a_misspelt_key_is_named() {
    assert!(Ga4Config::parse(settings(), "x").is_ok());
    let mut s = settings();
    s.insert("measurment_id".into(), toml::Value::String("G-1".into()));
    let err = Ga4Config::parse(s, "destinations[0].settings").unwrap_err();
    assert!(err.to_string().contains("measurment_id"), "{err}");
}

#[test]
fn names_follow_ga4_rules() {
    assert_eq!(ga4_name("Order Completed"), "order_completed");
    assert_eq!(ga4_name("  Added-to cart!! "), "added_to_cart");
    assert_eq!(ga4_name("1st purchase"), "e_1st_purchase");
    assert_eq!(ga4_name("session_start"), "wm_session_start");
    assert_eq!(ga4_name("google_thing"), "wm_google_thing");
    assert_eq!(ga4_name("_private"), "private");
    assert_eq!(ga4_name(&"x".repeat(60)).len(), MAX_NAME_CHARS);
}

#[test]
fn events_map_to_client_consent_and_params() {
    let event = json!({
        "type": "track", "event": "Order Completed", "userId": "u1",
        "anonymousId": "a1", "timestamp": "2024-05-01T10:00:00Z",
        "context": {"waymark": {"visitorId": "v1"},
                    "consent": {"categoryPreferences": {"marketing": true}, "gcm": {"ad_personalization": "denied"}}},
        "properties": {"Total Price": 12.5, "nested": {"a": 1}, "note": "n".repeat(150)}
    });
    let marketing = GrantedPurposes::from_stored("analytics,marketing");
    let (client, user, consent, ga) =
        encode(event.as_object().unwrap(), &marketing, "marketing").unwrap();
    assert_eq!(client, "v1");
    assert_eq!(user.as_deref(), Some("u1"));
    assert_eq!(
        consent,
        json!({"ad_user_data":"GRANTED","ad_personalization":"DENIED"})
    );
    assert_eq!(ga["name"], "order_completed");
    assert_eq!(ga["params"]["total_price"], 12.5);
    assert!(ga["params"].get("nested").is_none());
    assert_eq!(ga["params"]["note"].as_str().unwrap().len(), 100);
    assert_eq!(ga["params"]["session_id"], json!(1_714_557_600));
    let mut with_session = event.clone();
    with_session["context"]["waymark"]["session"] =
        json!({"id": 1_714_558_000_123i64, "count": 3, "start": false});
    let (_, _, _, ga_session) =
        encode(with_session.as_object().unwrap(), &marketing, "marketing").unwrap();
    assert_eq!(
        ga_session["params"]["session_id"],
        json!(1_714_558_000),
        "the worker's session wins"
    );
    assert_eq!(ga["timestamp_micros"], json!(1_714_557_600_000_000i64));
    let identify = json!({"type":"identify","userId":"u1"});
    assert_eq!(
        encode(identify.as_object().unwrap(), &marketing, "marketing").err(),
        Some(SkipReason::UnsupportedType)
    );
}

#[test]
fn consent_is_what_the_edge_decided_not_what_the_event_says() {
    // The event claims marketing, but the edge did not grant it (a TC
    // string or GPC denied it): GA4 is told DENIED.
    let event = json!({"type":"track","event":"Buy","anonymousId":"a1",
        "context":{"consent":{"categoryPreferences":{"marketing":true}}}});
    let (_, _, consent, _) = encode(
        event.as_object().unwrap(),
        &GrantedPurposes::default(),
        "marketing",
    )
    .unwrap();
    assert_eq!(
        consent,
        json!({"ad_user_data":"DENIED","ad_personalization":"DENIED"})
    );
    // Granted by the source's default, which the event never states.
    let silent = json!({"type":"track","event":"Buy","anonymousId":"a1"});
    let granted = GrantedPurposes::from_stored("marketing");
    let (_, _, consent, _) = encode(silent.as_object().unwrap(), &granted, "marketing").unwrap();
    assert_eq!(
        consent,
        json!({"ad_user_data":"GRANTED","ad_personalization":"GRANTED"})
    );
}
