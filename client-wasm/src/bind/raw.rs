//! The `bare` backend: a hand-written ABI to `js/glue.js`.
//!
//! A [`JsValue`] is a `u32` handle into the glue's value table. Handles 0
//! to 3 are `undefined`, `null`, `true` and `false`, which the glue always
//! maps to those numbers, so testing for them and making them costs no
//! call. Every other handle is owned by exactly one `JsValue`: `Clone`
//! asks the glue for a second handle, `Drop` frees the slot.
//!
//! Imports are module `e`, one short name each (listed in `js/glue.js`
//! beside the same letter). Strings go into JS as (pointer, length) and are
//! decoded there; into Rust they are encoded by the glue and copied into a
//! buffer this side allocates.
//!
//! # Safety
//! The tag is single-threaded (wasm32 without atomics) and the glue never
//! calls back into the module from inside an import, so no import
//! re-enters Rust.

use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Deref;

#[link(wasm_import_module = "e")]
extern "C" {
    #[link_name = "d"]
    fn js_drop(h: u32);
    #[link_name = "c"]
    fn js_clone(h: u32) -> u32;
    #[link_name = "s"]
    fn js_str(ptr: *const u8, len: usize) -> u32;
    #[link_name = "n"]
    fn js_num(n: f64) -> u32;
    #[link_name = "t"]
    fn js_type(h: u32) -> u32;
    #[link_name = "f"]
    fn js_f64(h: u32) -> f64;
    #[link_name = "b"]
    fn js_truthy(h: u32) -> u32;
    #[link_name = "q"]
    fn js_eq(a: u32, b: u32) -> u32;
    #[link_name = "l"]
    fn js_utf8_len(h: u32) -> usize;
    #[link_name = "w"]
    fn js_utf8_write(ptr: *mut u8);
    #[link_name = "g"]
    fn js_get(o: u32, k: u32) -> u32;
    #[link_name = "i"]
    fn js_at(o: u32, i: u32) -> u32;
    #[link_name = "p"]
    fn js_set(o: u32, k: u32, v: u32);
    #[link_name = "o"]
    fn js_object() -> u32;
    #[link_name = "a"]
    fn js_array() -> u32;
    #[link_name = "u"]
    fn js_push(a: u32, v: u32);
    #[link_name = "h"]
    fn js_shift(a: u32) -> u32;
    #[link_name = "U"]
    fn js_unshift(a: u32, v: u32);
    #[link_name = "L"]
    fn js_length(a: u32) -> u32;
    #[link_name = "N"]
    fn js_set_length(a: u32, n: u32);
    #[link_name = "S"]
    fn js_slice(a: u32, from: u32, to: u32) -> u32;
    #[link_name = "C"]
    fn js_concat(a: u32, b: u32) -> u32;
    #[link_name = "A"]
    fn js_assign(to: u32, from: u32) -> u32;
    #[link_name = "K"]
    fn js_keys(o: u32) -> u32;
    #[link_name = "k"]
    fn js_call(f: u32, arg: u32) -> u32;
    #[link_name = "j"]
    fn js_stringify(v: u32) -> u32;
    #[link_name = "D"]
    fn js_now() -> f64;
    #[link_name = "P"]
    fn js_parse_date(s: u32) -> f64;
    #[link_name = "I"]
    fn js_now_iso() -> u32;
    #[link_name = "Z"]
    fn js_date_iso(v: u32) -> u32;
    #[link_name = "M"]
    fn js_random() -> f64;
    #[link_name = "G"]
    fn js_global() -> u32;
    #[link_name = "T"]
    fn js_number_string(v: u32) -> u32;
    #[link_name = "W"]
    fn js_warn(code: u32, detail: u32);
    #[link_name = "O"]
    fn js_log(what: u32, detail: u32);
    #[link_name = "R"]
    fn js_router() -> u32;
}

/// `typeof`-like codes answered by the glue's `t`.
mod ty {
    pub const NUMBER: u32 = 1;
    pub const STRING: u32 = 2;
    pub const FUNCTION: u32 = 3;
    /// Objects (arrays and dates included) are `OBJECT` and up.
    pub const OBJECT: u32 = 4;
    pub const ARRAY: u32 = 5;
}

/// A JS value, owned through its handle.
#[repr(transparent)]
pub struct JsValue(u32);

impl JsValue {
    /// `undefined`.
    pub const UNDEFINED: JsValue = JsValue(0);
    /// `null`.
    pub const NULL: JsValue = JsValue(1);
    /// `true`.
    pub const TRUE: JsValue = JsValue(2);
    /// `false`.
    pub const FALSE: JsValue = JsValue(3);

    /// Takes ownership of a handle the glue handed over.
    pub(crate) fn from_handle(h: u32) -> JsValue {
        JsValue(h)
    }

    /// A JS string with the contents of `s`.
    #[allow(clippy::should_implement_trait)] // wasm-bindgen's name
    pub fn from_str(s: &str) -> JsValue {
        // SAFETY: the glue only reads `len` bytes at `ptr` during the call.
        JsValue(unsafe { js_str(s.as_ptr(), s.len()) })
    }

    /// A JS boolean.
    pub fn from_bool(b: bool) -> JsValue {
        if b {
            JsValue::TRUE
        } else {
            JsValue::FALSE
        }
    }

    /// A JS number.
    pub fn from_f64(n: f64) -> JsValue {
        // SAFETY: a plain number crosses.
        JsValue(unsafe { js_num(n) })
    }

    fn ty(&self) -> u32 {
        // SAFETY: handles are valid while their owner lives.
        unsafe { js_type(self.0) }
    }

    /// `v === undefined`.
    pub fn is_undefined(&self) -> bool {
        self.0 == 0
    }

    /// `v === null`.
    pub fn is_null(&self) -> bool {
        self.0 == 1
    }

    /// `typeof v == "string"`.
    pub fn is_string(&self) -> bool {
        self.ty() == ty::STRING
    }

    /// `typeof v == "function"`.
    pub fn is_function(&self) -> bool {
        self.ty() == ty::FUNCTION
    }

    /// `typeof v == "object" && v !== null`.
    pub fn is_object(&self) -> bool {
        self.ty() >= ty::OBJECT
    }

    /// `!!v`.
    pub fn is_truthy(&self) -> bool {
        // SAFETY: as in `ty`.
        unsafe { js_truthy(self.0) != 0 }
    }

    /// The boolean, when `v` is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self.0 {
            2 => Some(true),
            3 => Some(false),
            _ => None,
        }
    }

    /// The number, when `v` is one.
    pub fn as_f64(&self) -> Option<f64> {
        (self.ty() == ty::NUMBER).then(|| self.unchecked_into_f64())
    }

    /// `+v`.
    pub fn unchecked_into_f64(&self) -> f64 {
        // SAFETY: as in `ty`.
        unsafe { js_f64(self.0) }
    }

    /// The string copied into Rust, when `v` is one.
    pub fn as_string(&self) -> Option<String> {
        if !self.is_string() {
            return None;
        }
        // SAFETY: `l` encodes the string and keeps the bytes; `w` copies
        // exactly `len` of them into the buffer, which has that capacity.
        unsafe {
            let len = js_utf8_len(self.0);
            let mut buf = Vec::with_capacity(len);
            js_utf8_write(buf.as_mut_ptr());
            buf.set_len(len);
            // TextEncoder only produces UTF-8 (lone surrogates become U+FFFD).
            Some(String::from_utf8_unchecked(buf))
        }
    }
}

/// The glue ignores handles 0-3 itself: the test costs less there than
/// at every drop site here (measured: 179 B gzipped).
impl Drop for JsValue {
    fn drop(&mut self) {
        // SAFETY: this value owned the handle.
        unsafe { js_drop(self.0) }
    }
}

impl Clone for JsValue {
    fn clone(&self) -> JsValue {
        // SAFETY: a new handle to the same value (0-3 map to themselves).
        JsValue(unsafe { js_clone(self.0) })
    }
}

impl Default for JsValue {
    fn default() -> JsValue {
        JsValue::UNDEFINED
    }
}

impl PartialEq for JsValue {
    /// `a === b`.
    fn eq(&self, other: &JsValue) -> bool {
        // SAFETY: as in `ty`.
        unsafe { js_eq(self.0, other.0) != 0 }
    }
}

impl From<f64> for JsValue {
    fn from(n: f64) -> JsValue {
        JsValue::from_f64(n)
    }
}

impl From<u32> for JsValue {
    fn from(n: u32) -> JsValue {
        JsValue::from_f64(f64::from(n))
    }
}

impl From<u16> for JsValue {
    fn from(n: u16) -> JsValue {
        JsValue::from_f64(f64::from(n))
    }
}

impl From<&str> for JsValue {
    fn from(s: &str) -> JsValue {
        JsValue::from_str(s)
    }
}

/// A JS class the tag casts values to. Each one is a transparent wrapper
/// of [`JsValue`].
///
/// # Safety
/// Implementors are `#[repr(transparent)]` over `JsValue`.
pub unsafe trait Class: Sized {
    /// Whether `v` is an instance.
    fn is(v: &JsValue) -> bool;
    /// Wraps `v` without checking.
    fn wrap(v: JsValue) -> Self;
}

/// Checked and unchecked casts, as wasm-bindgen's `JsCast` names them.
pub trait JsCast: Sized {
    /// `self` as a `T`, or `self` back when it is not one.
    fn dyn_into<T: Class>(self) -> Result<T, Self>;
    /// `self` as a `&T` when it is one.
    fn dyn_ref<T: Class>(&self) -> Option<&T>;
    /// `self` as a `T`, unchecked (the caller knows what JS returns).
    fn unchecked_into<T: Class>(self) -> T;
}

impl JsCast for JsValue {
    fn dyn_into<T: Class>(self) -> Result<T, JsValue> {
        if T::is(&self) {
            Ok(T::wrap(self))
        } else {
            Err(self)
        }
    }

    fn dyn_ref<T: Class>(&self) -> Option<&T> {
        // SAFETY: `T` is a transparent wrapper of `JsValue` (`Class`).
        T::is(self).then(|| unsafe { &*(self as *const JsValue as *const T) })
    }

    fn unchecked_into<T: Class>(self) -> T {
        T::wrap(self)
    }
}

macro_rules! class {
    ($(#[$doc:meta])* $name:ident: $base:ident, $is:expr) => {
        $(#[$doc])*
        #[repr(transparent)]
        #[derive(Clone)]
        pub struct $name(JsValue);

        /// Arrays and functions are objects, objects are values (as in js-sys).
        impl Deref for $name {
            type Target = $base;
            fn deref(&self) -> &$base {
                // SAFETY: both are transparent wrappers of `JsValue`.
                unsafe { &*(self as *const $name as *const $base) }
            }
        }

        impl From<$name> for JsValue {
            fn from(v: $name) -> JsValue {
                v.0
            }
        }

        // SAFETY: a transparent wrapper of `JsValue`.
        unsafe impl Class for $name {
            fn is(v: &JsValue) -> bool {
                let is: fn(&JsValue) -> bool = $is;
                is(v)
            }
            fn wrap(v: JsValue) -> $name {
                $name(v)
            }
        }
    };
}

class!(
    /// A JS array.
    Array: Object,
    |v| v.ty() == ty::ARRAY
);
class!(
    /// Any JS object (arrays and dates included).
    Object: JsValue,
    JsValue::is_object
);
class!(
    /// A JS function.
    Function: Object,
    JsValue::is_function
);

impl Array {
    /// `[]`.
    pub fn new() -> Array {
        // SAFETY: a fresh handle.
        Array(JsValue(unsafe { js_array() }))
    }

    /// `[a]`.
    pub fn of1(a: &JsValue) -> Array {
        let x = Array::new();
        x.push(a);
        x
    }

    /// `[a, b]`.
    pub fn of2(a: &JsValue, b: &JsValue) -> Array {
        let x = Array::of1(a);
        x.push(b);
        x
    }

    /// `Array.isArray(v)`.
    pub fn is_array(v: &JsValue) -> bool {
        v.ty() == ty::ARRAY
    }

    /// `a.push(v)`.
    pub fn push(&self, v: &JsValue) {
        // SAFETY: valid handles.
        unsafe { js_push(self.0 .0, v.0) }
    }

    /// `a[i]`.
    pub fn get(&self, i: u32) -> JsValue {
        // SAFETY: valid handle.
        JsValue(unsafe { js_at(self.0 .0, i) })
    }

    /// `a.length`.
    pub fn length(&self) -> u32 {
        // SAFETY: valid handle.
        unsafe { js_length(self.0 .0) }
    }

    /// `a.length = n`.
    pub fn set_length(&self, n: u32) {
        // SAFETY: valid handle.
        unsafe { js_set_length(self.0 .0, n) }
    }

    /// `a.shift()`.
    pub fn shift(&self) -> JsValue {
        // SAFETY: valid handle.
        JsValue(unsafe { js_shift(self.0 .0) })
    }

    /// `a.unshift(v)`.
    pub fn unshift(&self, v: &JsValue) {
        // SAFETY: valid handles.
        unsafe { js_unshift(self.0 .0, v.0) }
    }

    /// `a.slice(from, to)`.
    pub fn slice(&self, from: u32, to: u32) -> Array {
        // SAFETY: valid handle.
        Array(JsValue(unsafe { js_slice(self.0 .0, from, to) }))
    }

    /// `a.concat(b)`.
    pub fn concat(&self, b: &Array) -> Array {
        // SAFETY: valid handles.
        Array(JsValue(unsafe { js_concat(self.0 .0, b.0 .0) }))
    }

    /// The elements from index 0 to the length it has now.
    pub fn iter(&self) -> impl Iterator<Item = JsValue> + '_ {
        (0..self.length()).map(|i| self.get(i))
    }
}

impl Default for Array {
    fn default() -> Array {
        Array::new()
    }
}

impl Object {
    /// `{}`.
    pub fn new() -> Object {
        // SAFETY: a fresh handle.
        Object(JsValue(unsafe { js_object() }))
    }

    /// `Object.assign(to, from)`.
    pub fn assign(to: &Object, from: &Object) -> Object {
        // SAFETY: valid handles.
        Object(JsValue(unsafe { js_assign(to.0 .0, from.0 .0) }))
    }

    /// `Object.keys(o)`, or `[]` when it throws (a proxy, say).
    pub fn keys(o: &Object) -> Array {
        // SAFETY: valid handle; the glue answers `[]` when it throws.
        Array(JsValue(unsafe { js_keys(o.0 .0) }))
    }
}

impl Default for Object {
    fn default() -> Object {
        Object::new()
    }
}

impl Function {
    /// `f(arg)`; the result is `undefined` when `f` throws.
    pub fn call1(&self, _this: &JsValue, arg: &JsValue) -> Result<JsValue, JsValue> {
        // SAFETY: valid handles.
        Ok(JsValue(unsafe { js_call(self.0 .0, arg.0) }))
    }
}

/// `Reflect`'s property access; errors (throwing getters and setters)
/// come back as `undefined` and `false`.
pub struct Reflect;

impl Reflect {
    /// `o[k]`.
    pub fn get(o: &JsValue, k: &JsValue) -> Result<JsValue, JsValue> {
        // SAFETY: valid handles.
        Ok(JsValue(unsafe { js_get(o.0, k.0) }))
    }

    /// `o[i]`.
    pub fn get_u32(o: &JsValue, i: u32) -> Result<JsValue, JsValue> {
        // SAFETY: valid handle.
        Ok(JsValue(unsafe { js_at(o.0, i) }))
    }

    /// `o[k] = v`.
    pub fn set(o: &JsValue, k: &JsValue, v: &JsValue) -> Result<bool, JsValue> {
        // SAFETY: valid handles.
        unsafe { js_set(o.0, k.0, v.0) };
        Ok(true)
    }
}

/// A JS function `(kind, arg) => r(kind, arg)` calling the module's export
/// `r`, which the glue points at [`crate::tag`]'s router.
pub fn router(_f: fn(u32, JsValue)) -> Function {
    // SAFETY: a fresh handle.
    Function(JsValue(unsafe { js_router() }))
}

/// `globalThis`.
pub fn global() -> JsValue {
    // SAFETY: a fresh handle.
    JsValue(unsafe { js_global() })
}

/// `Date.now()`.
pub fn now_ms() -> f64 {
    // SAFETY: no handles.
    unsafe { js_now() }
}

/// `Date.parse(s)`: ms since the epoch, NaN when `s` is not a date.
pub fn parse_date(s: &str) -> f64 {
    // SAFETY: valid handle.
    unsafe { js_parse_date(JsValue::from_str(s).0) }
}

/// `Math.random()`.
pub fn random() -> f64 {
    // SAFETY: no handles.
    unsafe { js_random() }
}

/// The current time as an ISO-8601 string, as Segment's `timestamp` wants it.
pub fn now_iso() -> JsValue {
    // SAFETY: a fresh handle.
    JsValue(unsafe { js_now_iso() })
}

/// `v.toISOString()` when `v` is a valid `Date`, else `undefined`.
pub fn date_iso(v: &JsValue) -> JsValue {
    // SAFETY: valid handle.
    JsValue(unsafe { js_date_iso(v.0) })
}

/// `String(v)` when `v` is a number, else `undefined`.
pub fn number_string(v: &JsValue) -> JsValue {
    // SAFETY: valid handle.
    JsValue(unsafe { js_number_string(v.0) })
}

/// `JSON.stringify(v)`; `undefined` when it throws (cycles, BigInt).
pub fn stringify(v: &JsValue) -> JsValue {
    // SAFETY: valid handle.
    JsValue(unsafe { js_stringify(v.0) })
}

/// `console.warn("waymark", code, detail)`.
#[cold]
pub fn warn(code: &str, detail: &JsValue) {
    // SAFETY: valid handles.
    unsafe { js_warn(JsValue::from_str(code).0, detail.0) }
}

/// `console.log("waymark", what, detail)`.
pub fn log(what: &JsValue, detail: &JsValue) {
    // SAFETY: valid handles.
    unsafe { js_log(what.0, detail.0) }
}

/// Borrowed handles for the env imports (`crate::env`).
pub(crate) fn handle(v: &JsValue) -> u32 {
    v.0
}
