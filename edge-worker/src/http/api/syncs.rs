//! `/syncs`: list and read syncs, trigger runs, list a sync's runs.

use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{header, StatusCode, Uri};
use axum::{Extension, Json};

use super::{not_found, path_id, query_fields, read_fields, text_fields, Catalog, IdCache};
use crate::http::error::ApiError;
use crate::http::AppState;
use crate::syncs::api_types::{
    ApiId, ApiList, ApiRunsQuery, ApiSync, ApiSyncRun, ApiSyncsQuery, ApiTrigger, ApiTriggered,
};
use crate::syncs::dry_run::DryRunError;
use crate::syncs::TriggerError;

/// Syncs listed when `limit` is not given, as Hightouch.
const DEFAULT_SYNCS_LIMIT: usize = 100;
/// A trigger body larger than this is refused (it holds three fields).
const MAX_TRIGGER_BYTES: usize = 64 * 1024;

/// `GET /syncs`: the syncs in id order, filtered by `slug` or `modelId`.
pub async fn list(
    State(state): State<AppState>,
    Extension(ids): Extension<IdCache>,
    uri: Uri,
) -> Result<Json<ApiList<ApiSync>>, ApiError> {
    let query: ApiSyncsQuery = read_fields(query_fields(&uri)?)?;
    let catalog = Catalog::load(&state.syncs, &ids).await?;
    let mut matching: Vec<_> = catalog
        .syncs()
        .filter(|(s, _)| query.slug.as_ref().is_none_or(|slug| &s.name == slug))
        .filter(|(s, _)| {
            query
                .model_id
                .is_none_or(|model| catalog.model_id(&s.model) == model)
        })
        .collect();
    matching.sort_by_key(|(_, o)| o.id);
    let offset = query.offset.map_or(0, |n| n.0 as usize);
    let limit = query
        .limit
        .map_or(DEFAULT_SYNCS_LIMIT, |n| (n.0 as usize).max(1));
    let has_more = matching.len() > offset.saturating_add(limit);
    let mut data = Vec::new();
    for (sync, id) in matching.into_iter().skip(offset).take(limit) {
        data.push(catalog.api_sync(sync, id).await?);
    }
    Ok(Json(ApiList { data, has_more }))
}

/// `GET /syncs/{id}`.
pub async fn get(
    State(state): State<AppState>,
    Extension(ids): Extension<IdCache>,
    Path(id): Path<String>,
) -> Result<Json<ApiSync>, ApiError> {
    let id = path_id(&id, "syncId")?;
    let catalog = Catalog::load(&state.syncs, &ids).await?;
    let (sync, object) = catalog
        .sync(id)
        .ok_or_else(|| not_found("syncId", "sync", id))?;
    Ok(Json(catalog.api_sync(sync, object).await?))
}

/// `POST /syncs/{id}/trigger`: queues a run (`fullResync` in a JSON or
/// form body, or no body) and answers its id.
pub async fn trigger(
    State(state): State<AppState>,
    Extension(ids): Extension<IdCache>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Json<ApiTriggered>, ApiError> {
    let id = path_id(&id, "syncId")?;
    let body = trigger_body(request).await?;
    let catalog = Catalog::load(&state.syncs, &ids).await?;
    let (sync, _) = catalog
        .sync(id)
        .ok_or_else(|| not_found("syncId", "sync", id))?;
    queue(&state, &sync.name, body.full_resync).await
}

/// `POST /syncs/trigger`: the same, naming the sync in the body by
/// `syncId` or `syncSlug` (Airflow sends a form).
pub async fn trigger_by(
    State(state): State<AppState>,
    Extension(ids): Extension<IdCache>,
    request: Request,
) -> Result<Json<ApiTriggered>, ApiError> {
    let body = trigger_body(request).await?;
    let catalog = Catalog::load(&state.syncs, &ids).await?;
    let by_id = match body.sync_id {
        Some(id) => Some(
            catalog
                .sync(id)
                .ok_or_else(|| not_found("syncId", "sync", id))?
                .0,
        ),
        None => None,
    };
    let by_slug = match body.sync_slug.as_deref() {
        Some(slug) => Some(
            catalog
                .sync_named(slug)
                .ok_or_else(|| {
                    ApiError::client(
                        StatusCode::NOT_FOUND,
                        "syncSlug",
                        format!("no sync is named `{slug}`; GET /api/v1/syncs lists them"),
                    )
                })?
                .0,
        ),
        None => None,
    };
    let sync = match (by_id, by_slug) {
        (Some(a), Some(b)) if a.name != b.name => {
            return Err(ApiError::client(
                StatusCode::BAD_REQUEST,
                "syncSlug",
                format!(
                    "syncId names `{}` but syncSlug names `{}`; send one of them",
                    a.name, b.name
                ),
            ))
        }
        (Some(s), _) | (None, Some(s)) => s,
        (None, None) => {
            return Err(ApiError::client(
                StatusCode::BAD_REQUEST,
                "syncId",
                "missing; name the sync by syncId or syncSlug",
            ))
        }
    };
    queue(&state, &sync.name, body.full_resync).await
}

/// `GET /syncs/{id}/runs`: the sync's runs, newest first.
pub async fn runs(
    State(state): State<AppState>,
    Extension(ids): Extension<IdCache>,
    Path(id): Path<String>,
    uri: Uri,
) -> Result<Json<ApiList<ApiSyncRun>>, ApiError> {
    let id = path_id(&id, "syncId")?;
    let query: ApiRunsQuery = read_fields(query_fields(&uri)?)?;
    let mut filter = query.filter().map_err(|param| {
        ApiError::client(
            StatusCode::BAD_REQUEST,
            param,
            "not a time; send RFC 3339 such as 2024-01-31T12:00:00Z",
        )
    })?;
    let catalog = Catalog::load(&state.syncs, &ids).await?;
    let (_, object) = catalog
        .sync(id)
        .ok_or_else(|| not_found("syncId", "sync", id))?;
    // One more than asked says whether more follow.
    let limit = filter.limit;
    filter.limit += 1;
    let mut runs = state.syncs.store().runs(object.id, filter).await?;
    let has_more = runs.len() > limit;
    runs.truncate(limit);
    Ok(Json(ApiList {
        data: runs.iter().map(ApiSyncRun::from).collect(),
        has_more,
    }))
}

/// Queues a run of `name` and answers its id.
async fn queue(state: &AppState, name: &str, full: bool) -> Result<Json<ApiTriggered>, ApiError> {
    match state.syncs.trigger(name, full).await {
        Ok(run) => Ok(Json(ApiTriggered { id: ApiId(run) })),
        Err(TriggerError::Disabled(name)) => Err(ApiError::client(
            StatusCode::CONFLICT,
            "syncId",
            format!("sync `{name}` is disabled; set disabled = false in waymark.toml to run it"),
        )),
        Err(TriggerError::Unknown(DryRunError::UnknownSync(name))) => Err(ApiError::client(
            StatusCode::NOT_FOUND,
            "syncId",
            format!("no sync is named `{name}`; GET /api/v1/syncs lists them"),
        )),
        Err(e) => Err(ApiError::unavailable(e.to_string())),
    }
}

/// A trigger's options from a form, a JSON object, or no body at all
/// (Hightouch's Python SDK sends `null` as JSON when given no options).
async fn trigger_body(request: Request) -> Result<ApiTrigger, ApiError> {
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if is_form {
        let axum::Form(pairs) = axum::Form::<Vec<(String, String)>>::from_request(request, &())
            .await
            .map_err(|e| ApiError::client(StatusCode::BAD_REQUEST, "body", e.body_text()))?;
        return read_fields(text_fields(pairs));
    }
    let bytes = axum::body::to_bytes(request.into_body(), MAX_TRIGGER_BYTES)
        .await
        .map_err(|_| {
            ApiError::client(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body",
                "too large; a trigger's body holds at most fullResync, syncId and syncSlug",
            )
        })?;
    let text = std::str::from_utf8(&bytes).unwrap_or("\u{fffd}").trim();
    if text.is_empty() || text == "null" {
        return Ok(ApiTrigger::default());
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(fields)) => read_fields(fields),
        _ => Err(ApiError::client(
            StatusCode::BAD_REQUEST,
            "body",
            "send a JSON object such as {\"fullResync\": true}, a form, or no body",
        )),
    }
}
