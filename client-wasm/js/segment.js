/* Waymark's analytics.js drop-in, served as /wm/segment.<hash>.js. The
 * loader adds it only when the tag is installed under another global name
 * (`analytics` for sites moving from Segment), so pages on `waymark` never
 * pay for it. ES5, shipped as written.
 *
 * It replaces `window[<name>]`, the queue Segment's snippet made, with an
 * object carrying analytics.js's methods, replays what the snippet queued,
 * and turns every call into a call on the tag's own queue (`waymark`).
 * Reads (`user()`, `group()`) come from the tag's localStorage keys.
 * Source middleware runs on each event through the tag's `o.mw` hook;
 * destination and integration middleware and plugins do not apply (there
 * are no device-mode destinations) and are ignored with a console warning.
 */
(function (w, d) {
  var a = w.waymark, G = a.g, old = w[G] || [], L = w.localStorage, on = {}, mw = [], api, T = 300;
  function get(k) { try { var v = L.getItem(k); return v ? JSON.parse(v) : null; } catch (e) { return null; } }
  function put(k, v) { try { v == null ? L.removeItem(k) : L.setItem(k, JSON.stringify(v)); } catch (e) {} }
  function send(m, x) { a.push([m, x]); a.h && a.h(); return api; }
  function warn(m) { w.console && console.warn("waymark: analytics." + m + " is accepted and ignored: Waymark runs no destinations in the browser"); return api; }
  function emit(n, x) {
    (on[n] || []).slice().forEach(function (f) { try { f.apply(api, x); } catch (e) {} });
  }
  // An event method: the snippet's page context (`__t: "bpc"`) is dropped,
  // and the listeners run once the tag has queued the event.
  function ev(m) {
    return function () {
      var x = [].slice.call(arguments).filter(function (v) { return !(v && v.__t == "bpc"); }), cb, i;
      for (i = 0; i < x.length; i++) if (typeof x[i] == "function") { cb = x.splice(i, 1)[0]; break; }
      if (m == "group" && !x.length) return grp;
      if (m == "group" && x[1] && typeof x[1] == "object") put("wm_gt", Object.assign(get("wm_gt") || {}, x[1]));
      x.push(function (e) {
        var p = e.properties;
        emit(m, m == "track" ? [e.event, p] : m == "page" || m == "screen" ? [e.category, e.name, p]
          : m == "alias" ? [e.userId, e.previousId] : [m == "group" ? e.groupId : e.userId, e.traits]);
        cb && cb(e);
      });
      return send(m, x);
    };
  }
  // trackLink / trackForm: track on click or submit, then follow the link or
  // submit the form once the event is queued (at most 300 ms later).
  function bind(form) {
    return function (els, name, props) {
      if (!els) return api;
      els = els.nodeType ? [els] : [].slice.call(els);
      els.forEach(function (el) {
        el.addEventListener(form ? "submit" : "click", function (e) {
          var val = function (v) { return typeof v == "function" ? v(el) : v; }, go, t, href = !form && (el.getAttribute("href") || el.getAttribute("xlink:href"));
          if (form) { e.preventDefault(); go = function () { el.submit(); }; }
          else if (href && el.target != "_blank" && !e.metaKey && !e.ctrlKey && !e.shiftKey && !e.defaultPrevented) {
            e.preventDefault(); go = function () { location.href = el.href; };
          }
          var once = function () { clearTimeout(t); go && go(); go = 0; };
          if (go) t = setTimeout(once, T);
          api.track(val(name), val(props), once);
        });
      });
      return api;
    };
  }
  var user = {
    id: function () { return get("wm_uid"); },
    anonymousId: function (v) { if (v != null) api.setAnonymousId(v); return mkid(); },
    traits: function () { return get("wm_ut") || {}; }
  };
  var grp = {
    id: function () { return get("wm_gid"); },
    traits: function () { return get("wm_gt") || {}; }
  };
  // The tag's anonymousId, made here when the tag has not started yet.
  function mkid() {
    var v = get("wm_aid");
    if (!v && w.crypto && crypto.randomUUID) put("wm_aid", v = crypto.randomUUID());
    return v;
  }
  // Source middleware, Segment's shape: f({payload: {obj}, integrations, next}).
  // `next` must be called before f returns; an event it drops (next(null),
  // or no call) is not sent.
  a.o.mw = function (e) {
    var i = 0, out = null;
    function next(p) {
      var f = mw[i++];
      if (!f) { out = p && p.obj; return; }
      if (!p) return;
      try { f({ payload: p, integrations: p.obj.integrations || {}, next: next }); } catch (x) { out = p.obj; }
    }
    if (!mw.length) return e;
    next({ obj: e });
    return out;
  };
  api = w[G] = {
    initialized: true, invoked: true, initialize: function () { return api; }, VERSION: "waymark",
    load: function () { return api; },
    page: ev("page"), screen: ev("screen"), track: ev("track"), identify: ev("identify"), group: ev("group"), alias: ev("alias"),
    pageview: function (url) { return api.page({ path: url }); },
    trackLink: bind(0), trackClick: bind(0), trackForm: bind(1), trackSubmit: bind(1),
    reset: function () { put("wm_gt"); return send("reset", []); },
    ready: function (f) { return send("ready", [function () { emit("ready", []); typeof f == "function" && f(); }]); },
    debug: function (v) { return send("debug", [v]); },
    setAnonymousId: function (v) { if (v != null) { put("wm_aid", "" + v); send("anon", ["" + v]); } return api; },
    user: function () { return user; },
    on: function (n, f) { (on[n] = on[n] || []).push(f); return api; },
    once: function (n, f) { var g = function () { api.off(n, g); f.apply(api, arguments); }; return api.on(n, g); },
    off: function (n, f) { on[n] = (on[n] || []).filter(function (g) { return g != f; }); return api; },
    addSourceMiddleware: function (f) { typeof f == "function" && mw.push(f); return api; },
    addDestinationMiddleware: function () { return warn("addDestinationMiddleware"); },
    addIntegrationMiddleware: function () { return warn("addIntegrationMiddleware"); },
    register: function () { return warn("register"); }
  };
  // What the snippet queued, in order: [method, ...args].
  for (var i = 0; i < old.length; i++) {
    var c = old[i], f = c && api[c[0]];
    if (typeof f == "function") f.apply(api, [].slice.call(c, 1));
  }
})(window, document);
