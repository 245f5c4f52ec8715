// The console shell: sign-in, navigation between pages, and the error banner.

import { el, replace, showError, guarded } from './ui.js';
import { session, signIn, signOut } from './api.js';
import * as overview from './overview.js';
import * as live from './live.js';
import * as destinations from './destinations.js';
import * as quarantine from './quarantine.js';
import * as profiles from './profiles.js';
import * as syncs from './syncs.js';

// Each page: its name, whether the live token may see it, and its module
// (`render(main)` returns a function that stops its timers and streams).
const PAGES = [
  { id: 'overview', title: 'Overview', admin: true, page: overview },
  { id: 'live', title: 'Live', admin: false, page: live },
  { id: 'destinations', title: 'Destinations', admin: true, page: destinations },
  { id: 'quarantine', title: 'Quarantine', admin: true, page: quarantine },
  { id: 'profiles', title: 'Profiles', admin: true, page: profiles },
  { id: 'syncs', title: 'Syncs', admin: true, page: syncs },
];

let stop = () => {};

function allowed() {
  const s = session();
  return PAGES.filter((p) => s && (s.role === 'admin' || !p.admin));
}

function route() {
  stop();
  stop = () => {};
  showError(null);
  const main = document.getElementById('main');
  const s = session();
  const nav = document.getElementById('nav');
  document.getElementById('signout').hidden = !s;
  document.getElementById('who').textContent = s ? (s.role === 'admin' ? 'admin' : 'live token: read-only') : '';
  if (!s) {
    replace(nav);
    renderSignIn(main);
    return;
  }
  const pages = allowed();
  const wanted = location.hash.replace(/^#/, '') || pages[0].id;
  const current = pages.find((p) => p.id === wanted) || pages[0];
  replace(nav, pages.map((p) => el('a', { href: '#' + p.id, class: p.id === current.id ? 'active' : '', 'aria-current': p.id === current.id ? 'page' : undefined }, p.title)));
  document.title = current.title + ' · Waymark console';
  main.dataset.page = current.id;
  replace(main);
  stop = current.page.render(main) || (() => {});
}

function renderSignIn(main) {
  main.dataset.page = 'signin';
  const input = el('input', { type: 'password', id: 'token', placeholder: 'wm_admin_…', name: 'token' });
  const submit = el('button', { type: 'submit', id: 'signin' }, 'Sign in');
  const form = el('form', { class: 'signin', on: { submit: (e) => {
    e.preventDefault();
    guarded(async () => {
      submit.disabled = true;
      try {
        await signIn(input.value.trim());
        location.hash = '';
        route();
      } finally {
        submit.disabled = false;
      }
    });
  } } },
  el('h1', {}, 'Waymark console'),
  el('p', {}, 'Sign in with the admin token, or the read-only live token to watch the live stream. The token is kept for this tab only.'),
  el('label', { htmlFor: 'token' }, 'Token'), input, submit);
  replace(main, form);
  input.focus();
}

document.getElementById('signout').addEventListener('click', () => {
  signOut();
  location.hash = '';
  route();
});
window.addEventListener('hashchange', route);
route();
