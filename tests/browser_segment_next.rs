//! Segment's own browser library works against Waymark (issue 15 point 4):
//! `@segment/analytics-next` from npm (installed into `tests/node/segment`
//! by `cargo xtask test`), served by a page on another origin in headless
//! Chromium, with `cdnURL` pointed at the worker. Its settings request and
//! every call it sends (page, track, identify, group, alias, screen) must
//! be answered and land in the worker's file destination.

#[path = "browser/mod.rs"]
mod browser;

use std::path::PathBuf;

use browser::{at, root, Browser, Worker};
use serde_json::Value;

/// The library's UMD build (exposes `window.AnalyticsNext`).
fn umd_dir() -> PathBuf {
    root().join("tests/node/segment/node_modules/@segment/analytics-next/dist/umd")
}

/// A site on its own origin: the page (which reads the worker's URL from
/// `?worker=`) and the library's files.
async fn other_origin() -> String {
    let page = r#"<!doctype html><html><head><title>analytics-next</title><link rel="icon" href="data:,">
<script src="/ajs/index.js"></script>
<script>
var worker = new URLSearchParams(location.search).get("worker");
var analytics = AnalyticsNext.AnalyticsBrowser.load({ writeKey: "wk_next", cdnURL: worker });
window.sent = Promise.all([
  analytics.page("Docs", "Home", { section: "intro" }),
  analytics.identify("u-next", { plan: "team" }),
  analytics.track("Next Track", { revenue: 12.5 }),
  analytics.group("g-next", { name: "Next Co" }),
  analytics.alias("u-next-2", "u-next"),
  analytics.screen("Next Screen", { tab: "a" })
]).then(function (ctxs) {
  return ctxs.map(function (c) {
    var f = c.failedDelivery();
    return [c.event.type, f ? String(f.reason) : null];
  });
});
</script></head><body></body></html>"#;
    let dir = umd_dir();
    let app = axum::Router::new()
        .route(
            "/",
            axum::routing::get(move || async move { axum::response::Html(page) }),
        )
        .route(
            "/ajs/{file}",
            axum::routing::get(
                move |axum::extract::Path(file): axum::extract::Path<String>| {
                    let path = dir.join(file);
                    async move {
                        use axum::response::IntoResponse;
                        match std::fs::read(&path) {
                            Ok(b) => ([(axum::http::header::CONTENT_TYPE, "text/javascript")], b)
                                .into_response(),
                            Err(_) => axum::http::StatusCode::NOT_FOUND.into_response(),
                        }
                    }
                },
            ),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_analytics_next_on_another_origin_lands_every_call() {
    let _serial = browser::SERIAL.lock().await;
    browser::require_prerequisites().unwrap();
    assert!(
        umd_dir().join("index.js").is_file(),
        "tests/node/segment has no node_modules: run `cargo xtask test` (it runs `npm ci` there)"
    );
    let site = other_origin().await;
    let config = format!(
        r#"[identity]
keys = [{{ id = "t", secret = "analytics-next-test-cookie-key-0123456789" }}]

[[sources]]
name = "docs"
write_key = "wk_next"
allowed_origins = ["{site}"]
default_consent = {{ analytics = "granted", marketing = "granted" }}

[[destinations]]
name = "local-file"
type = "file"
path = "events.ndjson"
"#
    );
    let w = Worker::start(Some(&config)).await.unwrap();
    let b = Browser::start().await.unwrap();
    b.goto(&format!("{site}/?worker={}", w.base)).await.unwrap();

    // Every promise resolves without a failed delivery.
    let outcome = b.eval("window.sent").await.unwrap();
    let outcome = outcome.as_array().cloned().unwrap_or_default();
    assert_eq!(outcome.len(), 6, "{outcome:?}");
    for o in &outcome {
        assert_eq!(o[1], Value::Null, "delivery failed: {o:?}");
    }

    // And each call is in the destination, as analytics-next shaped it.
    let page = w.wait_event("page", |e| e["type"] == "page").await.unwrap();
    assert_eq!(page["name"], "Home");
    assert_eq!(page["category"], "Docs");
    assert_eq!(at(&page, "properties.section"), "intro");
    assert_eq!(at(&page, "context.library.name"), "analytics.js");
    let identify = w
        .wait_event("identify", |e| e["type"] == "identify")
        .await
        .unwrap();
    assert_eq!(identify["userId"], "u-next");
    assert_eq!(at(&identify, "traits.plan"), "team");
    let track = w
        .wait_event("track", |e| {
            e["type"] == "track" && e["event"] == "Next Track"
        })
        .await
        .unwrap();
    assert_eq!(at(&track, "properties.revenue"), 12.5);
    assert_eq!(track["userId"], "u-next");
    let group = w
        .wait_event("group", |e| e["type"] == "group")
        .await
        .unwrap();
    assert_eq!(group["groupId"], "g-next");
    let alias = w
        .wait_event("alias", |e| e["type"] == "alias")
        .await
        .unwrap();
    // NOTE: analytics-next (1.84) stamps the current `user().id()` over
    // alias's `to` in its EventFactory (`addIdentity`), so after
    // `identify("u-next")` the library itself sends `userId: "u-next"`;
    // the worker keeps what it was sent.
    assert_eq!(alias["userId"], "u-next", "{alias:#}");
    assert_eq!(alias["previousId"], "u-next", "{alias:#}");
    let screen = w
        .wait_event("screen", |e| e["type"] == "screen")
        .await
        .unwrap();
    assert_eq!(screen["name"], "Next Screen");
    assert_eq!(b.errors(), Vec::<String>::new());
}
