//! Fake Meta Conversions API: `POST /{version}/{pixel_id}/events?access_token=…`
//! with `data` of 1 to 1000 server events, each with `event_name`,
//! `event_time` (Unix seconds, at most 7 days old), `event_id`, a known
//! `action_source` and non-empty `user_data` whose `em`/`ph` are SHA-256
//! hex; website events also need `event_source_url` and `client_user_agent`.
//! A request holding invalid events is refused whole with a Graph API
//! error (400, `OAuthException`, code 100) whose `error_data` names each
//! invalid event by `event_index`, with a `message`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{Fake, FakeState};

const ACTION_SOURCES: &[&str] = &[
    "website",
    "app",
    "email",
    "phone_call",
    "chat",
    "physical_store",
    "system_generated",
    "business_messaging",
    "other",
];

fn is_sha256(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Starts a fake for `pixel_id` and `access_token`.
pub fn start(pixel_id: &'static str, access_token: &'static str) -> Fake {
    Fake::serve(move |state| {
        Router::new()
            .route(
                "/{version}/{pixel}/events",
                post(move |s, p, q, b| events(s, p, q, b, (pixel_id, access_token))),
            )
            .with_state(state)
    })
}

async fn events(
    State(state): State<Arc<FakeState>>,
    Path((version, pixel)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    body: String,
    (pixel_id, access_token): (&'static str, &'static str),
) -> Response {
    if let Some(r) = state.gate().await {
        return r;
    }
    if !version.starts_with('v') || pixel != pixel_id {
        return state.reject("unknown version or pixel id");
    }
    if q.get("access_token").map(String::as_str) != Some(access_token) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": {"message": "Invalid OAuth access token.", "code": 190}})),
        )
            .into_response();
    }
    let Ok(json) = serde_json::from_str::<Value>(&body) else {
        return state.reject("body is not JSON");
    };
    let Some(data) = json.get("data").and_then(Value::as_array) else {
        return state.reject("The parameter data is required");
    };
    if data.is_empty() || data.len() > 1000 {
        return state.reject("send 1 to 1000 events in data");
    }
    let now = chrono::Utc::now().timestamp();
    let check = |e: &Value| -> Result<(), String> {
        for field in ["event_name", "event_id", "action_source"] {
            if e.get(field)
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                return Err(format!("{field} is required"));
            }
        }
        let Some(t) = e.get("event_time").and_then(Value::as_i64) else {
            return Err("event_time must be Unix seconds".to_owned());
        };
        if t < now - 7 * 86_400 || t > now + 600 {
            return Err("event_time more than 7 days in the past or in the future".to_owned());
        }
        let source = e["action_source"].as_str().unwrap_or("");
        if !ACTION_SOURCES.contains(&source) {
            return Err(format!("unknown action_source `{source}`"));
        }
        let Some(user) = e
            .get("user_data")
            .and_then(Value::as_object)
            .filter(|u| !u.is_empty())
        else {
            return Err(
                "user_data must contain at least one customer information parameter".to_owned(),
            );
        };
        for key in ["em", "ph", "external_id"] {
            if let Some(v) = user.get(key) {
                if !v
                    .as_array()
                    .is_some_and(|a| !a.is_empty() && a.iter().all(is_sha256))
                {
                    return Err(format!("user_data.{key} must be an array of SHA-256 hex"));
                }
            }
        }
        if source == "website" {
            if e.get("event_source_url").and_then(Value::as_str).is_none() {
                return Err("event_source_url is required for website events".to_owned());
            }
            if user
                .get("client_user_agent")
                .and_then(Value::as_str)
                .is_none()
            {
                return Err("client_user_agent is required for website events".to_owned());
            }
        }
        // Limited Data Use: `[]`, or `["LDU"]` with a country (0 or 1) and
        // a state (0 or 1000).
        if let Some(options) = e.get("data_processing_options") {
            let ldu = match options.as_array().map(Vec::as_slice) {
                Some([]) => false,
                Some([v]) if v == "LDU" => true,
                _ => return Err("data_processing_options must be [] or [\"LDU\"]".to_owned()),
            };
            if ldu {
                let country = e
                    .get("data_processing_options_country")
                    .and_then(Value::as_i64);
                let state_code = e
                    .get("data_processing_options_state")
                    .and_then(Value::as_i64);
                if !matches!(country, Some(0 | 1)) || !matches!(state_code, Some(0 | 1000)) {
                    return Err("LDU needs data_processing_options_country 0 or 1 and data_processing_options_state 0 or 1000".to_owned());
                }
            }
        }
        if e.get("event_id")
            .and_then(Value::as_str)
            .is_some_and(|id| state.is_refused(id))
        {
            return Err("custom_data is invalid for this event".to_owned());
        }
        Ok(())
    };
    let errors: Vec<Value> = data
        .iter()
        .enumerate()
        .filter_map(|(i, e)| {
            check(e)
                .err()
                .map(|m| json!({"event_index": i, "message": m}))
        })
        .collect();
    if !errors.is_empty() {
        state.note_rejection(
            errors
                .iter()
                .map(|e| e["message"].as_str().unwrap_or("").to_owned())
                .collect::<Vec<_>>()
                .join("; "),
        );
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": {
                "message": "Invalid parameter",
                "type": "OAuthException",
                "code": 100,
                "error_subcode": 2804019,
                "is_transient": false,
                "error_user_title": "Server Side Api Parameter Error",
                "error_user_msg": "Some events in data are invalid.",
                "error_data": errors,
                "fbtrace_id": "fake",
            }})),
        )
            .into_response();
    }
    let n = data.len();
    state.accept(data.clone());
    Json(json!({"events_received": n, "messages": [], "fbtrace_id": "fake"})).into_response()
}
