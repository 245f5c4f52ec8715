//! What Segment's own browser library (analytics-next) asks of its CDN:
//! `GET /v1/projects/{writeKey}/settings`.
//!
//! A site keeps `@segment/analytics-next` and points it at Waymark with
//! `cdnURL` set to the worker's origin: the settings name the worker as the
//! `Segment.io` API host, so every call lands on `/v1/{t,p,s,i,g,a}` (see
//! `ingest.rs`). No device-mode destinations, remote plugins or metrics are
//! configured and no tracking plan, so the library loads nothing else and
//! sends nothing elsewhere.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::error::ApiError;
use super::AppState;

/// The settings route.
pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/projects/{write_key}/settings", get(settings))
}

async fn settings(
    State(state): State<AppState>,
    Path(write_key): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(source) = state.pipeline.source(&write_key) else {
        return ApiError::client(
            StatusCode::NOT_FOUND,
            "writeKey",
            "unknown write key; check it matches a [[sources]] write_key",
        )
        .into_response();
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1");
    let https = state.server.https.unwrap_or_else(|| {
        headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| p.eq_ignore_ascii_case("https"))
    });
    let body = settings_json(&write_key, host, https);
    let mut response = Json(body).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    // Read by a page on another origin: answer only the origins the source allows.
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        if source.config.allows_origin(origin) {
            if let Ok(v) = HeaderValue::from_str(origin) {
                response
                    .headers_mut()
                    .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
            }
        }
    }
    response
}

/// The settings analytics-next needs to send everything to `host`.
fn settings_json(write_key: &str, host: &str, https: bool) -> serde_json::Value {
    serde_json::json!({
        "integrations": {
            "Segment.io": {
                "apiKey": write_key,
                "apiHost": format!("{host}/v1"),
                "protocol": if https { "https" } else { "http" },
                "unbundledIntegrations": [],
                "addBundledMetadata": true,
                "maybeBundledConfigIds": {},
                "versionSettings": { "version": "4.4.7", "componentTypes": ["browser"] }
            }
        },
        // No tracking plan: with one the library fetches its schema filter
        // from Segment's CDN.
        "plan": {},
        "edgeFunction": {},
        "analyticsNextEnabled": true,
        "middlewareSettings": {},
        "enabledMiddleware": {},
        "metrics": { "sampleRate": 0 },
        "legacyVideoPluginsEnabled": false,
        "remotePlugins": []
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_point_the_library_at_this_host() {
        let s = settings_json("wk_1", "shop.example:8080", false);
        assert_eq!(
            s["integrations"]["Segment.io"]["apiHost"],
            "shop.example:8080/v1"
        );
        assert_eq!(s["integrations"]["Segment.io"]["protocol"], "http");
        assert_eq!(s["integrations"]["Segment.io"]["apiKey"], "wk_1");
        assert_eq!(s["metrics"]["sampleRate"], 0, "no metrics to Segment");
        assert_eq!(s["remotePlugins"], serde_json::json!([]));
        let s = settings_json("wk_1", "h", true);
        assert_eq!(s["integrations"]["Segment.io"]["protocol"], "https");
    }
}
