//! The tag's one piece of state and the routing of API calls to it.
//!
//! # Design
//! Every entry point (API calls, consent hooks, DOM events) goes through the
//! `window.waymark` queue and `drain`, which borrows the state, handles one
//! call, releases it and only then runs the site's callbacks. A callback that
//! calls the API again therefore never finds the state borrowed, and a
//! borrow that is busy anyway (a `toJSON` calling the API mid-send) leaves
//! the call queued instead of panicking.

use crate::bind::{self, Array, Function, JsCast, JsValue, Object};
use crate::consent::ConsentState;
use crate::env::{kind, wm_capture, wm_listen, wm_load, wm_page, wm_save, wm_uuid};
use crate::event::{self, Call};
use crate::js::{self, at, get, set, set_some};
use crate::{args, transport};
use alloc::string::String;
use core::cell::RefCell;

/// localStorage keys.
const KEY_ANON: &str = "wm_aid";
const KEY_USER: &str = "wm_uid";
const KEY_TRAITS: &str = "wm_ut";
const KEY_GROUP: &str = "wm_gid";

/// The one state cell.
struct Global(RefCell<Option<Tag>>);

// SAFETY: the tag runs on wasm32-unknown-unknown without the atomics
// feature, where there is exactly one thread; host builds exist for clippy
// and docs only and never touch the state from two threads.
unsafe impl Sync for Global {}

static TAG: Global = Global(RefCell::new(None));

/// Runs `f` on the state; `None` when the tag is not started or busy.
fn with<R>(f: impl FnOnce(&mut Tag) -> R) -> Option<R> {
    let mut g = TAG.0.try_borrow_mut().ok()?;
    g.as_mut().map(f)
}

/// Settings read from `waymark.o` (the loader fills it from the script's
/// `data-*` attributes).
pub struct Config {
    /// Source write key sent in each batch body.
    pub write_key: JsValue,
    /// `POST` target, `<host>/v1/batch`.
    pub endpoint: String,
    /// Send once this many events are queued. Default: 20.
    pub flush_at: u32,
    /// Send queued events after this long. Default: 500 ms.
    pub flush_interval_ms: i32,
    /// Oldest events are dropped past this many. Default: 500.
    pub max_queue: u32,
    /// Hold events until a consent decision is known. Default: off.
    pub wait_for_consent: bool,
    /// `waymark.o` itself, for hooks set after start (`mw`, the drop-in's
    /// source middleware).
    pub options: JsValue,
}

/// Identity, consent, queues and transport state.
struct Tag {
    cfg: Config,
    anonymous_id: JsValue,
    user_id: JsValue,
    group_id: JsValue,
    traits: Object,
    debug: bool,
    consent: ConsentState,
    /// Events waiting for consent (`waitForConsent`), persisted.
    held: Array,
    /// The transport's queue and timers.
    send: transport::Sender,
    /// `[callback, argument]` pairs to run once the state is released.
    callbacks: Array,
    /// `consent.onChange` listeners.
    listeners: Array,
}

/// The `window.waymark` array, when the loader defined it.
fn global() -> Option<Array> {
    get(&bind::global(), "waymark").dyn_into::<Array>().ok()
}

/// Queues `[method, args]` as the API stubs do and handles it at once.
fn dispatch(method: &str, args: &Array) {
    if let Some(q) = global() {
        q.push(&Array::of2(&JsValue::from_str(method), args));
        drain();
    }
}

/// Handles every queued call, in order.
fn drain() {
    let Some(q) = global() else { return };
    while q.length() > 0 {
        let item = q.shift();
        let method = at(&item, 0).as_string().unwrap_or_default();
        let args = at(&item, 1).dyn_into::<Array>().unwrap_or_default();
        let Some(cbs) = with(|t| {
            t.handle(&method, &args);
            core::mem::take(&mut t.callbacks)
        }) else {
            // Busy or stopped: keep the call for the next drain.
            q.unshift(&item);
            return;
        };
        for pair in cbs.iter() {
            if let Ok(f) = at(&pair, 0).dyn_into::<Function>() {
                js::call(&f, &at(&pair, 1));
            }
        }
    }
}

/// Where every JS-side hook reports (see `env::kind`).
pub(crate) fn route(k: u32, arg: JsValue) {
    match k {
        kind::DRAIN => drain(),
        kind::HIDDEN => {
            with(|t| {
                t.send.hidden = true;
                t.send.unload(&t.cfg);
            });
        }
        kind::VISIBLE => {
            with(|t| t.send.hidden = false);
        }
        kind::ONLINE => {
            with(|t| t.send.resume());
        }
        kind::TIMER => {
            with(|t| t.send.flush(&t.cfg));
        }
        kind::ANSWER => {
            with(|t| {
                if let Some(status) = t.send.answer(&t.cfg, &arg) {
                    t.warn("rejected", &JsValue::from(status));
                }
            });
        }
        kind::PAGE => dispatch("page", &Array::new()),
        kind::TRACK => dispatch("track", &arg.dyn_into::<Array>().unwrap_or_default()),
        kind::TCF => dispatch("consent._tcf", &Array::of1(&arg)),
        kind::DATA_LAYER => dispatch("consent._dl", &Array::of1(&arg)),
        _ => {}
    }
}

/// Starts the tag: reads config and saved state, installs the drain hook,
/// listeners and consent hooks, then handles the calls queued so far.
pub fn start() {
    // 1. Only start under the loader, and only once.
    let Some(q) = global() else { return };
    if get(&q, "h").is_function() {
        return;
    }
    // 2. Settings from the loader.
    let o = get(&q, "o");
    let cfg = Config {
        write_key: get(&o, "writeKey"),
        endpoint: get(&o, "host").as_string().unwrap_or_default() + "/v1/batch",
        flush_at: js::num(&get(&o, "flushAt"), 20.0).clamp(1.0, 100.0) as u32,
        flush_interval_ms: js::num(&get(&o, "flushInterval"), 500.0).clamp(0.0, 60_000.0) as i32,
        max_queue: js::num(&get(&o, "maxQueue"), 500.0).clamp(1.0, 5_000.0) as u32,
        wait_for_consent: js::flag(&get(&o, "waitForConsent")),
        options: o.clone(),
    };
    // 3. The one callback every JS hook reports to.
    let router: Function = bind::router(route);
    // 4. Identity, consent and queues saved by earlier pages.
    let mut anonymous_id = wm_load(KEY_ANON);
    if !anonymous_id.is_string() {
        anonymous_id = wm_uuid();
        wm_save(KEY_ANON, &anonymous_id);
    }
    let tag = Tag {
        cfg,
        anonymous_id,
        user_id: wm_load(KEY_USER),
        group_id: wm_load(KEY_GROUP),
        traits: js::dict_copy(&wm_load(KEY_TRAITS)),
        debug: js::flag(&get(&o, "debug")),
        consent: ConsentState::load(),
        held: wm_load(transport::KEY_HELD)
            .dyn_into::<Array>()
            .unwrap_or_default(),
        send: transport::Sender::load(router.clone()),
        callbacks: Array::new(),
        listeners: Array::new(),
    };
    set(&q, "c", &tag.consent.snapshot());
    if let Ok(mut g) = TAG.0.try_borrow_mut() {
        *g = Some(tag);
    }
    // 5. Set aside what was queued before we loaded, so consent sources
    //    that answer synchronously are applied before those calls.
    let early = q.slice(0, q.length());
    q.set_length(0);
    // 6. The drain hook (from now on each API call is handled as it is
    //    made), lifecycle and consent listeners, opt-in auto-capture.
    wm_listen(&q, &router);
    let auto = get(&o, "autoCapture");
    if js::flag(&auto) {
        wm_capture(&router, &auto);
    }
    // 7. The early calls, then the first send right away: they are a batch
    //    already.
    for item in early.iter() {
        q.push(&item);
    }
    drain();
    with(|t| {
        t.release_held();
        t.send.schedule(0, true);
    });
}

impl Tag {
    /// Handles one API call.
    fn handle(&mut self, method: &str, a: &Array) {
        let first = a.get(0);
        match method {
            "page" | "screen" => {
                let c = args::page(a);
                let e = self.event(method, &c);
                let props: Object = if method == "page" {
                    wm_page().unchecked_into()
                } else {
                    Object::new()
                };
                set_some(&props, "name", &c.name);
                set_some(&props, "category", &c.extra);
                if let Some(p) = c.props.dyn_ref::<Object>() {
                    Object::assign(&props, p);
                }
                set_some(&e, "name", &c.name);
                set_some(&e, "category", &c.extra);
                set(&e, "properties", &props);
                self.enqueue(e, &c);
            }
            "track" => {
                let c = args::track(a);
                if !c.name.is_string() {
                    return self.warn("bad_event_name", &c.name);
                }
                let e = self.event("track", &c);
                set(&e, "event", &c.name);
                set(&e, "properties", &js::dict_copy(&c.props));
                self.enqueue(e, &c);
            }
            "identify" => {
                let c = args::identify(a);
                if !c.name.is_undefined() {
                    self.user_id = id_string(&c.name);
                    wm_save(KEY_USER, &self.user_id);
                }
                if let Some(p) = c.props.dyn_ref::<Object>() {
                    Object::assign(&self.traits, p);
                    wm_save(KEY_TRAITS, &self.traits);
                }
                let e = self.event("identify", &c);
                set(&e, "traits", &js::dict_copy(&self.traits));
                self.enqueue(e, &c);
            }
            "group" => {
                let c = args::identify(a);
                if !c.name.is_undefined() {
                    self.group_id = id_string(&c.name);
                    wm_save(KEY_GROUP, &self.group_id);
                }
                if !self.group_id.is_string() {
                    return self.warn("missing_group_id", &first);
                }
                let e = self.event("group", &c);
                set(&e, "groupId", &self.group_id);
                set(&e, "traits", &js::dict_copy(&c.props));
                self.enqueue(e, &c);
            }
            "alias" => {
                let c = args::alias(a);
                let to = id_string(&c.name);
                if !to.is_string() {
                    return self.warn("bad_alias", &c.name);
                }
                let prev = if c.extra.is_string() {
                    c.extra.clone()
                } else if self.user_id.is_string() {
                    self.user_id.clone()
                } else {
                    self.anonymous_id.clone()
                };
                let e = self.event("alias", &c);
                set(&e, "userId", &to);
                set(&e, "previousId", &prev);
                self.user_id = to;
                wm_save(KEY_USER, &self.user_id);
                self.enqueue(e, &c);
            }
            "reset" => {
                self.user_id = JsValue::UNDEFINED;
                self.group_id = JsValue::UNDEFINED;
                self.traits = Object::new();
                self.anonymous_id = wm_uuid();
                wm_save(KEY_ANON, &self.anonymous_id);
                for k in [KEY_USER, KEY_TRAITS, KEY_GROUP] {
                    wm_save(k, &JsValue::UNDEFINED);
                }
            }
            "anon" => {
                if first.is_string() {
                    self.anonymous_id = first;
                    wm_save(KEY_ANON, &self.anonymous_id);
                }
            }
            "ready" => {
                if first.is_function() {
                    self.callbacks
                        .push(&Array::of2(&first, &JsValue::UNDEFINED));
                }
            }
            "debug" => self.debug = first.is_undefined() || first.is_truthy(),
            "consent.set" => {
                self.consent.set_plain(&first, true);
                self.consent_changed();
            }
            "consent.onChange" => {
                if first.is_function() {
                    self.listeners.push(&first);
                }
            }
            "consent._tcf" => {
                self.consent.apply_tcf(&first);
                self.consent_changed();
            }
            "consent._dl" => {
                if self.consent.apply_data_layer(&first) {
                    self.consent_changed();
                }
            }
            _ => self.warn("unknown_method", &JsValue::from_str(method)),
        }
    }

    /// A new event of `kind` for this visitor.
    fn event(&self, kind: &str, c: &Call) -> Object {
        let e = event::base(kind, &self.anonymous_id, &self.user_id, &c.options);
        if self.group_id.is_string() && kind != "group" {
            if let Some(ctx) = get(&e, "context").dyn_ref::<Object>() {
                set(ctx, "groupId", &self.group_id);
            }
        }
        e
    }

    /// Stamps consent and hands the event to the transport, or holds it
    /// while consent is pending under `waitForConsent`. The call's
    /// callback runs once the event is queued.
    fn enqueue(&mut self, e: Object, c: &Call) {
        // Source middleware (the analytics.js drop-in): an event it does
        // not hand back is dropped.
        let e = match get(&self.cfg.options, "mw").dyn_ref::<Function>() {
            Some(f) => match f
                .call1(&JsValue::UNDEFINED, &e)
                .ok()
                .and_then(|v| v.dyn_into::<Object>().ok())
            {
                Some(out) => out,
                None => return self.warn("dropped_by_middleware", &e),
            },
            None => e,
        };
        if self.debug {
            js::log(&get(&e, "type"), &e);
        }
        if c.callback.is_function() {
            self.callbacks.push(&Array::of2(&c.callback, &e));
        }
        if self.cfg.wait_for_consent && !self.consent.known {
            self.held.push(&e);
            wm_save(transport::KEY_HELD, &self.held);
            return;
        }
        self.stamp(&e);
        self.send.push(&self.cfg, &e);
    }

    fn stamp(&self, e: &JsValue) {
        if let Some(ctx) = get(e, "context").dyn_ref::<Object>() {
            set(ctx, "consent", &self.consent.snapshot());
        }
    }

    /// Sends events held for consent once consent is known.
    fn release_held(&mut self) {
        if self.held.length() == 0 || (self.cfg.wait_for_consent && !self.consent.known) {
            return;
        }
        let held = core::mem::take(&mut self.held);
        wm_save(transport::KEY_HELD, &JsValue::UNDEFINED);
        for e in held.iter() {
            self.stamp(&e);
            self.send.push(&self.cfg, &e);
        }
    }

    fn consent_changed(&mut self) {
        let snap = self.consent.snapshot();
        if let Some(q) = global() {
            set(&q, "c", &snap);
        }
        for f in self.listeners.iter() {
            self.callbacks.push(&Array::of2(&f, &snap));
        }
        self.release_held();
    }

    #[cold]
    fn warn(&self, code: &str, detail: &JsValue) {
        if self.debug {
            js::warn(code, detail);
        }
    }
}

/// A user or group id as a string: Segment accepts numbers and sends them
/// as strings.
fn id_string(v: &JsValue) -> JsValue {
    if v.is_string() {
        return v.clone();
    }
    bind::number_string(v)
}
