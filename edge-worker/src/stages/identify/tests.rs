use super::*;
use crate::config::IdentityConfig;

fn event(v: Value) -> Event {
    match v {
        Value::Object(m) => Event::from_map(m),
        _ => unreachable!(),
    }
}

fn rules() -> KeyRules {
    KeyRules::from_config(&IdentityConfig::default())
}

#[test]
fn visitor_fills_a_missing_anonymous_id() {
    let v = VisitorId::mint();
    let mut e = event(json!({"userId":"u"}));
    apply_visitor(&mut e, Some(&v), false);
    assert_eq!(e.anonymous_id(), Some(v.as_str()));
    assert_eq!(e.str("context.waymark.visitorId"), Some(v.as_str()));
}

#[test]
fn a_minted_visitor_keeps_the_clients_anonymous_id() {
    let v = VisitorId::mint();
    let mut e = event(json!({"anonymousId":"mine"}));
    apply_visitor(&mut e, Some(&v), false);
    assert_eq!(e.anonymous_id(), Some("mine"));
    assert_eq!(e.str(CLIENT_ANONYMOUS_ID), None);
    assert_eq!(e.str("context.waymark.visitorId"), Some(v.as_str()));
}

#[test]
fn a_verified_cookie_takes_precedence_and_the_client_id_stays_linked() {
    let v = VisitorId::mint();
    let mut e = event(json!({"type":"track","event":"x","anonymousId":"mine"}));
    apply_visitor(&mut e, Some(&v), true);
    assert_eq!(e.anonymous_id(), Some(v.as_str()));
    assert_eq!(e.str(CLIENT_ANONYMOUS_ID), Some("mine"));
    let ids = event_ids(&e, &rules(), Some(v.as_str()), Some(v.as_str()), 0);
    assert!(ids.keys.iter().any(|k| k == "anon:mine"), "{:?}", ids.keys);
    let cookie = format!("cookie:{}", v.as_str());
    assert!(ids.keys.contains(&cookie), "{:?}", ids.keys);
}

#[test]
fn identifiers_come_most_authoritative_first() {
    let e = event(json!({
        "type":"identify","userId":"u1","anonymousId":"a1",
        "traits":{"email":" Ada@Example.com","name":"Ada"},
        "timestamp":"2024-01-01T00:00:00.000Z"
    }));
    let ids = event_ids(&e, &rules(), Some("vid"), Some("vid"), 0);
    let kinds: Vec<&str> = ids
        .keys
        .iter()
        .map(|k| k.split(':').next().unwrap_or(""))
        .collect();
    assert_eq!(kinds, ["user", "email", "anon", "cookie"]);
    assert!(ids.user_seed);
    assert_eq!(ids.session_key.as_deref(), Some("cookie:vid"));
    assert_eq!(ids.ts_ms, 1_704_067_200_000);
    assert!(ids
        .traits
        .iter()
        .any(|(k, v)| k == "name" && v == "\"Ada\""));
}

#[test]
fn the_filled_in_anonymous_id_is_the_cookie_only() {
    let e = event(json!({"type":"page","anonymousId":"vid"}));
    let with_cookie = event_ids(&e, &rules(), Some("vid"), Some("vid"), 0);
    assert_eq!(with_cookie.keys, ["cookie:vid"]);
    // No consent for the cookie: the minted id links nothing.
    let without = event_ids(&e, &rules(), Some("vid"), None, 0);
    assert!(without.keys.is_empty());
    assert_eq!(without.session_key, None);
}

#[test]
fn junk_ids_are_left_out() {
    let e = event(json!({"type":"track","userId":"undefined","anonymousId":"  ","event":"x"}));
    let ids = event_ids(&e, &rules(), None, None, 0);
    assert!(ids.keys.is_empty());
    assert!(!ids.user_seed);
}

#[test]
fn alias_carries_its_previous_id_and_no_user_seed() {
    let e = event(json!({"type":"alias","userId":"new","previousId":"old"}));
    let ids = event_ids(&e, &rules(), None, None, 0);
    assert_eq!(ids.keys, ["user:new"]);
    assert_eq!(ids.previous_id.as_deref(), Some("old"));
    assert_eq!(ids.cause, Cause::Alias);
    assert!(!ids.user_seed);
}

/// Links `bodies` as one request from a browser without a cookie, with
/// a minted visitor and the cookie purpose granted; returns each event's profile.
async fn link_minted(bodies: Vec<Value>) -> Vec<String> {
    let dir = std::env::temp_dir().join(format!("waymark-test-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = crate::storage::SqliteStorage::open(&dir, 100).unwrap();
    let identity = Identity::with_store(&IdentityConfig::default(), store);
    let visitor = VisitorId::mint();
    let mut events: Vec<Event> = bodies
        .into_iter()
        .map(|b| {
            let mut e = event(b);
            apply_visitor(&mut e, Some(&visitor), false);
            e
        })
        .collect();
    let granted = vec![true; events.len()];
    let visit = Visit {
        visitor: Some(&visitor),
        cookie_known: false,
        cookie_granted: &granted,
        sessions: true,
    };
    link(&identity, &mut events, &visit).await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    events
        .iter()
        .map(|e| e.str("context.waymark.profileId").unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_minted_visitor_does_not_glue_a_batch_of_many_people_together() {
    let profiles = link_minted(vec![
        json!({"type":"track","messageId":"m1","anonymousId":"a1"}),
        json!({"type":"track","messageId":"m2","anonymousId":"a2"}),
        json!({"type":"track","messageId":"m3","userId":"u3"}),
    ])
    .await;
    assert_ne!(profiles[0], profiles[1]);
    assert_ne!(profiles[1], profiles[2]);
    assert_ne!(profiles[0], profiles[2]);
}

#[tokio::test]
async fn a_minted_visitor_links_a_batch_of_one_person() {
    // One browser: its anonymousId, then events the visitor id filled in.
    let profiles = link_minted(vec![
        json!({"type":"page","messageId":"m1","anonymousId":"a1"}),
        json!({"type":"track","messageId":"m2","anonymousId":"a1"}),
        json!({"type":"track","messageId":"m3"}),
    ])
    .await;
    assert_eq!(profiles[0], profiles[1]);
    assert_eq!(profiles[1], profiles[2]);
}
