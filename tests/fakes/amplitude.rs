//! Fake Amplitude HTTP V2 API: `POST /2/httpapi` with `api_key` in the
//! body, at most 2000 events (413 beyond), each with `event_type` and a
//! `user_id` or `device_id` of at least `options.min_id_length` (default 5)
//! characters; `insert_id` is required here because Waymark always sends it.
//! Invalid events make a 400 that stores nothing and names them, as
//! Amplitude does: `events_with_invalid_fields` / `events_with_missing_fields`
//! (field → indices) and `events_with_invalid_id_lengths`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use super::{Fake, FakeState};

/// Starts a fake that accepts `api_key`.
pub fn start(api_key: &'static str) -> Fake {
    Fake::serve(move |state| {
        Router::new()
            .route("/2/httpapi", post(move |s, b| upload(s, b, api_key)))
            .with_state(state)
    })
}

async fn upload(
    State(state): State<Arc<FakeState>>,
    body: String,
    api_key: &'static str,
) -> Response {
    if let Some(r) = state.gate().await {
        return r;
    }
    let Ok(json) = serde_json::from_str::<Value>(&body) else {
        return state.reject("Invalid JSON request body");
    };
    if json.get("api_key").and_then(Value::as_str) != Some(api_key) {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"code": 400, "error": "Invalid API key"})),
        )
            .into_response();
    }
    let Some(events) = json.get("events").and_then(Value::as_array) else {
        return state.reject("Request missing required field: events");
    };
    if events.len() > 2000 || body.len() > 1024 * 1024 {
        return (StatusCode::PAYLOAD_TOO_LARGE, "Payload too large").into_response();
    }
    let min = json
        .pointer("/options/min_id_length")
        .and_then(Value::as_u64)
        .unwrap_or(5) as usize;
    let mut invalid: Map<String, Value> = Map::new();
    let mut missing: Map<String, Value> = Map::new();
    let mut short: Map<String, Value> = Map::new();
    let add = |map: &mut Map<String, Value>, field: &str, i: usize| {
        if let Some(list) = map.entry(field).or_insert_with(|| json!([])).as_array_mut() {
            list.push(json!(i));
        }
    };
    for (i, e) in events.iter().enumerate() {
        if e.get("event_type")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            add(&mut missing, "event_type", i);
            continue;
        }
        let ids: Vec<(&str, &str)> = ["user_id", "device_id"]
            .iter()
            .filter_map(|k| e.get(*k).and_then(Value::as_str).map(|v| (*k, v)))
            .collect();
        if ids.is_empty() {
            add(&mut missing, "user_id", i);
            continue;
        }
        if let Some((k, _)) = ids.iter().find(|(_, v)| v.chars().count() < min) {
            add(&mut short, k, i);
            continue;
        }
        if e.get("insert_id").and_then(Value::as_str).is_none() {
            add(&mut missing, "insert_id", i);
            continue;
        }
        if e.get("time").is_some_and(|t| !t.is_i64()) {
            add(&mut invalid, "time", i);
            continue;
        }
        let insert_id = e.get("insert_id").and_then(Value::as_str).unwrap_or("");
        if state.is_refused(insert_id) {
            add(&mut invalid, "event_properties", i);
        }
    }
    if !(invalid.is_empty() && missing.is_empty() && short.is_empty()) {
        state.note_rejection(format!(
            "invalid {:?} missing {:?} short {:?}",
            invalid.keys().collect::<Vec<_>>(),
            missing.keys().collect::<Vec<_>>(),
            short.keys().collect::<Vec<_>>()
        ));
        let mut answer = json!({"code": 400, "error": "Request missing required field or has invalid field values on some events"});
        for (key, map) in [
            ("events_with_invalid_fields", invalid),
            ("events_with_missing_fields", missing),
            ("events_with_invalid_id_lengths", short),
        ] {
            if !map.is_empty() {
                answer[key] = Value::Object(map);
            }
        }
        return (StatusCode::BAD_REQUEST, Json(answer)).into_response();
    }
    let n = events.len();
    state.accept(events.clone());
    Json(json!({"code": 200, "events_ingested": n, "payload_size_bytes": body.len(), "server_upload_time": chrono::Utc::now().timestamp_millis()})).into_response()
}
