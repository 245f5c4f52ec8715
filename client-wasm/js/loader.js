/* Waymark loader, served as /wm.js (short-cached). `cargo xtask build-tag`
 * fills in the content-hashed glue name. ES5 on purpose: it must run, and
 * fail quietly, in any browser.
 *
 * It defines `window.waymark` (unless the inline snippet did): an array
 * queueing [method, args] with the API as stubs. Settings come from
 * `waymark.o` or the script's data-* attributes (data-write-key,
 * data-host, data-flush-at, data-flush-interval, data-wait-for-consent,
 * data-auto-capture, data-debug). It then loads the glue as a module; the
 * glue loads the wasm, which drains the queue. If that cannot happen (no
 * WebAssembly, no modules, blocked, 404), `waymark.x` takes over: queued
 * and later calls are sent as minimal events, or kept queued while
 * waitForConsent is set. No error reaches the page either way.
 *
 * The analytics.js drop-in: with `global` (`data-global`, or Segment's
 * `data-global-segment-analytics-key`) naming another global, or when
 * Segment's own snippet loaded this file (`window.analytics` is its queue),
 * the loader also adds `wm/__WM_SEGMENT__` (js/segment.js), which puts
 * analytics.js's methods on that global and replays its queue; the write
 * key defaults to the snippet's `_writeKey`.
 */
(function (w, d) {
  var s = d.currentScript, a = w.waymark = w.waymark || [], o = a.o = a.o || {}, ds = (s && s.dataset) || {}, k, G, S = w.analytics;
  if (a.l) return;
  a.l = 1;
  G = o.global || ds.global || ds.globalSegmentAnalyticsKey || (!a.m && S && S.invoked && !S.initialized && "analytics");
  if (!a.m) {
    a.m = 1;
    var f = function (m) { return function () { a.push([m, [].slice.call(arguments)]); a.h && a.h(); }; };
    "page track identify group alias reset ready debug".split(" ").forEach(function (m) { a[m] = f(m); });
    a.consent = { set: f("consent.set"), onChange: f("consent.onChange"), get: function () { return a.c; } };
  }
  for (k in ds) if (!(k in o)) o[k] = ds[k];
  var src = (s && s.src) || location.href, base = src.replace(/[^\/]*([?#].*)?$/, "") + "wm/";
  if (o.host == null) o.host = src.replace(/^(\w+:\/\/[^\/]+).*$/, "$1");
  if (G && G != "waymark") {
    a.g = G;
    if (o.writeKey == null) o.writeKey = (w[G] || {})._writeKey;
    k = d.createElement("script");
    k.src = base + "__WM_SEGMENT__";
    d.head.appendChild(k);
  }

  // The fallback sender: minimal Segment events, no consent logic.
  a.x = function () {
    if (a.f) return;
    a.f = 1;
    a.h = function () {
      try {
        var b = [], c, e, t, x, id, L = localStorage, uid = function () {
          return crypto.randomUUID ? crypto.randomUUID() : (Math.random() + "").slice(2) + Date.now();
        };
        if (o.waitForConsent != null && o.waitForConsent !== false && o.waitForConsent !== "false") return;
        try { id = JSON.parse(L.wm_aid); } catch (_) {}
        if (!id) { id = uid(); try { L.wm_aid = JSON.stringify(id); } catch (_) {} }
        while ((c = a.shift())) {
          t = c[0]; e = c[1] || [];
          if (!/^(page|track|identify|group|alias)$/.test(t)) continue;
          var s0 = typeof e[0] == "string" ? e[0] : void 0, ob = e.filter(function (v) { return v && typeof v == "object"; })[0] || {};
          x = { type: t, messageId: uid(), anonymousId: id, timestamp: new Date().toISOString(),
            context: { library: { name: "waymark-tag", version: "fallback" },
              page: { url: location.href, path: location.pathname, search: location.search, title: d.title, referrer: d.referrer } } };
          if (t == "track") { x.event = s0; x.properties = ob; }
          else if (t == "page") { x.name = s0; x.properties = ob; }
          else if (t == "alias") { x.userId = s0; x.previousId = e[1]; }
          else { x[t == "group" ? "groupId" : "userId"] = s0; x.traits = ob; }
          b.push(x);
        }
        if (b.length) fetch(o.host + "/v1/batch", { method: "POST", keepalive: true,
          body: JSON.stringify({ batch: b, writeKey: o.writeKey, sentAt: new Date().toISOString() }) })["catch"](function () {});
      } catch (_) {}
    };
    a.h();
  };

  if (!w.WebAssembly || !("noModule" in d.createElement("script"))) return a.x();
  var g = d.createElement("script");
  g.type = "module";
  g.src = base + "__WM_GLUE__";
  g.onerror = a.x;
  d.head.appendChild(g);
})(window, document);
