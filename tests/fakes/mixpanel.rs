//! Fake Mixpanel Import API: `POST /import?strict=1` with HTTP Basic auth
//! (service account + `project_id`, or project secret as username), a JSON
//! array of 1 to 2000 events, each with `event`, `properties.time`,
//! `properties.distinct_id` and a `properties.$insert_id` of at most 36
//! letters, digits and dashes, each under 1 MB of JSON, the request under
//! 10 MB; strict mode imports the valid events and answers 400 with
//! `failed_records` (`index`, `$insert_id`, `field`, `message`) for the others.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{basic_auth, Fake, FakeState};

/// Starts a fake for a service account `user:secret` in `project_id`.
pub fn start(user: &'static str, secret: &'static str, project_id: &'static str) -> Fake {
    Fake::serve(move |state| {
        Router::new()
            .route(
                "/import",
                post(move |s, q, h, b| import(s, q, h, b, (user, secret, project_id))),
            )
            .with_state(state)
    })
}

async fn import(
    State(state): State<Arc<FakeState>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: String,
    (user, secret, project_id): (&'static str, &'static str, &'static str),
) -> Response {
    if let Some(r) = state.gate().await {
        return r;
    }
    if basic_auth(&headers) != Some((user.to_owned(), secret.to_owned())) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "Invalid credentials", "status": 0})),
        )
            .into_response();
    }
    if q.get("project_id").map(String::as_str) != Some(project_id) {
        return state.reject("project_id is required with a service account");
    }
    if q.get("strict").map(String::as_str) != Some("1") {
        return state.reject("send strict=1 to get per-record validation");
    }
    let Ok(Value::Array(events)) = serde_json::from_str::<Value>(&body) else {
        return state.reject("body must be a JSON array of events");
    };
    if events.is_empty() || events.len() > 2000 || body.len() > 10 * 1024 * 1024 {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            "send 1 to 2000 events per request",
        )
            .into_response();
    }
    let mut failed = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let props = e.get("properties");
        let insert_id = props
            .and_then(|p| p.get("$insert_id"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let problem = if e.to_string().len() > 1024 * 1024 {
            Some("event")
        } else if state.is_refused(insert_id) {
            Some("properties")
        } else if e
            .get("event")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            Some("event")
        } else if props
            .and_then(|p| p.get("time"))
            .and_then(Value::as_i64)
            .is_none()
        {
            Some("properties.time")
        } else if props
            .and_then(|p| p.get("distinct_id"))
            .and_then(Value::as_str)
            .is_none()
        {
            Some("properties.distinct_id")
        } else if insert_id.is_empty()
            || insert_id.len() > 36
            || !insert_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            Some("properties.$insert_id")
        } else {
            None
        };
        if let Some(field) = problem {
            failed.push(json!({"index": i, "insert_id": insert_id, "field": field, "message": format!("'{field}' is invalid")}));
        }
    }
    if !failed.is_empty() {
        let failed_at: Vec<u64> = failed.iter().filter_map(|f| f["index"].as_u64()).collect();
        state.accept(
            events
                .iter()
                .enumerate()
                .filter(|(i, _)| !failed_at.contains(&(*i as u64)))
                .map(|(_, e)| e.clone()),
        );
        state.rejections.lock().unwrap().push(
            failed
                .iter()
                .map(|f| f["field"].to_string())
                .collect::<Vec<_>>()
                .join(","),
        );
        let imported = events.len() - failed.len();
        return (StatusCode::BAD_REQUEST, Json(json!({"code": 400, "error": "some data points in the request failed validation", "num_records_imported": imported, "status": "Bad Request", "failed_records": failed}))).into_response();
    }
    let n = events.len();
    state.accept(events);
    Json(json!({"code": 200, "num_records_imported": n, "status": "OK"})).into_response()
}
