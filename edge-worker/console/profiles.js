// Profiles: find a person by any identifier; their identifiers, traits and
// merge history with causes; split a merge, force a merge; export (with
// sessions) and delete, each audited; the audit log.

import { el, replace, json, time, table, guarded, confirmAction, notice } from './ui.js';
import { api } from './api.js';

const KINDS = [['userId', 'userId'], ['anonymousId', 'anonymousId'], ['visitorId', 'visitorId (cookie)'], ['profileId', 'profile id']];

function query(kind, value) { return kind + '=' + encodeURIComponent(value); }

export function render(main) {
  const kind = el('select', { name: 'kind', id: 'profile-kind' }, KINDS.map(([k, l]) => el('option', { value: k }, l)));
  const value = el('input', { name: 'value', id: 'profile-value', placeholder: 'user-42' });
  const result = el('div', { id: 'profile-result' });
  const audit = el('div', { id: 'audit-log' });
  main.append(el('h1', {}, 'Profiles'),
    el('form', { class: 'search', on: { submit: (e) => { e.preventDefault(); guarded(() => find(kind.value, value.value.trim())); } } },
      kind, value, el('button', { type: 'submit', id: 'profile-search' }, 'Find')),
    result, el('h2', {}, 'Audit log'), audit);

  async function loadAudit() {
    const { entries } = await api('privacy/audit?limit=50');
    replace(audit, table(['When', 'Actor', 'Action', 'Target', 'Detail'],
      entries.map((a) => [time(a.at), a.actor, a.action, el('span', { class: 'mono' }, a.target), el('span', { class: 'mono small' }, JSON.stringify(a.detail))]), 'No privacy actions yet.'));
  }

  async function find(k, v) {
    if (!v) return;
    const p = await api('profiles?' + query(k, v));
    show(p);
  }

  function show(p) {
    const other = el('input', { name: 'other', id: 'merge-other', placeholder: 'other profile id' });
    const reason = el('input', { name: 'reason', id: 'merge-reason', placeholder: 'reason (for the log)' });
    const exported = el('div', { id: 'profile-export' });
    const merges = p.merges.map((m) => [time(m.at), m.cause, el('span', { class: 'mono' }, m.absorbed + ' → ' + m.survivor), m.messageId || m.actor || '',
      el('span', { class: 'mono small' }, JSON.stringify(m.identifiers)),
      m.splitAt ? 'split ' + time(m.splitAt)
        : el('button', { type: 'button', class: 'split', on: { click: () => guarded(async () => {
          if (!await confirmAction('Split merge ' + m.id + '? Profile ' + m.absorbed + ' becomes separate from ' + m.survivor + ' again, with the identifiers it brought.', 'Split')) return;
          await api('profiles/' + encodeURIComponent(p.id) + '/split', { method: 'POST', body: { mergeId: m.id } });
          notice('Split merge ' + m.id + '.');
          await find('profileId', p.id).catch(() => replace(result));
          await loadAudit();
        }) } }, 'Split')]);
    replace(result, el('section', { class: 'profile', dataset: { profileId: p.id } },
      el('h2', {}, 'Profile ', el('span', { class: 'mono' }, p.id)),
      el('p', { class: 'muted' }, 'first seen ', time(p.firstSeen), ' · last seen ', time(p.lastSeen), ' · events ',
        Object.entries(p.eventCounts || {}).map(([k, n]) => k + ' ' + n).join(', ')),
      p.mergedIds.length ? el('p', { class: 'muted' }, 'merged ids: ', p.mergedIds.join(', ')) : null,
      el('h3', {}, 'Identifiers'),
      table(['Type', 'Value', 'First seen', 'Last seen'], p.identifiers.map((i) => [i.type, el('span', { class: 'mono' }, i.value), time(i.firstSeen), time(i.lastSeen)])),
      el('h3', {}, 'Traits'),
      table(['Trait', 'Value'], Object.entries(p.traits).map(([k, v]) => [k, el('span', { class: 'mono' }, JSON.stringify(v))]), 'No traits.'),
      el('h3', {}, 'Merge history'),
      table(['When', 'Cause', 'Merge', 'Event / actor', 'Identifiers', ''], merges, 'No merges.'),
      p.refusals.length ? [el('h3', {}, 'Refused links'), table(['When', 'Reason', 'Kept', 'Refused'], p.refusals.map((r) => [time(r.at), r.reason, r.kept, r.refused]))] : null,
      el('h3', {}, 'Actions'),
      el('div', { class: 'actions' },
        other, reason,
        el('button', { type: 'button', id: 'merge', on: { click: () => guarded(async () => {
          const o = other.value.trim();
          if (!o) return;
          if (!await confirmAction('Merge profile ' + o + ' into ' + p.id + '? Their identifiers and traits become one person.', 'Merge')) return;
          const merged = await api('profiles/merge', { method: 'POST', body: { profileIds: [p.id, o], reason: reason.value.trim() || undefined } });
          notice('Merged into ' + merged.id + '.');
          show(merged);
          await loadAudit();
        }) } }, 'Force merge')),
      el('div', { class: 'actions' },
        el('button', { type: 'button', id: 'export', on: { click: () => guarded(async () => {
          if (!await confirmAction('Export everything held on profile ' + p.id + '? The export is written to the audit log.', 'Export')) return;
          const data = await api('privacy/export?' + query('profileId', p.id));
          const url = URL.createObjectURL(new Blob([JSON.stringify(data, null, 2)], { type: 'application/json' }));
          replace(exported,
            el('h3', {}, 'Sessions'),
            table(['Identifier', 'Session', 'Events', 'Last activity'], (data.sessions || []).map((s) => [el('span', { class: 'mono' }, JSON.stringify(s.identifier)), String(s.sessionId), String(s.count), time(s.lastActivity)]), 'No sessions.'),
            el('p', {}, el('a', { href: url, download: 'waymark-export-' + p.id + '.json', id: 'export-download' }, 'Download the export (JSON)')),
            el('details', {}, el('summary', {}, 'Export JSON'), json(data)));
          await loadAudit();
        }) } }, 'Export'),
        el('button', { type: 'button', id: 'delete', class: 'danger', on: { click: () => guarded(async () => {
          if (!await confirmAction('Delete this person: profile ' + p.id + ', its ' + p.identifiers.length + ' identifiers, traits and undelivered events? Later events with these identifiers are dropped at ingest. This cannot be undone.', 'Delete person')) return;
          const r = await api('privacy/delete', { method: 'POST', body: { profileId: p.id } });
          replace(result, el('section', { class: 'deleted', id: 'delete-report' },
            el('h2', {}, 'Deleted ', el('span', { class: 'mono' }, r.profileId)),
            el('p', {}, `${r.identifiers} identifiers suppressed; ${r.outboxEvents} undelivered, ${r.heldEvents} held, ${r.deadLetters} dead-lettered and ${r.quarantined} quarantined events removed. Audit entry ${r.auditId}.`)));
          await loadAudit();
        }) } }, 'Delete person')),
      exported));
  }
  guarded(loadAudit);
}
