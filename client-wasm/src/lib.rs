//! Waymark's browser tag: a Segment-shaped collector compiled to WebAssembly.
//!
//! # Overview
//! The loader (`js/loader.js`, served as `/wm.js`) defines `window.waymark`:
//! an array that queues `[method, args]` pairs, with the Segment API
//! methods (`page`, `track`, `identify`, `group`, `alias`, `reset`, `ready`,
//! `debug`, `consent.set/get/onChange`) as stubs that push onto it. When this
//! module starts, it installs a drain hook (`waymark.h`) so every later call
//! is handled at once, then works through what was queued.
//!
//! - [`Tag`] (private) is the one piece of state: identity, consent, the
//!   send queue and the transport timers. Calls are routed to it by
//!   `dispatch` and `drain`.
//! - `consent::ConsentState` merges the plain API, IAB TCF, Google Consent
//!   Mode and GPC into `context.consent`.
//! - `event` builds Segment events as JS objects; `args` applies
//!   analytics.js argument shapes.
//! - `transport` batches, persists, sends (`fetch` keepalive, `sendBeacon`
//!   on page hide) and retries.
//! - `env` binds `js/env.js`: browser reads, listeners, storage and I/O,
//!   reporting back through one router callback; it also does the opt-in
//!   auto-capture of page views, clicks and forms.
//!
//! # Design
//! Size is a feature (issue #6, STYLE.md §5): JSON is built as JS objects and
//! serialised by `JSON.stringify`; there is no `format!`, no serde and no
//! float printing, and no code path that can panic.
//!
//! ```
//! // On the page (the loader does this for you):
//! // <script src="/wm.js" data-write-key="wk_demo" async></script>
//! // waymark.track("Order Completed", { revenue: 42 });
//! assert_eq!(waymark_tag::LIBRARY, "waymark-tag");
//! ```

#![cfg_attr(feature = "bare", no_std)]

extern crate alloc;

mod args;
mod bind;
mod consent;
mod env;
mod event;
// The allocator is only linked into the `bare` wasm build; host tests check it.
#[cfg(any(test, all(feature = "bare", target_arch = "wasm32")))]
mod heap;
mod js;
mod tag;
mod transport;

pub use event::LIBRARY;

#[doc(hidden)]
pub mod testing {
    //! Pure pieces exposed for the wasm-bindgen-test suite.
    pub use crate::args::{alias, identify, page, track};
    pub use crate::consent::ConsentState;
    pub use crate::env::{wm_ctx, wm_props};
    pub use crate::event::{base, context, Call};
    pub use crate::transport::{backoff_ms, retry_after_ms};
}

#[cfg(all(feature = "bare", target_arch = "wasm32"))]
#[global_allocator]
static ALLOC: heap::Global = heap::Global(core::cell::UnsafeCell::new(heap::Heap::new()));

/// Without std a panic just stops the module; no message is formatted, so
/// none of `core::fmt` is linked in. The crate is written not to panic.
#[cfg(feature = "bare")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}

/// Entry point run by wasm-bindgen's `init`: starts the tag when the loader
/// defined `window.waymark`, and does nothing otherwise (tests, double load).
#[cfg(feature = "std")]
#[wasm_bindgen::prelude::wasm_bindgen(start)]
pub fn start() {
    tag::start();
}

/// Export `s`, which `js/glue.js` calls once the module is instantiated:
/// starts the tag as [`start`] does in the `std` build.
#[cfg(all(not(feature = "std"), target_arch = "wasm32"))]
#[export_name = "s"]
pub extern "C" fn start() {
    tag::start();
}

/// Export `r`, the router that `js/glue.js`'s one JS callback calls with a
/// kind (`env::kind`) and a handle it hands over.
#[cfg(all(not(feature = "std"), target_arch = "wasm32"))]
#[export_name = "r"]
pub extern "C" fn route(kind: u32, arg: u32) {
    tag::route(kind, bind::JsValue::from_handle(arg));
}
