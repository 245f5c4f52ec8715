// The live panel: what the tag sends (from panel-hook.js) and what the
// worker does with it (the admin live stream, server-sent events). The
// stream is read with the demo's read-only token; when it is not there the
// panel says so and still shows what the tag sent.
(function () {
  var list = document.getElementById("live"), status = document.getElementById("live-status");
  function add(cls, text) {
    var li = document.createElement("li");
    li.className = cls;
    li.textContent = text;
    list.insertBefore(li, list.firstChild);
    while (list.children.length > 40) list.removeChild(list.lastChild);
  }
  function name(e) { return e.type + (e.event ? " “" + e.event + "”" : e.name ? " " + e.name : ""); }

  window.addEventListener("wm-demo-sent", function (e) {
    try {
      JSON.parse(e.detail.body).batch.forEach(function (ev) { add("sent", "tag → " + name(ev) + " (" + e.detail.via + ")"); });
    } catch (err) {}
    showPerf();
  });

  function showPerf() {
    var m = performance.getEntriesByName("wm:time-to-first-event")[0];
    if (m) document.getElementById("perf").textContent = "time to first event: " + Math.round(m.duration) + " ms";
  }

  var opened = false;
  function unavailable() {
    status.textContent = "live stream unavailable: showing what the tag sends";
  }
  if (!window.EventSource) return unavailable();
  var es = new EventSource("/admin/live?token=wm_live_demo");
  es.onopen = function () { opened = true; status.textContent = "live stream connected"; };
  es.onmessage = function (m) {
    try {
      var d = JSON.parse(m.data);
      add("stage " + d.stage, (d.stage || "?") + ": " + (d.type || "") + (d.event ? " “" + d.event + "”" : "") +
        (d.destination ? " → " + d.destination : ""));
    } catch (err) {}
  };
  es.onerror = function () {
    // Never connected (no endpoint yet, 404): give up quietly. A stream
    // that was open reconnects by itself.
    if (!opened || es.readyState === 2) { es.close(); unavailable(); }
    else status.textContent = "live stream reconnecting…";
  };
})();
