//! Small helpers over the JS boundary (`bind`) so the rest of the tag reads like plain code.
//!
//! Every helper swallows JS exceptions: the tag must never throw into the page.

pub use crate::bind::{log, now_iso, stringify, warn};
use crate::bind::{Array, Function, JsCast, JsValue, Object, Reflect};

/// `o[k]`, or `undefined` when `o` is not an object or the getter throws.
pub fn get(o: &JsValue, k: &str) -> JsValue {
    if !o.is_object() && !o.is_function() {
        return JsValue::UNDEFINED;
    }
    Reflect::get(o, &JsValue::from_str(k)).unwrap_or(JsValue::UNDEFINED)
}

/// `o[i]` for array-likes (`arguments` included).
pub fn at(o: &JsValue, i: u32) -> JsValue {
    if !o.is_object() {
        return JsValue::UNDEFINED;
    }
    Reflect::get_u32(o, i).unwrap_or(JsValue::UNDEFINED)
}

/// `o[k] = v`, ignoring a frozen object.
pub fn set(o: &Object, k: &str, v: &JsValue) {
    let _ = Reflect::set(o, &JsValue::from_str(k), v);
}

/// `o[k] = "v"`.
pub fn set_str(o: &Object, k: &str, v: &str) {
    set(o, k, &JsValue::from_str(v));
}

/// `o[k] = v` only when `v` is neither `undefined` nor `null`.
pub fn set_some(o: &Object, k: &str, v: &JsValue) {
    if !v.is_undefined() && !v.is_null() {
        set(o, k, v);
    }
}

/// A plain object (not an array, function or null): what Segment calls a
/// properties, traits or options dictionary.
pub fn is_dict(v: &JsValue) -> bool {
    v.is_object() && !Array::is_array(v)
}

/// A shallow copy of `v` when it is a dictionary, else a fresh `{}`.
pub fn dict_copy(v: &JsValue) -> Object {
    let out = Object::new();
    match v.dyn_ref::<Object>() {
        Some(o) if is_dict(v) => Object::assign(&out, o),
        _ => out,
    }
}

/// Calls `f(arg)`, swallowing whatever the site's callback throws.
pub fn call(f: &Function, arg: &JsValue) {
    let _ = f.call1(&JsValue::UNDEFINED, arg);
}

/// A number option: numbers and numeric strings (from `data-*`
/// attributes) are accepted, anything else gives `default`.
pub fn num(v: &JsValue, default: f64) -> f64 {
    let n = match v.as_f64() {
        Some(n) => n,
        None if v.is_string() => v.unchecked_into_f64(),
        None => return default,
    };
    if n.is_finite() {
        n
    } else {
        default
    }
}

/// A boolean option: `true`, or a string other than `"false"`/`"0"` (so a
/// bare `data-wait-for-consent` attribute counts as set).
pub fn flag(v: &JsValue) -> bool {
    match v.as_bool() {
        Some(b) => b,
        None => v.is_string() && v != &JsValue::from_str("false") && v != &JsValue::from_str("0"),
    }
}

/// `a === "s"` without copying `a` into Rust.
pub fn is(a: &JsValue, s: &str) -> bool {
    a == &JsValue::from_str(s)
}
