//! Segment analytics.js argument shapes: optional properties, options and
//! callback, in the positions analytics.js accepts them.

use crate::bind::{Array, JsValue};
use crate::event::Call;
use crate::js::at;

/// Splits the callback off: the first function argument is the callback,
/// the other arguments keep their order.
fn split(args: &Array) -> (Array, JsValue) {
    let rest = Array::new();
    let mut cb = JsValue::UNDEFINED;
    for a in args.iter() {
        if !a.is_function() {
            rest.push(&a);
        } else if cb.is_undefined() {
            cb = a;
        }
    }
    (rest, cb)
}

/// `track(event, properties?, options?, callback?)`.
pub fn track(args: &Array) -> Call {
    let (a, callback) = split(args);
    Call {
        name: a.get(0),
        extra: JsValue::UNDEFINED,
        props: a.get(1),
        options: a.get(2),
        callback,
    }
}

/// `page(category?, name?, properties?, options?, callback?)`: two leading
/// strings are category and name, one is the name.
pub fn page(args: &Array) -> Call {
    let (a, callback) = split(args);
    let s = |i| at(&a, i).is_string() || at(&a, i).is_null();
    let strings = if s(0) && s(1) { 2 } else { u32::from(s(0)) };
    let (extra, name) = match strings {
        2 => (a.get(0), a.get(1)),
        1 => (JsValue::UNDEFINED, a.get(0)),
        _ => (JsValue::UNDEFINED, JsValue::UNDEFINED),
    };
    Call {
        name,
        extra,
        props: a.get(strings),
        options: a.get(strings + 1),
        callback,
    }
}

/// `identify(userId?, traits?, options?, callback?)` and the same shape for
/// `group(groupId?, traits?, ...)`: a leading string, number or null is
/// the id.
pub fn identify(args: &Array) -> Call {
    let (a, callback) = split(args);
    let first = a.get(0);
    let has_id = first.is_string() || first.as_f64().is_some() || first.is_null();
    let skip = u32::from(has_id);
    Call {
        name: if first.is_null() {
            JsValue::UNDEFINED
        } else if has_id {
            first
        } else {
            JsValue::UNDEFINED
        },
        extra: JsValue::UNDEFINED,
        props: a.get(skip),
        options: a.get(skip + 1),
        callback,
    }
}

/// `alias(userId, previousId?, options?, callback?)`.
pub fn alias(args: &Array) -> Call {
    let (a, callback) = split(args);
    let second = a.get(1);
    let has_prev = second.is_string();
    Call {
        name: a.get(0),
        extra: if has_prev { second } else { JsValue::UNDEFINED },
        props: JsValue::UNDEFINED,
        options: a.get(1 + u32::from(has_prev)),
        callback,
    }
}
