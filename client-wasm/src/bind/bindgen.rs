//! The `std` backend: wasm-bindgen and js-sys, for host builds and the
//! wasm-bindgen-test suite.

pub use js_sys::{Array, Function, Object, Reflect};
pub use wasm_bindgen::{JsCast, JsValue};

use wasm_bindgen::closure::Closure;

/// A JS function `(kind, arg) => f(kind, arg)`, kept alive for the page's
/// lifetime (it is the one router every listener reports to).
pub fn router(f: fn(u32, JsValue)) -> Function {
    Closure::<dyn FnMut(u32, JsValue)>::new(f)
        .into_js_value()
        .unchecked_into()
}

/// `globalThis`.
pub fn global() -> JsValue {
    js_sys::global().into()
}

/// `Date.now()`.
pub fn now_ms() -> f64 {
    js_sys::Date::now()
}

/// `Date.parse(s)`: ms since the epoch, NaN when `s` is not a date.
pub fn parse_date(s: &str) -> f64 {
    js_sys::Date::parse(s)
}

/// `Math.random()`.
pub fn random() -> f64 {
    js_sys::Math::random()
}

/// The current time as an ISO-8601 string, as Segment's `timestamp` wants it.
pub fn now_iso() -> JsValue {
    js_sys::Date::new_0().to_iso_string().into()
}

/// `v.toISOString()` when `v` is a `Date`, else `undefined`.
pub fn date_iso(v: &JsValue) -> JsValue {
    v.dyn_ref::<js_sys::Date>()
        .map_or(JsValue::UNDEFINED, |d| d.to_iso_string().into())
}

/// `String(v)` when `v` is a number, else `undefined`.
pub fn number_string(v: &JsValue) -> JsValue {
    v.dyn_ref::<js_sys::Number>()
        .and_then(|n| n.to_string_with_radix(10).ok())
        .map_or(JsValue::UNDEFINED, JsValue::from)
}

/// `JSON.stringify(v)`; `undefined` when it throws (cycles, BigInt).
pub fn stringify(v: &JsValue) -> JsValue {
    js_sys::JSON::stringify(v).map_or(JsValue::UNDEFINED, JsValue::from)
}

/// `console.warn("waymark", code, detail)`.
#[cold]
pub fn warn(code: &str, detail: &JsValue) {
    web_sys::console::warn_3(
        &JsValue::from_str("waymark"),
        &JsValue::from_str(code),
        detail,
    );
}

/// `console.log("waymark", what, detail)`.
pub fn log(what: &JsValue, detail: &JsValue) {
    web_sys::console::log_3(&JsValue::from_str("waymark"), what, detail);
}
