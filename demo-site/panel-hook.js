// Demo-only: records each batch the tag sends (fetch and sendBeacon to
// /v1/batch) for the live panel, and marks the first one for the
// time-to-first-event measure. Loaded before the snippet; not part of the tag.
(function () {
  var w = window, sent = (w.wmDemoSent = []);
  function seen(body, via) {
    if (!sent.length) {
      performance.mark("wm:first-event-sent");
      performance.measure("wm:time-to-first-event", "wm:script-start", "wm:first-event-sent");
    }
    var n = 0;
    try { n = JSON.parse(body).batch.length; } catch (e) {}
    sent.push({ via: via, events: n, at: Date.now() });
    w.dispatchEvent(new CustomEvent("wm-demo-sent", { detail: { body: body, via: via } }));
  }
  var f = w.fetch;
  w.fetch = function (url, init) {
    if (String(url).indexOf("/v1/batch") >= 0 && init && typeof init.body == "string") seen(init.body, "fetch");
    return f.apply(this, arguments);
  };
  var b = navigator.sendBeacon && navigator.sendBeacon.bind(navigator);
  if (b) navigator.sendBeacon = function (url, body) {
    if (String(url).indexOf("/v1/batch") >= 0 && typeof body == "string") seen(body, "beacon");
    return b(url, body);
  };
})();
