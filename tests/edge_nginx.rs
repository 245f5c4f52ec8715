//! Waymark behind a CDN, for real (issue 13): Debian's nginx in front of the
//! worker as a CDN would sit (one path of the site's own hostname routed to
//! Waymark under `[server] path_prefix`, `X-Forwarded-For` appended,
//! `X-Forwarded-Proto: https`), with the tag in headless Chromium loading
//! through nginx.
//!
//! The three addresses are distinct loopback addresses, so the test can
//! tell them apart: Chromium connects from 127.0.0.1, nginx reaches the
//! worker from 127.0.0.3 (`proxy_bind`), and only 127.0.0.3 is a trusted
//! proxy. Needs `/usr/sbin/nginx` (`cargo xtask test` installs Debian's
//! nginx), the built tag and Chromium.

#[path = "browser/mod.rs"]
mod browser;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use browser::{at, free_port, tempdir, Browser};
use serde_json::{json, Value};

const NGINX: &str = "/usr/sbin/nginx";
/// The address nginx connects to the worker from: the only trusted proxy.
const PROXY_ADDR: &str = "127.0.0.3";

/// The worker's config: mounted under `/metrics`, trusting only nginx.
fn worker_config() -> String {
    r#"
[server]
path_prefix = "/metrics"
trusted_proxies = ["127.0.0.3/32"]
client_ip_header = "x-forwarded-for"

[identity]
keys = [{ id = "k1", secret = "edge-test-cookie-key-0123456789abcdef" }]

[[sources]]
name = "shop"
write_key = "wk_edge"
allowed_origins = []
default_consent = { analytics = "granted" }
ip = "full"

[[sources]]
name = "cookieless"
write_key = "wk_cookieless"
default_consent = { analytics = "denied" }
cookieless = true
ip = "full"

[[destinations]]
name = "local-file"
type = "file"
path = "events.ndjson"
"#
    .to_owned()
}

/// The site nginx serves at `/`: the tag loads from `/metrics/wm.js` and
/// sends to `/metrics`, the site's own origin.
const SITE: &str = r#"<!doctype html><html><head><title>edge</title><link rel="icon" href="data:,">
<script>
!function(w,d,a,s){a=w.waymark=w.waymark||[];if(a.m)return;a.m=1;a.o={writeKey:"wk_edge",host:location.origin+"/metrics",flushAt:1};
function f(m){return function(){a.push([m,[].slice.call(arguments)]);a.h&&a.h()}}
"page track identify group alias reset ready debug".split(" ").forEach(function(m){a[m]=f(m)});
a.consent={set:f("consent.set"),onChange:f("consent.onChange"),get:function(){return a.c}};
s=d.createElement("script");s.async=1;s.src="/metrics/wm.js";d.head.appendChild(s)}(window,document);
waymark.page();
</script></head><body>edge</body></html>"#;

/// nginx as a child process with a throwaway config, stopped on drop.
struct Nginx {
    child: Child,
    dir: PathBuf,
    base: String,
}

impl Nginx {
    fn start(worker_port: u16) -> anyhow::Result<Nginx> {
        if !Path::new(NGINX).exists() {
            bail!("{NGINX} is missing: run `apt-get install -y nginx` (cargo xtask test does)");
        }
        let dir = tempdir("wm-nginx")?;
        let site = dir.join("site");
        std::fs::create_dir_all(&site)?;
        std::fs::write(site.join("index.html"), SITE)?;
        let port = free_port();
        let d = dir.display();
        // The CDN's part: the site's own origin, one path routed to Waymark,
        // the client address appended, the scheme the visitor used (https
        // at a real edge) passed on. Temp paths keep it off /var.
        let conf = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    types {{ text/html html; }}
    server {{
        listen 127.0.0.1:{port};
        root {d}/site;
        location /metrics/ {{
            proxy_pass http://127.0.0.1:{worker_port};
            proxy_bind {PROXY_ADDR};
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto https;
        }}
    }}
}}
"#
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let child = Command::new(NGINX)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting nginx")?;
        let nginx = Nginx {
            child,
            dir,
            base: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(nginx);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = std::fs::read_to_string(nginx.dir.join("error.log")).unwrap_or_default();
        bail!("nginx did not listen within 10 s: {log}")
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn port_of(base: &str) -> u16 {
    base.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

async fn post(url: &str, body: Value, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = reqwest::Client::new().post(url).json(&body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_nginx_the_ip_is_the_browsers_the_cookie_is_secure_and_forged_headers_are_not_believed(
) {
    let _serial = browser::SERIAL.lock().await;
    browser::require_prerequisites().unwrap();
    let worker = browser::Worker::start_under(Some(&worker_config()), "/metrics")
        .await
        .unwrap();
    let nginx = Nginx::start(port_of(&worker.base)).unwrap();
    let b = Browser::start().await.unwrap();

    // 1. The tag loads through nginx and its page() arrives with the
    //    browser's address (127.0.0.1), not nginx's (127.0.0.3).
    b.goto(&format!("{}/", nginx.base)).await.unwrap();
    let page = worker
        .wait_event("page", |e| e["type"] == "page")
        .await
        .unwrap();
    assert_eq!(at(&page, "context.ip"), "127.0.0.1", "{page}");
    assert_eq!(at(&page, "context.library.name"), "waymark-tag");

    // 2. The cookie the worker set through nginx is Secure (nginx said https).
    let cookies = b
        .call(
            "Network.getCookies",
            json!({"urls": [format!("{}/", nginx.base)]}),
        )
        .await
        .unwrap();
    let vid = cookies["cookies"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "wm_vid").cloned())
        .unwrap_or_else(|| panic!("no wm_vid cookie: {cookies}"));
    assert_eq!(vid["secure"], true, "{vid}");
    assert_eq!(vid["httpOnly"], true, "{vid}");

    // 3. The page forges X-Forwarded-For; nginx appends the real address and
    //    the worker takes the right-most untrusted one.
    b.eval(
        r#"fetch("/metrics/v1/track", {method: "POST", headers: {"X-Forwarded-For": "6.6.6.6", "content-type": "text/plain"},
            body: JSON.stringify({writeKey: "wk_edge", event: "Forged", anonymousId: "a-forger"})}).then(r => r.status)"#,
    )
    .await
    .unwrap();
    let forged = worker
        .wait_event("forged track", |e| e["event"] == "Forged")
        .await
        .unwrap();
    assert_eq!(at(&forged, "context.ip"), "127.0.0.1", "{forged}");

    // 4. Straight to the worker (an untrusted peer), forwarding headers count
    //    for nothing: neither the address nor https.
    let direct = post(
        &format!("{}/metrics/v1/track", worker.base),
        json!({"writeKey": "wk_edge", "event": "Direct", "anonymousId": "a-direct"}),
        &[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
        ],
    )
    .await;
    assert_eq!(direct.status(), 200);
    let set_cookie = direct
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert!(set_cookie.starts_with("wm_vid="), "{set_cookie}");
    assert!(!set_cookie.contains("Secure"), "{set_cookie}");
    let direct = worker
        .wait_event("direct track", |e| e["event"] == "Direct")
        .await
        .unwrap();
    assert_eq!(at(&direct, "context.ip"), "127.0.0.1", "{direct}");

    // 5. Everything lives under the prefix, nothing outside it.
    let outside = post(
        &format!("{}/v1/track", worker.base),
        json!({"writeKey": "wk_edge", "event": "Outside", "anonymousId": "a"}),
        &[],
    )
    .await;
    assert_eq!(outside.status(), 404);
    let health = reqwest::get(format!("{}/metrics/healthz", nginx.base))
        .await
        .unwrap();
    assert!(health.status().is_success());
    let tag = reqwest::get(format!("{}/metrics/wm.js", nginx.base))
        .await
        .unwrap();
    assert!(tag.status().is_success());
    assert!(b.errors().is_empty(), "page errors: {:?}", b.errors());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookieless_visitors_are_counted_under_a_daily_key_without_a_cookie_or_a_profile() {
    let worker = browser::Worker::start_under(Some(&worker_config()), "/metrics")
        .await
        .unwrap();
    let nginx = Nginx::start(port_of(&worker.base)).unwrap();
    let url = format!("{}/metrics/v1/batch", nginx.base);
    let agent = "Mozilla/5.0 (X11; Linux x86_64) EdgeTest/1";
    let batch = |event: &str, anon: &str| {
        json!({"writeKey": "wk_cookieless", "batch": [
            {"type": "track", "event": event, "anonymousId": anon,
             "context": {"userAgent": agent}}
        ]})
    };
    // Two requests of one visitor (the client's own ids differ, as after
    // cleared storage), and one of another visitor with the same agent.
    let first = post(&url, batch("One", "client-1"), &[]).await;
    assert_eq!(first.status(), 200);
    assert!(
        first.headers().get("set-cookie").is_none(),
        "no cookie is set"
    );
    let second = post(
        &url,
        batch("Two", "client-2"),
        &[("cookie", "wm_vid=v1.forged.0.k1.AAAA")],
    )
    .await;
    assert_eq!(second.status(), 200);
    let other = reqwest::Client::new()
        .post(format!("{}/metrics/v1/batch", worker.base))
        .json(&batch("Other", "client-3"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);

    let one = worker
        .wait_event("One", |e| e["event"] == "One")
        .await
        .unwrap();
    let two = worker
        .wait_event("Two", |e| e["event"] == "Two")
        .await
        .unwrap();
    let three = worker
        .wait_event("Other", |e| e["event"] == "Other")
        .await
        .unwrap();
    let id = one["anonymousId"].as_str().unwrap().to_owned();
    assert!(id.starts_with("cl_"), "{one}");
    assert_eq!(two["anonymousId"], id.as_str(), "same visitor, same day");
    assert_eq!(at(&one, "context.waymark.visitorId"), id.as_str());
    assert_eq!(at(&one, "context.waymark.cookieless"), true);
    assert!(
        at(&one, "context.waymark.profileId").is_null(),
        "not linked: {one}"
    );
    assert!(
        !one.to_string().contains("client-1"),
        "the client's id is dropped"
    );
    // Through nginx the browser's address counts; straight from 127.0.0.1 is
    // the same address, so only the agent-and-address pair decides: the
    // third request matches too. A different agent does not.
    assert_eq!(three["anonymousId"], id.as_str());
    let session_one = at(&one, "context.waymark.session.id").clone();
    assert!(session_one.is_string() || session_one.is_number(), "{one}");
    assert_eq!(at(&two, "context.waymark.session.id"), &session_one);
    assert_eq!(at(&two, "context.waymark.session.count"), 1);

    let different = post(
        &url,
        json!({"writeKey": "wk_cookieless", "batch": [
            {"type": "track", "event": "Else", "anonymousId": "x",
             "context": {"userAgent": "curl/8"}}
        ]}),
        &[],
    )
    .await;
    assert_eq!(different.status(), 200);
    let other_agent = worker
        .wait_event("Else", |e| e["event"] == "Else")
        .await
        .unwrap();
    assert_ne!(other_agent["anonymousId"], id.as_str());
}
