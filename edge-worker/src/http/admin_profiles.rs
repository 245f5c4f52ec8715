//! Admin API for profiles and privacy, mounted under `/admin` behind the
//! bearer token (see [`super::admin::require_admin`]).
//!
//! - `GET /admin/profiles/{id}`: a profile, its identifiers, merged traits,
//!   first and last seen, event counts and merge history.
//! - `GET /admin/profiles?userId=…|anonymousId=…|visitorId=…`: the same, by identifier.
//! - `POST /admin/profiles/{id}/split` `{"mergeId": 3}`: undo one merge.
//! - `POST /admin/profiles/merge` `{"profileIds": ["a", "b"], "reason": "…"}`: force a merge.
//! - `POST /admin/privacy/delete` `{"userId": "…"}` (or `anonymousId`,
//!   `visitorId`, `profileId`): delete a person and suppress their identifiers.
//! - `GET /admin/privacy/export?userId=…`: everything held on a person.
//! - `GET /admin/privacy/audit?limit=100`: the audit log, newest first.
//!
//! Who did it is the `X-Waymark-Actor` header (default `admin`); it is
//! written into the audit log and the merge log.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::error::ApiError;
use super::AppState;
use crate::identity::{IdentityError, Lookup};
use crate::telemetry::identity::PersonAudited;

/// The profile and privacy routes (merged into `admin::routes`, before its auth layer).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/profiles", get(find_profile))
        .route("/profiles/merge", post(merge_profiles))
        .route("/profiles/{id}", get(get_profile))
        .route("/profiles/{id}/split", post(split_profile))
        .route("/privacy/delete", post(delete_person))
        .route("/privacy/export", get(export_person))
        .route("/privacy/audit", get(audit_log))
}

/// Names a person: exactly one field.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PersonQuery {
    profile_id: Option<String>,
    user_id: Option<String>,
    anonymous_id: Option<String>,
    visitor_id: Option<String>,
}

impl PersonQuery {
    fn lookup(self) -> Result<Lookup, ApiError> {
        Lookup::from_fields(
            self.profile_id,
            self.user_id,
            self.anonymous_id,
            self.visitor_id,
        )
        .map_err(|problem| ApiError::client(StatusCode::BAD_REQUEST, "query", problem))
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SplitBody {
    merge_id: i64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MergeBody {
    profile_ids: [String; 2],
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    limit: Option<usize>,
}

/// The admin's label for the audit log: `X-Waymark-Actor`, else `admin`.
fn actor(headers: &HeaderMap) -> String {
    headers
        .get("x-waymark-actor")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| v.chars().filter(|c| !c.is_control()).take(64).collect())
        .unwrap_or_else(|| "admin".to_owned())
}

impl From<IdentityError> for ApiError {
    #[cold]
    fn from(e: IdentityError) -> Self {
        match e {
            IdentityError::NotFound(what) => ApiError::client(
                StatusCode::NOT_FOUND,
                "profile",
                format!("no profile for {what}; it may never have been seen, or was deleted"),
            ),
            IdentityError::Invalid(why) => ApiError::client(StatusCode::CONFLICT, "profile", why),
            IdentityError::Storage(e) => ApiError::from(e),
        }
    }
}

#[cold]
fn bad_query(e: QueryRejection) -> ApiError {
    ApiError::client(StatusCode::BAD_REQUEST, "query", e.body_text())
}

#[cold]
fn bad_body(e: JsonRejection) -> ApiError {
    ApiError::client(e.status(), "body", e.body_text())
}

async fn get_profile(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(state.pipeline.identity().profile(&id).await?))
}

async fn find_profile(
    State(state): State<AppState>,
    query: Result<Query<PersonQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    Ok(Json(state.pipeline.identity().find(query.lookup()?).await?))
}

async fn split_profile(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Json<SplitBody>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(body) = body.map_err(bad_body)?;
    let actor = actor(&headers);
    let outcome = state
        .pipeline
        .identity()
        .split(id, body.merge_id, actor.clone())
        .await?;
    PersonAudited {
        action: "split",
        actor: &actor,
        audit_id: None,
    }
    .emit();
    Ok(Json(outcome))
}

async fn merge_profiles(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<MergeBody>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(MergeBody {
        profile_ids: [a, b],
        reason,
    }) = body.map_err(bad_body)?;
    let actor = actor(&headers);
    let profile = state
        .pipeline
        .identity()
        .force_merge(a, b, actor.clone(), reason)
        .await?;
    PersonAudited {
        action: "merge",
        actor: &actor,
        audit_id: None,
    }
    .emit();
    Ok(Json(profile))
}

async fn delete_person(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<PersonQuery>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(body) = body.map_err(bad_body)?;
    let actor = actor(&headers);
    let report = state
        .pipeline
        .identity()
        .delete_person(body.lookup()?, actor.clone())
        .await?;
    PersonAudited {
        action: "delete",
        actor: &actor,
        audit_id: Some(report.audit_id),
    }
    .emit();
    Ok(Json(report))
}

async fn export_person(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<PersonQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    let actor = actor(&headers);
    let export = state
        .pipeline
        .identity()
        .export_person(query.lookup()?, actor.clone())
        .await?;
    PersonAudited {
        action: "export",
        actor: &actor,
        audit_id: Some(export.audit_id),
    }
    .emit();
    Ok(Json(export))
}

async fn audit_log(
    State(state): State<AppState>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    let entries = state
        .pipeline
        .identity()
        .audit_log(query.limit.unwrap_or(100).min(1_000))
        .await?;
    Ok(Json(serde_json::json!({ "entries": entries })))
}
