// DOM helpers. Event data is attacker-controlled: it is only ever written
// with text nodes (textContent), never parsed as HTML.

/** el('div', {class: 'x', on: {click: f}}, 'text', child, [more]) */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'on') for (const [ev, f] of Object.entries(value)) node.addEventListener(ev, f);
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else if (['value', 'checked', 'disabled', 'open', 'hidden', 'type', 'placeholder', 'title', 'name', 'id', 'htmlFor', 'rows', 'spellcheck', 'download', 'href', 'selected'].includes(key)) node[key] = value;
    else if (key.startsWith('aria-')) node.setAttribute(key, String(value));
    else throw new Error('el: attribute not allowed: ' + key);
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(node, c);
    else if (c instanceof Node) node.appendChild(c);
    else node.appendChild(document.createTextNode(String(c)));
  }
}

/** Replaces the children of `node`. */
export function replace(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

/** Pretty JSON in a <pre>, as text. */
export function json(value) {
  let text;
  try { text = typeof value === 'string' ? JSON.stringify(JSON.parse(value), null, 2) : JSON.stringify(value, null, 2); }
  catch { text = String(value); }
  return el('pre', { class: 'json' }, text);
}

/** A table from headers and rows of cells. */
export function table(headers, rows, empty = 'Nothing here yet.') {
  if (!rows.length) return el('p', { class: 'empty' }, empty);
  return el('table', {},
    el('thead', {}, el('tr', {}, headers.map((h) => el('th', {}, h)))),
    el('tbody', {}, rows.map((r) => el('tr', {}, r.map((c) => el('td', {}, c))))));
}

/** Shows an error (or clears it with null). Never swallowed. */
export function showError(error) {
  const banner = document.getElementById('banner');
  if (!error) { banner.hidden = true; banner.replaceChildren(); return; }
  const lines = error.problems && error.problems.length
    ? error.problems.map((p) => (p.field ? p.field + ': ' : '') + p.problem)
    : [String(error.message || error)];
  const head = error.status ? 'The API answered ' + error.status + ': ' : 'Error: ';
  replace(banner, el('strong', {}, head), lines.join('; '),
    el('button', { type: 'button', class: 'close', 'aria-label': 'Dismiss', on: { click: () => showError(null) } }, '×'));
  banner.hidden = false;
}

/** Shows a short notice of what an action did. */
export function notice(text) {
  const banner = document.getElementById('banner');
  replace(banner, el('span', { class: 'ok' }, text),
    el('button', { type: 'button', class: 'close', 'aria-label': 'Dismiss', on: { click: () => showError(null) } }, '×'));
  banner.hidden = false;
}

/** Asks before doing: resolves true only when the operator confirms. */
export function confirmAction(text, verb = 'Confirm') {
  const dialog = document.getElementById('confirm');
  document.getElementById('confirm-text').textContent = text;
  const ok = document.getElementById('confirm-ok');
  const cancel = document.getElementById('confirm-cancel');
  ok.textContent = verb;
  return new Promise((resolve) => {
    const done = (answer) => {
      ok.removeEventListener('click', yes);
      cancel.removeEventListener('click', no);
      dialog.removeEventListener('cancel', no);
      dialog.close();
      resolve(answer);
    };
    const yes = () => done(true);
    const no = () => done(false);
    ok.addEventListener('click', yes);
    cancel.addEventListener('click', no);
    dialog.addEventListener('cancel', no);
    dialog.showModal();
  });
}

/** Runs an async action, showing its error instead of losing it. */
export async function guarded(action) {
  try { return await action(); } catch (e) { showError(e); return undefined; }
}

/** A time from Unix ms or RFC 3339, in local time. */
export function time(value) {
  if (value === undefined || value === null || value === '') return '';
  const d = new Date(value);
  return isNaN(d) ? String(value) : d.toLocaleString();
}

/** An SVG sparkline of `values` (numbers), built with DOM calls. */
export function sparkline(values, label) {
  const ns = 'http://www.w3.org/2000/svg';
  const w = 160, h = 36;
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', `0 0 ${w} ${h}`);
  svg.setAttribute('width', String(w));
  svg.setAttribute('height', String(h));
  svg.setAttribute('class', 'spark');
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', label);
  const max = Math.max(1e-9, ...values);
  const step = values.length > 1 ? w / (values.length - 1) : w;
  const points = values.map((v, i) => `${(i * step).toFixed(1)},${(h - 2 - (v / max) * (h - 4)).toFixed(1)}`);
  const line = document.createElementNS(ns, 'polyline');
  line.setAttribute('points', points.join(' ') || `0,${h - 2} ${w},${h - 2}`);
  line.setAttribute('fill', 'none');
  line.setAttribute('stroke', 'currentColor');
  line.setAttribute('stroke-width', '1.5');
  svg.appendChild(line);
  return svg;
}
