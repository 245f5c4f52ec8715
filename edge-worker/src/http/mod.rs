//! The HTTP surface, assembled in one place.
//!
//! [`router`] merges the ingest, ops, tag, live and console routes and nests
//! the admin API under `/admin`, mounts the whole under `[server] path_prefix`
//! when one is set, then stacks the layers once, outermost first.

pub mod admin;
pub mod admin_dlq;
pub mod admin_profiles;
pub mod admin_stats;
pub mod api;
pub mod client_ip;
pub mod console;
pub mod error;
pub mod ingest;
pub mod live;
pub mod ops;
pub mod segment;
pub mod tag;

use std::sync::Arc;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{BoxError, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use tower::ServiceBuilder;
use tower_http::trace::TraceLayer;

use crate::config::ServerConfig;
use crate::stages::Pipeline;
use crate::storage::Storage;
use admin::AdminAuth;
use error::ApiError;

/// Everything handlers share: one clone of `Arc`s.
#[derive(Clone)]
pub struct AppState {
    /// The stages.
    pub pipeline: Arc<Pipeline>,
    /// The store.
    pub storage: Arc<dyn Storage>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// `[server]`.
    pub server: Arc<ServerConfig>,
    /// Admin tokens.
    pub admin: Arc<AdminAuth>,
    /// The syncs (Reverse ETL): config, state store and trigger.
    pub syncs: Arc<crate::syncs::Syncs>,
}

/// Builds the whole router for `state`.
pub fn router(state: AppState) -> Router {
    let server = Arc::clone(&state.server);
    server.warn_deprecated();
    let routes = Router::new()
        .merge(ingest::routes())
        .merge(ops::routes())
        .merge(live::routes())
        .merge(console::routes())
        .nest("/admin", admin::routes(state.clone()))
        .nest("/api/v1", api::routes(state.clone()))
        .merge(segment::routes())
        .merge(tag::routes(&server));
    // The prefix applies here, once, so every route (and any added later)
    // lives under it; nothing is served outside it.
    let routes = match server.prefix() {
        "" => routes,
        prefix => Router::new().nest(prefix, routes),
    };
    routes
        .layer(
            ServiceBuilder::new()
                // 1. Trace every request, with its matched route.
                .layer(TraceLayer::new_for_http())
                // 2. Record metrics and log 5xx details kept out of bodies.
                .layer(axum::middleware::from_fn(error::log_server_errors))
                // 3. Turn overload and timeouts into 503 / 408 in our error shape.
                .layer(HandleErrorLayer::new(overloaded))
                .load_shed()
                .concurrency_limit(server.max_concurrent_requests)
                .timeout(Duration::from_millis(server.request_timeout_ms)),
        )
        .with_state(state)
}

async fn overloaded(error: BoxError) -> axum::response::Response {
    if error.is::<tower::timeout::error::Elapsed>() {
        ApiError::client(
            StatusCode::REQUEST_TIMEOUT,
            "request",
            "took too long; retry",
        )
        .into_response()
    } else {
        ApiError::Client {
            status: StatusCode::SERVICE_UNAVAILABLE,
            problems: vec![error::Problem::new(
                "server",
                "overloaded; retry with backoff",
            )],
            retry_after: Some(1),
        }
        .into_response()
    }
}
