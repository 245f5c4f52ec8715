//! Bindings to `js/env.js`, the environment adapter: browser reads,
//! listeners and I/O.
//!
//! # Design
//! One router callback crosses into Rust (`route(kind, arg)`) instead of one
//! `Closure` per listener: each closure costs wasm-bindgen glue on both
//! sides, and the tag's size is its budget (issue #6). Browser reads that
//! are one-liners in JS (context, UUID, storage) are done there for the
//! same reason; the decisions stay in Rust.

use js_sys::Function;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsValue;

/// Router kinds (mirrored in `js/env.js`).
pub mod kind {
    /// The API stubs queued a call.
    pub const DRAIN: u32 = 0;
    /// `pagehide`, or the document became hidden.
    pub const HIDDEN: u32 = 1;
    /// The browser came back online.
    pub const ONLINE: u32 = 2;
    /// The send timer fired.
    pub const TIMER: u32 = 3;
    /// A send was answered: `[status, retryAfter]`, or `0` on a network error.
    pub const ANSWER: u32 = 4;
    /// An SPA history change to a new path.
    pub const PAGE: u32 = 5;
    /// An auto-captured `[event, properties]`.
    pub const TRACK: u32 = 6;
    /// IAB TCF `tcData`.
    pub const TCF: u32 = 7;
    /// A `dataLayer` item.
    pub const DATA_LAYER: u32 = 8;
    /// The page is shown or visible again.
    pub const VISIBLE: u32 = 9;
}

#[wasm_bindgen(module = "/js/env.js")]
extern "C" {
    /// `JSON.parse(localStorage[k])`, `undefined` when absent or invalid.
    pub fn wm_load(k: &str) -> JsValue;
    /// `localStorage[k] = JSON.stringify(v)`; `undefined` removes the key.
    pub fn wm_save(k: &str, v: &JsValue);
    /// A random UUID v4.
    pub fn wm_uuid() -> JsValue;
    /// `context.page`: url, path, referrer, title and search.
    pub fn wm_page() -> JsValue;
    /// Page, locale, userAgent, screen, timezone and UTM campaign.
    pub fn wm_ctx() -> JsValue;
    /// `navigator.globalPrivacyControl`.
    pub fn wm_gpc() -> bool;
    /// `navigator.onLine`.
    pub fn wm_online() -> bool;
    /// Clears timer `old` and calls `r(TIMER)` after `ms`; returns the id.
    pub fn wm_timer(r: &Function, ms: i32, old: JsValue) -> JsValue;
    /// POSTs `body` as text/plain with keepalive; answers `r(ANSWER, ..)`.
    pub fn wm_send(r: &Function, url: &str, body: &JsValue);
    /// `navigator.sendBeacon(url, body)`.
    pub fn wm_beacon(url: &str, body: &JsValue) -> bool;
    /// Installs `waymark.h`, lifecycle, network and consent listeners.
    pub fn wm_listen(a: &JsValue, r: &Function);
    /// Installs the auto-capture listeners that `on` enables.
    pub fn wm_capture(r: &Function, on: &JsValue);
    /// The UTF-8 size of a string, in bytes.
    pub fn wm_size(s: &JsValue) -> u32;
    /// `data-wm-*` properties of a dataset.
    pub fn wm_props(dataset: &JsValue) -> JsValue;
}
