//! Fake Segment HTTP Tracking API: `POST /v1/batch` with the write key as
//! the Basic username, at most 500 KB per request and 32 KB per event, each
//! event with a valid `type`, a `messageId` and `userId` or `anonymousId`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{basic_auth, Fake, FakeState};

/// Starts a fake that accepts `write_key`.
pub fn start(write_key: &'static str) -> Fake {
    Fake::serve(move |state| {
        Router::new()
            .route("/v1/batch", post(move |s, h, b| batch(s, h, b, write_key)))
            .with_state(state)
    })
}

async fn batch(
    State(state): State<Arc<FakeState>>,
    headers: HeaderMap,
    body: Bytes,
    write_key: &'static str,
) -> Response {
    if let Some(r) = state.gate().await {
        return r;
    }
    if basic_auth(&headers).map(|(u, _)| u) != Some(write_key.to_owned()) {
        return (StatusCode::UNAUTHORIZED, "bad write key").into_response();
    }
    if body.len() > 500 * 1024 {
        return state.reject("batch over 500 KB");
    }
    let Ok(json) = serde_json::from_slice::<Value>(&body) else {
        return state.reject("body is not JSON");
    };
    let Some(events) = json.get("batch").and_then(Value::as_array) else {
        return state.reject("missing batch");
    };
    for e in events {
        if e.to_string().len() > 32 * 1024 {
            return state.reject("event over 32 KB");
        }
        let kind = e.get("type").and_then(Value::as_str).unwrap_or("");
        if !["track", "page", "screen", "identify", "group", "alias"].contains(&kind) {
            return state.reject(format!("bad type `{kind}`"));
        }
        if e.get("messageId").and_then(Value::as_str).is_none() {
            return state.reject("missing messageId");
        }
        if e.get("userId").is_none() && e.get("anonymousId").is_none() {
            return state.reject("userId or anonymousId is required");
        }
        if kind == "track" && e.get("event").and_then(Value::as_str).is_none() {
            return state.reject("track without event");
        }
    }
    state.accept(events.clone());
    Json(json!({ "success": true })).into_response()
}
