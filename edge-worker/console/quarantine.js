// Quarantine: events that failed validation, with their reason and raw
// payload; edit the payload and replay it, or replay it as it is (after a
// config change), each after confirming.

import { el, replace, time, guarded, confirmAction, notice, showError } from './ui.js';
import { api } from './api.js';

function pretty(raw) {
  try { return JSON.stringify(JSON.parse(raw), null, 2); } catch { return raw; }
}

export function render(main) {
  const body = el('div', { id: 'quarantine-body' }, el('p', { class: 'empty' }, 'Loading…'));
  main.append(el('h1', {}, 'Quarantine ',
    el('button', { type: 'button', id: 'quarantine-refresh', on: { click: () => guarded(load) } }, 'Refresh')), body);

  async function replay(entry, editor) {
    const edited = editor.value !== editor.defaultValue;
    let event;
    if (edited) {
      try { event = JSON.parse(editor.value); } catch (e) {
        showError(new Error('The edited event is not valid JSON: ' + e.message));
        return;
      }
    }
    const ok = await confirmAction(edited
      ? 'Replay quarantined event ' + entry.id + ' as edited? It runs through the pipeline again and, if valid, is delivered to its destinations.'
      : 'Replay quarantined event ' + entry.id + ' unchanged? It runs through the pipeline again with the current config.', 'Replay');
    if (!ok) return;
    const r = await api('quarantine/replay', { method: 'POST', body: edited ? { ids: [entry.id], event } : { ids: [entry.id] } });
    if (r.replayed.length) notice('Replayed event ' + entry.id + ': it passed and left the quarantine.');
    else if (r.still_invalid.length) showError({ problems: r.still_invalid.map((p) => ({ field: p.field || 'event ' + p.id, problem: 'still invalid: ' + p.problem })) });
    else notice('Nothing replayed: event ' + entry.id + ' is no longer in quarantine.');
    await load();
  }

  async function load() {
    const { events } = await api('quarantine?limit=200');
    if (!events.length) { replace(body, el('p', { class: 'empty' }, 'Nothing in quarantine.')); return; }
    replace(body, events.map((entry) => {
      const editor = el('textarea', { class: 'raw', rows: 8, spellcheck: false, 'aria-label': 'raw event ' + entry.id });
      editor.value = editor.defaultValue = pretty(entry.raw);
      return el('section', { class: 'quarantined', dataset: { id: String(entry.id) } },
        el('h3', {}, el('span', { class: 'reason' }, entry.reason), ' ', el('span', { class: 'muted' }, entry.source || '(unknown write key)', ' · ', time(entry.received_at_ms))),
        el('p', { class: 'detail' }, entry.detail),
        editor,
        el('div', { class: 'actions' },
          el('button', { type: 'button', class: 'replay', on: { click: () => guarded(() => replay(entry, editor)) } }, 'Replay')));
    }));
  }
  guarded(load);
}
