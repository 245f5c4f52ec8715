//! Segment's HTTP Tracking API: `POST /v1/batch` and `/v1/{track,page,
//! screen,identify,group,alias}`, with per-source CORS; also the short paths
//! Segment's browser library (analytics-next) posts to, `/v1/{t,p,s,i,g,a}`
//! and `/v1/b`.
//!
//! The handler reads the body within the batch limit, decodes it, resolves
//! the source from the write key (Basic-auth username, else `writeKey` in
//! the body), checks the browser origin against that source, runs the
//! pipeline and answers once every event is durable.

use std::net::SocketAddr;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::error::{ApiError, Problem};
use super::AppState;
use crate::event::EventType;
use crate::stages::ingest::{body_bytes, split, BodyError, BodyHeaders};
use crate::stages::RequestMeta;
use crate::telemetry::ingest::UnknownWriteKey;

/// The ingest routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/batch", post(batch).options(preflight))
        .route("/v1/import", post(batch).options(preflight))
        .route("/v1/{call}", post(single).options(preflight))
}

async fn batch(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let cors = Cors::of(&headers);
    let result = handle(&state, None, peer, &headers, body, &cors).await;
    cors.apply(result.unwrap_or_else(IntoResponse::into_response))
}

async fn single(
    State(state): State<AppState>,
    Path(call): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let cors = Cors::of(&headers);
    // Segment's analytics-next posts to its API host's `/t`, `/p`, `/i`,
    // `/g`, `/a`, `/s` (one event) and `/b` (a batch).
    let call = match call.as_str() {
        "b" => {
            let result = handle(&state, None, peer, &headers, body, &cors).await;
            return cors.apply(result.unwrap_or_else(IntoResponse::into_response));
        }
        "t" => "track",
        "p" => "page",
        "i" => "identify",
        "g" => "group",
        "a" => "alias",
        "s" => "screen",
        other => other,
    };
    let Some(kind) = EventType::parse(call) else {
        return cors.apply(
            ApiError::client(
                StatusCode::NOT_FOUND,
                "path",
                format!("/v1/{call} is not an endpoint; use /v1/batch or /v1/track, page, screen, identify, group, alias"),
            )
            .into_response(),
        );
    };
    let result = handle(&state, Some(kind), peer, &headers, body, &cors).await;
    cors.apply(result.unwrap_or_else(IntoResponse::into_response))
}

async fn handle(
    state: &AppState,
    endpoint: Option<EventType>,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: Body,
    cors: &Cors,
) -> Result<Response, ApiError> {
    let limits = state.pipeline.limits();
    // 1. Read the body within the limit (a gzip body is checked again inflated).
    let bytes = read_limited(body, limits.max_batch_bytes).await?;
    let header_str = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let json = body_bytes(
        &bytes,
        BodyHeaders {
            content_type: header_str(header::CONTENT_TYPE),
            content_encoding: header_str(header::CONTENT_ENCODING),
        },
        limits.max_batch_bytes,
    )
    .map_err(body_error)?;
    // 2. Split into raw events and resolve the source.
    let raw = split(&json, endpoint).map_err(body_error)?;
    let write_key = basic_auth_user(headers).or_else(|| raw.write_key.clone());
    let Some(write_key) = write_key else {
        return Err(ApiError::client(
            StatusCode::UNAUTHORIZED,
            "writeKey",
            "missing; send it as the HTTP Basic username or as `writeKey` in the body",
        ));
    };
    let Some(source) = state.pipeline.source(&write_key).cloned() else {
        UnknownWriteKey.emit();
        return Err(ApiError::client(
            StatusCode::UNAUTHORIZED,
            "writeKey",
            "unknown write key; check it matches a [[sources]] write_key",
        ));
    };
    // 3. A browser call must come from an origin this source allows.
    if let Some(origin) = &cors.origin {
        if !cors.same_origin && !source.config.allows_origin(origin) {
            return Err(ApiError::client(
                StatusCode::FORBIDDEN,
                "Origin",
                format!(
                    "origin {origin} is not allowed for source `{}`; add it to allowed_origins",
                    source.name
                ),
            ));
        }
    }
    // 4. Run the pipeline; it returns once everything is durable.
    let client = state.server.proxy_trust().resolve(peer.ip(), headers);
    let meta = RequestMeta {
        client_ip: Some(client.ip),
        cookie_header: header_str(header::COOKIE).map(str::to_owned),
        https: state.server.https.unwrap_or(client.https),
    };
    let outcome = state.pipeline.ingest(&source, raw, &meta).await?;
    let mut response = if outcome.errors.is_empty() {
        Json(serde_json::json!({"success": true})).into_response()
    } else {
        let problems: Vec<Problem> = outcome
            .errors
            .into_iter()
            .map(|e| Problem {
                index: Some(e.index),
                message_id: e.message_id,
                field: e.rejection.field,
                problem: e.rejection.problem,
                code: Some(e.rejection.reason),
            })
            .collect();
        (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({
                "success": false,
                "accepted": outcome.accepted + outcome.duplicates,
                "errors": problems,
            })),
        )
            .into_response()
    };
    if let Some(cookie) = outcome.set_cookie {
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    Ok(response)
}

/// Reads at most `limit` bytes; more is a 413 in our error shape.
async fn read_limited(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| body_error(BodyError::TooLarge { limit }))
}

#[cold]
fn body_error(e: BodyError) -> ApiError {
    let status = match e {
        BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        BodyError::UnsupportedEncoding(_) | BodyError::UnsupportedMediaType(_) => {
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        }
        _ => StatusCode::BAD_REQUEST,
    };
    let (field, problem) = e.describe();
    ApiError::client(status, field, problem)
}

/// The username of `Authorization: Basic …` (Segment's write key slot).
fn basic_auth_user(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let user = text.split(':').next().unwrap_or("");
    (!user.is_empty()).then(|| user.to_owned())
}

/// The browser-origin facts of a request.
struct Cors {
    origin: Option<String>,
    /// The origin is the worker's own host: not a cross-origin call.
    same_origin: bool,
}

impl Cors {
    fn of(headers: &HeaderMap) -> Cors {
        let origin = headers
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .filter(|o| *o != "null")
            .map(str::to_owned);
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        let same_origin = match (&origin, host) {
            (Some(origin), Some(host)) => origin
                .split_once("://")
                .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host)),
            _ => false,
        };
        Cors {
            origin,
            same_origin,
        }
    }

    /// Lets the browser read the answer (and send cookies) from this origin.
    fn apply(&self, mut response: Response) -> Response {
        if let Some(origin) = self
            .origin
            .as_deref()
            .and_then(|o| HeaderValue::from_str(o).ok())
        {
            let h = response.headers_mut();
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
            h.append(header::VARY, HeaderValue::from_static("Origin"));
        }
        response
    }
}

/// CORS preflight: allowed when any source allows the origin (the write key
/// is not sent in a preflight), checked again per source on the real call.
async fn preflight(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let cors = Cors::of(&headers);
    let Some(origin) = cors.origin.clone() else {
        return StatusCode::NO_CONTENT.into_response();
    };
    if !cors.same_origin && !state.pipeline.any_source_allows(&origin) {
        return ApiError::client(
            StatusCode::FORBIDDEN,
            "Origin",
            format!("origin {origin} is not allowed by any source; add it to allowed_origins"),
        )
        .into_response();
    }
    let mut response = cors.apply(StatusCode::NO_CONTENT.into_response());
    let h = response.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("content-type, authorization, content-encoding"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    response
}
