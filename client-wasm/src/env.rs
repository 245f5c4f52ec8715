//! Bindings to `js/env.js`, the environment adapter: browser reads,
//! listeners and I/O.
//!
//! # Design
//! One router callback crosses into Rust (`route(kind, arg)`) instead of one
//! `Closure` per listener: each closure costs wasm-bindgen glue on both
//! sides, and the tag's size is its budget (issue #6). Browser reads that
//! are one-liners in JS (context, UUID, storage) are done there for the
//! same reason; the decisions stay in Rust.

#[cfg(feature = "std")]
use crate::bind::{Function, JsValue};
#[cfg(not(feature = "std"))]
pub use raw::*;
#[cfg(feature = "std")]
use wasm_bindgen::prelude::wasm_bindgen;

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

#[cfg(feature = "std")]
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

/// The same functions over the hand-written ABI (`bind/raw.rs`): each
/// `wm_*` import takes and returns handles, and `js/glue.js` wraps every
/// function of env.js alike (handles in, the result out as a handle), so
/// numbers, strings and booleans cross as JS values here.
#[cfg(not(feature = "std"))]
mod raw {
    use crate::bind::{handle, Function, JsValue};

    #[link(wasm_import_module = "e")]
    extern "C" {
        #[link_name = "wm_load"]
        fn load(k: u32) -> u32;
        #[link_name = "wm_save"]
        fn save(k: u32, v: u32) -> u32;
        #[link_name = "wm_uuid"]
        fn uuid() -> u32;
        #[link_name = "wm_page"]
        fn page() -> u32;
        #[link_name = "wm_ctx"]
        fn ctx() -> u32;
        #[link_name = "wm_gpc"]
        fn gpc() -> u32;
        #[link_name = "wm_online"]
        fn online() -> u32;
        #[link_name = "wm_timer"]
        fn timer(r: u32, ms: u32, old: u32) -> u32;
        #[link_name = "wm_send"]
        fn send(r: u32, url: u32, body: u32) -> u32;
        #[link_name = "wm_beacon"]
        fn beacon(url: u32, body: u32) -> u32;
        #[link_name = "wm_listen"]
        fn listen(a: u32, r: u32) -> u32;
        #[link_name = "wm_capture"]
        fn capture(r: u32, on: u32) -> u32;
        #[link_name = "wm_size"]
        fn size(s: u32) -> u32;
        #[link_name = "wm_props"]
        fn props(ds: u32) -> u32;
    }

    /// Takes the handle an import returned.
    fn own(h: u32) -> JsValue {
        JsValue::from_handle(h)
    }

    // SAFETY (every function below): the handles passed are borrowed from
    // live values for the call, and each returned handle is owned by the
    // `JsValue` made from it.

    /// `JSON.parse(localStorage[k])`, `undefined` when absent or invalid.
    pub fn wm_load(k: &str) -> JsValue {
        own(unsafe { load(handle(&JsValue::from_str(k))) })
    }
    /// `localStorage[k] = JSON.stringify(v)`; `undefined` removes the key.
    pub fn wm_save(k: &str, v: &JsValue) {
        own(unsafe { save(handle(&JsValue::from_str(k)), handle(v)) });
    }
    /// A random UUID v4.
    pub fn wm_uuid() -> JsValue {
        own(unsafe { uuid() })
    }
    /// `context.page`: url, path, referrer, title and search.
    pub fn wm_page() -> JsValue {
        own(unsafe { page() })
    }
    /// Page, locale, userAgent, screen, timezone and UTM campaign.
    pub fn wm_ctx() -> JsValue {
        own(unsafe { ctx() })
    }
    /// `navigator.globalPrivacyControl`.
    pub fn wm_gpc() -> bool {
        own(unsafe { gpc() }).as_bool() == Some(true)
    }
    /// `navigator.onLine`.
    pub fn wm_online() -> bool {
        own(unsafe { online() }).as_bool() == Some(true)
    }
    /// Clears timer `old` and calls `r(TIMER)` after `ms`; returns the id.
    pub fn wm_timer(r: &Function, ms: i32, old: JsValue) -> JsValue {
        let ms = JsValue::from_f64(f64::from(ms));
        own(unsafe { timer(handle(r), handle(&ms), handle(&old)) })
    }
    /// POSTs `body` as text/plain with keepalive; answers `r(ANSWER, ..)`.
    pub fn wm_send(r: &Function, url: &str, body: &JsValue) {
        own(unsafe { send(handle(r), handle(&JsValue::from_str(url)), handle(body)) });
    }
    /// `navigator.sendBeacon(url, body)`.
    pub fn wm_beacon(url: &str, body: &JsValue) -> bool {
        own(unsafe { beacon(handle(&JsValue::from_str(url)), handle(body)) }).as_bool()
            == Some(true)
    }
    /// Installs `waymark.h`, lifecycle, network and consent listeners.
    pub fn wm_listen(a: &JsValue, r: &Function) {
        own(unsafe { listen(handle(a), handle(r)) });
    }
    /// Installs the auto-capture listeners that `on` enables.
    pub fn wm_capture(r: &Function, on: &JsValue) {
        own(unsafe { capture(handle(r), handle(on)) });
    }
    /// The UTF-8 size of a string, in bytes.
    pub fn wm_size(s: &JsValue) -> u32 {
        own(unsafe { size(handle(s)) }).unchecked_into_f64() as u32
    }
    /// `data-wm-*` properties of a dataset.
    pub fn wm_props(dataset: &JsValue) -> JsValue {
        own(unsafe { props(handle(dataset)) })
    }
}
