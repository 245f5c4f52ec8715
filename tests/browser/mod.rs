//! Support for the real-browser tests: a worker process, headless Debian
//! Chromium, and a minimal Chrome DevTools Protocol client.
//!
//! # Design
//! The tests drive Chromium over CDP directly (one WebSocket, a few dozen
//! lines) rather than through chromedriver and a WebDriver crate: CDP gives
//! what these tests need and WebDriver classic does not, namely console
//! messages and uncaught exceptions as events, network emulation (offline),
//! URL blocking (the fallback test) and cookie control, with one small
//! dependency (tokio-tungstenite) instead of a driver process and a large
//! generated-protocol crate. chromedriver is still installed for
//! wasm-bindgen-test.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

/// The workspace root (the worker serves `demo-site/` and
/// `client-wasm/dist/` relative to it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Fails early, with the fix, when a prerequisite is missing.
pub fn require_prerequisites() -> anyhow::Result<()> {
    let root = root();
    if !root.join("client-wasm/dist/wm.js").exists() {
        bail!("client-wasm/dist/wm.js is missing: run `cargo xtask build-tag` first");
    }
    if !worker_bin().exists() {
        bail!(
            "{} is missing: run `cargo build -p waymark`",
            worker_bin().display()
        );
    }
    if !Path::new(CHROMIUM).exists() {
        bail!("{CHROMIUM} is missing: run `apt-get install -y chromium chromium-driver` (cargo xtask test does)");
    }
    Ok(())
}

/// Serialises the browser tests: each starts a worker and a browser, and
/// the machine has two cores.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn worker_bin() -> PathBuf {
    root().join("target/debug/waymark")
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// A `waymark serve` process on a free port with its own data directory.
pub struct Worker {
    child: Child,
    pub base: String,
    pub data_dir: PathBuf,
}

impl Worker {
    /// Starts the worker on the embedded default, or on `config` (TOML).
    pub async fn start(config: Option<&str>) -> anyhow::Result<Worker> {
        Worker::start_under(config, "").await
    }

    /// [`start`](Self::start) for a config whose `[server] path_prefix` is
    /// `prefix` (`""` for none): readiness is asked under it.
    #[allow(dead_code)] // not every browser test mounts under a prefix
    pub async fn start_under(config: Option<&str>, prefix: &str) -> anyhow::Result<Worker> {
        let port = free_port();
        let data_dir = tempdir("wm-data")?;
        let mut cmd = Command::new(worker_bin());
        cmd.current_dir(root())
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(&data_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(toml) = config {
            let path = data_dir.join("waymark.toml");
            std::fs::write(&path, toml)?;
            cmd.arg("--config").arg(path);
        }
        let child = cmd.spawn().context("starting target/debug/waymark")?;
        let w = Worker {
            child,
            base: format!("http://127.0.0.1:{port}"),
            data_dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(r) = reqwest::get(format!("{}{prefix}/healthz", w.base)).await {
                if r.status().is_success() {
                    return Ok(w);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("worker did not answer {prefix}/healthz within 20 s")
    }

    /// Events written to the file destination so far.
    pub fn events(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.data_dir.join("events.ndjson")).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits until an event matching `pred` is in the file destination.
    pub async fn wait_event(
        &self,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(e) = self.events().into_iter().find(|e| pred(e)) {
                return Ok(e);
            }
            if Instant::now() > deadline {
                bail!(
                    "no {what} event within 15 s; events so far: {:#?}",
                    self.events()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh directory under the system temp dir.
pub fn tempdir(prefix: &str) -> anyhow::Result<PathBuf> {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

const CHROMIUM: &str = "/usr/bin/chromium";

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// Headless Chromium with one page, driven over CDP.
pub struct Browser {
    child: Child,
    profile: PathBuf,
    tx: mpsc::UnboundedSender<String>,
    pending: Pending,
    next: AtomicU64,
    session: String,
    /// Every CDP event received (method, params), in order.
    pub events: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Browser {
    /// Starts Chromium with the flags this machine needs (root, no GPU, no
    /// background network), and opens one blank page.
    pub async fn start() -> anyhow::Result<Browser> {
        let profile = tempdir("wm-chrome")?;
        let child = Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting chromium")?;
        // 1. Chromium writes its port and browser endpoint here once ready.
        let port_file = profile.join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        let ws = loop {
            if let Ok(s) = std::fs::read_to_string(&port_file) {
                let mut l = s.lines();
                if let (Some(port), Some(path)) = (l.next(), l.next()) {
                    break format!("ws://127.0.0.1:{port}{path}");
                }
            }
            if Instant::now() > deadline {
                bail!("chromium did not start within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        // 2. One socket: a writer task, and a reader task that answers
        //    pending commands and records events.
        let (stream, _) = tokio_tungstenite::connect_async(ws).await?;
        let (mut sink, mut source) = stream.split();
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                if sink.send(Message::text(m)).await.is_err() {
                    break;
                }
            }
        });
        let pending: Pending = Arc::default();
        let events: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
        let (p, e) = (pending.clone(), events.clone());
        tokio::spawn(async move {
            while let Some(Ok(msg)) = source.next().await {
                let Ok(text) = msg.to_text() else { continue };
                let Ok(v) = serde_json::from_str::<Value>(text) else {
                    continue;
                };
                if let Some(id) = v.get("id").and_then(Value::as_u64) {
                    if let Some(s) = p.lock().ok().and_then(|mut m| m.remove(&id)) {
                        let _ = s.send(v);
                    }
                } else if let Some(method) = v.get("method").and_then(Value::as_str) {
                    if let Ok(mut ev) = e.lock() {
                        ev.push((
                            method.to_string(),
                            v.get("params").cloned().unwrap_or(Value::Null),
                        ));
                    }
                }
            }
        });
        let mut b = Browser {
            child,
            profile,
            tx,
            pending,
            next: AtomicU64::new(1),
            session: String::new(),
            events,
        };
        // 3. A page target in flat session mode, with the domains we watch.
        let target = b
            .call_browser("Target.createTarget", json!({"url": "about:blank"}))
            .await?;
        let target_id = target["targetId"].as_str().context("targetId")?.to_string();
        let attached = b
            .call_browser(
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
            )
            .await?;
        b.session = attached["sessionId"]
            .as_str()
            .context("sessionId")?
            .to_string();
        for domain in [
            "Runtime.enable",
            "Page.enable",
            "Network.enable",
            "Log.enable",
        ] {
            b.call(domain, json!({})).await?;
        }
        Ok(b)
    }

    async fn send(
        &self,
        method: &str,
        params: Value,
        session: Option<&str>,
    ) -> anyhow::Result<Value> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .insert(id, tx);
        self.tx.send(msg.to_string())?;
        let v = tokio::time::timeout(Duration::from_secs(30), rx)
            .await
            .context("CDP timeout")??;
        if let Some(err) = v.get("error") {
            bail!("{method}: {err}");
        }
        Ok(v.get("result").cloned().unwrap_or(Value::Null))
    }

    /// A command on the browser target.
    pub async fn call_browser(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.send(method, params, None).await
    }

    /// A command on the page.
    pub async fn call(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        let s = self.session.clone();
        self.send(method, params, Some(&s)).await
    }

    /// Navigates and waits for the load event (`document.readyState`).
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.call("Page.navigate", json!({"url": url})).await?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let ready = self
                .eval("location.href + ' ' + document.readyState")
                .await
                .unwrap_or_default();
            if ready.as_str().is_some_and(|s| {
                s.ends_with(" complete") && !s.starts_with("about:blank ") || url == "about:blank"
            }) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{url} did not load within 15 s");
            }
        }
    }

    /// Evaluates `expr` (awaiting a promise) and returns its JSON value.
    pub async fn eval(&self, expr: &str) -> anyhow::Result<Value> {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expr, "awaitPromise": true, "returnByValue": true}),
            )
            .await?;
        if let Some(ex) = r.get("exceptionDetails") {
            bail!("evaluate {expr}: {ex}");
        }
        Ok(r["result"].get("value").cloned().unwrap_or(Value::Null))
    }

    /// Waits until `expr` is truthy in the page.
    pub async fn wait_for(&self, expr: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let v = self
                .eval(&format!("!!({expr})"))
                .await
                .unwrap_or(Value::Bool(false));
            if v == Value::Bool(true) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("timed out waiting for {expr}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Turns network emulation offline or back online.
    pub async fn set_offline(&self, offline: bool) -> anyhow::Result<()> {
        self.call(
            "Network.emulateNetworkConditions",
            json!({"offline": offline, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1}),
        )
        .await
        .map(|_| ())
    }

    /// Console errors, uncaught exceptions and error log entries seen so
    /// far, as text. Network-level failures of the live panel's optional
    /// stream are not page errors and are left out.
    pub fn errors(&self) -> Vec<String> {
        let ev = self.events.lock().map(|e| e.clone()).unwrap_or_default();
        let mut out = Vec::new();
        for (m, p) in ev {
            match m.as_str() {
                "Runtime.exceptionThrown" => {
                    out.push(format!("exception: {}", p["exceptionDetails"]))
                }
                "Runtime.consoleAPICalled" if p["type"] == "error" || p["type"] == "assert" => {
                    out.push(format!("console.{}: {}", p["type"], p["args"]))
                }
                "Log.entryAdded" if p["entry"]["level"] == "error" => {
                    let url = p["entry"]["url"].as_str().unwrap_or_default();
                    if !url.contains("/admin/live") {
                        out.push(format!("log: {}", p["entry"]));
                    }
                }
                _ => {}
            }
        }
        out
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// `e[path]` for a dotted path such as `context.page.url`.
pub fn at<'a>(e: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(e, |v, k| &v[k])
}

/// A stand-in site for transport and consent tests: serves one HTML page at
/// `/`, the built tag from `client-wasm/dist`, and answers `POST /v1/batch`
/// with the statuses queued in `answers` (200 once they run out), recording
/// each body with the time it arrived.
pub struct FakeSite {
    pub base: String,
    /// (arrival, parsed body) per batch, in order.
    pub batches: Arc<Mutex<Vec<(Instant, Value)>>>,
}

impl FakeSite {
    /// Starts the site. `answers` are (status, Retry-After) pairs used in order.
    pub async fn start(
        html: String,
        answers: Vec<(u16, Option<&'static str>)>,
    ) -> anyhow::Result<FakeSite> {
        use axum::http::{header, StatusCode};
        use axum::response::IntoResponse;
        let dist = root().join("client-wasm/dist");
        let batches: Arc<Mutex<Vec<(Instant, Value)>>> = Arc::default();
        let answers = Arc::new(Mutex::new(std::collections::VecDeque::from(answers)));
        let (b, a) = (batches.clone(), answers.clone());
        let asset = move |path: PathBuf, kind: &'static str| async move {
            match std::fs::read(&path) {
                Ok(bytes) => ([(header::CONTENT_TYPE, kind)], bytes).into_response(),
                Err(_) => StatusCode::NOT_FOUND.into_response(),
            }
        };
        let (d1, d2) = (dist.clone(), dist.clone());
        let app = axum::Router::new()
            .route(
                "/",
                axum::routing::get(move || async move { axum::response::Html(html) }),
            )
            .route(
                "/wm.js",
                axum::routing::get(move || asset(d1.join("wm.js"), "text/javascript")),
            )
            .route(
                "/wm/{file}",
                axum::routing::get(
                    move |axum::extract::Path(file): axum::extract::Path<String>| {
                        let kind = if file.ends_with(".wasm") {
                            "application/wasm"
                        } else {
                            "text/javascript"
                        };
                        asset(d2.join("wm").join(file), kind)
                    },
                ),
            )
            .route(
                "/v1/batch",
                axum::routing::post(move |body: String| {
                    let (b, a) = (b.clone(), a.clone());
                    async move {
                        if let Ok(v) = serde_json::from_str::<Value>(&body) {
                            b.lock().unwrap().push((Instant::now(), v));
                        }
                        let (status, retry) = a.lock().unwrap().pop_front().unwrap_or((200, None));
                        let mut r = (StatusCode::from_u16(status).unwrap(), "{}").into_response();
                        if let Some(s) = retry {
                            r.headers_mut()
                                .insert(header::RETRY_AFTER, s.parse().unwrap());
                        }
                        r
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(FakeSite { base, batches })
    }

    /// All events received so far, in order.
    pub fn events(&self) -> Vec<Value> {
        let b = self.batches.lock().map(|b| b.clone()).unwrap_or_default();
        b.into_iter()
            .flat_map(|(_, v)| v["batch"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// Waits until `n` batches arrived.
    pub async fn wait_batches(&self, n: usize) -> anyhow::Result<Vec<(Instant, Value)>> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let b = self.batches.lock().map(|b| b.clone()).unwrap_or_default();
            if b.len() >= n {
                return Ok(b);
            }
            if Instant::now() > deadline {
                bail!("only {} of {n} batches within 15 s: {b:#?}", b.len());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A page with the snippet, `options` (a JS object literal) as the tag
/// settings, and `head` inserted before it.
pub fn page_with_snippet(head: &str, options: &str, body_script: &str) -> String {
    format!(
        r#"<!doctype html><html><head><title>fake</title><link rel="icon" href="data:,">{head}
<script>
!function(w,d,a,s){{a=w.waymark=w.waymark||[];if(a.m)return;a.m=1;a.o={options};
function f(m){{return function(){{a.push([m,[].slice.call(arguments)]);a.h&&a.h()}}}}
"page track identify group alias reset ready debug".split(" ").forEach(function(m){{a[m]=f(m)}});
a.consent={{set:f("consent.set"),onChange:f("consent.onChange"),get:function(){{return a.c}}}};
s=d.createElement("script");s.async=1;s.src="/wm.js";d.head.appendChild(s)}}(window,document);
{body_script}
</script></head><body></body></html>"#
    )
}
