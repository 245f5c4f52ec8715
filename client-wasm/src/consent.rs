//! What the visitor agreed to, from any of four sources, as one
//! `context.consent` value (DESIGN.md §2).
//!
//! Sources: the plain API (`waymark.consent.set`), the IAB TCF v2.2
//! `__tcfapi` listener, Google Consent Mode v2 commands on `dataLayer`, and
//! `navigator.globalPrivacyControl`. Each one only updates the fields it
//! knows; the last writer wins per field.

use crate::bind::{JsCast, JsValue, Object, Reflect};
use crate::env::{wm_gpc, wm_load, wm_save};
use crate::js::{at, get, is, is_dict, set, set_some};

/// The four Google Consent Mode v2 fields carried in `context.consent.gcm`.
const GCM_FIELDS: [&str; 4] = [
    "ad_storage",
    "analytics_storage",
    "ad_user_data",
    "ad_personalization",
];

/// localStorage key for consent given through the plain API.
const KEY: &str = "wm_c";

/// The consent state carried on every event.
pub struct ConsentState {
    /// Purpose → bool (Segment's `categoryPreferences`).
    prefs: Object,
    /// Google Consent Mode fields seen so far.
    gcm: Object,
    /// The TC string from the CMP, or `undefined`.
    tcf: JsValue,
    /// `navigator.globalPrivacyControl`.
    gpc: bool,
    /// Whether a consent decision (not just a default) has been seen:
    /// events wait for this when `waitForConsent` is on.
    pub known: bool,
}

impl ConsentState {
    /// A state with nothing known: no purpose set, GPC as given.
    ///
    /// # Design
    /// GPC is a legal opt-out of sale and sharing, so it turns `marketing`
    /// off until the site sets it explicitly; it does not by itself make
    /// consent known.
    pub fn new(gpc: bool) -> ConsentState {
        let c = ConsentState {
            prefs: Object::new(),
            gcm: Object::new(),
            tcf: JsValue::UNDEFINED,
            gpc,
            known: false,
        };
        if gpc {
            set(&c.prefs, "marketing", &JsValue::FALSE);
        }
        c
    }

    /// The browser's GPC signal plus the decision saved by an earlier page.
    pub fn load() -> ConsentState {
        let mut c = ConsentState::new(wm_gpc());
        let saved = wm_load(KEY);
        if is_dict(&saved) {
            c.merge(&saved);
            c.known = true;
        }
        c
    }

    /// The `context.consent` value: a fresh object, safe to hand out.
    pub fn snapshot(&self) -> Object {
        let o = Object::new();
        set(
            &o,
            "categoryPreferences",
            &Object::assign(&Object::new(), &self.prefs),
        );
        if Object::keys(&self.gcm).length() > 0 {
            set(&o, "gcm", &Object::assign(&Object::new(), &self.gcm));
        }
        set_some(&o, "tcf", &self.tcf);
        set(&o, "gpc", &JsValue::from_bool(self.gpc));
        o
    }

    /// `consent.set(...)`: either a full `{categoryPreferences, gcm, tcf}`
    /// value or a plain `{purpose: bool}` map. Marks consent as known and
    /// saves it for later pages (`save: false` in tests).
    pub fn set_plain(&mut self, v: &JsValue, save: bool) {
        if !is_dict(v) {
            return;
        }
        self.merge(v);
        self.known = true;
        if save {
            wm_save(KEY, &self.snapshot());
        }
    }

    fn merge(&mut self, v: &JsValue) {
        let p = get(v, "categoryPreferences");
        let gcm = get(v, "gcm");
        let tcf = get(v, "tcf");
        if p.is_undefined() && gcm.is_undefined() && tcf.is_undefined() {
            return merge_prefs(&self.prefs, v);
        }
        merge_prefs(&self.prefs, &p);
        if is_dict(&gcm) {
            self.apply_gcm(&gcm, false);
        }
        if tcf.is_string() {
            self.tcf = tcf;
        }
    }

    /// A Google Consent Mode command's parameters (`gtag('consent',
    /// 'default'|'update', params)`). `analytics_storage` maps to the
    /// `analytics` purpose, `ad_storage` with `ad_user_data` to
    /// `marketing`, as the worker's default `[consent.gcm]`. Only `update` is a
    /// decision; `default` only fills fields nothing has set yet (a
    /// default must not undo a saved choice or a CMP's answer) and does not
    /// make consent known.
    pub fn apply_gcm(&mut self, params: &JsValue, decision: bool) {
        let unset = |o: &Object, k: &str| decision || get(o, k).is_undefined();
        for f in GCM_FIELDS {
            let v = get(params, f);
            if v.is_string() && unset(&self.gcm, f) {
                set(&self.gcm, f, &v);
            }
        }
        // The worker's default `[consent.gcm]` mapping: a purpose is granted
        // when all its fields are, denied when any is, else left alone.
        for (purpose, fields) in [
            ("analytics", &["analytics_storage"][..]),
            ("marketing", &["ad_storage", "ad_user_data"][..]),
        ] {
            if !fields.iter().any(|f| get(params, f).is_string()) || !unset(&self.prefs, purpose) {
                continue;
            }
            let denied = fields.iter().any(|f| is(&get(&self.gcm, f), "denied"));
            let granted = fields.iter().all(|f| is(&get(&self.gcm, f), "granted"));
            if denied || granted {
                set(&self.prefs, purpose, &JsValue::from_bool(!denied));
            }
        }
        self.known |= decision;
    }

    /// An IAB TCF v2.2 `tcData` from `__tcfapi('addEventListener', 2, cb)`.
    /// Purposes 1 (store/access) and 8 (measure content) give `analytics`;
    /// 1, 3 and 4 (personalised-ads profile and selection) give
    /// `marketing`. Where GDPR does not apply both are granted. Only the
    /// `tcloaded` and `useractioncomplete` statuses are decisions.
    pub fn apply_tcf(&mut self, data: &JsValue) {
        let status = get(data, "eventStatus");
        if !is(&status, "tcloaded") && !is(&status, "useractioncomplete") {
            return;
        }
        let tc = get(data, "tcString");
        if tc.is_string() {
            self.tcf = tc;
        }
        let applies = get(data, "gdprApplies") != JsValue::FALSE;
        let consents = get(&get(data, "purpose"), "consents");
        let p = |n: u32| !applies || at(&consents, n).is_truthy();
        set(&self.prefs, "analytics", &JsValue::from_bool(p(1) && p(8)));
        set(
            &self.prefs,
            "marketing",
            &JsValue::from_bool(p(1) && p(3) && p(4)),
        );
        self.known = true;
    }

    /// A `dataLayer` item: applied when it is a gtag consent command
    /// (`arguments` of `gtag('consent', kind, params)`). Returns whether it was.
    pub fn apply_data_layer(&mut self, item: &JsValue) -> bool {
        let params = at(item, 2);
        if !is(&at(item, 0), "consent") || !is_dict(&params) {
            return false;
        }
        self.apply_gcm(&params, is(&at(item, 1), "update"));
        true
    }
}

/// Copies purpose values from `from`: `true`, `"granted"` and `"true"` are
/// granted, anything else denied.
fn merge_prefs(into: &Object, from: &JsValue) {
    let Some(o) = from.dyn_ref::<Object>() else {
        return;
    };
    if !is_dict(from) {
        return;
    }
    for k in Object::keys(o).iter() {
        let v = Reflect::get(from, &k).unwrap_or(JsValue::UNDEFINED);
        let b = if v.is_string() {
            is(&v, "granted") || is(&v, "true")
        } else {
            v.is_truthy()
        };
        let _ = Reflect::set(into, &k, &JsValue::from_bool(b));
    }
}
