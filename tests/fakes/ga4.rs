//! Fake GA4 Measurement Protocol: `POST /mp/collect?measurement_id&api_secret`,
//! a `client_id`, 1 to 25 events named by GA4's rules (letters, digits and
//! `_`, starting with a letter, at most 40 characters, not reserved), at most
//! 25 params each with names by the same rules and string values of at most
//! 100 characters, `consent` values `GRANTED`/`DENIED`, and 16-digit
//! `timestamp_micros`, a `user_id` of at most 256 characters and a body
//! under 130 kB. (The real endpoint answers 2xx even to bad payloads;
//! the fake is as strict as its validation server, `/debug/mp/collect`.)

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

use super::{Fake, FakeState};

const RESERVED: &[&str] = &[
    "ad_activeview",
    "ad_click",
    "ad_exposure",
    "ad_query",
    "ad_reward",
    "adunit_exposure",
    "app_background",
    "app_clear_data",
    "app_exception",
    "app_remove",
    "app_store_refund",
    "app_store_subscription_cancel",
    "app_store_subscription_convert",
    "app_store_subscription_renew",
    "app_update",
    "app_upgrade",
    "dynamic_link_app_open",
    "dynamic_link_app_update",
    "dynamic_link_first_open",
    "error",
    "firebase_campaign",
    "first_open",
    "first_visit",
    "in_app_purchase",
    "notification_dismiss",
    "notification_foreground",
    "notification_open",
    "notification_receive",
    "os_update",
    "session_start",
    "session_start_with_rollout",
    "user_engagement",
];

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 40
        && n.starts_with(|c: char| c.is_ascii_alphabetic())
        && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !["_", "firebase_", "ga_", "google_", "gtag."]
            .iter()
            .any(|p| n.starts_with(p))
}

/// Starts a fake for `measurement_id` and `api_secret`.
pub fn start(measurement_id: &'static str, api_secret: &'static str) -> Fake {
    Fake::serve(move |state| {
        Router::new()
            .route(
                "/mp/collect",
                post(move |s, q, b| collect(s, q, b, measurement_id, api_secret)),
            )
            .with_state(state)
    })
}

async fn collect(
    State(state): State<Arc<FakeState>>,
    Query(q): Query<HashMap<String, String>>,
    body: String,
    measurement_id: &'static str,
    api_secret: &'static str,
) -> Response {
    if let Some(r) = state.gate().await {
        return r;
    }
    if q.get("measurement_id").map(String::as_str) != Some(measurement_id)
        || q.get("api_secret").map(String::as_str) != Some(api_secret)
    {
        return (StatusCode::FORBIDDEN, "bad measurement_id or api_secret").into_response();
    }
    if body.len() > 130_000 {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            "post body must be smaller than 130kB",
        )
            .into_response();
    }
    let Ok(json) = serde_json::from_str::<Value>(&body) else {
        return state.reject("body is not JSON");
    };
    if json
        .get("user_id")
        .and_then(Value::as_str)
        .is_some_and(|u| u.chars().count() > 256)
    {
        return state.reject("user_id longer than 256 characters");
    }
    let Some(client_id) = json
        .get("client_id")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
    else {
        return state.reject("client_id is required for web streams");
    };
    if let Some(consent) = json.get("consent") {
        for k in ["ad_user_data", "ad_personalization"] {
            if let Some(v) = consent.get(k) {
                if v != "GRANTED" && v != "DENIED" {
                    return state.reject(format!("consent.{k} must be GRANTED or DENIED"));
                }
            }
        }
    }
    let Some(events) = json.get("events").and_then(Value::as_array) else {
        return state.reject("events is required");
    };
    if events.is_empty() || events.len() > 25 {
        return state.reject(format!("{} events; send 1 to 25 per request", events.len()));
    }
    let mut accepted = Vec::new();
    for e in events {
        let name = e.get("name").and_then(Value::as_str).unwrap_or("");
        if !valid_name(name) || RESERVED.contains(&name) {
            return state.reject(format!("invalid or reserved event name `{name}`"));
        }
        if let Some(ts) = e.get("timestamp_micros") {
            if ts.as_i64().map(|t| t.to_string().len()) != Some(16) {
                return state.reject("timestamp_micros must be 16 digits");
            }
        }
        let params = e
            .get("params")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        if params.len() > 25 {
            return state.reject("more than 25 params");
        }
        for (k, v) in &params {
            if !valid_name(k) {
                return state.reject(format!("invalid param name `{k}`"));
            }
            if v.as_str().is_some_and(|s| s.chars().count() > 100) {
                return state.reject(format!("param `{k}` longer than 100 characters"));
            }
            if v.is_object() || v.is_array() {
                return state.reject(format!("param `{k}` is not a scalar"));
            }
        }
        accepted.push(json!({
            "client_id": client_id,
            "user_id": json.get("user_id"),
            "consent": json.get("consent"),
            "name": name,
            "params": params,
        }));
    }
    state.accept(accepted);
    StatusCode::NO_CONTENT.into_response()
}
