//! Batching, persistence, sending and retrying.
//!
//! Events wait in one bounded queue that mirrors itself into localStorage,
//! so a reload, a navigation or an offline period loses nothing. A batch
//! leaves when `flushAt` events are queued or `flushInterval` has passed, as
//! a `text/plain` `POST /v1/batch` (a simple request: no CORS preflight)
//! with `keepalive`. Only one batch is in flight; it leaves the queue when
//! the worker answers 2xx (or a 4xx that retrying cannot fix). On 408, 429,
//! 5xx or a network error the batch stays and is retried with exponential
//! backoff and jitter, or after `Retry-After` when the worker sends one.
//! When the page is hidden or unloaded, what is queued goes by
//! `sendBeacon`, in bodies under the 64 KB keepalive budget.
//!
//! # Design
//! An event stays persisted until its batch is answered, so one that was in
//! flight when the page went away is sent again by the next page; the
//! worker deduplicates on `messageId` (DESIGN.md §2).

use crate::bind::{now_ms, parse_date, random, Array, Function, JsCast, JsValue, Object};
use crate::env::{wm_beacon, wm_load, wm_online, wm_save, wm_send, wm_size, wm_timer};
use crate::js::{at, now_iso, set, stringify};
use crate::tag::Config;

/// localStorage key of the send queue.
pub const KEY_QUEUE: &str = "wm_q";
/// localStorage key of events held for consent.
pub const KEY_HELD: &str = "wm_h";
/// Largest body sent, in bytes: under the browser's 64 KB keepalive and
/// beacon budget.
const MAX_BODY_BYTES: u32 = 60_000;
/// Cap on `Retry-After`.
const MAX_DELAY_MS: f64 = 3_600_000.0;
/// Cap on the exponential backoff.
const MAX_BACKOFF_MS: f64 = 60_000.0;

/// The send queue and the retry state.
pub struct Sender {
    /// The router that timers and answers report to.
    router: Function,
    queue: Array,
    /// How many events at the head of the queue are in flight.
    inflight: u32,
    /// Failed tries in a row.
    attempt: u32,
    /// No try before this time (ms since the epoch).
    retry_at: f64,
    /// The armed timer's id, or `undefined`.
    timer: JsValue,
    /// The page is hidden or going away: events queued now (by the site's
    /// own `pagehide` handlers, say) are beaconed at once.
    pub hidden: bool,
}

impl Sender {
    /// The queue saved by an earlier page.
    pub fn load(router: Function) -> Sender {
        Sender {
            router,
            queue: wm_load(KEY_QUEUE).dyn_into::<Array>().unwrap_or_default(),
            inflight: 0,
            attempt: 0,
            retry_at: 0.0,
            timer: JsValue::UNDEFINED,
            hidden: false,
        }
    }

    /// Queues an event, dropping the oldest one not in flight past
    /// `max_queue`, and arms the batch timer.
    pub fn push(&mut self, cfg: &Config, e: &JsValue) {
        self.queue.push(e);
        while self.queue.length() > cfg.max_queue && self.queue.length() > self.inflight {
            self.remove(self.inflight, 1);
        }
        wm_save(KEY_QUEUE, &self.queue);
        if self.hidden {
            self.unload(cfg);
        } else if self.queue.length().saturating_sub(self.inflight) >= cfg.flush_at {
            self.schedule(0, true);
        } else {
            self.schedule(cfg.flush_interval_ms, false);
        }
    }

    /// Arms the send timer; an armed timer is kept unless `force`.
    pub fn schedule(&mut self, ms: i32, force: bool) {
        if force || self.timer.is_undefined() {
            let old = core::mem::take(&mut self.timer);
            self.timer = wm_timer(&self.router, ms, old);
        }
    }

    /// Sends the next batch unless one is in flight, the browser is
    /// offline (the `online` event resumes) or a retry is not due yet.
    pub fn flush(&mut self, cfg: &Config) {
        self.timer = JsValue::UNDEFINED;
        if self.inflight > 0 || self.queue.length() == 0 || !wm_online() {
            return;
        }
        let wait = self.retry_at - now_ms();
        if wait > 0.0 {
            return self.schedule(wait as i32, true);
        }
        if let Some((n, body)) = self.body(cfg, 0, cfg.flush_at) {
            self.inflight = n;
            wm_send(&self.router, &cfg.endpoint, &body);
        }
    }

    /// The worker answered `[status, retryAfter]` (or `0`: network error).
    /// Returns the status when the batch was rejected for good (a 4xx
    /// other than 408 and 429): those events are dropped.
    pub fn answer(&mut self, cfg: &Config, arg: &JsValue) -> Option<u16> {
        let n = core::mem::take(&mut self.inflight);
        let status = at(arg, 0).as_f64().unwrap_or(0.0) as u16;
        let done = (200..300).contains(&status)
            || ((400..500).contains(&status) && status != 408 && status != 429);
        if !done {
            let hint = at(arg, 1).as_string();
            self.fail(hint.and_then(|s| retry_after_ms(&s, now_ms())));
            return None;
        }
        self.remove(0, n);
        self.attempt = 0;
        self.retry_at = 0.0;
        wm_save(KEY_QUEUE, &self.queue);
        if self.queue.length() > 0 {
            self.schedule(cfg.flush_interval_ms.min(50), true);
        }
        (status >= 400).then_some(status)
    }

    /// A try failed: wait `delay_ms` or the next backoff step, then retry.
    fn fail(&mut self, delay_ms: Option<f64>) {
        self.attempt = self.attempt.saturating_add(1);
        let d = delay_ms.unwrap_or_else(|| backoff_ms(self.attempt, random()));
        self.retry_at = now_ms() + d;
        self.schedule(d as i32, true);
    }

    /// The page is going away or hidden: beacon everything not in flight.
    /// A beacon the browser refuses (over its budget) leaves its events
    /// persisted for the next page.
    pub fn unload(&mut self, cfg: &Config) {
        if !wm_online() {
            return;
        }
        let from = self.inflight;
        while let Some((n, body)) = self.body(cfg, from, u32::MAX) {
            if !wm_beacon(&cfg.endpoint, &body) {
                break;
            }
            self.remove(from, n);
        }
        wm_save(KEY_QUEUE, &self.queue);
    }

    /// Back online: try at once.
    pub fn resume(&mut self) {
        self.attempt = 0;
        self.retry_at = 0.0;
        self.schedule(0, true);
    }

    /// The body for up to `max` events from index `from`, halving the count
    /// until it fits in [`MAX_BODY_BYTES`]. An event too large to send
    /// alone is dropped (the worker's limit is 32 KB per event anyway).
    fn body(&mut self, cfg: &Config, from: u32, max: u32) -> Option<(u32, JsValue)> {
        loop {
            let mut n = self.queue.length().saturating_sub(from).min(max);
            if n == 0 {
                return None;
            }
            loop {
                let s = batch_body(cfg, &self.queue.slice(from, from.saturating_add(n)));
                if s.is_string() && wm_size(&s) <= MAX_BODY_BYTES {
                    return Some((n, s));
                }
                if n == 1 {
                    break;
                }
                n /= 2;
            }
            self.remove(from, 1);
        }
    }

    /// Removes `n` events at index `at`.
    fn remove(&mut self, at: u32, n: u32) {
        let len = self.queue.length();
        let tail = self.queue.slice(at.saturating_add(n).min(len), len);
        self.queue = self.queue.slice(0, at).concat(&tail);
    }
}

/// `{"batch": [...], "writeKey": ..., "sentAt": ...}` as JSON.
fn batch_body(cfg: &Config, batch: &Array) -> JsValue {
    let o = Object::new();
    set(&o, "batch", batch);
    set(&o, "writeKey", &cfg.write_key);
    set(&o, "sentAt", &now_iso());
    stringify(&o)
}

/// Delay before try `attempt + 1`: 1 s doubling per failure up to 60 s,
/// scaled by a jitter factor in [0.5, 1) from `random` in [0, 1).
pub fn backoff_ms(attempt: u32, random: f64) -> f64 {
    let steps = attempt.saturating_sub(1).min(6);
    let base = (1000.0 * f64::from(1u32 << steps)).min(MAX_BACKOFF_MS);
    base * (0.5 + random.clamp(0.0, 1.0) / 2.0)
}

/// A `Retry-After` value (seconds or an HTTP date) as a delay from `now`,
/// capped at one hour.
pub fn retry_after_ms(v: &str, now: f64) -> Option<f64> {
    let v = v.trim_ascii();
    let ms = if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        f64::from(v.parse::<u32>().ok()?) * 1000.0
    } else {
        let at = parse_date(v);
        if !at.is_finite() {
            return None;
        }
        (at - now).max(0.0)
    };
    Some(ms.min(MAX_DELAY_MS))
}
