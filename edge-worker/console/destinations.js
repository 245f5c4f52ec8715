// Destinations: health from two stats snapshots, dead letters with their
// last error, and replay of all or the selected ones (after confirming).

import { el, replace, json, time, table, guarded, confirmAction, notice } from './ui.js';
import { api } from './api.js';

function health(now, before) {
  const failing = before && now.failed > before.failed && now.delivered === before.delivered;
  if (failing) return ['failing', 'Failing: attempts fail and nothing was delivered in the last few seconds'];
  if (now.deadLetters > 0) return ['attention', 'Has dead letters: replay them once the cause is fixed'];
  if (now.outboxDepth > 0) return ['backlog', 'Delivering a backlog of ' + now.outboxDepth];
  return ['healthy', 'Healthy'];
}

export function render(main) {
  const body = el('div', { id: 'destinations-body' }, el('p', { class: 'empty' }, 'Loading…'));
  main.append(el('h1', {}, 'Destinations'), body);
  const panels = new Map();
  let previous = null;
  let stopped = false;

  function panel(name) {
    if (panels.has(name)) return panels.get(name);
    const status = el('span', { class: 'health' });
    const numbers = el('span', { class: 'muted' });
    const letters = el('div', { class: 'letters' });
    const section = el('section', { class: 'destination', dataset: { destination: name } },
      el('h2', {}, name, ' ', status), numbers, letters);
    const p = { section, status, numbers, letters, loaded: -1 };
    panels.set(name, p);
    return p;
  }

  async function loadLetters(name, p) {
    const { deadLetters } = await api('dlq?destination=' + encodeURIComponent(name) + '&limit=500');
    p.loaded = deadLetters.length;
    if (!deadLetters.length) { replace(p.letters, el('p', { class: 'empty' }, 'No dead letters.')); return; }
    const boxes = deadLetters.map((d) => el('input', { type: 'checkbox', dataset: { id: String(d.id) }, 'aria-label': 'select dead letter ' + d.id }));
    const replay = async (ids) => {
      const n = ids ? ids.length : deadLetters.length;
      if (!n) return;
      const ok = await confirmAction('Replay ' + n + ' dead letter' + (n === 1 ? '' : 's') + ' to ' + name + '? They go back to its outbox and are delivered again.', 'Replay ' + n);
      if (!ok) return;
      const r = await api('dlq/replay', { method: 'POST', body: ids ? { destination: name, ids } : { destination: name } });
      notice('Replayed ' + r.replayed + ' dead letter' + (r.replayed === 1 ? '' : 's') + ' to ' + name + '.');
      await loadLetters(name, p);
    };
    replace(p.letters,
      el('div', { class: 'actions' },
        el('button', { type: 'button', class: 'replay-selected', on: { click: () => guarded(() => replay(boxes.filter((b) => b.checked).map((b) => Number(b.dataset.id)))) } }, 'Replay selected'),
        el('button', { type: 'button', class: 'replay-all danger', on: { click: () => guarded(() => replay(null)) } }, 'Replay all ' + deadLetters.length)),
      table(['', 'Dead-lettered', 'Source', 'messageId', 'Attempts', 'Last error', 'Event'],
        deadLetters.map((d, i) => [boxes[i], time(d.failed_at_ms ?? d.failedAtMs), d.source, el('span', { class: 'mono' }, d.message_id ?? d.messageId), String(d.attempts), el('span', { class: 'error-text' }, d.reason),
          el('details', {}, el('summary', {}, 'JSON'), json(d.event))])));
  }

  async function tick() {
    const snap = await api('stats');
    if (stopped) return;
    const names = Object.keys(snap.destinations);
    if (!names.length) { replace(body, el('p', { class: 'empty' }, 'No destinations configured.')); return; }
    if (!body.querySelector('section')) replace(body);
    for (const name of names) {
      const d = snap.destinations[name];
      const p = panel(name);
      if (!p.section.isConnected) body.append(p.section);
      const [cls, text] = health(d, previous && previous.destinations[name]);
      p.status.className = 'health ' + cls;
      p.status.textContent = text;
      p.numbers.textContent = `delivered ${d.delivered} · failed ${d.failed} · retried ${d.retried} · outbox ${d.outboxDepth} · dead letters ${d.deadLetters} · held ${d.held}`;
      if (p.loaded < 0 || p.loaded !== d.deadLetters) await loadLetters(name, p);
    }
    previous = snap;
  }
  guarded(tick);
  const timer = setInterval(() => guarded(tick), 3000);
  return () => { stopped = true; clearInterval(timer); };
}
