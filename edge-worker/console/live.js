// Live: the event stream, one row per event (messageId) gathering its
// stages; filters apply to what is kept; each row opens to the event's JSON
// at every stage, with the vendor's answer on failures.

import { el, replace, json, showError } from './ui.js';
import { stream } from './api.js';

const KEEP = 300;
const STAGE_LABEL = {
  transformed: 'transformed by source rules',
  accepted: 'received (validated, committed)',
  routed: 'routed',
  held: 'held for consent',
  delivered: 'delivered',
  failed: 'failed',
};

const FILTERS = [
  ['source', 'Source'],
  ['type', 'Type'],
  ['event', 'Event name'],
  ['visitor', 'Visitor'],
  ['destination', 'Destination'],
];

function matches(item, f) {
  const has = (v, want) => !want || (v || '').toLowerCase().includes(want.toLowerCase());
  if (!has(item.source, f.source) || !has(item.type, f.type) || !has(item.event, f.event) ) return false;
  // A visitor is found by any identifier the event carried at any stage.
  if (f.visitor && ![...item.ids].some((id) => has(id, f.visitor))) return false;
  if (f.destination && ![...item.destinations].some((d) => has(d, f.destination))) return false;
  if (f.outcome && !item.frames.some((fr) => fr.stage === f.outcome)) return false;
  return true;
}

function outcomes(item) {
  const byDest = new Map();
  for (const fr of item.frames) if (fr.destination) byDest.set(fr.destination, fr.stage);
  return [...byDest].map(([d, stage]) => el('span', { class: 'pill ' + stage, title: d + ': ' + stage }, d + ' ' + stage));
}

export function render(main) {
  const items = new Map();
  const filters = {};
  const state = el('span', { class: 'muted', id: 'live-state' }, 'connecting…');
  const list = el('div', { id: 'live-list', class: 'live-list' });
  const count = el('span', { class: 'muted', id: 'live-count' });
  const inputs = FILTERS.map(([key, label]) => el('label', {}, label,
    el('input', { name: key, dataset: { filter: key }, placeholder: 'any', on: { input: (e) => { filters[key] = e.target.value.trim(); draw(); } } })));
  const outcome = el('select', { name: 'outcome', dataset: { filter: 'outcome' }, on: { change: (e) => { filters.outcome = e.target.value; draw(); } } },
    el('option', { value: '' }, 'any'),
    Object.keys(STAGE_LABEL).map((s) => el('option', { value: s }, s)));
  main.append(el('h1', {}, 'Live ', state),
    el('form', { class: 'filters', on: { submit: (e) => e.preventDefault() } }, inputs, el('label', {}, 'Outcome', outcome)),
    count, list);

  function row(item) {
    const stages = item.frames.map((fr) => el('div', { class: 'stage' },
      el('h4', {}, STAGE_LABEL[fr.stage] || fr.stage, fr.destination ? ' → ' + fr.destination : '', ' · ', new Date(fr.at).toLocaleTimeString()),
      fr.error ? el('p', { class: 'vendor-answer' }, 'Vendor answer: ', fr.error) : null,
      json(fr.payload)));
    const details = el('details', { class: 'event', dataset: { messageId: item.messageId } },
      el('summary', {},
        el('span', { class: 'type' }, item.type || '?'),
        el('span', { class: 'name' }, item.event || ''),
        el('span', { class: 'muted' }, item.source || ''),
        el('span', { class: 'muted mono' }, item.visitorId || ''),
        outcomes(item)),
      stages);
    details.open = item.open;
    details.addEventListener('toggle', () => { item.open = details.open; });
    return details;
  }

  let pending = false;
  function draw() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      const shown = [...items.values()].reverse().filter((i) => matches(i, filters));
      replace(list, shown.length ? shown.map(row) : el('p', { class: 'empty' }, 'Waiting for events… post one and it appears here.'));
      count.textContent = shown.length + ' of ' + items.size + ' events';
    });
  }
  draw();

  const stop = stream((frame) => {
    const key = frame.messageId || ('no-id-' + Math.random());
    let item = items.get(key);
    if (!item) {
      item = { messageId: key, frames: [], destinations: new Set(), ids: new Set(), open: false };
      items.set(key, item);
      if (items.size > KEEP) items.delete(items.keys().next().value);
    }
    item.type = item.type || frame.type;
    item.event = item.event || frame.event;
    item.visitorId = item.visitorId || frame.visitorId;
    item.source = item.source || frame.source;
    const p = frame.payload || {};
    for (const id of [frame.visitorId, p.anonymousId, p.userId]) if (typeof id === 'string' && id) item.ids.add(id);
    if (frame.destination) item.destinations.add(frame.destination);
    item.frames.push({ ...frame, at: Date.now() });
    draw();
  }, (s) => {
    if (s instanceof Error) { showError(s); state.textContent = 'disconnected'; } else state.textContent = s;
  });
  return stop;
}
