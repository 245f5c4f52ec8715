// The admin API, relative to the page (so the console works under a path prefix).

const KEY = 'waymark.console.token';
const ROLE = 'waymark.console.role';

/** An API error: the status and the problems the API named. */
export class ApiError extends Error {
  constructor(status, problems, text) {
    super(problems.length ? problems.map((p) => p.problem).join('; ') : text || 'HTTP ' + status);
    this.status = status;
    this.problems = problems;
  }
}

/** The token for this tab only (sessionStorage), and what it may do. */
export function session() {
  const token = sessionStorage.getItem(KEY);
  return token ? { token, role: sessionStorage.getItem(ROLE) || 'admin' } : null;
}

export function signOut() {
  sessionStorage.removeItem(KEY);
  sessionStorage.removeItem(ROLE);
}

async function fail(r) {
  const text = await r.text().catch(() => '');
  let problems = [];
  try { problems = JSON.parse(text).errors || []; } catch { /* not JSON */ }
  return new ApiError(r.status, problems, text.slice(0, 300));
}

/** Calls the admin API; throws ApiError on any non-2xx. */
export async function api(path, { method = 'GET', body, token } = {}) {
  const t = token || (session() || {}).token || '';
  const headers = { Authorization: 'Bearer ' + t, 'X-Waymark-Actor': 'console' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: 'no-store' });
  if (!r.ok) throw await fail(r);
  return r.json();
}

/** Signs in: the admin token reads everything, the live token only the stream. */
export async function signIn(token) {
  try {
    await api('stats', { token });
    sessionStorage.setItem(KEY, token);
    sessionStorage.setItem(ROLE, 'admin');
    return 'admin';
  } catch (e) {
    if (e.status !== 401) throw e;
  }
  const abort = new AbortController();
  const r = await fetch('live', { headers: { Authorization: 'Bearer ' + token }, signal: abort.signal });
  // Read a refusal's body before closing the request: aborting first would
  // lose the problems the API named.
  if (!r.ok) throw await fail(r);
  abort.abort();
  sessionStorage.setItem(KEY, token);
  sessionStorage.setItem(ROLE, 'live');
  return 'live';
}

/**
 * Reads the live stream (server-sent events over fetch, so the token goes in
 * a header, not the URL). Calls onFrame per frame; returns a stop function.
 */
export function stream(onFrame, onState) {
  const abort = new AbortController();
  (async () => {
    while (!abort.signal.aborted) {
      try {
        const r = await fetch('live', { headers: { Authorization: 'Bearer ' + session().token }, signal: abort.signal, cache: 'no-store' });
        if (!r.ok) throw await fail(r);
        onState('connected');
        const reader = r.body.getReader();
        const decoder = new TextDecoder();
        let buffer = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, { stream: true });
          let cut;
          while ((cut = buffer.indexOf('\n\n')) >= 0) {
            const block = buffer.slice(0, cut);
            buffer = buffer.slice(cut + 2);
            const data = block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trimStart()).join('\n');
            if (data) {
              try { onFrame(JSON.parse(data)); } catch { /* a frame that is not JSON is skipped */ }
            } else if (block.startsWith(': lagged') || block.startsWith(':lagged')) {
              onState('lagged: ' + block.replace(/^:\s*lagged\s*/, '') + ' frames skipped');
            }
          }
        }
        onState('reconnecting');
      } catch (e) {
        if (abort.signal.aborted) return;
        onState(e);
        if (e.status === 401) return;
      }
      await new Promise((res) => setTimeout(res, 1000));
    }
  })();
  return () => abort.abort();
}
