//! Static assets: the tag (`/wm.js`, `/wm/*`) and the demo site at `/`.
//!
//! `/wm/*` files are content-hashed, so they are cached for a year as
//! immutable; `/wm.js` names them and is cached for five minutes, so a new
//! tag reaches visitors quickly.

use std::path::Path;

use axum::http::{header, HeaderValue};
use axum::Router;
use tower_http::services::{ServeDir, ServeFile};
use tower_http::set_header::SetResponseHeaderLayer;

use super::AppState;

/// Routes for the tag assets under `tag_dir`, and the site under `site_dir` as fallback.
pub fn routes(tag_dir: &Path, site_dir: Option<&Path>) -> Router<AppState> {
    let immutable = SetResponseHeaderLayer::overriding(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    let short = SetResponseHeaderLayer::overriding(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    let mut router = Router::new()
        .nest_service(
            "/wm",
            tower::ServiceBuilder::new()
                .layer(immutable)
                .service(ServeDir::new(tag_dir.join("wm")).precompressed_gzip()),
        )
        .route_service(
            "/wm.js",
            tower::ServiceBuilder::new()
                .layer(short)
                .service(ServeFile::new(tag_dir.join("wm.js"))),
        );
    if let Some(site) = site_dir.filter(|d| d.is_dir()) {
        router =
            router.fallback_service(ServeDir::new(site).append_index_html_on_directories(true));
    }
    router
}
