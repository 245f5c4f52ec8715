//! Segment Spec events built as JS objects: the common fields and the
//! browser context (page, locale, screen, timezone, library, userAgent and
//! UTM campaign).

use crate::bind::{date_iso, JsCast, JsValue, Object};
use crate::env::{wm_ctx, wm_uuid};
use crate::js::{get, is_dict, now_iso, set, set_some, set_str};

/// The library name sent in `context.library.name`.
pub const LIBRARY: &str = "waymark-tag";

/// Arguments of one call after Segment's shape rules were applied.
pub struct Call {
    /// `track`'s event name, `page`'s name, or the id of `identify`,
    /// `group` and `alias`.
    pub name: JsValue,
    /// `page`'s category, or `alias`'s previousId.
    pub extra: JsValue,
    /// Properties (`track`, `page`) or traits (`identify`, `group`).
    pub props: JsValue,
    /// Segment options: `context`, `integrations`, `timestamp`, `anonymousId`.
    pub options: JsValue,
    /// The callback, if one of the arguments was a function.
    pub callback: JsValue,
}

/// The browser context shared by every event, with `context.library`.
pub fn context() -> Object {
    let c: Object = wm_ctx().unchecked_into();
    let lib = Object::new();
    set_str(&lib, "name", LIBRARY);
    set_str(&lib, "version", env!("CARGO_PKG_VERSION"));
    set(&c, "library", &lib);
    c
}

/// A Segment event of type `kind` with the common fields and context.
/// `user_id` is the identified user, if any. Options are applied here:
/// `context` is merged into the context, `integrations`, `timestamp` and
/// `anonymousId` override.
pub fn base(kind: &str, anonymous_id: &JsValue, user_id: &JsValue, options: &JsValue) -> Object {
    let e = Object::new();
    set_str(&e, "type", kind);
    set(&e, "messageId", &wm_uuid());
    set(&e, "anonymousId", anonymous_id);
    set_some(&e, "userId", user_id);
    set(&e, "timestamp", &now_iso());
    let ctx = context();
    if is_dict(options) {
        let extra = get(options, "context");
        if let Some(x) = extra.dyn_ref::<Object>() {
            Object::assign(&ctx, x);
        }
        set_some(&e, "integrations", &get(options, "integrations"));
        let ts = get(options, "timestamp");
        let iso = date_iso(&ts);
        if !iso.is_undefined() {
            set(&e, "timestamp", &iso);
        } else if ts.is_string() {
            set(&e, "timestamp", &ts);
        }
        let aid = get(options, "anonymousId");
        if aid.is_string() {
            set(&e, "anonymousId", &aid);
        }
    }
    set(&e, "context", &ctx);
    e
}
