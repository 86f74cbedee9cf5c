// The console's only way to the server: the JSON API under /api/v1/.
// The session cookie is HttpOnly; every write echoes the session's CSRF
// token in X-CSRF-Token, which the page learns from /api/v1/session.

let csrf = null;

export function setCsrf(token) {
  csrf = token;
}

/** Calls the API; resolves to {ok, status, data, etag} and never throws on HTTP errors. */
export async function api(method, path, body, opts = {}) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && csrf) headers['X-CSRF-Token'] = csrf;
  if (opts.ifMatch !== undefined && opts.ifMatch !== null) headers['If-Match'] = `"${opts.ifMatch}"`;
  let res;
  try {
    res = await fetch(`/api/v1${path}`, {
      method,
      headers,
      credentials: 'same-origin',
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
  } catch (e) {
    return { ok: false, status: 0, data: { error: `network error: ${e.message}` } };
  }
  let data = null;
  const text = await res.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { error: text };
    }
  }
  return { ok: res.ok, status: res.status, data, etag: res.headers.get('ETag') };
}

/** Encodes a flag or segment key for a path segment. */
export function keyPath(key) {
  return encodeURIComponent(key);
}
