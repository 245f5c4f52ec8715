//! The Hightouch-compatible REST API under `/api/v1` (issue #18 §5), so
//! orchestrators that trigger Hightouch syncs (Hightouch's Python SDK,
//! airflow-provider-hightouch, dagster-hightouch, Kestra) trigger and watch
//! Waymark's syncs by changing only the base URL.
//!
//! - `GET /syncs` (`slug`, `modelId`, `limit`, `offset`), `GET /syncs/{id}`
//! - `POST /syncs/{id}/trigger` (`fullResync`), `POST /syncs/trigger`
//!   (`syncId` or `syncSlug`, and `fullResync`), as JSON, a form or no body
//! - `GET /syncs/{id}/runs` (`runId`, `limit`, `offset`, `after`, `before`, `within`)
//! - `GET /models/{id}`, `GET /destinations/{id}`
//!
//! Every route wants the admin token as `Authorization: Bearer`. Ids are
//! the store's stable numeric ids ([`Catalog`], asked once per router), accepted as `7` or `7.0`.
//! Other query parameters Hightouch knows (`orderBy`) are ignored: syncs
//! come in id order, runs newest first. The shapes are in
//! [`crate::syncs::api_types`].

mod catalog;
mod objects;
mod syncs;
#[cfg(test)]
mod tests;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;

use super::admin::bearer;
use super::error::ApiError;
use super::AppState;
use crate::syncs::api_types::ApiId;
pub use catalog::{Catalog, IdCache};

/// The API's routes (mounted under `/api/v1`), behind [`require_token`].
pub fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/syncs", get(syncs::list))
        .route("/syncs/trigger", post(syncs::trigger_by))
        .route("/syncs/{id}", get(syncs::get))
        .route("/syncs/{id}/trigger", post(syncs::trigger))
        .route("/syncs/{id}/runs", get(syncs::runs))
        .route("/models/{id}", get(objects::model))
        .route("/destinations/{id}", get(objects::destination))
        .route_layer(axum::middleware::from_fn_with_state(state, require_token))
        .layer(axum::Extension(IdCache::default()))
}

/// Middleware: only the admin token passes, as Hightouch's API key would.
pub async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    match bearer(&request) {
        Some(token) if state.admin.is_admin(token) => next.run(request).await,
        _ => unauthorized(state.admin.token.is_some()),
    }
}

#[cold]
fn unauthorized(configured: bool) -> Response {
    let problem = if configured {
        "missing or wrong token; send the [admin] token as `Authorization: Bearer <token>` (the API key of Hightouch's clients)"
    } else {
        "the API is off: no admin token is configured; set [admin] token_env and send that token as `Authorization: Bearer <token>`"
    };
    let mut response =
        ApiError::client(StatusCode::UNAUTHORIZED, "Authorization", problem).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"waymark-api\""),
    );
    response
}

/// An id from the path: `7` or `7.0`, or a 400 naming `param`.
fn path_id(text: &str, param: &str) -> Result<ApiId, ApiError> {
    ApiId::parse(text).ok_or_else(|| {
        ApiError::client(
            StatusCode::BAD_REQUEST,
            param,
            format!("`{text}` is not an id; ids are whole numbers such as 7 (or 7.0)"),
        )
    })
}

/// A 404 for an id of `what` (`sync`, `model`, `destination`) nothing has.
#[cold]
fn not_found(param: &str, what: &str, id: ApiId) -> ApiError {
    ApiError::client(
        StatusCode::NOT_FOUND,
        param,
        format!("no {what} has id {id}; GET /api/v1/syncs lists the syncs with their model and destination ids"),
    )
}

/// Reads `fields` (a query string's or a body's, all text for a query or
/// a form) into `T`, so a value that does not fit is a 400 naming its
/// field: each field is tried alone first, then all together. `T`'s
/// fields must all have defaults; fields it does not know are ignored.
fn read_fields<T: DeserializeOwned>(
    fields: serde_json::Map<String, serde_json::Value>,
) -> Result<T, ApiError> {
    for (name, value) in &fields {
        let alone =
            serde_json::Value::Object(std::iter::once((name.clone(), value.clone())).collect());
        if let Err(e) = serde_json::from_value::<T>(alone) {
            return Err(ApiError::client(
                StatusCode::BAD_REQUEST,
                name.as_str(),
                e.to_string(),
            ));
        }
    }
    serde_json::from_value(serde_json::Value::Object(fields))
        .map_err(|e| ApiError::client(StatusCode::BAD_REQUEST, "query", e.to_string()))
}

/// Text pairs (a query string's or a form's) as fields; the last of a
/// repeated name wins.
fn text_fields(pairs: Vec<(String, String)>) -> serde_json::Map<String, serde_json::Value> {
    pairs
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect()
}

/// A request's query string as fields.
fn query_fields(
    uri: &axum::http::Uri,
) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map(|axum::extract::Query(pairs)| text_fields(pairs))
        .map_err(|_| {
            ApiError::client(
                StatusCode::BAD_REQUEST,
                "query",
                "the query string does not decode; send name=value pairs joined by &",
            )
        })
}
