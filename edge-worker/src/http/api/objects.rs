//! `GET /models/{id}` and `GET /destinations/{id}`, in the fields of
//! Hightouch's model and destination that Waymark has.
//!
//! # Design
//! Only what Waymark knows is answered. A model's `sourceId` is null:
//! warehouses have no id of their own (the `warehouse` field names it),
//! and Hightouch's SDK fails on a model without the field.
//! A destination's `configuration` is empty: its settings may hold
//! secrets, and Hightouch tells consumers to assume nothing of it.

use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde::Serialize;

use super::{not_found, path_id, Catalog, IdCache};
use crate::http::error::ApiError;
use crate::http::AppState;
use crate::syncs::api_types::{rfc3339, ApiId};

/// A model, as Hightouch's API shapes one.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiModel {
    /// The model's id.
    pub id: ApiId,
    /// Its name in `waymark.toml`.
    pub name: String,
    /// The same name: Waymark's names are slugs.
    pub slug: String,
    /// Always `"1"`: one Waymark is one workspace.
    pub workspace_id: ApiId,
    /// When the name was first seen (RFC 3339).
    pub created_at: String,
    /// The creation time, for now.
    pub updated_at: String,
    /// The column that identifies a row.
    pub primary_key: String,
    /// Always `raw_sql`.
    pub query_type: &'static str,
    /// `{"sql": "<the query>"}`.
    pub raw: serde_json::Value,
    /// Always false: every model is sent by syncs.
    pub is_schema: bool,
    /// Always empty.
    pub tags: serde_json::Value,
    /// The syncs that send this model.
    pub syncs: Vec<ApiId>,
    /// Always null: warehouses have no ids.
    pub source_id: Option<ApiId>,
    /// The `[[warehouses]]` entry the query runs on (Waymark's own field).
    pub warehouse: String,
}

/// A destination, as Hightouch's API shapes one.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiDestination {
    /// The destination's id.
    pub id: ApiId,
    /// Its name in `waymark.toml`.
    pub name: String,
    /// The same name.
    pub slug: String,
    /// Its type: `webhook`, `file`, `mixpanel`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// Always `"1"`.
    pub workspace_id: ApiId,
    /// When the name was first seen (RFC 3339).
    pub created_at: String,
    /// The creation time, for now.
    pub updated_at: String,
    /// Always `{}` (settings may hold secrets).
    pub configuration: serde_json::Value,
    /// The syncs that send to this destination.
    pub syncs: Vec<ApiId>,
}

/// `GET /models/{id}`.
pub async fn model(
    State(state): State<AppState>,
    Extension(ids): Extension<IdCache>,
    Path(id): Path<String>,
) -> Result<Json<ApiModel>, ApiError> {
    let id = path_id(&id, "modelId")?;
    let catalog = Catalog::load(&state.syncs, &ids).await?;
    let (model, object) = catalog
        .model(id)
        .ok_or_else(|| not_found("modelId", "model", id))?;
    Ok(Json(ApiModel {
        id,
        name: model.name.clone(),
        slug: model.name.clone(),
        workspace_id: ApiId(1),
        created_at: rfc3339(object.created_at_ms),
        updated_at: rfc3339(object.created_at_ms),
        primary_key: model.primary_key.clone(),
        query_type: "raw_sql",
        raw: serde_json::json!({ "sql": model.query }),
        is_schema: false,
        tags: serde_json::json!({}),
        syncs: catalog.sync_ids_where(|s| s.model == model.name),
        source_id: None,
        warehouse: model.warehouse.clone(),
    }))
}

/// `GET /destinations/{id}`.
pub async fn destination(
    State(state): State<AppState>,
    Extension(ids): Extension<IdCache>,
    Path(id): Path<String>,
) -> Result<Json<ApiDestination>, ApiError> {
    let id = path_id(&id, "destinationId")?;
    let catalog = Catalog::load(&state.syncs, &ids).await?;
    let (destination, object) = catalog
        .destination(id)
        .ok_or_else(|| not_found("destinationId", "destination", id))?;
    Ok(Json(ApiDestination {
        id,
        name: destination.name.clone(),
        slug: destination.name.clone(),
        kind: destination.kind.clone(),
        workspace_id: ApiId(1),
        created_at: rfc3339(object.created_at_ms),
        updated_at: rfc3339(object.created_at_ms),
        configuration: serde_json::json!({}),
        syncs: catalog.sync_ids_where(|s| s.destination == destination.name),
    }))
}
