//! The browser tag in headless Chromium against a real worker (issue #6).
//!
//! Each test starts `target/debug/waymark serve` on a free port with its own
//! data directory (the embedded default writes accepted events to
//! `<data-dir>/events.ndjson`), loads the demo shop from it and checks what
//! arrives. Needs `cargo xtask build-tag` and Debian's Chromium (`cargo xtask
//! test` provides both).

#[path = "browser/mod.rs"]
mod browser;

use std::time::Duration;

use browser::{at, Browser, Worker};
use serde_json::Value;

/// The tag's anonymousId is the event's, unless the worker's verified
/// cookie took precedence (once consent let it be set): then the cookie's id
/// is the anonymousId and the tag's is kept beside it.
fn assert_anonymous_id(e: &Value, tag_anon: &str) {
    match at(e, "context.waymark.clientAnonymousId").as_str() {
        Some(kept) => {
            assert_eq!(kept, tag_anon);
            assert_eq!(e["anonymousId"], *at(e, "context.waymark.visitorId"));
        }
        None => assert_eq!(e["anonymousId"], tag_anon),
    }
}

fn is(e: &Value, kind: &str) -> bool {
    e["type"] == kind
}

fn track(name: &'static str) -> impl Fn(&Value) -> bool {
    move |e| is(e, "track") && e["event"] == name
}

async fn setup(config: Option<&str>) -> (Worker, Browser) {
    browser::require_prerequisites().unwrap();
    let worker = Worker::start(config).await.unwrap();
    let b = Browser::start().await.unwrap();
    (worker, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_track_and_identify_arrive_with_segment_fields() {
    let _serial = browser::SERIAL.lock().await;
    let (w, b) = setup(None).await;
    b.goto(&format!(
        "{}/?utm_source=newsletter&utm_campaign=spring",
        w.base
    ))
    .await
    .unwrap();

    // The snippet's page() call.
    let page = w.wait_event("page", |e| is(e, "page")).await.unwrap();
    assert_eq!(at(&page, "context.library.name"), "waymark-tag");
    assert!(at(&page, "context.page.url")
        .as_str()
        .unwrap()
        .contains("utm_source=newsletter"));
    assert_eq!(at(&page, "context.page.path"), "/");
    assert_eq!(at(&page, "context.page.title"), "Waymark Coffee");
    assert_eq!(
        at(&page, "context.page.search"),
        "?utm_source=newsletter&utm_campaign=spring"
    );
    assert_eq!(at(&page, "properties.path"), "/");
    assert_eq!(at(&page, "context.campaign.source"), "newsletter");
    assert_eq!(at(&page, "context.campaign.name"), "spring");
    assert!(at(&page, "context.userAgent")
        .as_str()
        .unwrap()
        .contains("Chrome"));
    assert!(at(&page, "context.locale").is_string());
    assert!(at(&page, "context.timezone").is_string());
    assert!(at(&page, "context.screen.width").is_number());
    assert!(at(&page, "context.consent.categoryPreferences").is_object());
    assert_eq!(at(&page, "context.consent.gpc"), false);
    assert!(page["messageId"].is_string() && page["timestamp"].is_string());
    // The tag's own anonymousId: on the page itself, or kept aside once the
    // worker's verified cookie has taken precedence.
    let anon = at(&page, "context.waymark.clientAnonymousId")
        .as_str()
        .or(page["anonymousId"].as_str())
        .unwrap()
        .to_string();

    // Auto-captured SPA page view and [data-wm-track] click.
    b.eval("document.querySelector('a[href*=espresso]').click()")
        .await
        .unwrap();
    let spa = w
        .wait_event("SPA page", |e| {
            is(e, "page") && at(e, "context.page.search") == "?view=product&id=espresso"
        })
        .await
        .unwrap();
    assert_eq!(
        at(&spa, "context.page.title"),
        "Espresso beans · Waymark Coffee"
    );
    b.eval("document.querySelector('button.add').click()")
        .await
        .unwrap();
    let added = w
        .wait_event("Product Added", track("Product Added"))
        .await
        .unwrap();
    assert_eq!(at(&added, "properties.product_id"), "espresso");
    assert_eq!(at(&added, "properties.price"), 12.5);
    assert_anonymous_id(&added, &anon);

    // Checkout: identify + Order Completed through the API; the form
    // submit is auto-captured with its id and name only.
    b.eval(
        "history.pushState(null, '', '/?view=cart'); dispatchEvent(new PopStateEvent('popstate'))",
    )
    .await
    .unwrap();
    b.wait_for("document.getElementById('checkout')")
        .await
        .unwrap();
    b.eval("document.querySelector('#checkout button').click()")
        .await
        .unwrap();
    let ident = w
        .wait_event("identify", |e| is(e, "identify"))
        .await
        .unwrap();
    assert_eq!(ident["userId"], "user-ada");
    assert_eq!(at(&ident, "traits.email"), "ada@example.com");
    assert_anonymous_id(&ident, &anon);
    let order = w
        .wait_event("Order Completed", track("Order Completed"))
        .await
        .unwrap();
    assert_eq!(order["userId"], "user-ada");
    assert_eq!(at(&order, "properties.currency"), "EUR");
    let form = w
        .wait_event("Form Submitted", track("Form Submitted"))
        .await
        .unwrap();
    assert_eq!(at(&form, "properties.form_id"), "checkout");
    assert!(
        !form.to_string().contains("ada@example.com"),
        "form values never leave the page"
    );
    assert_eq!(b.errors(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_queued_offline_are_sent_after_reconnecting() {
    let _serial = browser::SERIAL.lock().await;
    let (w, b) = setup(None).await;
    b.goto(&format!("{}/", w.base)).await.unwrap();
    w.wait_event("page", |e| is(e, "page")).await.unwrap();

    b.set_offline(true).await.unwrap();
    b.wait_for("navigator.onLine === false").await.unwrap();
    b.eval("waymark.track('Offline One'); waymark.track('Offline Two', {n: 2})")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        w.events().iter().all(|e| e["event"] != "Offline One"),
        "nothing is sent while offline"
    );
    let queued = b.eval("localStorage.getItem('wm_q')").await.unwrap();
    assert!(
        queued.as_str().unwrap_or_default().contains("Offline Two"),
        "the queue is persisted"
    );

    b.set_offline(false).await.unwrap();
    w.wait_event("Offline One", track("Offline One"))
        .await
        .unwrap();
    let two = w
        .wait_event("Offline Two", track("Offline Two"))
        .await
        .unwrap();
    assert_eq!(at(&two, "properties.n"), 2);
    assert_eq!(b.errors(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_fired_on_pagehide_are_not_lost() {
    let _serial = browser::SERIAL.lock().await;
    let (w, b) = setup(None).await;
    b.goto(&format!("{}/", w.base)).await.unwrap();
    w.wait_event("page", |e| is(e, "page")).await.unwrap();
    // Queued, then the page goes away before the batch timer fires.
    b.eval("addEventListener('pagehide', function () { waymark.track('Left On Pagehide') }); waymark.track('Leaving'); location.href = 'about:blank'; 1")
        .await
        .unwrap();
    w.wait_event("Leaving", track("Leaving")).await.unwrap();
    w.wait_event("Left On Pagehide", track("Left On Pagehide"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_visitor_cookie_is_replaced() {
    let _serial = browser::SERIAL.lock().await;
    let (w, b) = setup(None).await;
    b.call("Network.setCookie", serde_json::json!({"name": "wm_vid", "value": "v1.forged.0.k1.AAAA", "url": format!("{}/", w.base)}))
        .await
        .unwrap();
    b.goto(&format!("{}/", w.base)).await.unwrap();
    let page = w.wait_event("page", |e| is(e, "page")).await.unwrap();
    assert!(
        !page.to_string().contains("forged"),
        "the forged id is not trusted: {page}"
    );
    let cookies = b
        .call(
            "Network.getCookies",
            serde_json::json!({"urls": [format!("{}/", w.base)]}),
        )
        .await
        .unwrap();
    let vid = cookies["cookies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "wm_vid")
        .cloned()
        .unwrap();
    assert_ne!(
        vid["value"], "v1.forged.0.k1.AAAA",
        "the worker set a fresh cookie"
    );
    assert_eq!(vid["httpOnly"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_logs_no_console_errors_and_measures_time_to_first_event() {
    let _serial = browser::SERIAL.lock().await;
    let (w, b) = setup(None).await;
    b.goto(&format!("{}/", w.base)).await.unwrap();
    w.wait_event("page", |e| is(e, "page")).await.unwrap();
    b.wait_for("performance.getEntriesByName('wm:time-to-first-event').length")
        .await
        .unwrap();
    let ms = b
        .eval("performance.getEntriesByName('wm:time-to-first-event')[0].duration")
        .await
        .unwrap();
    println!(
        "time from script start to first event sent: {:.1} ms",
        ms.as_f64().unwrap()
    );
    for choice in ["consent-all", "consent-none"] {
        b.eval("document.getElementById('privacy').click()")
            .await
            .unwrap();
        b.eval(&format!("document.getElementById('{choice}').click()"))
            .await
            .unwrap();
    }
    b.eval("document.querySelector('a[href*=grinder]').click()")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(b.errors(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_wasm_the_fallback_sends_queued_calls_without_errors() {
    let _serial = browser::SERIAL.lock().await;
    let (w, b) = setup(None).await;
    b.call(
        "Network.setBlockedURLs",
        serde_json::json!({"urls": ["*.wasm"]}),
    )
    .await
    .unwrap();
    b.goto(&format!("{}/", w.base)).await.unwrap();
    let page = w
        .wait_event("fallback page", |e| is(e, "page"))
        .await
        .unwrap();
    assert_eq!(at(&page, "context.library.version"), "fallback");
    b.eval("waymark.track('After Fallback')").await.unwrap();
    w.wait_event("After Fallback", track("After Fallback"))
        .await
        .unwrap();
    // A blocked request is logged by the browser itself; no script error is.
    let errors: Vec<String> = b
        .errors()
        .into_iter()
        .filter(|e| !e.contains("ERR_BLOCKED_BY_CLIENT"))
        .collect();
    assert_eq!(errors, Vec::<String>::new());
}

/// Config for the consent test: the embedded default plus a webhook
/// destination that needs `marketing`, pointed at a loopback receiver.
fn consent_config(hook: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:8080"

[storage]
data_dir = "./waymark-data"

[identity]
cookie_name = "wm_vid"
keys = [{{ id = "dev", secret = "waymark-development-cookie-key-not-secret" }}]

[admin]
token = "wm_admin_demo"
live_token = "wm_live_demo"

[[sources]]
name = "demo"
write_key = "wk_demo"
allowed_origins = ["http://127.0.0.1"]
default_consent = {{ analytics = "granted", marketing = "pending" }}

[[destinations]]
name = "local-file"
type = "file"
path = "events.ndjson"

[[destinations]]
name = "ads"
type = "webhook"
consent = ["marketing"]
url = "{hook}"
batch = true
"#
    )
}

/// Needs the consent-aware routing of the delivery issue: events without
/// `marketing` consent must not reach the `ads` webhook, and must after
/// `waymark.consent.set({marketing: true})`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_reaches_a_marketing_destination_before_consent() {
    let _serial = browser::SERIAL.lock().await;
    browser::require_prerequisites().unwrap();
    // 1. A loopback webhook receiver that records event names.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
    let s = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let s = s.clone();
            async move {
                if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                    let events = v
                        .get("batch")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_else(|| vec![v]);
                    s.lock().unwrap().extend(events);
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    // 2. Worker with the ads destination; a visitor who has not chosen.
    let w = Worker::start(Some(&consent_config(&hook))).await.unwrap();
    let b = Browser::start().await.unwrap();
    b.goto(&format!("{}/", w.base)).await.unwrap();
    b.eval("waymark.track('Before Consent')").await.unwrap();
    w.wait_event("Before Consent", track("Before Consent"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let names = |v: &Vec<Value>| {
        v.iter()
            .map(|e| e["event"].as_str().unwrap_or("").to_string())
            .collect::<Vec<_>>()
    };
    assert!(
        !names(&seen.lock().unwrap()).contains(&"Before Consent".to_string()),
        "sent to ads without consent"
    );
    // 3. Consent given through the banner: later events reach the webhook.
    b.eval("document.getElementById('privacy').click(); document.getElementById('consent-all').click(); waymark.track('After Consent')")
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !names(&seen.lock().unwrap()).contains(&"After Consent".to_string()) {
        assert!(
            std::time::Instant::now() < deadline,
            "After Consent never reached the ads webhook"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = seen
        .lock()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "After Consent")
        .cloned()
        .unwrap();
    assert_eq!(
        at(&after, "context.consent.categoryPreferences.marketing"),
        true
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_batches_are_retried_after_retry_after() {
    let _serial = browser::SERIAL.lock().await;
    browser::require_prerequisites().unwrap();
    let html = browser::page_with_snippet(
        "",
        r#"{writeKey:"wk_test"}"#,
        "waymark.track('Retried', {n: 1});",
    );
    let site = browser::FakeSite::start(html, vec![(503, Some("2")), (429, None)])
        .await
        .unwrap();
    let b = Browser::start().await.unwrap();
    b.goto(&format!("{}/", site.base)).await.unwrap();
    // 503 with Retry-After: 2, then 429 (backoff), then 200.
    let batches = site.wait_batches(3).await.unwrap();
    let gap = batches[1].0 - batches[0].0;
    assert!(
        gap >= Duration::from_millis(1900),
        "retried after {gap:?}, before Retry-After"
    );
    assert!(
        gap < Duration::from_millis(3500),
        "retried after {gap:?}, much later than Retry-After"
    );
    for (_, body) in &batches {
        assert_eq!(body["writeKey"], "wk_test");
        assert!(body["sentAt"].is_string());
        assert_eq!(body["batch"][0]["event"], "Retried");
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        site.batches.lock().unwrap().len(),
        3,
        "nothing is re-sent after a 200"
    );
    assert_eq!(b.eval("localStorage.getItem('wm_q')").await.unwrap(), "[]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_hooks_fill_context_consent_and_wait_for_consent_holds_events() {
    let _serial = browser::SERIAL.lock().await;
    browser::require_prerequisites().unwrap();
    // A CMP stub (IAB TCF) that answers at once, and gtag Consent Mode.
    let head = r#"<script>
window.__tcfapi = function (cmd, v, cb) { if (cmd === 'addEventListener') cb({eventStatus: 'tcloaded', gdprApplies: true,
  tcString: 'CQ-test-string', purpose: {consents: {1: true, 3: true, 4: true, 8: true}}}, true); };
window.dataLayer = window.dataLayer || []; function gtag(){dataLayer.push(arguments);}
gtag('consent', 'default', {ad_storage: 'denied', analytics_storage: 'denied', ad_user_data: 'denied', ad_personalization: 'denied'});
</script>"#;
    let html = browser::page_with_snippet(
        head,
        r#"{writeKey:"wk_test"}"#,
        "waymark.track('With Hooks');",
    );
    let site = browser::FakeSite::start(html, vec![]).await.unwrap();
    let b = Browser::start().await.unwrap();
    b.goto(&format!("{}/", site.base)).await.unwrap();
    site.wait_batches(1).await.unwrap();
    let e = site
        .events()
        .into_iter()
        .find(|e| e["event"] == "With Hooks")
        .unwrap();
    assert_eq!(at(&e, "context.consent.tcf"), "CQ-test-string");
    assert_eq!(at(&e, "context.consent.gcm.ad_storage"), "denied");
    // TCF answered (a decision, marketing granted); the GCM default that
    // came after it only fills what was not set.
    assert_eq!(
        at(&e, "context.consent.categoryPreferences.marketing"),
        true
    );
    assert_eq!(
        at(&e, "context.consent.categoryPreferences.analytics"),
        true
    );
    // A GCM update through gtag is picked up by the dataLayer hook.
    b.eval("gtag('consent', 'update', {ad_storage: 'granted', analytics_storage: 'denied'}); waymark.track('After Update')")
        .await
        .unwrap();
    site.wait_batches(2).await.unwrap();
    let e = site
        .events()
        .into_iter()
        .find(|e| e["event"] == "After Update")
        .unwrap();
    assert_eq!(at(&e, "context.consent.gcm.ad_storage"), "granted");
    assert_eq!(
        at(&e, "context.consent.categoryPreferences.analytics"),
        false
    );
    // consent.get and onChange.
    let got = b
        .eval("new Promise(function (r) { waymark.consent.onChange(function (c) { r(c.categoryPreferences.analytics) }); waymark.consent.set({analytics: true}); })")
        .await
        .unwrap();
    assert_eq!(got, true);
    assert_eq!(
        b.eval("waymark.consent.get().categoryPreferences.analytics")
            .await
            .unwrap(),
        true
    );

    // waitForConsent: nothing leaves until a decision, then the held events do.
    let html = browser::page_with_snippet(
        "",
        r#"{writeKey:"wk_test",waitForConsent:true}"#,
        "waymark.track('Held');",
    );
    let site = browser::FakeSite::start(html, vec![]).await.unwrap();
    b.goto(&format!("{}/", site.base)).await.unwrap();
    b.wait_for("typeof waymark.h == 'function'").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(site.events().is_empty(), "held until consent is known");
    assert!(b
        .eval("localStorage.getItem('wm_h')")
        .await
        .unwrap()
        .as_str()
        .unwrap_or("")
        .contains("Held"));
    b.eval("waymark.consent.set({analytics: true, marketing: false})")
        .await
        .unwrap();
    site.wait_batches(1).await.unwrap();
    let e = site
        .events()
        .into_iter()
        .find(|e| e["event"] == "Held")
        .unwrap();
    assert_eq!(
        at(&e, "context.consent.categoryPreferences.analytics"),
        true
    );
    assert_eq!(
        at(&e, "context.consent.categoryPreferences.marketing"),
        false
    );
    assert_eq!(b.errors(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_panel_shows_the_stream_or_says_it_is_unavailable() {
    let _serial = browser::SERIAL.lock().await;
    let (w, b) = setup(None).await;
    let live = reqwest::get(format!("{}/admin/live?token=wm_live_demo", w.base))
        .await
        .unwrap();
    let streaming = live.status().is_success();
    drop(live);
    b.goto(&format!("{}/", w.base)).await.unwrap();
    w.wait_event("page", |e| is(e, "page")).await.unwrap();
    // What the tag sent is listed either way.
    b.wait_for("document.querySelector('#live .sent')")
        .await
        .unwrap();
    if streaming {
        b.wait_for("document.getElementById('live-status').textContent == 'live stream connected'")
            .await
            .unwrap();
        b.eval("waymark.track('Seen Live')").await.unwrap();
        b.wait_for("[].some.call(document.querySelectorAll('#live .stage'), function (li) { return /Seen Live/.test(li.textContent) })")
            .await
            .unwrap();
    } else {
        b.wait_for("/unavailable/.test(document.getElementById('live-status').textContent)")
            .await
            .unwrap();
    }
    assert_eq!(b.errors(), Vec::<String>::new());
}
