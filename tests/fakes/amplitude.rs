//! Fake Amplitude HTTP V2 API: `POST /2/httpapi` with `api_key` in the
//! body, at most 2000 events (413 beyond), each with `event_type` and a
//! `user_id` or `device_id` of at least `options.min_id_length` (default 5)
//! characters; `insert_id` is required here because Waymark always sends it.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

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
    for e in events {
        if e.get("event_type")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return state.reject("missing event_type");
        }
        let ids: Vec<&str> = ["user_id", "device_id"]
            .iter()
            .filter_map(|k| e.get(*k).and_then(Value::as_str))
            .collect();
        if ids.is_empty() {
            return state.reject("events must have a user_id or device_id");
        }
        if ids.iter().any(|i| i.chars().count() < min) {
            return state.reject(format!(
                "user_id/device_id shorter than min_id_length {min}"
            ));
        }
        if e.get("insert_id").and_then(Value::as_str).is_none() {
            return state.reject("missing insert_id");
        }
        if e.get("time").is_some_and(|t| !t.is_i64()) {
            return state.reject("time must be milliseconds since epoch");
        }
    }
    let n = events.len();
    state.accept(events.clone());
    Json(json!({"code": 200, "events_ingested": n, "payload_size_bytes": body.len(), "server_upload_time": chrono::Utc::now().timestamp_millis()})).into_response()
}
