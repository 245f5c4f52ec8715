//! The analytics.js drop-in (issue 15 point 3): a page written for
//! Segment's analytics.js, with Segment's snippet whose script URL now
//! points at Waymark's `/wm.js`, runs against a real worker in headless
//! Chromium; every call site's event must arrive, including `trackLink` on
//! a link that navigates away and `trackForm` on a form that submits.
//! Needs `cargo xtask build-tag` and Debian's Chromium.

#[path = "browser/mod.rs"]
mod browser;

use browser::{at, tempdir, Browser, Worker};
use serde_json::Value;

/// Segment's snippet (4.13.x shape: the method stubs queue
/// `[method, ...args]`, `load` inserts the script, `_writeKey`), with the
/// only change a site makes: the script URL.
const SEGMENT_SNIPPET: &str = r#"<script>
!function(){var analytics=window.analytics=window.analytics||[];if(!analytics.initialize)if(analytics.invoked)window.console&&console.error&&console.error("Segment snippet included twice.");else{analytics.invoked=!0;
analytics.methods=["trackSubmit","trackClick","trackLink","trackForm","pageview","identify","reset","group","track","ready","alias","debug","page","once","off","on","addSourceMiddleware","addIntegrationMiddleware","setAnonymousId","addDestinationMiddleware"];
analytics.factory=function(e){return function(){var t=Array.prototype.slice.call(arguments);t.unshift(e);analytics.push(t);return analytics}};
for(var e=0;e<analytics.methods.length;e++){var key=analytics.methods[e];analytics[key]=analytics.factory(key)}
analytics.load=function(key,e){var t=document.createElement("script");t.type="text/javascript";t.async=!0;t.src="/wm.js";var n=document.getElementsByTagName("script")[0];n.parentNode.insertBefore(t,n);analytics._loadOptions=e};
analytics._writeKey="wk_demo";analytics.SNIPPET_VERSION="4.13.2";
analytics.load("wk_demo");
analytics.page();
}}();
</script>"#;

/// The shop's call sites, as a site on Segment has them.
fn home() -> String {
    format!(
        r#"<!doctype html><html><head><title>Segment shop</title><link rel="icon" href="data:,">
{SEGMENT_SNIPPET}
<script>
window.seen = [];
analytics.setAnonymousId("anon-segment-1");
analytics.addSourceMiddleware(function (ctx) {{ ctx.payload.obj.properties = ctx.payload.obj.properties || {{}}; ctx.payload.obj.properties.mw = "ran"; ctx.next(ctx.payload); }});
analytics.addSourceMiddleware(function (ctx) {{ if (ctx.payload.obj.event === "Dropped By Middleware") ctx.next(null); else ctx.next(ctx.payload); }});
analytics.on("track", function (event, properties) {{ seen.push("on:" + event); }});
analytics.once("page", function (category, name) {{ seen.push("once:page"); }});
analytics.identify("u-42", {{ email: "ada@example.com", plan: "pro" }});
analytics.track("Signed Up", {{ plan: "pro" }}, {{}}, function () {{ seen.push("callback"); }});
analytics.track("Dropped By Middleware");
analytics.group("acme", {{ name: "Acme Inc" }});
analytics.alias("u-42", "legacy-7");
analytics.pageview("/virtual/pricing");
analytics.ready(function () {{
  seen.push("ready");
  analytics.screen("Dashboard", {{ tab: "usage" }});
  analytics.debug(false);
}});
</script></head><body>
<a id="pricing" href="/next.html">Pricing</a>
<script>
analytics.trackLink(document.getElementById("pricing"), "Pricing Link Clicked", {{ placement: "header" }});
</script>
</body></html>"#
    )
}

fn next() -> String {
    format!(
        r#"<!doctype html><html><head><title>Next</title><link rel="icon" href="data:,">
{SEGMENT_SNIPPET}
</head><body>
<form id="signup" action="/done.html" method="get"><input name="plan" value="pro"><button id="go">Go</button></form>
<script>
analytics.trackForm(document.getElementById("signup"), "Signup Form Submitted", function (form) {{ return {{ form: form.id }}; }});
</script>
</body></html>"#
    )
}

fn named(what: &'static str, kind: &'static str) -> impl Fn(&Value) -> bool {
    move |e| e["type"] == kind && (e["event"] == what || e["name"] == what)
}

/// The tag's anonymousId set by `setAnonymousId`, or the worker's cookie id
/// with the tag's kept beside it.
fn assert_anonymous_id(e: &Value, tag_anon: &str) {
    match at(e, "context.waymark.clientAnonymousId").as_str() {
        Some(kept) => assert_eq!(kept, tag_anon, "{e:#}"),
        None => assert_eq!(e["anonymousId"], tag_anon, "{e:#}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_written_for_segment_analytics_js_sends_every_event() {
    let _serial = browser::SERIAL.lock().await;
    browser::require_prerequisites().unwrap();
    let site = tempdir("wm-segment-site").unwrap();
    std::fs::write(site.join("index.html"), home()).unwrap();
    std::fs::write(site.join("next.html"), next()).unwrap();
    std::fs::write(
        site.join("done.html"),
        "<!doctype html><title>done</title><link rel=\"icon\" href=\"data:,\">",
    )
    .unwrap();
    let config = format!(
        r#"[server]
site_dir = {site:?}

[identity]
keys = [{{ id = "t", secret = "segment-drop-in-test-cookie-key-0123456789" }}]

[[sources]]
name = "shop"
write_key = "wk_demo"
default_consent = {{ analytics = "granted", marketing = "pending" }}

[[destinations]]
name = "local-file"
type = "file"
path = "events.ndjson"
"#,
        site = site.display().to_string()
    );
    let w = Worker::start(Some(&config)).await.unwrap();
    let b = Browser::start().await.unwrap();
    b.goto(&format!("{}/", w.base)).await.unwrap();

    // Calls queued by the snippet, in page order, then the ready callback.
    let page = w.wait_event("page", |e| e["type"] == "page").await.unwrap();
    assert_anonymous_id(&page, "anon-segment-1");
    assert_eq!(at(&page, "context.library.name"), "waymark-tag");
    assert_eq!(at(&page, "properties.mw"), "ran");
    let identify = w
        .wait_event("identify", |e| e["type"] == "identify")
        .await
        .unwrap();
    assert_eq!(identify["userId"], "u-42");
    assert_eq!(at(&identify, "traits.plan"), "pro");
    let signed = w
        .wait_event("track", named("Signed Up", "track"))
        .await
        .unwrap();
    assert_eq!(signed["userId"], "u-42");
    assert_eq!(at(&signed, "properties.plan"), "pro");
    assert_eq!(at(&signed, "properties.mw"), "ran", "source middleware ran");
    assert_anonymous_id(&signed, "anon-segment-1");
    let group = w
        .wait_event("group", |e| e["type"] == "group")
        .await
        .unwrap();
    assert_eq!(group["groupId"], "acme");
    assert_eq!(at(&group, "traits.name"), "Acme Inc");
    let alias = w
        .wait_event("alias", |e| e["type"] == "alias")
        .await
        .unwrap();
    assert_eq!(
        (&alias["userId"], &alias["previousId"]),
        (&"u-42".into(), &"legacy-7".into())
    );
    w.wait_event("pageview", |e| {
        e["type"] == "page" && at(e, "properties.path") == "/virtual/pricing"
    })
    .await
    .unwrap();
    let screen = w
        .wait_event("screen", named("Dashboard", "screen"))
        .await
        .unwrap();
    assert_eq!(at(&screen, "properties.tab"), "usage");

    // The synchronous reads and the emitter.
    b.wait_for("seen.indexOf('ready') >= 0").await.unwrap();
    let reads = b
        .eval(
            "JSON.stringify([analytics.user().id(), analytics.user().anonymousId(), \
             analytics.user().traits().plan, analytics.group().id(), analytics.group().traits().name, seen])",
        )
        .await
        .unwrap();
    let reads: Value = serde_json::from_str(reads.as_str().unwrap()).unwrap();
    assert_eq!(reads[0], "u-42");
    assert_eq!(reads[1], "anon-segment-1");
    assert_eq!(reads[2], "pro");
    assert_eq!(reads[3], "acme");
    assert_eq!(reads[4], "Acme Inc");
    let seen: Vec<&str> = reads[5]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for s in ["on:Signed Up", "once:page", "callback", "ready"] {
        assert!(seen.contains(&s), "{s} missing from {seen:?}");
    }
    assert_eq!(
        seen.iter().filter(|s| **s == "once:page").count(),
        1,
        "{seen:?}"
    );

    // trackLink on a link that navigates: the event is kept and the browser follows the link.
    b.eval("document.getElementById('pricing').click()")
        .await
        .unwrap();
    b.wait_for("location.pathname == '/next.html' && document.readyState == 'complete'")
        .await
        .unwrap();
    let link = w
        .wait_event("trackLink", named("Pricing Link Clicked", "track"))
        .await
        .unwrap();
    assert_eq!(at(&link, "properties.placement"), "header");
    assert!(
        at(&link, "context.page.path").as_str() == Some("/"),
        "{link:#}"
    );
    w.wait_event("next page", |e| {
        e["type"] == "page" && at(e, "context.page.path") == "/next.html"
    })
    .await
    .unwrap();

    // trackForm on a form that submits.
    b.wait_for("window.analytics && analytics.initialized")
        .await
        .unwrap();
    b.eval("document.getElementById('signup').requestSubmit()")
        .await
        .unwrap();
    b.wait_for("location.pathname == '/done.html'")
        .await
        .unwrap();
    let form = w
        .wait_event("trackForm", named("Signup Form Submitted", "track"))
        .await
        .unwrap();
    assert_eq!(at(&form, "properties.form"), "signup");

    // Dropped by the second middleware, and nothing else went wrong.
    assert!(!w
        .events()
        .iter()
        .any(named("Dropped By Middleware", "track")));
    assert_eq!(b.errors(), Vec::<String>::new());
    let _ = std::fs::remove_dir_all(&site);
}
