//! Static assets: the tag (`/wm.js`, `/wm/*`) and the demo site at `/`.
//!
//! Both are built into the binary (`build.rs` embeds `client-wasm/dist/` and
//! `demo-site/`), so a `waymark` copied alone to a machine serves them;
//! `[server] tag_dir` and `site_dir` serve directories instead.
//!
//! `/wm/*` files are content-hashed, so they are cached for a year as
//! immutable; `/wm.js` names them and is cached for five minutes, so a new
//! tag reaches visitors quickly.

use std::path::Path;

use axum::extract::{Path as UrlPath, Request};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tower_http::services::{ServeDir, ServeFile};
use tower_http::set_header::SetResponseHeaderLayer;

use super::AppState;
use crate::config::ServerConfig;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/assets.rs"));
}

const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const SHORT: &str = "public, max-age=300";

/// Routes for the tag and the site, from `server`'s directories or the
/// copies built into the binary.
pub fn routes(server: &ServerConfig) -> Router<AppState> {
    let router = match &server.tag_dir {
        Some(dir) => tag_from_dir(dir),
        None => Router::new()
            .route(
                "/wm.js",
                get(|| async { embedded_tag_file("wm.js", false) }),
            )
            .route(
                "/wm/{*file}",
                get(
                    |UrlPath(file): UrlPath<String>, headers: HeaderMap| async move {
                        embedded_tag_file(&format!("wm/{file}"), accepts_gzip(&headers))
                    },
                ),
            ),
    };
    match &server.site_dir {
        Some(site) => {
            router.fallback_service(ServeDir::new(site).append_index_html_on_directories(true))
        }
        None if server.demo_site => {
            router.fallback(|req: Request| async move { embedded_site_file(req.uri().path()) })
        }
        None => router,
    }
}

fn tag_from_dir(tag_dir: &Path) -> Router<AppState> {
    let immutable = SetResponseHeaderLayer::overriding(
        header::CACHE_CONTROL,
        HeaderValue::from_static(IMMUTABLE),
    );
    let short =
        SetResponseHeaderLayer::overriding(header::CACHE_CONTROL, HeaderValue::from_static(SHORT));
    Router::new()
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
        )
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| matches!(p.trim(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

fn lookup(table: &'static [(&'static str, &'static [u8])], name: &str) -> Option<&'static [u8]> {
    table
        .binary_search_by(|(n, _)| (*n).cmp(name))
        .ok()
        .and_then(|i| table.get(i))
        .map(|(_, bytes)| *bytes)
}

/// A file of the built-in tag; `wm.js` is short-cached, `wm/*` immutable
/// and served from its `.gz` twin when the client takes gzip.
fn embedded_tag_file(name: &str, gzip: bool) -> Response {
    if embedded::TAG.is_empty() {
        return (
            StatusCode::NOT_FOUND,
            "this waymark binary was built without the browser tag: run `cargo xtask build-tag`, then build the worker again, or set [server] tag_dir\n",
        )
            .into_response();
    }
    let cache = if name == "wm.js" { SHORT } else { IMMUTABLE };
    let twin = if gzip && name.starts_with("wm/") {
        lookup(embedded::TAG, &format!("{name}.gz"))
    } else {
        None
    };
    let mut response = match (twin, lookup(embedded::TAG, name)) {
        (Some(gz), _) => {
            let mut r = gz.into_response();
            r.headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            r
        }
        (None, Some(bytes)) => bytes.into_response(),
        (None, None) => return StatusCode::NOT_FOUND.into_response(),
    };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type(name));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if name.starts_with("wm/") {
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    response
}

/// A file of the built-in demo shop; `/` and directories get `index.html`.
fn embedded_site_file(path: &str) -> Response {
    let mut name = path.trim_start_matches('/').to_owned();
    if name.is_empty() || name.ends_with('/') {
        name.push_str("index.html");
    }
    match lookup(embedded::DEMO_SITE, &name) {
        Some(bytes) => {
            let mut response = bytes.into_response();
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, content_type(&name));
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            response
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn content_type(name: &str) -> HeaderValue {
    let ext = name.rsplit('.').next().unwrap_or("");
    HeaderValue::from_static(match ext {
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "wasm" => "application/wasm",
        "html" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "gz" => "application/gzip",
        _ => "application/octet-stream",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_is_taken_unless_refused() {
        let mut h = HeaderMap::new();
        assert!(!accepts_gzip(&h));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("br, gzip, deflate"),
        );
        assert!(accepts_gzip(&h));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip;q=0, br"),
        );
        assert!(!accepts_gzip(&h));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        assert!(!accepts_gzip(&h));
    }

    #[test]
    fn the_demo_site_is_built_in_and_sorted_for_lookup() {
        assert!(lookup(embedded::DEMO_SITE, "index.html").is_some());
        assert!(embedded::DEMO_SITE.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(embedded::TAG.windows(2).all(|w| w[0].0 < w[1].0));
        let r = embedded_site_file("/");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some("text/html; charset=utf-8")
        );
        assert_eq!(
            embedded_site_file("/nope.js").status(),
            StatusCode::NOT_FOUND
        );
    }
}
