//! The tag's logic in a real browser (headless Chromium through
//! chromedriver): `cargo xtask test` runs these with
//! `wasm-bindgen-test-runner`; `client-wasm/webdriver.json` holds the
//! Chromium flags this machine needs.
#![cfg(target_arch = "wasm32")]
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use js_sys::{Array, Date, Object, Reflect};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_test::*;
use waymark_tag::testing::*;

wasm_bindgen_test_configure!(run_in_browser);

fn get(o: &JsValue, path: &str) -> JsValue {
    path.split('.').fold(o.clone(), |v, k| {
        Reflect::get(&v, &k.into()).unwrap_or(JsValue::UNDEFINED)
    })
}

fn obj(json: &str) -> JsValue {
    js_sys::JSON::parse(json).unwrap()
}

fn args(items: &[JsValue]) -> Array {
    items.iter().collect()
}

#[wasm_bindgen_test]
fn track_takes_properties_options_and_a_callback_anywhere() {
    // Any function will do as the callback (no eval: js-sys's unsafe-eval is off).
    let cb: js_sys::Function = get(&js_sys::global().into(), "isFinite").unchecked_into();
    let c = track(&args(&[
        "Signed Up".into(),
        obj(r#"{"plan":"pro"}"#),
        cb.clone().into(),
    ]));
    assert_eq!(c.name, "Signed Up");
    assert_eq!(get(&c.props, "plan"), "pro");
    assert!(c.options.is_undefined());
    assert!(c.callback.is_function());
}

#[wasm_bindgen_test]
fn page_reads_category_and_name_like_analytics_js() {
    let c = page(&args(&["Docs".into(), "Install".into(), obj(r#"{"a":1}"#)]));
    assert_eq!(c.extra, "Docs");
    assert_eq!(c.name, "Install");
    assert_eq!(get(&c.props, "a"), 1);
    let c = page(&args(&[
        "Home".into(),
        obj(r#"{"a":2}"#),
        obj(r#"{"integrations":{}}"#),
    ]));
    assert!(c.extra.is_undefined());
    assert_eq!(c.name, "Home");
    assert_eq!(get(&c.props, "a"), 2);
    assert!(get(&c.options, "integrations").is_object());
    let c = page(&args(&[obj(r#"{"a":3}"#)]));
    assert!(c.name.is_undefined());
    assert_eq!(get(&c.props, "a"), 3);
}

#[wasm_bindgen_test]
fn identify_accepts_traits_without_a_user_id() {
    let c = identify(&args(&["u1".into(), obj(r#"{"email":"a@b.c"}"#)]));
    assert_eq!(c.name, "u1");
    assert_eq!(get(&c.props, "email"), "a@b.c");
    let c = identify(&args(&[obj(r#"{"email":"a@b.c"}"#)]));
    assert!(c.name.is_undefined());
    assert_eq!(get(&c.props, "email"), "a@b.c");
    let c = identify(&args(&[JsValue::from(42)]));
    assert_eq!(c.name, 42);
}

#[wasm_bindgen_test]
fn alias_takes_an_optional_previous_id() {
    let c = alias(&args(&["new".into(), "old".into()]));
    assert_eq!(
        (c.name, c.extra),
        (JsValue::from("new"), JsValue::from("old"))
    );
    let c = alias(&args(&["new".into(), obj("{}")]));
    assert!(c.extra.is_undefined());
    assert!(c.options.is_object());
}

#[wasm_bindgen_test]
fn events_carry_common_fields_and_browser_context() {
    let opts = obj(
        r#"{"context":{"ip":"1.2.3.4"},"integrations":{"All":false},"anonymousId":"a-override"}"#,
    );
    let e: JsValue = base("track", &"anon".into(), &"user".into(), &opts).into();
    assert_eq!(get(&e, "type"), "track");
    assert_eq!(get(&e, "userId"), "user");
    assert_eq!(get(&e, "anonymousId"), "a-override");
    assert_eq!(get(&e, "messageId").as_string().unwrap().len(), 36);
    assert!(get(&e, "timestamp").as_string().unwrap().ends_with('Z'));
    assert_eq!(get(&e, "context.ip"), "1.2.3.4");
    assert_eq!(get(&e, "context.library.name"), "waymark-tag");
    assert!(get(&e, "context.page.url").is_string());
    assert!(get(&e, "context.userAgent").is_string());
    assert!(get(&e, "context.timezone").is_string());
    assert!(get(&e, "context.screen.width").as_f64().is_some());
    assert_eq!(get(&e, "integrations.All"), false);
    let when = Date::new(&JsValue::from(0));
    let o = Object::new();
    Reflect::set(&o, &"timestamp".into(), &when).unwrap();
    let e: JsValue = base("page", &"anon".into(), &JsValue::UNDEFINED, &o).into();
    assert_eq!(get(&e, "timestamp"), "1970-01-01T00:00:00.000Z");
    assert!(get(&e, "userId").is_undefined());
}

#[wasm_bindgen_test]
fn context_has_no_campaign_without_utm_parameters() {
    assert!(get(&wm_ctx(), "campaign").is_undefined());
}

#[wasm_bindgen_test]
fn plain_consent_maps_purposes() {
    let mut c = ConsentState::new(false);
    assert!(!c.known);
    c.set_plain(&obj(r#"{"analytics":true,"marketing":"denied"}"#), false);
    assert!(c.known);
    let s: JsValue = c.snapshot().into();
    assert_eq!(get(&s, "categoryPreferences.analytics"), true);
    assert_eq!(get(&s, "categoryPreferences.marketing"), false);
    assert_eq!(get(&s, "gpc"), false);
    c.set_plain(
        &obj(r#"{"categoryPreferences":{"marketing":true},"tcf":"CPXxyz"}"#),
        false,
    );
    let s: JsValue = c.snapshot().into();
    assert_eq!(get(&s, "categoryPreferences.marketing"), true);
    assert_eq!(get(&s, "categoryPreferences.analytics"), true);
    assert_eq!(get(&s, "tcf"), "CPXxyz");
}

#[wasm_bindgen_test]
fn gpc_denies_marketing_without_making_consent_known() {
    let c = ConsentState::new(true);
    assert!(!c.known);
    let s: JsValue = c.snapshot().into();
    assert_eq!(get(&s, "gpc"), true);
    assert_eq!(get(&s, "categoryPreferences.marketing"), false);
}

#[wasm_bindgen_test]
fn google_consent_mode_default_then_update() {
    let mut c = ConsentState::new(false);
    let default = args(&[
        "consent".into(),
        "default".into(),
        obj(r#"{"ad_storage":"denied","analytics_storage":"denied"}"#),
    ]);
    assert!(c.apply_data_layer(&default));
    assert!(!c.known, "a default is not a decision");
    let update = args(&[
        "consent".into(),
        "update".into(),
        obj(r#"{"analytics_storage":"granted","ad_user_data":"granted"}"#),
    ]);
    assert!(c.apply_data_layer(&update));
    assert!(c.known);
    let s: JsValue = c.snapshot().into();
    assert_eq!(get(&s, "gcm.ad_storage"), "denied");
    assert_eq!(get(&s, "gcm.analytics_storage"), "granted");
    assert_eq!(get(&s, "gcm.ad_user_data"), "granted");
    assert_eq!(get(&s, "categoryPreferences.analytics"), true);
    assert_eq!(get(&s, "categoryPreferences.marketing"), false);
    assert!(!c.apply_data_layer(&obj(r#"{"event":"gtm.js"}"#)));
}

#[wasm_bindgen_test]
fn tcf_purposes_map_to_analytics_and_marketing() {
    let mut c = ConsentState::new(false);
    c.apply_tcf(&obj(r#"{"eventStatus":"cmpuishown","tcString":"X"}"#));
    assert!(!c.known);
    c.apply_tcf(&obj(
        r#"{"eventStatus":"useractioncomplete","gdprApplies":true,"tcString":"CQ-tc","purpose":{"consents":{"1":true,"8":true,"3":false,"4":true}}}"#,
    ));
    assert!(c.known);
    let s: JsValue = c.snapshot().into();
    assert_eq!(get(&s, "tcf"), "CQ-tc");
    assert_eq!(get(&s, "categoryPreferences.analytics"), true);
    assert_eq!(get(&s, "categoryPreferences.marketing"), false);
}

#[wasm_bindgen_test]
fn backoff_doubles_with_jitter_and_is_capped() {
    assert_eq!(backoff_ms(1, 0.0), 500.0);
    assert_eq!(backoff_ms(2, 0.0), 1000.0);
    assert_eq!(backoff_ms(1, 1.0), 1000.0);
    assert_eq!(backoff_ms(50, 1.0), 60_000.0);
}

#[wasm_bindgen_test]
fn retry_after_reads_seconds_and_dates() {
    assert_eq!(retry_after_ms("3", 0.0), Some(3000.0));
    assert_eq!(retry_after_ms(" 120 ", 0.0), Some(120_000.0));
    let now = Date::parse("Wed, 21 Oct 2015 07:28:00 GMT");
    assert_eq!(
        retry_after_ms("Wed, 21 Oct 2015 07:28:05 GMT", now),
        Some(5000.0)
    );
    assert_eq!(retry_after_ms("soon", 0.0), None);
    assert_eq!(retry_after_ms("999999999", 0.0), Some(3_600_000.0));
}

#[wasm_bindgen_test]
fn data_wm_attributes_become_properties() {
    let el: web_sys::HtmlElement = web_sys::window()
        .unwrap()
        .document()
        .unwrap()
        .create_element("button")
        .unwrap()
        .unchecked_into();
    el.set_attribute("data-wm-track", "Product Added").unwrap();
    el.set_attribute("data-wm-product_id", "p-7").unwrap();
    el.set_attribute("data-wm-price", "19.90").unwrap();
    el.set_attribute("data-wm-sku", "007").unwrap();
    el.set_attribute("data-other", "x").unwrap();
    let p = wm_props(&el.dataset().into());
    assert_eq!(get(&p, "product_id"), "p-7");
    assert_eq!(get(&p, "price"), 19.9);
    assert_eq!(get(&p, "sku"), "007", "leading zeros stay strings");
    assert!(get(&p, "track").is_undefined());
    assert!(get(&p, "other").is_undefined());
}

#[wasm_bindgen_test]
fn a_consent_mode_default_does_not_undo_a_choice() {
    let mut c = ConsentState::new(false);
    c.set_plain(&obj(r#"{"marketing":true}"#), false);
    let default = args(&[
        "consent".into(),
        "default".into(),
        obj(r#"{"ad_storage":"denied","analytics_storage":"denied"}"#),
    ]);
    c.apply_data_layer(&default);
    let s: JsValue = c.snapshot().into();
    assert_eq!(get(&s, "categoryPreferences.marketing"), true);
    assert_eq!(get(&s, "categoryPreferences.analytics"), false);
    assert_eq!(get(&s, "gcm.ad_storage"), "denied");
}
