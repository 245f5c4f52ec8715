//! The console at `/admin/` in headless Chromium against a real worker
//! (issue #16): sign in, Live and Overview show posted events, a dead
//! letter is replayed after its destination recovers, an edited
//! quarantined event is replayed, a profile is found and deleted and its
//! later events are suppressed, and event data carrying `<script>` and
//! `onerror=` never executes. Each page is saved as a PNG under
//! `$CARGO_TARGET_TMPDIR/console-screenshots/`.
//!
//! One worker (with a strict fake webhook) and one Chromium per test.

#[path = "browser/mod.rs"]
mod browser;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine as _;
use browser::{Browser, Worker};
use serde_json::{json, Value};
use waymark_tests::fakes::{webhook, Fake, Mode};

const ADMIN: &str = "console-admin-token";
const LIVE: &str = "console-live-token";

fn config(hook: &Fake) -> String {
    format!(
        r#"
[identity]
keys = [{{ id = "k1", secret = "console-test-secret-0123456789abcdef" }}]

[admin]
token = "{ADMIN}"
live_token = "{LIVE}"

[[sources]]
name = "web"
write_key = "wk_console"
default_consent = {{ analytics = "granted", marketing = "granted" }}

[[destinations]]
name = "local-file"
type = "file"
path = "events.ndjson"

[[destinations]]
name = "hook"
type = "webhook"
url = "{}/hook"
secret = "whsec"
delivery = {{ initial_backoff_ms = 50, max_backoff_ms = 200, max_age_secs = 1 }}
"#,
        hook.base
    )
}

/// Where the screenshots go.
fn shots_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(b: &Browser, name: &str) {
    let shot = b
        .call("Page.captureScreenshot", json!({"format": "png"}))
        .await
        .unwrap();
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap())
        .unwrap();
    std::fs::write(shots_dir().join(format!("{name}.png")), png).unwrap();
}

/// A JS string literal for `s`.
fn js(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

async fn click(b: &Browser, selector: &str) {
    b.wait_for(&format!("document.querySelector({})", js(selector)))
        .await
        .unwrap();
    b.eval(&format!("document.querySelector({}).click()", js(selector)))
        .await
        .unwrap();
}

async fn type_into(b: &Browser, selector: &str, value: &str) {
    b.wait_for(&format!("document.querySelector({})", js(selector)))
        .await
        .unwrap();
    b.eval(&format!(
        "(() => {{ const i = document.querySelector({}); i.value = {}; \
         i.dispatchEvent(new Event('input', {{bubbles: true}})); \
         i.dispatchEvent(new Event('change', {{bubbles: true}})); }})()",
        js(selector),
        js(value)
    ))
    .await
    .unwrap();
}

/// The text of the page's main area and banner.
async fn text(b: &Browser) -> String {
    b.eval("document.getElementById('banner').innerText + '\\n' + document.getElementById('main').innerText")
        .await
        .unwrap()
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn wait_text(b: &Browser, needle: &str) {
    let expr = format!(
        "(document.getElementById('banner').innerText + document.getElementById('main').innerText).includes({})",
        js(needle)
    );
    if let Err(e) = b.wait_for(&expr).await {
        panic!("{e}; page text:\n{}", text(b).await);
    }
}

/// Confirms the dialog the last action opened, after checking what it says.
async fn confirm(b: &Browser, says: &str) {
    b.wait_for("document.getElementById('confirm').open")
        .await
        .unwrap();
    let asked = b
        .eval("document.getElementById('confirm-text').textContent")
        .await
        .unwrap();
    assert!(
        asked.as_str().unwrap_or_default().contains(says),
        "the confirmation says {asked}, not {says:?}"
    );
    click(b, "#confirm-ok").await;
}

/// No payload ran, and no element came from event data.
async fn assert_inert(b: &Browser, page: &str) {
    let ran = b.eval("window.__xss === undefined").await.unwrap();
    assert_eq!(ran, json!(true), "an XSS payload executed on {page}");
    let injected = b
        .eval("document.querySelectorAll('main img, main script, main iframe, main svg:not(.spark), [onerror], [onload]').length")
        .await
        .unwrap();
    assert_eq!(injected, json!(0), "event data became elements on {page}");
    assert_eq!(
        page_errors(b),
        Vec::<String>::new(),
        "page errors on {page}"
    );
}

/// Exceptions, console errors and security (CSP) reports. Failed API
/// calls are left out: the steps that cause them check the banner instead.
fn page_errors(b: &Browser) -> Vec<String> {
    b.errors()
        .into_iter()
        .filter(|e| !e.contains("\"source\":\"network\""))
        .collect()
}

/// Posts a batch with the source's write key; returns the status.
async fn post(worker: &Worker, events: Value) -> u16 {
    reqwest::Client::new()
        .post(format!("{}/v1/batch", worker.base))
        .basic_auth("wk_console", Some(""))
        .json(&json!({ "batch": events }))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

const XSS_NAME: &str = "<img src=x onerror=\"window.__xss=1\">";
const XSS_TRAIT: &str = "<script>window.__xss=2</script>";
const XSS_URL: &str = "javascript:window.__xss=3//\"><svg onload=\"window.__xss=4\">";

async fn start(b: &Browser, worker: &Worker) {
    b.call(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": false}),
    )
    .await
    .unwrap();
    b.goto(&format!("{}/admin/", worker.base)).await.unwrap();
}

async fn sign_in(b: &Browser, token: &str) {
    type_into(b, "#token", token).await;
    click(b, "#signin").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_see_and_act_on_events_in_the_console() {
    let _serial = browser::SERIAL.lock().await;
    browser::require_prerequisites().unwrap();
    let hook = webhook::start("whsec");
    // The webhook is down: its events are retried, then dead-lettered.
    hook.set_mode(Mode::Status(503));
    let worker = Worker::start(Some(&config(&hook))).await.unwrap();
    let b = Browser::start().await.unwrap();
    start(&b, &worker).await;

    // 1. The page is served with a strict policy and asks for a token.
    let page = reqwest::get(format!("{}/admin/", worker.base))
        .await
        .unwrap();
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe"));
    b.wait_for("document.querySelector('#token')")
        .await
        .unwrap();
    // The browser enforces it: no inline script. (Eval is refused by the
    // same policy, but DevTools evaluation is exempt from CSP, so it cannot
    // be shown from here; the header check above covers `unsafe-eval`.)
    let inline = b
        .eval("new Promise(r => { const s = document.createElement('script'); s.textContent = 'window.__inline = 1'; document.head.append(s); setTimeout(() => r(window.__inline === undefined), 100); })")
        .await
        .unwrap();
    assert_eq!(inline, json!(true), "an inline script ran");
    b.call("Log.clear", json!({})).await.unwrap();
    if let Ok(mut events) = b.events.lock() {
        // The refusal above is reported as violations; later ones are not expected.
        events.clear();
    }
    screenshot(&b, "signin").await;

    // 2. A wrong token is refused, and the API's answer is shown.
    sign_in(&b, "not-the-token").await;
    wait_text(&b, "401").await;
    wait_text(&b, "missing or wrong").await;

    // 3. The admin token opens every page; it is kept for this tab only.
    sign_in(&b, ADMIN).await;
    b.wait_for("document.querySelector('main[data-page=overview]')")
        .await
        .unwrap();
    let kept = b
        .eval("[sessionStorage.getItem('waymark.console.token'), localStorage.length]")
        .await
        .unwrap();
    assert_eq!(kept, json!([ADMIN, 0]));
    let nav = b
        .eval("[...document.querySelectorAll('#nav a')].map(a => a.textContent)")
        .await
        .unwrap();
    assert_eq!(
        nav,
        json!([
            "Overview",
            "Live",
            "Destinations",
            "Quarantine",
            "Profiles",
            "Syncs"
        ])
    );

    // 4. Live: events posted now appear, with their stages, and filter.
    click(&b, "a[href='#live']").await;
    wait_text(&b, "connected").await;
    let status = post(
        &worker,
        json!([
            {"type": "track", "event": "Console Test", "userId": "user-console", "messageId": "m-console-1",
             "properties": {"price": 12.5}},
            {"type": "track", "event": XSS_NAME, "anonymousId": "anon-xss", "messageId": "m-xss-1",
             "properties": {"note": XSS_TRAIT, "url": XSS_URL},
             "context": {"page": {"url": XSS_URL, "title": XSS_NAME}}},
            {"type": "identify", "userId": "user-console", "messageId": "m-xss-2",
             "traits": {"name": XSS_TRAIT, "email": "ada@example.com", "avatar": XSS_NAME}},
        ]),
    )
    .await;
    assert_eq!(status, 200);
    b.wait_for("document.querySelector('details[data-message-id=\"m-console-1\"]')")
        .await
        .unwrap();
    b.wait_for("document.querySelector('details[data-message-id=\"m-xss-1\"]')")
        .await
        .unwrap();
    // The file destination delivers; its stage is on the row.
    b.wait_for(
        "document.querySelector('details[data-message-id=\"m-console-1\"] .pill.delivered')",
    )
    .await
    .unwrap();
    type_into(&b, "input[data-filter=event]", "Console Test").await;
    b.wait_for("document.querySelectorAll('#live-list details').length === 1")
        .await
        .unwrap();
    type_into(&b, "input[data-filter=event]", "").await;
    type_into(&b, "input[data-filter=visitor]", "anon-xss").await;
    b.wait_for("document.querySelectorAll('#live-list details').length === 1 && document.querySelector('details[data-message-id=\"m-xss-1\"]')")
        .await
        .unwrap();
    type_into(&b, "input[data-filter=visitor]", "").await;
    // Clearing the filter redraws the list: wait for the row to be back.
    b.wait_for("document.querySelector('details[data-message-id=\"m-console-1\"]')")
        .await
        .unwrap();
    b.eval("document.querySelector('details[data-message-id=\"m-console-1\"]').open = true")
        .await
        .unwrap();
    wait_text(&b, "received (validated, committed)").await;
    wait_text(&b, "\"messageId\": \"m-console-1\"").await;
    // The payloads are shown as text.
    wait_text(&b, XSS_NAME).await;
    assert_inert(&b, "live").await;
    screenshot(&b, "live").await;

    // 5. The failing webhook's attempts show up, with the vendor's answer.
    b.wait_for("document.querySelector('details[data-message-id=\"m-console-1\"] .pill.failed')")
        .await
        .unwrap();
    b.eval("document.querySelector('details[data-message-id=\"m-console-1\"]').open = true")
        .await
        .unwrap();
    wait_text(&b, "Vendor answer:").await;

    // 6. Overview: the counts include the posted events.
    click(&b, "a[href='#overview']").await;
    b.wait_for("document.querySelector('[data-metric=accepted] .value') && Number(document.querySelector('[data-metric=accepted] .value').textContent) >= 3")
        .await
        .unwrap();
    wait_text(&b, "local-file").await;
    // Two polls draw a line.
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    assert_inert(&b, "overview").await;
    screenshot(&b, "overview").await;

    // 7. Destinations: the webhook's dead letters, replayed once it recovers.
    click(&b, "a[href='#destinations']").await;
    b.wait_for("document.querySelectorAll('section[data-destination=hook] tbody tr').length === 3")
        .await
        .unwrap();
    wait_text(&b, "Has dead letters").await;
    assert_inert(&b, "destinations").await;
    screenshot(&b, "destinations").await;
    hook.set_mode(Mode::Normal);
    click(&b, "section[data-destination=hook] .replay-all").await;
    confirm(&b, "Replay 3 dead letters to hook").await;
    wait_text(&b, "Replayed 3 dead letters to hook.").await;
    let delivered = hook.wait_for(3, Duration::from_secs(15));
    assert!(delivered.iter().any(|e| e["messageId"] == "m-console-1"));

    // 8. Quarantine: an invalid event, corrected in the page and replayed.
    let status = post(
        &worker,
        json!([{"type": "track", "userId": "user-q", "messageId": "m-bad-1",
                "properties": {"why": XSS_TRAIT}}]),
    )
    .await;
    assert_eq!(status, 400);
    click(&b, "a[href='#quarantine']").await;
    b.wait_for("document.querySelector('section.quarantined textarea')")
        .await
        .unwrap();
    assert_inert(&b, "quarantine").await;
    screenshot(&b, "quarantine").await;
    b.eval(
        "(() => { const t = document.querySelector('section.quarantined textarea'); \
         const e = JSON.parse(t.value); e.event = 'Fixed In Console'; \
         t.value = JSON.stringify(e, null, 2); })()",
    )
    .await
    .unwrap();
    click(&b, "section.quarantined .replay").await;
    confirm(&b, "as edited").await;
    wait_text(&b, "it passed and left the quarantine").await;
    worker
        .wait_event("replayed", |e| e["event"] == "Fixed In Console")
        .await
        .unwrap();
    wait_text(&b, "Nothing in quarantine.").await;

    // 9. Profiles: find the person, see their traits as text, delete them.
    click(&b, "a[href='#profiles']").await;
    type_into(&b, "#profile-value", "user-console").await;
    click(&b, "#profile-search").await;
    b.wait_for("document.querySelector('section.profile')")
        .await
        .unwrap();
    wait_text(&b, "user-console").await;
    wait_text(&b, XSS_TRAIT).await;
    assert_inert(&b, "profiles").await;
    screenshot(&b, "profiles").await;
    click(&b, "#delete").await;
    confirm(&b, "Delete this person").await;
    b.wait_for("document.querySelector('#delete-report')")
        .await
        .unwrap();
    b.wait_for("document.querySelector('#audit-log').innerText.includes('delete')")
        .await
        .unwrap();
    screenshot(&b, "profiles-deleted").await;
    // Their next event is suppressed at ingest, and the Overview shows it.
    let status = post(
        &worker,
        json!([{"type": "track", "event": "After Delete", "userId": "user-console", "messageId": "m-after"}]),
    )
    .await;
    assert_eq!(status, 200);
    click(&b, "a[href='#overview']").await;
    wait_text(&b, "suppressed 1").await;
    // Searching again shows the API's answer.
    click(&b, "a[href='#profiles']").await;
    type_into(&b, "#profile-value", "user-console").await;
    click(&b, "#profile-search").await;
    wait_text(&b, "404").await;
    assert!(!worker.events().iter().any(|e| e["messageId"] == "m-after"));

    // 10. Syncs: the marked place.
    click(&b, "a[href='#syncs']").await;
    b.wait_for("document.querySelector('#syncs-placeholder')")
        .await
        .unwrap();
    assert_inert(&b, "syncs").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_token_sees_only_the_live_page() {
    let _serial = browser::SERIAL.lock().await;
    browser::require_prerequisites().unwrap();
    let hook = webhook::start("whsec");
    let worker = Worker::start(Some(&config(&hook))).await.unwrap();
    let b = Browser::start().await.unwrap();
    start(&b, &worker).await;
    sign_in(&b, LIVE).await;
    b.wait_for("document.querySelector('main[data-page=live]')")
        .await
        .unwrap();
    let nav = b
        .eval("[...document.querySelectorAll('#nav a')].map(a => a.textContent)")
        .await
        .unwrap();
    assert_eq!(nav, json!(["Live"]));
    wait_text(&b, "connected").await;
    // Another page's address lands on Live, and the API refuses the token anyway.
    b.eval("location.hash = '#profiles'").await.unwrap();
    b.wait_for("document.querySelector('main[data-page=live]')")
        .await
        .unwrap();
    let status = b
        .eval(&format!(
            "fetch('stats', {{headers: {{Authorization: 'Bearer {LIVE}'}}}}).then(r => r.status)"
        ))
        .await
        .unwrap();
    assert_eq!(status, json!(401));
    let started = Instant::now();
    assert_eq!(
        post(
            &worker,
            json!([{"type": "track", "event": "Watched", "anonymousId": "a1", "messageId": "m-w"}])
        )
        .await,
        200
    );
    b.wait_for("document.querySelector('details[data-message-id=\"m-w\"]')")
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(page_errors(&b), Vec::<String>::new());
}
