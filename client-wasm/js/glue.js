// The tag's JS<->wasm glue, hand-written (it replaces wasm-bindgen's
// generated glue in the shipped `bare` build; src/bind/raw.rs is the other
// side and lists the same letters). `cargo xtask build-tag` puts js/env.js
// in front of it, fills in the module name and minifies both as one ES
// module, which the loader imports.
//
// A JS value crosses as a handle: an index into H. Handles 0-3 are always
// undefined, null, true and false; freed slots are reused from F. Every
// operation that can run site code (getters, setters, toJSON, callbacks)
// goes through `safe`, which answers undefined instead of throwing: the tag
// never throws into the page.

var H = [undefined, null, true, false], F = [], X, E,
  dec = new TextDecoder(), enc = new TextEncoder();

// Arrow functions: the glue is an ES module, so ES2017 is given.
var add = (v) => {
  if (v === undefined) return 0;
  if (v === null) return 1;
  if (v === true) return 2;
  if (v === false) return 3;
  var h = F.length ? F.pop() : H.length;
  H[h] = v;
  return h;
};

var safe = (f) => (...a) => {
  try { return f(...a); } catch (e) { return 0; }
};

var bytes = () => new Uint8Array(X.memory.buffer);

var imports = {
  d: (h) => { if (h > 3) { H[h] = undefined; F.push(h); } },
  c: (h) => add(H[h]),
  s: (p, n) => add(dec.decode(bytes().subarray(p, p + n))),
  n: add,
  // 1 number, 2 string, 3 function, 4 object, 5 array, 6 date, 0 other.
  t: (h) => {
    var v = H[h], t = typeof v;
    return t == "number" ? 1 : t == "string" ? 2 : t == "function" ? 3
      : !v || t != "object" ? 0 : Array.isArray(v) ? 5 : v instanceof Date ? 6 : 4;
  },
  f: (h) => +H[h],
  b: (h) => !!H[h],
  q: (a, b) => H[a] === H[b],
  l: (h) => (E = enc.encode(H[h])).length,
  w: (p) => bytes().set(E, p),
  g: safe((o, k) => add(H[o][H[k]])),
  i: safe((o, i) => add(H[o][i])),
  p: safe((o, k, v) => { H[o][H[k]] = H[v]; }),
  o: () => add({}),
  a: () => add([]),
  u: (a, v) => { H[a].push(H[v]); },
  h: (a) => add(H[a].shift()),
  U: (a, v) => { H[a].unshift(H[v]); },
  L: (a) => H[a].length,
  N: (a, n) => { H[a].length = n; },
  S: (a, i, j) => add(H[a].slice(i, j)),
  C: (a, b) => add(H[a].concat(H[b])),
  A: safe((a, b) => add(Object.assign(H[a], H[b]))),
  K: (o) => { try { return add(Object.keys(H[o])); } catch (e) { return add([]); } },
  k: safe((f, v) => add(H[f](H[v]))),
  j: safe((v) => add(JSON.stringify(H[v]))),
  D: Date.now,
  P: (s) => Date.parse(H[s]),
  I: () => add(new Date().toISOString()),
  Z: safe((v) => (H[v] instanceof Date ? add(H[v].toISOString()) : 0)),
  M: Math.random,
  G: () => add(self),
  T: (v) => (typeof H[v] == "number" ? add(String(H[v])) : 0),
  W: (c, v) => { console.warn("waymark", H[c], H[v]); },
  O: (w, v) => { console.log("waymark", H[w], H[v]); },
  R: () => add((k, a) => { X.r(k, add(a)); })
};

// env.js's functions: handles in, the result back as a handle. build-tag
// writes __wm_env, which maps each import name (shortened to 0, 1, ...) to
// its env.js function.
for (let k in __wm_env) {
  let f = __wm_env[k];
  imports[k] = safe((...a) => add(f(...a.map((h) => H[h]))));
}

fetch(new URL("__WM_WASM__", import.meta.url))
  .then((r) => r.arrayBuffer())
  .then((b) => WebAssembly.instantiate(b, { e: imports }))
  .then((m) => { X = m.instance.exports; X.s(); })
  .catch(() => { var a = window.waymark; a && a.x && a.x(); });
