//! Fake webhook receiver: checks `X-Waymark-Timestamp` is within five
//! minutes and `X-Waymark-Signature: sha256=<hex HMAC-SHA256(secret, body)>`,
//! then accepts `{"sentAt", "batch": [...]}` or a single event.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use hmac::{Hmac, Mac};
use serde_json::Value;

use super::{Fake, FakeState};

/// The path it listens on.
pub const PATH: &str = "/hook";

/// Starts a receiver that trusts `secret`.
pub fn start(secret: &'static str) -> Fake {
    Fake::serve(move |state| {
        Router::new()
            .route(PATH, post(move |s, h, b| receive(s, h, b, secret)))
            .with_state(state)
    })
}

async fn receive(
    State(state): State<Arc<FakeState>>,
    headers: HeaderMap,
    body: Bytes,
    secret: &'static str,
) -> Response {
    if let Some(r) = state.gate().await {
        return r;
    }
    let Some(ts) = headers
        .get("x-waymark-timestamp")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok())
    else {
        return state.reject("missing X-Waymark-Timestamp");
    };
    if (chrono::Utc::now().timestamp() - ts).abs() > 300 {
        return state.reject("stale X-Waymark-Timestamp");
    }
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(&body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    if headers
        .get("x-waymark-signature")
        .and_then(|v| v.to_str().ok())
        != Some(expected.as_str())
    {
        return (StatusCode::UNAUTHORIZED, "bad signature").into_response();
    }
    let Ok(json) = serde_json::from_slice::<Value>(&body) else {
        return state.reject("body is not JSON");
    };
    let events = match json.get("batch") {
        Some(Value::Array(batch)) => {
            let sent_at = json
                .get("sentAt")
                .and_then(Value::as_str)
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
            match sent_at {
                Some(t) if (t.timestamp() - ts).abs() <= 1 => {}
                _ => return state.reject("sentAt missing or not the timestamp header's instant"),
            }
            batch.clone()
        }
        _ => vec![json],
    };
    if events
        .iter()
        .any(|e| e.get("messageId").and_then(Value::as_str).is_none())
    {
        return state.reject("event without messageId");
    }
    state.accept(events);
    StatusCode::OK.into_response()
}
