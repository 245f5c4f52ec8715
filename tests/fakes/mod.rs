//! Strict loopback fakes of the vendors Waymark delivers to. Each validates
//! requests the way the vendor's public API documentation says it does
//! (auth, required fields, batch limits) and answers like the vendor:
//! 2xx with what it accepted, 4xx naming the problem. A fake can also be
//! told to fail (`500`) or to hang, to test retries and isolation, and
//! to refuse specific events ([`Fake::refuse`]): vendors that answer per
//! event then name those in the vendor's documented error shape.
//!
//! Each runs on `127.0.0.1:0` in its own thread and runtime, so blocking
//! tests can use it directly.

pub mod amplitude;
pub mod ga4;
pub mod meta_capi;
pub mod mixpanel;
pub mod segment;
pub mod webhook;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};

/// How a fake answers besides validating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Validate and accept.
    Normal,
    /// Answer this status without looking at the request.
    Status(u16),
    /// Sleep this long, then behave normally.
    Sleep(Duration),
}

/// What a fake saw.
#[derive(Debug)]
pub struct FakeState {
    /// Accepted events, in arrival order, as the vendor would store them.
    pub events: Mutex<Vec<Value>>,
    /// Rejection messages sent back with a 4xx.
    pub rejections: Mutex<Vec<String>>,
    /// Requests received (all answers).
    pub requests: AtomicUsize,
    /// When each accepted event arrived (for latency).
    pub arrivals: Mutex<Vec<Instant>>,
    /// Vendor dedup keys (`$insert_id`, `insert_id`, `event_id`) of events
    /// to refuse as invalid.
    pub refused: Mutex<HashSet<String>>,
    mode: Mutex<Mode>,
}

impl FakeState {
    fn new() -> FakeState {
        FakeState {
            events: Mutex::new(Vec::new()),
            rejections: Mutex::new(Vec::new()),
            requests: AtomicUsize::new(0),
            arrivals: Mutex::new(Vec::new()),
            refused: Mutex::new(HashSet::new()),
            mode: Mutex::new(Mode::Normal),
        }
    }

    /// Counts the request and applies the mode: `Some(response)` when the
    /// mode answers instead of the vendor logic.
    pub async fn gate(&self) -> Option<Response> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let mode = *self.mode.lock().unwrap();
        match mode {
            Mode::Normal => None,
            Mode::Status(code) => {
                let status =
                    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                Some((status, "fake failure").into_response())
            }
            Mode::Sleep(d) => {
                tokio::time::sleep(d).await;
                None
            }
        }
    }

    /// Whether the event with vendor dedup key `id` is to be refused.
    pub fn is_refused(&self, id: &str) -> bool {
        self.refused.lock().unwrap().contains(id)
    }

    /// Records a refusal without answering (for per-event answers).
    pub fn note_rejection(&self, problem: impl Into<String>) {
        self.rejections.lock().unwrap().push(problem.into());
    }

    /// Records accepted events.
    pub fn accept(&self, events: impl IntoIterator<Item = Value>) {
        let mut stored = self.events.lock().unwrap();
        let mut arrivals = self.arrivals.lock().unwrap();
        for e in events {
            stored.push(e);
            arrivals.push(Instant::now());
        }
    }

    /// A 400 naming the problem (and records it).
    pub fn reject(&self, problem: impl Into<String>) -> Response {
        let problem = problem.into();
        self.rejections.lock().unwrap().push(problem.clone());
        (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "error": problem })),
        )
            .into_response()
    }
}

/// A running fake.
pub struct Fake {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// What it saw.
    pub state: Arc<FakeState>,
}

impl Fake {
    /// Serves `router(state)` on a free loopback port in a background thread.
    pub fn serve(router: impl FnOnce(Arc<FakeState>) -> Router) -> Fake {
        let state = Arc::new(FakeState::new());
        let app = router(Arc::clone(&state));
        let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("fake runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind fake");
                let _ = tx.send(listener.local_addr().expect("addr"));
                let _ = axum::serve(listener, app).await;
            });
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("fake started");
        Fake {
            base: format!("http://{addr}"),
            state,
        }
    }

    /// Changes how it answers from now on.
    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    /// Refuses, from now on, the events whose vendor dedup key is in `ids`
    /// (Mixpanel `$insert_id`, Amplitude `insert_id`, Meta `event_id`).
    pub fn refuse(&self, ids: impl IntoIterator<Item = String>) {
        self.state.refused.lock().unwrap().extend(ids);
    }

    /// Requests received so far (every answer).
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Accepted events so far.
    pub fn events(&self) -> Vec<Value> {
        self.state.events.lock().unwrap().clone()
    }

    /// Rejections so far.
    pub fn rejections(&self) -> Vec<String> {
        self.state.rejections.lock().unwrap().clone()
    }

    /// Waits until at least `n` events were accepted; panics after `timeout`
    /// naming what arrived and what was rejected.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let events = self.events();
            if events.len() >= n {
                return events;
            }
            assert!(
                Instant::now() < deadline,
                "{}: expected {n} events, got {}; rejections: {:?}",
                self.base,
                events.len(),
                self.rejections()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Decodes an HTTP Basic header into (username, password).
pub fn basic_auth(headers: &axum::http::HeaderMap) -> Option<(String, String)> {
    use base64::Engine as _;
    let value = headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_owned(), pass.to_owned()))
}
