// Overview: counters from GET stats, polled, turned into rates and small
// time series. Latency quantiles come from the histogram's buckets over the
// last interval (or since start before a second snapshot).

import { el, replace, table, sparkline, showError } from './ui.js';
import { api } from './api.js';

const INTERVAL_MS = 2000;
const KEEP = 60;

function sum(obj) { return Object.values(obj || {}).reduce((a, b) => a + b, 0); }

function rate(now, before, pick) {
  if (!before) return 0;
  const secs = (now.atMs - before.atMs) / 1000;
  return secs > 0 ? Math.max(0, pick(now) - pick(before)) / secs : 0;
}

/** The q quantile of cumulative buckets [[bound, count]], interpolated. */
export function quantile(buckets, q) {
  const total = buckets.length ? buckets[buckets.length - 1][1] : 0;
  if (total <= 0) return null;
  const rank = q * total;
  let lo = [0, 0];
  for (const [bound, count] of buckets) {
    if (count >= rank) {
      const inside = count - lo[1];
      return inside <= 0 ? bound : lo[0] + (bound - lo[0]) * (rank - lo[1]) / inside;
    }
    lo = [bound, count];
  }
  return lo[0];
}

function windowBuckets(now, before) {
  if (!before || !before.buckets.length) return now.buckets;
  return now.buckets.map(([b, c], i) => [b, c - ((before.buckets[i] || [b, 0])[1])]);
}

function ms(seconds) { return seconds === null || seconds === undefined ? '–' : (seconds * 1000).toFixed(seconds < 0.01 ? 1 : 0) + ' ms'; }
function perSec(v) { return v.toFixed(v < 10 ? 1 : 0) + '/s'; }

function tile(label, value, series, id) {
  return el('div', { class: 'tile', dataset: { metric: id } },
    el('div', { class: 'label' }, label),
    el('div', { class: 'value' }, value),
    series ? sparkline(series, label) : null);
}

export function render(main) {
  const history = [];
  const body = el('div', { id: 'overview-body' }, el('p', { class: 'empty' }, 'Loading…'));
  const status = el('span', { class: 'muted', id: 'overview-updated' });
  main.append(el('h1', {}, 'Overview ', status), body);

  const series = (fn) => history.map((s, i) => (i === 0 ? 0 : fn(s, history[i - 1])));

  function draw() {
    const now = history[history.length - 1];
    const before = history[history.length - 2];
    const sources = Object.entries(now.sources);
    const inRate = (s, b) => rate(s, b, (x) => sum(Object.values(x.sources).map((v) => v.accepted + sum(v.rejected))));
    const totals = sources.reduce((t, [, v]) => ({
      accepted: t.accepted + v.accepted,
      rejected: t.rejected + sum(v.rejected),
      duplicates: t.duplicates + v.duplicates,
      dropped: t.dropped + sum(v.dropped),
    }), { accepted: 0, rejected: 0, duplicates: 0, dropped: 0 });
    const top = el('div', { class: 'tiles' },
      tile('Events in', perSec(inRate(now, before)), series(inRate), 'events-in'),
      tile('Accepted', String(totals.accepted), series((s, b) => rate(s, b, (x) => sum(Object.values(x.sources).map((v) => v.accepted)))), 'accepted'),
      tile('Rejected', String(totals.rejected), series((s, b) => rate(s, b, (x) => sum(Object.values(x.sources).map((v) => sum(v.rejected))))), 'rejected'),
      tile('Duplicates', String(totals.duplicates), null, 'duplicates'),
      tile('Dropped on purpose', String(totals.dropped), null, 'dropped'),
      tile('Unknown write keys', String(now.unknownWriteKeys), null, 'unknown-keys'));

    const sourceRows = sources.map(([name, v]) => {
      const r = (s, b) => rate(s, b, (x) => { const y = x.sources[name]; return y ? y.accepted + sum(y.rejected) : 0; });
      const reasons = (o) => Object.entries(o).filter(([, n]) => n > 0).map(([k, n]) => k + ' ' + n).join(', ') || '0';
      return [name, perSec(r(now, before)), sparkline(series(r), name + ' events in'), String(v.accepted), reasons(v.rejected), String(v.duplicates), reasons(v.dropped)];
    });

    const destinationRows = Object.entries(now.destinations).map(([name, d]) => {
      const prev = before && before.destinations[name];
      const delivered = (s, b) => rate(s, b, (x) => (x.destinations[name] || {}).delivered || 0);
      const latency = windowBuckets(d.latency, prev && prev.latency);
      const windowed = quantile(latency, 0.5) !== null;
      const p50 = windowed ? quantile(latency, 0.5) : d.latency.p50Seconds;
      const p99 = windowed ? quantile(latency, 0.99) : d.latency.p99Seconds;
      return [name, perSec(delivered(now, before)), sparkline(series(delivered), name + ' delivered'),
        String(d.delivered), String(d.failed), String(d.retried), String(d.outboxDepth), String(d.deadLetters), String(d.held), ms(p50), ms(p99)];
    });

    replace(body, top,
      el('h2', {}, 'Sources'),
      table(['Source', 'In', 'Trend', 'Accepted', 'Rejected by reason', 'Duplicates', 'Dropped by reason'], sourceRows, 'No events yet: post one to /v1/track.'),
      el('h2', {}, 'Destinations'),
      table(['Destination', 'Delivered', 'Trend', 'Delivered total', 'Failed', 'Retried', 'Outbox', 'Dead letters', 'Held for consent', 'p50', 'p99'], destinationRows, 'No destinations configured.'));
    status.textContent = 'updated ' + new Date(now.atMs).toLocaleTimeString();
  }

  let stopped = false;
  async function tick() {
    if (stopped) return;
    try {
      const snap = await api('stats');
      if (stopped) return;
      history.push(snap);
      if (history.length > KEEP) history.shift();
      draw();
    } catch (e) {
      showError(e);
    }
  }
  tick();
  const timer = setInterval(tick, INTERVAL_MS);
  return () => { stopped = true; clearInterval(timer); };
}
