//! The dead-letter admin API: `GET /admin/dlq?destination=NAME[&limit=N]`
//! lists a destination's dead letters, `POST /admin/dlq/replay` with
//! `{"destination": NAME, "ids": [..]}` (ids optional: all) moves them back
//! to its outbox. Mounted inside the admin router, behind the admin token.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};

use super::error::ApiError;
use super::AppState;

/// The dead-letter routes (relative to `/admin`).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/dlq", get(list))
        .route("/dlq/replay", post(replay))
}

#[derive(serde::Deserialize)]
struct ListQuery {
    destination: Option<String>,
    limit: Option<usize>,
}

#[cold]
fn missing_destination() -> ApiError {
    ApiError::client(
        StatusCode::BAD_REQUEST,
        "destination",
        "missing; name the destination, e.g. ?destination=ads",
    )
}

/// A destination's dead letters, oldest first.
async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let destination = q
        .destination
        .filter(|d| !d.is_empty())
        .ok_or_else(missing_destination)?;
    let letters = state
        .storage
        .dead_letters(&destination, q.limit.unwrap_or(100).min(10_000))
        .await?;
    Ok(Json(
        serde_json::json!({ "destination": destination, "deadLetters": letters }),
    ))
}

#[derive(serde::Deserialize)]
struct ReplayBody {
    destination: Option<String>,
    ids: Option<Vec<i64>>,
}

/// Moves dead letters back to the outbox and wakes the destination's worker.
async fn replay(
    State(state): State<AppState>,
    body: Option<Json<ReplayBody>>,
) -> Result<impl IntoResponse, ApiError> {
    let Some(Json(body)) = body else {
        return Err(ApiError::client(
            StatusCode::BAD_REQUEST,
            "body",
            "send JSON {\"destination\": \"NAME\", \"ids\": [1, 2]} (ids optional: all)",
        ));
    };
    let destination = body
        .destination
        .filter(|d| !d.is_empty())
        .ok_or_else(missing_destination)?;
    let replayed = state
        .storage
        .replay_dead_letters(&destination, body.ids)
        .await?;
    state.pipeline.outbox().waker(&destination).notify_one();
    Ok(Json(
        serde_json::json!({ "destination": destination, "replayed": replayed }),
    ))
}
