//! The admin API under `/admin/`, behind a bearer token compared in constant time.

use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::AppState;

/// The admin tokens, resolved at start.
#[derive(Debug, Clone, Default)]
pub struct AdminAuth {
    /// Full access.
    pub token: Option<Arc<str>>,
    /// Read-only access to `/admin/live`.
    pub live_token: Option<Arc<str>>,
}

impl AdminAuth {
    /// Whether `presented` equals the admin token (constant time).
    pub fn is_admin(&self, presented: &str) -> bool {
        matches(self.token.as_deref(), presented)
    }

    /// Whether `presented` may read the live stream.
    pub fn may_watch(&self, presented: &str) -> bool {
        self.is_admin(presented) || matches(self.live_token.as_deref(), presented)
    }
}

fn matches(expected: Option<&str>, presented: &str) -> bool {
    match expected {
        Some(expected) if !presented.is_empty() => {
            bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
        }
        _ => false,
    }
}

/// The bearer token of a request, if any.
pub fn bearer(request: &Request) -> Option<&str> {
    request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Middleware: only the admin token passes.
pub async fn require_admin(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    match bearer(&request) {
        Some(token) if state.admin.is_admin(token) => next.run(request).await,
        _ => unauthorized(),
    }
}

#[cold]
fn unauthorized() -> Response {
    let mut response = ApiError::client(
        StatusCode::UNAUTHORIZED,
        "Authorization",
        "missing or wrong admin token; send `Authorization: Bearer <token>` from [admin]",
    )
    .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Bearer realm=\"waymark-admin\""),
    );
    response
}

/// The admin routes (mounted under `/admin`, behind [`require_admin`]).
pub fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/quarantine", get(quarantine))
        .route("/quarantine/replay", axum::routing::post(replay_quarantine))
        .merge(super::admin_dlq::routes())
        .merge(super::admin_profiles::routes())
        .merge(super::admin_stats::routes())
        .route_layer(axum::middleware::from_fn_with_state(state, require_admin))
}

#[derive(serde::Deserialize)]
struct ListQuery {
    limit: Option<usize>,
}

/// A replay request: quarantined ids, and optionally a corrected event for one id.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayRequest {
    ids: Vec<i64>,
    /// A corrected event replacing the stored one (only with a single id).
    #[serde(default)]
    event: Option<serde_json::Value>,
}

/// Runs quarantined events through the pipeline again (after a config
/// change, or with a corrected event). Events that now pass leave the
/// quarantine; the others stay, with the reason they still fail. Events a
/// destination's rules quarantined go back to that destination's outbox
/// (its rules run again before delivery).
async fn replay_quarantine(
    State(state): State<AppState>,
    axum::Json(request): axum::Json<ReplayRequest>,
) -> Result<impl IntoResponse, ApiError> {
    if request.event.is_some() && request.ids.len() != 1 {
        return Err(ApiError::client(
            StatusCode::BAD_REQUEST,
            "event",
            "a corrected event replaces exactly one quarantined id; send one id",
        ));
    }
    let entries = state.storage.quarantine_get(request.ids).await?;
    let mut replayed = Vec::new();
    let mut still_invalid = Vec::new();
    let mut superseded = Vec::new();
    // 1. Events a destination's rules quarantined go back to that
    //    destination's outbox; its rules decide again when it delivers.
    let (for_destination, entries): (Vec<_>, Vec<_>) =
        entries.into_iter().partition(|e| e.destination.is_some());
    let mut requeue = Vec::new();
    for entry in for_destination {
        let known = entry
            .destination
            .as_deref()
            .is_some_and(|d| state.pipeline.has_destination(d));
        if request.event.is_some() {
            still_invalid.push(serde_json::json!({"id": entry.id, "problem": "a corrected event replaces only events quarantined at ingest; fix the destination's rule and replay without `event`"}));
        } else if !known {
            still_invalid.push(
                serde_json::json!({"id": entry.id, "problem": "its destination no longer exists"}),
            );
        } else {
            requeue.push(entry.id);
        }
    }
    if !requeue.is_empty() {
        replayed.extend(state.storage.quarantine_requeue(requeue).await?);
    }
    // 2. Events quarantined at ingest run through the pipeline again.
    for entry in entries {
        let Some(source) = state.pipeline.source_named(&entry.source).cloned() else {
            still_invalid.push(
                serde_json::json!({"id": entry.id, "problem": "its source no longer exists"}),
            );
            continue;
        };
        let raw = match &request.event {
            Some(event) => event.to_string(),
            None => entry.raw.clone(),
        };
        let body = format!("{{\"batch\":[{raw}]}}");
        let batch = match crate::stages::ingest::split(body.as_bytes(), None) {
            Ok(batch) => batch,
            Err(e) => {
                still_invalid.push(serde_json::json!({"id": entry.id, "problem": e.describe().1}));
                continue;
            }
        };
        let meta = crate::stages::RequestMeta::default();
        let outcome = state.pipeline.ingest(&source, batch, &meta).await?;
        superseded.push(entry.id);
        match outcome.errors.first() {
            None => replayed.push(entry.id),
            Some(error) => still_invalid.push(serde_json::json!({
                "id": entry.id,
                "field": error.rejection.field,
                "problem": error.rejection.problem,
            })),
        }
    }
    // Every event that went through the pipeline left the quarantine: it was
    // accepted, or quarantined anew with its current reason.
    state.storage.quarantine_remove(superseded).await?;
    Ok(Json(
        serde_json::json!({ "replayed": replayed, "still_invalid": still_invalid }),
    ))
}

/// The most recent quarantined events with their reasons.
async fn quarantine(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let entries = state
        .storage
        .quarantine_list(q.limit.unwrap_or(100).min(1_000))
        .await?;
    Ok(Json(serde_json::json!({ "events": entries })))
}
