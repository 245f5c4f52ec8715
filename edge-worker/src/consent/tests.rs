//! The consent rule, signal by signal and mixed.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::*;
use crate::config::ConsentConfig;

/// A TCF v2 core segment with `purposes` (bit `n-1` for purpose `n`) and
/// vendor consents for `vendors` (bitfield encoding), every other field
/// zero: enough for the consent rule's tests. IAB's own encoder is used
/// for the decoder's tests (`tcf::tests`).
pub(crate) fn tc_string(purposes: u32, vendors: &[u16]) -> String {
    let mut bits = String::new();
    let mut put = |v: u64, w: usize| bits.push_str(&format!("{v:0w$b}"));
    put(2, 6); // version
    put(0, 36 + 36 + 12 + 12 + 6 + 12 + 12); // created .. vendor list version
    put(4, 6); // policy version
    put(0, 1 + 1 + 12);
    for i in 0..24 {
        put(u64::from(purposes >> i & 1), 1);
    }
    put(0, 24 + 1 + 12);
    let max = vendors.iter().copied().max().unwrap_or(0);
    put(u64::from(max), 16);
    put(0, 1);
    for id in 1..=max {
        put(u64::from(vendors.contains(&id)), 1);
    }
    put(0, 16 + 1 + 12); // no LI vendors, no restrictions
    while bits.len() % 6 != 0 {
        bits.push('0');
    }
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    bits.as_bytes()
        .chunks(6)
        .map(|c| char::from(ALPHABET[c.iter().fold(0, |a, &b| a * 2 + usize::from(b - b'0'))]))
        .collect()
}

fn event(v: Value) -> Event {
    match v {
        Value::Object(m) => Event::from_map(m),
        _ => unreachable!(),
    }
}

fn defaults() -> BTreeMap<String, ConsentDefault> {
    BTreeMap::from([
        ("analytics".to_owned(), ConsentDefault::Granted),
        ("marketing".to_owned(), ConsentDefault::Pending),
        ("ads".to_owned(), ConsentDefault::Denied),
    ])
}

fn decide(e: &Event) -> Decision {
    let policy = ConsentPolicy::new(&ConsentConfig::default(), ["analytics", "marketing", "ads"]);
    policy.decide(e, &defaults())
}

fn purposes(p: &[&str]) -> Vec<String> {
    p.iter().map(|s| s.to_string()).collect()
}

#[test]
fn the_event_wins_over_defaults() {
    let d = decide(&event(
        json!({"context":{"consent":{"categoryPreferences":{"analytics":false,"marketing":true}}}}),
    ));
    assert_eq!(d.state("analytics"), ConsentState::Denied);
    assert_eq!(d.state("marketing"), ConsentState::Granted);
}

#[test]
fn unmentioned_purposes_take_the_default() {
    let d = decide(&event(json!({})));
    assert_eq!(d.state("analytics"), ConsentState::Granted);
    assert_eq!(d.state("marketing"), ConsentState::Pending);
    assert_eq!(d.state("ads"), ConsentState::Denied);
    assert_eq!(d.state("unknown"), ConsentState::Pending);
    assert_eq!(d.for_destination(&[], None), ConsentState::Granted);
}

#[test]
fn gpc_denies_marketing_even_when_granted() {
    let d = decide(&event(
        json!({"context":{"consent":{"gpc":true,"categoryPreferences":{"marketing":true,"analytics":true}}}}),
    ));
    assert_eq!(d.state("marketing"), ConsentState::Denied);
    assert_eq!(d.state("analytics"), ConsentState::Granted);
}

#[test]
fn denied_beats_pending() {
    let d = decide(&event(json!({})));
    assert_eq!(
        d.for_destination(&purposes(&["marketing", "ads"]), None),
        ConsentState::Denied
    );
}

#[test]
fn a_tc_string_grants_a_purpose_only_with_all_its_tcf_purposes() {
    // Purposes 1, 3 and 4: marketing. Without 8, not analytics.
    let tc = tc_string(0b1101, &[]);
    let d = decide(&event(json!({"context":{"consent":{"tcf":tc}}})));
    assert_eq!(d.state("marketing"), ConsentState::Granted);
    assert_eq!(
        d.state("analytics"),
        ConsentState::Denied,
        "the string denies it, over the default"
    );
    // Purposes 1 and 8: analytics only.
    let tc = tc_string(0b1000_0001, &[]);
    let d = decide(&event(
        json!({"context":{"consent":{"tcf":{"tcString":tc}}}}),
    ));
    assert_eq!(d.state("analytics"), ConsentState::Granted);
    assert_eq!(d.state("marketing"), ConsentState::Denied);
    // Unmapped purposes keep their default.
    assert_eq!(d.state("ads"), ConsentState::Denied);
}

#[test]
fn a_denial_by_any_signal_wins_over_grants_by_the_others() {
    let tc = tc_string(0b1101, &[]);
    let d = decide(&event(json!({"context":{"consent":{
        "tcf": tc,
        "categoryPreferences": {"marketing": true},
        "gcm": {"ad_storage": "granted", "ad_user_data": "denied"}
    }}})));
    assert_eq!(d.state("marketing"), ConsentState::Denied);
    let d = decide(&event(json!({"context":{"consent":{
        "categoryPreferences": {"analytics": true},
        "gcm": {"analytics_storage": "denied"}
    }}})));
    assert_eq!(d.state("analytics"), ConsentState::Denied);
}

#[test]
fn consent_mode_grants_only_with_every_field_granted() {
    let d = decide(&event(
        json!({"context":{"consent":{"gcm":{"ad_storage":"granted"}}}}),
    ));
    assert_eq!(
        d.state("marketing"),
        ConsentState::Pending,
        "ad_user_data unsaid: the default"
    );
    let d = decide(&event(
        json!({"context":{"consent":{"gcm":{"ad_storage":"GRANTED","ad_user_data":true}}}}),
    ));
    assert_eq!(d.state("marketing"), ConsentState::Granted);
}

#[test]
fn an_unreadable_signal_grants_nothing_and_denies_nothing() {
    for consent in [
        json!({"tcf":"not a tc string","categoryPreferences":{"analytics":true,"marketing":true}}),
        json!({"tcf":42,"categoryPreferences":{"analytics":true,"marketing":true}}),
        json!({"tcf":"BOEFEAyOEFEAyAHABDENAI4AAAB9vABAASA","categoryPreferences":{"analytics":true,"marketing":true}}),
    ] {
        let d = decide(&event(json!({"context":{"consent":consent}})));
        assert_eq!(d.state("analytics"), ConsentState::Pending, "{consent}");
        assert_eq!(d.state("marketing"), ConsentState::Pending, "{consent}");
        assert_eq!(d.vendor(755), ConsentState::Pending, "{consent}");
    }
    let d = decide(&event(
        json!({"context":{"consent":{"gcm":{"analytics_storage":"maybe"}}}}),
    ));
    assert_eq!(d.state("analytics"), ConsentState::Pending);
    // A denial still counts next to an unreadable signal.
    let d = decide(&event(
        json!({"context":{"consent":{"tcf":"x","gpc":true}}}),
    ));
    assert_eq!(d.state("marketing"), ConsentState::Denied);
}

#[test]
fn a_vendor_needs_its_consent_only_when_a_tc_string_is_present() {
    let d = decide(&event(
        json!({"context":{"consent":{"categoryPreferences":{"marketing":true}}}}),
    ));
    assert_eq!(
        d.for_destination(&purposes(&["marketing"]), Some(755)),
        ConsentState::Granted
    );
    let tc = tc_string(0b1101, &[3, 755]);
    let d = decide(&event(json!({"context":{"consent":{"tcf":tc}}})));
    assert_eq!(
        d.for_destination(&purposes(&["marketing"]), Some(755)),
        ConsentState::Granted
    );
    assert_eq!(
        d.for_destination(&purposes(&["marketing"]), Some(754)),
        ConsentState::Denied
    );
    assert_eq!(d.for_destination(&[], Some(1)), ConsentState::Denied);
}

#[test]
fn granted_lists_the_granted_purposes() {
    let d = decide(&event(
        json!({"context":{"consent":{"categoryPreferences":{"marketing":true}}}}),
    ));
    let granted: Vec<&str> = d.granted().map(|p| &**p).collect();
    assert_eq!(granted, vec!["analytics", "marketing"]);
}

#[test]
fn granted_purposes_round_trip_through_their_stored_form() {
    let d = decide(&event(
        json!({"context":{"consent":{"categoryPreferences":{"marketing":true}}}}),
    ));
    let g = d.granted_purposes();
    assert_eq!(g.as_str(), "analytics,marketing");
    let back = GrantedPurposes::from_stored(g.as_str());
    assert!(back.contains("analytics") && back.contains("marketing"));
    assert!(!back.contains("ads") && !back.contains("") && !back.contains("market"));
    assert!(!GrantedPurposes::default().contains("analytics"));
}
