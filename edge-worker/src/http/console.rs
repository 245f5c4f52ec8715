//! The console: the operators' web page at `/admin/`, built into the binary.
//!
//! `GET /admin/` is the page; `GET /admin/console/<file>` its scripts and
//! styles. The files live in `edge-worker/console/` and are compiled in
//! with `include_str!`, so the console needs no files beside the binary and
//! no request leaves the worker's origin.
//!
//! The page itself carries no secret and needs no token: it asks for one
//! and sends it as a bearer token on every admin call.
//!
//! # Design
//! Every response carries a strict Content-Security-Policy: scripts and
//! styles only from this origin, no inline script, no `eval`, no frames, no
//! forms posting elsewhere, requests only to this origin. Event data is
//! attacker-controlled (anyone can post an event), so the page writes it
//! with `textContent` only, and the policy is the second wall (issue #16).
//! All URLs in the page are relative, so the console works unchanged under
//! `[server] path_prefix`.

use axum::extract::Path;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// The console's Content-Security-Policy.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
form-action 'none'; frame-ancestors 'none'";

/// One built-in file: its name under `/admin/console/`, type and text.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const JS: &str = "text/javascript; charset=utf-8";

/// The console's files, in the order a browser loads them.
const ASSETS: &[Asset] = &[
    Asset {
        name: "console.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../../console/console.css"),
    },
    Asset {
        name: "app.js",
        content_type: JS,
        body: include_str!("../../console/app.js"),
    },
    Asset {
        name: "ui.js",
        content_type: JS,
        body: include_str!("../../console/ui.js"),
    },
    Asset {
        name: "api.js",
        content_type: JS,
        body: include_str!("../../console/api.js"),
    },
    Asset {
        name: "overview.js",
        content_type: JS,
        body: include_str!("../../console/overview.js"),
    },
    Asset {
        name: "live.js",
        content_type: JS,
        body: include_str!("../../console/live.js"),
    },
    Asset {
        name: "destinations.js",
        content_type: JS,
        body: include_str!("../../console/destinations.js"),
    },
    Asset {
        name: "quarantine.js",
        content_type: JS,
        body: include_str!("../../console/quarantine.js"),
    },
    Asset {
        name: "profiles.js",
        content_type: JS,
        body: include_str!("../../console/profiles.js"),
    },
    Asset {
        name: "syncs.js",
        content_type: JS,
        body: include_str!("../../console/syncs.js"),
    },
];

const INDEX: &str = include_str!("../../console/index.html");

/// The console's total size in bytes, uncompressed (the README reports it).
pub fn total_bytes() -> usize {
    INDEX.len() + ASSETS.iter().map(|a| a.body.len()).sum::<usize>()
}

/// The console routes, at the top level (the page is public; the API it
/// calls is not).
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/admin", get(to_slash))
        .route("/admin/", get(index))
        .route("/admin/console/{file}", get(asset))
}

/// `/admin` → `/admin/`, relative so it holds under a path prefix.
async fn to_slash() -> Response {
    (
        StatusCode::PERMANENT_REDIRECT,
        [(header::LOCATION, HeaderValue::from_static("admin/"))],
    )
        .into_response()
}

async fn index() -> Response {
    respond("text/html; charset=utf-8", INDEX)
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.name == file) {
        Some(a) => respond(a.content_type, a.body),
        None => super::error::ApiError::client(
            StatusCode::NOT_FOUND,
            "path",
            "no such console file; open /admin/",
        )
        .into_response(),
    }
}

fn respond(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            // Not content-hashed: revalidate, so an upgraded worker serves its own page.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                HeaderName::from_static("cross-origin-opener-policy"),
                HeaderValue::from_static("same-origin"),
            ),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(path: &str) -> Response {
        routes::<()>()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn page_is_served_with_a_strict_policy() {
        let r = get("/admin/").await;
        assert_eq!(r.status(), StatusCode::OK);
        let csp = r.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(csp.contains("script-src 'self'"));
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
        assert!(csp.contains("connect-src 'self'"));
        assert_eq!(r.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    }

    #[tokio::test]
    async fn assets_are_served_with_their_types_and_unknown_files_are_404() {
        let r = get("/admin/console/app.js").await;
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/javascript"));
        assert_eq!(get("/admin/console/nope.js").await.status(), 404);
        assert_eq!(get("/admin/console/..%2Fmain.rs").await.status(), 404);
    }

    #[tokio::test]
    async fn bare_admin_redirects_relatively() {
        let r = get("/admin").await;
        assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(r.headers()[header::LOCATION], "admin/");
    }

    #[test]
    fn the_page_has_no_inline_script_and_loads_only_relative_urls() {
        assert!(!INDEX.contains("<script>"));
        assert!(!INDEX.contains("style="));
        for handler in [" onclick=", " onload=", " onerror=", " onsubmit="] {
            assert!(
                !INDEX.contains(handler),
                "index.html has an inline {handler}"
            );
        }
        for a in ASSETS {
            // The SVG namespace is a name, not a request.
            let body = a.body.replace("http://www.w3.org/2000/svg", "");
            for bad in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "eval(",
                "new Function",
                "http://",
                "https://",
                "document.write",
            ] {
                assert!(!body.contains(bad), "{} contains {bad}", a.name);
            }
        }
    }
}
