// The tag's environment adapter: browser reads, listeners and I/O that the
// Rust core (client-wasm/src) drives through one router callback `r(kind, arg)`.
// Bound by src/env.rs. `cargo xtask build-tag` inlines this file into the
// glue, so it stays import-free and every top-level name is `wm_`-prefixed.
// Plain ES5 on purpose: it is shipped as written (STYLE.md §5).

// Router kinds, mirrored in src/env.rs.
// 0 drain  1 page hidden  2 online  3 timer  4 send answered
// 5 SPA page view  6 auto track [name, props]  7 TCF data  8 dataLayer item
// 9 page visible again

// localStorage as JSON; undefined when missing, malformed or disabled.
export function wm_load(k) {
  try { var s = localStorage.getItem(k); return s ? JSON.parse(s) : undefined; } catch (e) {}
}
export function wm_save(k, v) {
  try { v === undefined ? localStorage.removeItem(k) : localStorage.setItem(k, JSON.stringify(v)); } catch (e) {}
}

// A UUID v4 (randomUUID only exists on secure origins).
export function wm_uuid() {
  var c = self.crypto;
  if (c && c.randomUUID) return c.randomUUID();
  var b = new Uint8Array(16), h = "", i;
  c ? c.getRandomValues(b) : b.forEach(function (_, i) { b[i] = Math.random() * 256; });
  b[6] = b[6] & 15 | 64; b[8] = b[8] & 63 | 128;
  for (i = 0; i < 16; i++) h += (i == 4 || i == 6 || i == 8 || i == 10 ? "-" : "") + (b[i] + 256).toString(16).slice(1);
  return h;
}

// context.page: url, path, referrer, title, search.
export function wm_page() {
  var l = location;
  return { path: l.pathname, referrer: document.referrer, search: l.search, title: document.title, url: l.href };
}

// The browser part of the context (the library and consent are added in Rust).
export function wm_ctx() {
  var n = navigator, s = screen, c = {}, u = new URLSearchParams(location.search), m = 0;
  ["source", "medium", "name:campaign", "term", "content"].forEach(function (k) {
    var p = k.split(":"), v = u.get("utm_" + (p[1] || p[0]));
    if (v !== null) { c[p[0]] = v; m = 1; }
  });
  var o = {
    page: wm_page(), locale: n.language, userAgent: n.userAgent,
    screen: { width: s.width, height: s.height, density: devicePixelRatio },
    timezone: Intl.DateTimeFormat().resolvedOptions().timeZone
  };
  if (m) o.campaign = c;
  return o;
}

export function wm_gpc() { return !!navigator.globalPrivacyControl; }
export function wm_online() { return navigator.onLine !== false; }

// Re-arms the one send timer.
export function wm_timer(r, ms, old) {
  clearTimeout(old);
  return setTimeout(function () { r(3); }, ms);
}

// One text/plain POST (no CORS preflight); answers r(4, [status, retryAfter])
// or r(4, 0) on a network error.
export function wm_send(r, url, body) {
  try {
    fetch(url, { method: "POST", body: body, keepalive: true }).then(
      function (x) { r(4, [x.status, x.headers.get("retry-after")]); },
      function () { r(4, 0); });
  } catch (e) { setTimeout(function () { r(4, 0); }); }
}

export function wm_beacon(url, body) {
  try { return navigator.sendBeacon(url, body); } catch (e) { return false; }
}

// Page lifecycle, network and consent hooks, and `waymark.h`, the drain hook
// the API stubs call.
export function wm_listen(a, r) {
  a.h = function () { r(0); };
  var d = document, w = window, dl, push, tcf = w.__tcfapi;
  addEventListener("pagehide", function () { r(1); });
  addEventListener("pageshow", function () { r(9); });
  d.addEventListener("visibilitychange", function () { r(d.visibilityState == "hidden" ? 1 : 9); });
  addEventListener("online", function () { r(2); });
  if (typeof tcf == "function") {
    try { tcf("addEventListener", 2, function (t, ok) { ok && r(7, t); }); } catch (e) {}
  }
  dl = w.dataLayer = w.dataLayer || [];
  for (var i = 0; i < dl.length; i++) r(8, dl[i]);
  push = dl.push;
  dl.push = function () {
    for (var i = 0; i < arguments.length; i++) r(8, arguments[i]);
    return push.apply(dl, arguments);
  };
}

// Opt-in auto-capture. `on` is "true"/"" for all, or a list of
// pages, clicks, forms.
export function wm_capture(r, on) {
  var all = on === true || on === "" || on === "true", at = location.pathname + location.search;
  function want(x) { return all || (typeof on == "string" && on.split(",").some(function (y) { return y.trim() == x; })); }
  if (want("pages")) {
    var check = function () {
      setTimeout(function () {
        var now = location.pathname + location.search;
        if (now != at) { at = now; r(5); }
      });
    };
    ["pushState", "replaceState"].forEach(function (n) {
      var orig = history[n];
      history[n] = function () { var x = orig.apply(this, arguments); check(); return x; };
    });
    addEventListener("popstate", check);
  }
  if (want("clicks")) document.addEventListener("click", function (e) {
    var el = e.target && e.target.closest && e.target.closest("[data-wm-track]");
    if (el && el.dataset.wmTrack) r(6, [el.dataset.wmTrack, wm_props(el.dataset)]);
  }, true);
  if (want("forms")) document.addEventListener("submit", function (e) {
    var f = e.target, p = {};
    if (f.id) p.form_id = f.id;
    if (f.getAttribute("name")) p.form_name = f.getAttribute("name");
    r(6, ["Form Submitted", p]);
  }, true);
}

// data-wm-<name> attributes (other than data-wm-track) as properties:
// data-wm-product_id="7" becomes {product_id: 7}; decimals become numbers.
export function wm_props(ds) {
  var p = {};
  for (var k in ds) {
    if (k.indexOf("wm") || k == "wmTrack" || k.length < 3) continue;
    var v = ds[k];
    p[k.charAt(2).toLowerCase() + k.slice(3)] = /^-?(0|[1-9]\d*)(\.\d+)?$/.test(v) ? +v : v;
  }
  return p;
}

// UTF-8 size of a body, for the 64 KB keepalive budget.
export function wm_size(s) { return new Blob([s]).size; }
