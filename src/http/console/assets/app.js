// The flagstaff admin console: hash-routed pages over the JSON API, kept
// current by the change feed (Server-Sent Events from flagstaff:changes).
import { api, keyPath, setCsrf } from './api.js';
import { flagEditor, h, lineDiff, segmentEditor } from './editor.js';

const main = document.getElementById('main');
const state = { me: null, feed: null, page: null, available: {} };

function toast(text, bad = false) {
  const box = document.getElementById('toast');
  const el = h('div', { class: bad ? 'bad' : '' }, text);
  box.append(el);
  setTimeout(() => el.remove(), bad ? 8000 : 4000);
}

function errorText(res) {
  return (res.data && res.data.error) || `HTTP ${res.status}`;
}

function fmtTime(ts) {
  if (!ts) return '';
  const d = new Date(ts);
  return Number.isNaN(d.getTime()) ? String(ts) : d.toLocaleString();
}

const can = (what) => !!(state.me && state.me.can && state.me.can[what]);

// ---------- session ----------

async function boot() {
  const res = await api('GET', '/session');
  if (res.status === 401 || res.status === 403) return showLogin(res.status === 403 ? errorText(res) : '');
  if (!res.ok) { main.replaceChildren(h('p', { class: 'error' }, errorText(res))); return; }
  state.me = res.data;
  setCsrf(res.data.csrf);
  document.getElementById('user').textContent = state.me.user;
  document.getElementById('who').hidden = false;
  const nav = document.getElementById('nav');
  nav.hidden = false;
  nav.querySelectorAll('[data-needs]').forEach((a) => { a.hidden = a.dataset.needs !== 'experiments' && !can(a.dataset.needs); });
  // Panels whose commands this build lacks (501) stay hidden.
  api('GET', '/experiments').then((r) => { nav.querySelector('[data-needs="experiments"]').hidden = !r.ok; });
  document.body.classList.toggle('viewer', !can('write'));
  openFeed();
  route();
}

function showLogin(message) {
  document.getElementById('nav').hidden = true;
  document.getElementById('who').hidden = true;
  closeFeed();
  const err = h('div', { class: 'error', role: 'alert', id: 'login-error' }, message || '');
  const user = h('input', { type: 'text', id: 'login-user', name: 'username', autocomplete: 'username', required: true });
  const pass = h('input', { type: 'password', id: 'login-password', name: 'password', autocomplete: 'current-password' });
  const form = h('form', { 'aria-label': 'Log in', onSubmit: async (e) => {
    e.preventDefault();
    err.textContent = '';
    const res = await api('POST', '/login', { user: user.value, password: pass.value });
    if (!res.ok) { err.textContent = errorText(res); pass.value = ''; pass.focus(); return; }
    setCsrf(res.data.csrf);
    boot();
  } },
  h('label', { for: 'login-user' }, 'User', user),
  h('label', { for: 'login-password' }, 'Password', pass),
  h('button', { type: 'submit', class: 'primary' }, 'Log in'), err);
  main.replaceChildren(h('div', { class: 'card login' }, h('h1', {}, 'Log in to flagstaff'),
    h('p', { class: 'muted' }, 'Use an ACL user (the same users redis-cli AUTH takes).'), form));
  user.focus();
}

document.getElementById('logout').addEventListener('click', async () => {
  await api('POST', '/logout');
  state.me = null;
  setCsrf(null);
  location.hash = '#/flags';
  showLogin('Logged out.');
});

// ---------- live feed ----------

function openFeed() {
  closeFeed();
  const es = new EventSource('/api/v1/changes');
  const dot = document.getElementById('live');
  es.addEventListener('open', () => dot.classList.add('on'));
  es.addEventListener('error', () => dot.classList.remove('on'));
  es.addEventListener('change', (e) => {
    let ev;
    try { ev = JSON.parse(e.data); } catch { return; }
    if (state.page && state.page.onChange) state.page.onChange(ev);
  });
  es.addEventListener('end', () => { es.close(); dot.classList.remove('on'); boot(); });
  state.feed = es;
}

function closeFeed() {
  if (state.feed) state.feed.close();
  state.feed = null;
}

// ---------- routing ----------

window.addEventListener('hashchange', () => { if (state.me) route(); });

function route() {
  const hash = decodeURIComponent(location.hash.replace(/^#\/?/, ''));
  const [page, ...rest] = hash.split('/');
  const arg = rest.join('/');
  document.querySelectorAll('#nav a').forEach((a) => {
    if (a.getAttribute('href') === `#/${page || 'flags'}` || (page === 'flag' && a.getAttribute('href') === '#/flags')) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  });
  state.page = null;
  const pages = { flags: flagList, flag: flagPage, new: () => flagPage(null), segments: segmentsPage, segment: segmentPage, experiments: experimentsPage, cluster: clusterPage, users: usersPage };
  (pages[page] || flagList)(arg);
  main.focus({ preventScroll: true });
}

// ---------- flag list ----------

async function flagList() {
  const search = h('input', { type: 'search', id: 'flag-search', placeholder: 'key contains…' });
  const env = h('select', { id: 'flag-env' }, h('option', { value: '' }, 'all environments'));
  const tag = h('input', { type: 'text', id: 'flag-tag', placeholder: 'tag' });
  const body = h('tbody');
  const table = h('table', { class: 'flags' }, h('caption', { class: 'muted' }, ''),
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Key'), h('th', { scope: 'col' }, 'Description'), h('th', { scope: 'col' }, 'State'),
      h('th', { scope: 'col' }, 'Updated'), h('th', { scope: 'col' }, 'Last evaluated'), h('th', { scope: 'col' }, can('write') ? 'Kill switch' : ''))), body);
  main.replaceChildren(
    h('div', { class: 'row' }, h('h1', {}, 'Flags'), can('write') ? h('a', { href: '#/new', class: 'button primary', 'data-edit': 'new', id: 'new-flag' }, 'New flag') : null),
    h('div', { class: 'card row', role: 'search' },
      h('label', { for: 'flag-search' }, 'Search', search), h('label', { for: 'flag-env' }, 'Environment', env), h('label', { for: 'flag-tag' }, 'Tag', tag)),
    table);
  let flags = [];
  let stale = null;
  let stats = {};
  const load = async () => {
    const all = [];
    let cursor = '0';
    do {
      const q = new URLSearchParams({ cursor, count: '500' });
      if (tag.value.trim()) q.set('tag', tag.value.trim());
      const res = await api('GET', `/flags?${q}`);
      if (!res.ok) { body.replaceChildren(h('tr', {}, h('td', { colspan: 6, class: 'error' }, errorText(res)))); return; }
      all.push(...res.data.flags);
      cursor = res.data.cursor;
    } while (cursor !== '0' && all.length < 5000);
    flags = all.sort((a, b) => a.key.localeCompare(b.key));
    const envs = [...new Set(flags.map((f) => (f.key.includes(':') ? f.key.split(':')[0] : '')).filter(Boolean))];
    const cur = env.value;
    env.replaceChildren(h('option', { value: '' }, 'all environments'), ...envs.map((e) => h('option', { value: e, selected: e === cur }, e)));
    render();
    if (stale === null) {
      const s = await api('GET', '/stale');
      stale = s.ok ? new Set((Array.isArray(s.data) ? s.data : Object.keys(s.data || {})).map((x) => (typeof x === 'string' ? x : x.key))) : new Set();
      state.available.stats = s.ok;
      render();
      if (s.ok) {
        for (const f of flags.slice(0, 50)) {
          const r = await api('GET', `/flags/${keyPath(f.key)}/stats`);
          if (r.ok) { stats[f.key] = r.data; render(); }
        }
      }
    }
  };
  const render = () => {
    const q = search.value.trim().toLowerCase();
    const shown = flags.filter((f) => (!q || f.key.toLowerCase().includes(q) || (f.description || '').toLowerCase().includes(q))
      && (!env.value || f.key.startsWith(`${env.value}:`)));
    table.querySelector('caption').textContent = `${shown.length} of ${flags.length} flags`;
    body.replaceChildren(...shown.map((f) => {
      const last = stats[f.key] && (stats[f.key].last_evaluated || stats[f.key].last_seen);
      return h('tr', { 'data-key': f.key },
        h('td', {}, h('a', { href: `#/flag/${encodeURIComponent(f.key)}` }, f.key), ' ', (f.tags || []).map((t) => h('span', { class: 'badge tag' }, t))),
        h('td', {}, f.description || ''),
        h('td', {}, h('span', { class: `badge ${f.on ? 'on' : 'off'}`, 'data-state': f.on ? 'on' : 'off' }, f.on ? 'ON' : 'OFF'),
          stale && stale.has(f.key) ? h('span', { class: 'badge stale', title: 'Not evaluated, or serving one variation, for a while' }, ' stale') : null),
        h('td', {}, h('span', {}, fmtTime(f.updated_at)), h('br'), h('span', { class: 'muted' }, f.updated_by || '')),
        h('td', {}, last ? fmtTime(last) : h('span', { class: 'muted' }, state.available.stats ? 'never' : '—')),
        h('td', {}, can('write') && f.on ? h('button', { type: 'button', class: 'danger', 'data-edit': 'kill', 'aria-label': `Kill switch: turn ${f.key} off`, onClick: () => killSwitch(f.key, load) }, 'Turn off') : null,
          can('write') && !f.on ? h('button', { type: 'button', 'data-edit': 'turn-on', 'aria-label': `Turn ${f.key} on`, onClick: () => toggle(f.key, true, '', load) }, 'Turn on') : null));
    }));
  };
  search.addEventListener('input', render);
  env.addEventListener('change', render);
  tag.addEventListener('change', load);
  state.page = { onChange: (ev) => { if (ev.kind === 'flag') load(); } };
  await load();
}

async function toggle(key, on, reason, after) {
  const res = await api('POST', `/flags/${keyPath(key)}/toggle`, { on, reason });
  if (!res.ok) { toast(errorText(res), true); return false; }
  toast(`${key} is ${on ? 'on' : 'off'} (version ${res.data.version})`);
  if (after) after();
  return true;
}

/** The kill switch: a reason is required, and a second click confirms. */
function killSwitch(key, after) {
  const reason = h('textarea', { id: 'kill-reason', rows: 3, 'aria-required': 'true' });
  const err = h('div', { class: 'error', role: 'alert' });
  const dialog = h('dialog', { 'aria-labelledby': 'kill-title' },
    h('form', { method: 'dialog', onSubmit: async (e) => {
      e.preventDefault();
      if (!reason.value.trim()) { err.textContent = 'A reason is required.'; reason.setAttribute('aria-invalid', 'true'); reason.focus(); return; }
      if (await toggle(key, false, reason.value.trim(), after)) dialog.close();
    } },
    h('h2', { id: 'kill-title' }, `Turn off ${key}?`),
    h('p', { class: 'muted' }, 'Every evaluation serves the off variation at once, on every node.'),
    h('label', { for: 'kill-reason' }, 'Reason (recorded in the history)', reason), err,
    h('div', { class: 'row' }, h('button', { type: 'button', onClick: () => dialog.close() }, 'Cancel'),
      h('button', { type: 'submit', class: 'danger', id: 'kill-confirm' }, 'Confirm: turn off'))));
  // Escape or Cancel closes it; focus goes back where it was (or to the page).
  const opener = document.activeElement;
  dialog.addEventListener('close', () => {
    dialog.remove();
    if (opener && opener.isConnected) opener.focus(); else main.focus();
  });
  document.body.append(dialog);
  dialog.showModal();
  reason.focus();
}

// ---------- one flag ----------

async function flagPage(key) {
  const isNew = !key;
  let def = null;
  let etag = null;
  if (!isNew) {
    const res = await api('GET', `/flags/${keyPath(key)}`);
    if (!res.ok) { main.replaceChildren(h('h1', {}, key), h('p', { class: 'error' }, errorText(res))); return; }
    def = res.data;
    etag = def.version;
  }
  const title = h('h1', {}, isNew ? 'New flag' : key);
  const status = h('div', { class: 'row' });
  const banner = h('div', { role: 'status', 'aria-live': 'polite' });
  const tabs = [['editor', can('write') ? 'Edit' : 'Definition'], ['json', 'JSON'], ['try', 'Try it'], ['history', 'History'], ['chart', 'Evaluations']]
    .filter(([t]) => !isNew || t === 'editor' || t === 'json');
  const panel = h('div', { role: 'tabpanel', id: 'flag-panel' });
  let current = 'editor';
  let editor = null;
  let dirty = false;
  const tabBar = h('div', { class: 'tabs', role: 'tablist' }, tabs.map(([t, label]) => h('button', {
    type: 'button', role: 'tab', id: `tab-${t}`, 'aria-controls': 'flag-panel', 'aria-selected': t === current ? 'true' : 'false',
    onClick: () => show(t),
  }, label)));
  // Arrow keys move between tabs, as in the ARIA tabs pattern.
  tabBar.addEventListener('keydown', (e) => {
    if (e.key !== 'ArrowRight' && e.key !== 'ArrowLeft') return;
    const all = [...tabBar.querySelectorAll('[role=tab]')];
    const i = all.indexOf(document.activeElement);
    if (i < 0) return;
    const next = all[(i + (e.key === 'ArrowRight' ? 1 : all.length - 1)) % all.length];
    next.focus();
    next.click();
  });
  const renderStatus = () => {
    status.replaceChildren();
    if (isNew || !def) return;
    status.append(h('span', { class: `badge ${def.on ? 'on' : 'off'}`, id: 'flag-state', 'data-state': def.on ? 'on' : 'off' }, def.on ? 'ON' : 'OFF'),
      h('span', { class: 'muted', id: 'flag-version' }, `version ${def.version} · revision ${def.revision} · ${fmtTime(def.updated_at)} by ${def.updated_by}`));
    if (can('write')) {
      status.append(def.on
        ? h('button', { type: 'button', class: 'danger', 'data-edit': 'kill', onClick: () => killSwitch(key, reload) }, 'Kill switch: turn off')
        : h('button', { type: 'button', 'data-edit': 'turn-on', onClick: () => toggle(key, true, 'turned on from the console', reload) }, 'Turn on'));
    }
  };
  const reload = async () => {
    const res = await api('GET', `/flags/${keyPath(key)}`);
    if (!res.ok) { banner.replaceChildren(h('div', { class: 'banner' }, errorText(res))); return; }
    def = res.data;
    etag = def.version;
    dirty = false;
    banner.replaceChildren();
    renderStatus();
    show(current);
  };
  const show = async (t) => {
    current = t;
    tabBar.querySelectorAll('[role=tab]').forEach((b) => b.setAttribute('aria-selected', b.id === `tab-${t}` ? 'true' : 'false'));
    if (t === 'editor') return showEditor();
    if (t === 'json') {
      const text = JSON.stringify(editor && can('write') ? editor.value() : def, null, 2);
      panel.replaceChildren(h('pre', { class: 'json', id: 'flag-json', tabindex: 0, 'aria-label': 'Definition as JSON' }, text));
      return;
    }
    if (t === 'try') return showTry();
    if (t === 'history') return showHistory();
    if (t === 'chart') return showChart();
  };
  const showEditor = async () => {
    if (!can('write')) {
      panel.replaceChildren(h('pre', { class: 'json', id: 'flag-json', tabindex: 0 }, JSON.stringify(def, null, 2)));
      return;
    }
    const [segs, flags] = await Promise.all([api('GET', '/segments'), api('GET', '/flags?count=1000')]);
    // Another tab chosen while this one loaded wins.
    if (current !== 'editor') return;
    const box = h('div');
    const keyInput = isNew ? h('input', { type: 'text', id: 'new-key', required: true, placeholder: 'prod:new-checkout', 'data-path': 'key' }) : null;
    editor = flagEditor(box, def, {
      segments: segs.ok ? segs.data : [],
      flags: flags.ok ? flags.data.flags.map((f) => f.key) : [],
      onChange: () => { dirty = true; },
    });
    const reason = h('input', { type: 'text', id: 'save-reason', placeholder: 'why (optional)' });
    const save = h('button', { type: 'submit', class: 'primary', id: 'save', 'data-edit': 'save' }, isNew ? 'Create flag' : 'Save');
    const form = h('form', { 'aria-label': 'Flag editor', novalidate: true, onSubmit: async (e) => {
      e.preventDefault();
      editor.clearErrors();
      const k = isNew ? keyInput.value.trim() : key;
      if (!k) { keyInput.setAttribute('aria-invalid', 'true'); toast('A key is required', true); keyInput.focus(); return; }
      if (!editor.rolloutOk()) { toast('Rollout weights must sum to 100%', true); return; }
      const q = reason.value.trim() ? `?reason=${encodeURIComponent(reason.value.trim())}` : '';
      save.disabled = true;
      const res = await api('PUT', `/flags/${keyPath(k)}${q}`, editor.value(), { ifMatch: isNew ? undefined : etag });
      save.disabled = false;
      if (!res.ok) {
        if (res.status === 412) {
          banner.replaceChildren(h('div', { class: 'banner' }, 'Someone changed this flag since you opened it. ', h('button', { type: 'button', onClick: reload }, 'Load their version')));
        }
        editor.showError(res.data && res.data.path, errorText(res));
        return;
      }
      dirty = false;
      toast(`Saved ${k} (version ${res.data.version})`);
      if (isNew) location.hash = `#/flag/${encodeURIComponent(k)}`;
      else await reload();
    } },
    isNew ? h('div', { class: 'card' }, h('label', { for: 'new-key' }, 'Key (environment prefix, e.g. prod:)', keyInput)) : null,
    box,
    h('div', { class: 'card row' }, h('label', { for: 'save-reason' }, 'Reason', reason), save));
    panel.replaceChildren(form);
  };
  const showTry = () => {
    const ctx = h('textarea', { id: 'try-context', rows: 6 }, JSON.stringify({ key: 'user-1', country: 'DE' }, null, 2));
    const out = h('div', { id: 'try-result', 'aria-live': 'polite' });
    panel.replaceChildren(h('div', { class: 'card' },
      h('label', { for: 'try-context' }, 'Context (JSON: key plus attributes)', ctx),
      h('button', { type: 'button', class: 'primary', id: 'try-run', onClick: async () => {
        const res = await api('POST', `/flags/${keyPath(key)}/evaluate`, ctx.value);
        if (!res.ok) { out.replaceChildren(h('p', { class: 'error' }, errorText(res))); return; }
        const d = res.data;
        out.replaceChildren(h('table', {}, h('tbody', {}, ['value', 'variation', 'reason', 'rule_id', 'rule_index', 'prerequisite', 'error', 'version', 'stale']
          .filter((k) => d[k] !== null && d[k] !== undefined)
          .map((k) => h('tr', {}, h('th', { scope: 'row' }, k), h('td', { 'data-field': k }, typeof d[k] === 'object' ? JSON.stringify(d[k]) : String(k === 'value' ? JSON.stringify(d[k]) : d[k])))))));
      } }, 'Evaluate')), out);
  };
  const showHistory = async () => {
    const res = await api('GET', `/flags/${keyPath(key)}/history?count=100`);
    if (current !== 'history') return;
    if (!res.ok) { panel.replaceChildren(h('p', { class: 'error' }, errorText(res))); return; }
    const entries = res.data;
    const diffBox = h('div', { id: 'diff' });
    const showDiff = (e) => {
      const before = e.before ? JSON.stringify(e.before, null, 2) : '';
      const after = e.after ? JSON.stringify(e.after, null, 2) : '';
      const ops = lineDiff(before, after).filter((o) => o.line !== '' || o.op === ' ');
      const left = h('pre', { 'aria-label': `Before version ${e.version}` }, ops.filter((o) => o.op !== '+').map((o) => h('span', { class: o.op === '-' ? 'del' : '' }, `${o.op === '-' ? '- ' : '  '}${o.line}\n`)));
      const right = h('pre', { 'aria-label': `Version ${e.version}` }, ops.filter((o) => o.op !== '-').map((o) => h('span', { class: o.op === '+' ? 'add' : '' }, `${o.op === '+' ? '+ ' : '  '}${o.line}\n`)));
      diffBox.replaceChildren(h('h2', {}, `Version ${e.version}: ${e.event} by ${e.actor}`),
        h('div', { class: 'diff' }, h('div', {}, h('h3', { class: 'muted' }, 'Before'), left), h('div', {}, h('h3', { class: 'muted' }, 'After'), right)));
    };
    panel.replaceChildren(h('table', { id: 'history' }, h('thead', {}, h('tr', {}, ['Version', 'Event', 'Actor', 'When', 'Reason', ''].map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, entries.map((e) => h('tr', { 'data-version': e.version },
        h('td', {}, String(e.version)), h('td', {}, e.event), h('td', { 'data-field': 'actor' }, e.actor), h('td', {}, fmtTime(e.ts)), h('td', {}, e.reason || ''),
        h('td', {}, h('button', { type: 'button', 'data-role': 'diff', onClick: () => showDiff(e) }, 'Diff'), ' ',
          can('write') && e.after && e.version !== def.version ? h('button', { type: 'button', 'data-edit': 'rollback', onClick: async () => {
            const r = await api('POST', `/flags/${keyPath(key)}/rollback`, { version: e.version, reason: `rolled back to version ${e.version} from the console` });
            if (!r.ok) { toast(errorText(r), true); return; }
            toast(`Restored version ${e.version} as version ${r.data.version}`);
            current = 'history';
            reload();
          } }, `Roll back to v${e.version}`) : null))))),
    diffBox);
    if (entries[0]) showDiff(entries[0]);
  };
  const showChart = async () => {
    const rangeSel = h('select', { id: 'chart-range' }, CHART_RANGES.map(([id, label]) => h('option', { value: id }, label)));
    rangeSel.value = chartRange;
    const timeBox = h('div', { id: 'time-chart' });
    const drawTime = async () => {
      const [, , hours, bucketSecs] = CHART_RANGES.find(([id]) => id === rangeSel.value) || CHART_RANGES[0];
      const since = Date.now() - hours * 3600 * 1000;
      const r = await api('GET', `/flags/${keyPath(key)}/stats?since=${since}&buckets=${bucketSecs}`);
      if (current !== 'chart') return;
      if (!r.ok || !Array.isArray(r.data.series)) { timeBox.replaceChildren(h('p', { class: r.ok ? 'muted' : 'error' }, r.ok ? 'This server does not report evaluations over time.' : errorText(r))); return; }
      timeBox.replaceChildren(timeChart(r.data.series, { since, bucketSecs, variations: Object.keys(r.data.by_variation || {}) }));
    };
    rangeSel.addEventListener('change', () => { chartRange = rangeSel.value; drawTime(); });
    const res = await api('GET', `/flags/${keyPath(key)}/stats`);
    if (current !== 'chart') return;
    if (!res.ok) { panel.replaceChildren(h('p', { class: 'muted' }, res.status === 501 ? 'Evaluation statistics are not available on this server.' : errorText(res))); return; }
    const byReason = res.data.by_reason && typeof res.data.by_reason === 'object' ? Object.entries(res.data.by_reason).filter(([, n]) => typeof n === 'number') : [];
    panel.replaceChildren(
      h('div', { class: 'card chart' }, h('div', { class: 'row' }, h('h2', {}, 'Evaluations over time by variation'), h('label', { for: 'chart-range' }, 'Range', rangeSel)), timeBox),
      h('div', { class: 'card chart totals' }, h('h2', {}, 'All retained evaluations by variation'), barChart(countsByVariation(res.data)),
        byReason.length ? h('h2', {}, 'By reason') : null, byReason.length ? barChart(byReason) : null,
        h('p', { class: 'muted' }, `First evaluated ${fmtTime(res.data.first_evaluated) || 'never'}, last ${fmtTime(res.data.last_evaluated) || 'never'}.`),
        h('details', {}, h('summary', {}, 'Raw statistics'), h('pre', { class: 'json' }, JSON.stringify(res.data, null, 2)))));
    await drawTime();
  };
  main.replaceChildren(h('p', {}, h('a', { href: '#/flags' }, '← Flags')), title, status, banner, tabBar, panel);
  renderStatus();
  // The chart tab shows only when the stats endpoint exists.
  if (!isNew) {
    api('GET', `/flags/${keyPath(key)}/stats`).then((r) => { if (!r.ok) tabBar.querySelector('#tab-chart')?.remove(); });
  }
  state.page = { onChange: (ev) => {
    if (isNew || ev.kind !== 'flag' || ev.key !== key) return;
    if (ev.event === 'delete') { banner.replaceChildren(h('div', { class: 'banner' }, `Deleted by ${ev.actor}.`)); return; }
    if (dirty && current === 'editor') {
      banner.replaceChildren(h('div', { class: 'banner' }, `${ev.actor} changed this flag (version ${ev.version}). `, h('button', { type: 'button', onClick: reload }, 'Load it (drops your edits)')));
      return;
    }
    def = ev.definition || def;
    etag = ev.version;
    renderStatus();
    show(current);
    banner.replaceChildren(h('div', { class: 'banner', id: 'live-update' }, `Updated live: version ${ev.version} by ${ev.actor}`));
  } };
  await show(current);
}

/** Counts per variation from a stats document, whatever its nesting. */
function countsByVariation(stats) {
  const src = stats.by_variation || stats.variations || stats.counts || stats;
  if (Array.isArray(src)) return src.map((x) => [x.variation || x.name, Number(x.count || x.evaluations || 0)]);
  return Object.entries(src).filter(([, v]) => typeof v === 'number' || (v && typeof v.count === 'number')).map(([k, v]) => [k, typeof v === 'number' ? v : v.count]);
}

/** Chart ranges: id, label, hours back, bucket seconds (whole hours: the rollup is hourly). */
const CHART_RANGES = [['day', 'Last 24 hours, hourly', 24, 3600], ['week', 'Last 7 days, every 6 hours', 7 * 24, 6 * 3600], ['month', 'Last 30 days, daily', 30 * 24, 24 * 3600]];
let chartRange = 'day';
/** One colour per variation, in the order the flag's totals list them. */
const PALETTE = ['#2456c9', '#d97706', '#17803d', '#b42318', '#7c3aed', '#0e7490', '#be185d', '#4b5563'];

/** A round step for about `n` ticks up to `max`. */
function niceStep(max, n) {
  const raw = Math.max(max / n, 1);
  const pow = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * pow).find((s) => s >= raw);
}

/**
 * Evaluations over time as stacked columns, one colour per variation, with
 * labelled axes, a legend, and the same numbers as a table (the text
 * alternative for keyboard and screen-reader users).
 */
function timeChart(series, { since, bucketSecs, variations }) {
  const names = [...variations];
  series.forEach((b) => Object.keys(b.by_variation || {}).forEach((v) => { if (!names.includes(v)) names.push(v); }));
  const colour = (v) => PALETTE[names.indexOf(v) % PALETTE.length];
  const daily = bucketSecs % 86400 === 0;
  const label = (ms) => { const d = new Date(ms); return daily ? d.toLocaleDateString() : d.toLocaleString([], { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' }); };
  const short = (ms) => { const d = new Date(ms); return daily ? d.toLocaleDateString([], { month: 'short', day: 'numeric' }) : d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }); };
  const total = series.reduce((n, b) => n + b.evaluations, 0);
  const wrap = h('div', { class: 'time-chart', 'data-since': String(since), 'data-buckets': String(bucketSecs) });
  const summary = `${total} evaluations in ${series.length} buckets of ${bucketSecs / 3600} hour${bucketSecs === 3600 ? '' : 's'}` +
    (names.length ? `: ${names.map((v) => `${v} ${series.reduce((n, b) => n + ((b.by_variation || {})[v] || 0), 0)}`).join(', ')}` : '') + '.';
  const [W, H, L, R, T, B] = [640, 260, 56, 30, 12, 48];
  const max = Math.max(1, ...series.map((b) => b.evaluations));
  const step = niceStep(max, 4);
  const top = Math.ceil(max / step) * step;
  const y = (v) => T + (H - T - B) * (1 - v / top);
  const slot = (W - L - R) / Math.max(series.length, 1);
  const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': `Evaluations over time by variation. ${summary} The table below lists every bucket.`, id: 'time-chart-svg' });
  for (let v = 0; v <= top; v += step) {
    root.append(svg('line', { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: '#e3e7ee' }), svg('text', { x: L - 6, y: y(v) + 4, 'font-size': 11, 'text-anchor': 'end', fill: '#5b6475' }, String(v)));
  }
  root.append(svg('line', { x1: L, x2: L, y1: T, y2: H - B, stroke: '#8a94a6' }), svg('line', { x1: L, x2: W - R, y1: H - B, y2: H - B, stroke: '#8a94a6' }),
    svg('text', { x: 14, y: (H - B + T) / 2, 'font-size': 12, 'text-anchor': 'middle', transform: `rotate(-90 14 ${(H - B + T) / 2})`, fill: '#1d2330' }, 'Evaluations'),
    svg('text', { x: (L + W - R) / 2, y: H - 6, 'font-size': 12, 'text-anchor': 'middle', fill: '#1d2330' }, daily ? 'Day (local time)' : `${bucketSecs / 3600}-hour bucket starting (local time)`));
  const every = Math.max(1, Math.ceil(series.length / 8));
  series.forEach((b, i) => {
    const x = L + i * slot;
    let base = 0;
    names.forEach((v) => {
      const n = (b.by_variation || {})[v] || 0;
      if (!n) return;
      const rect = svg('rect', { x: x + slot * 0.15, width: Math.max(slot * 0.7, 1), y: y(base + n), height: y(base) - y(base + n), fill: colour(v), 'data-start': String(b.start), 'data-variation': v, 'data-count': String(n) },
        svg('title', {}, `${label(b.start)}: ${v} ${n}`));
      root.append(rect);
      base += n;
    });
    if (i % every === 0) root.append(svg('text', { x: x + slot / 2, y: H - B + 16, 'font-size': 11, 'text-anchor': 'middle', fill: '#5b6475' }, short(b.start)));
  });
  const legend = h('ul', { class: 'legend', 'aria-label': 'Legend' }, names.map((v) => h('li', { 'data-variation': v },
    svg('svg', { viewBox: '0 0 12 12', width: 12, height: 12, 'aria-hidden': 'true' }, svg('rect', { width: 12, height: 12, rx: 2, fill: colour(v) })), ` ${v}`)));
  const table = h('table', { id: 'series-table' }, h('caption', {}, summary),
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, daily ? 'Day' : 'Bucket start'), names.map((v) => h('th', { scope: 'col' }, v)), h('th', { scope: 'col' }, 'Total'))),
    h('tbody', {}, series.map((b) => h('tr', { 'data-start': String(b.start) }, h('th', { scope: 'row' }, label(b.start)),
      names.map((v) => h('td', { 'data-variation': v }, String((b.by_variation || {})[v] || 0))), h('td', { 'data-total': '' }, String(b.evaluations))))));
  wrap.append(series.length && total ? root : h('p', { class: 'muted' }, 'No evaluations in this range yet.'), legend,
    h('details', { id: 'series-data' }, h('summary', {}, 'Chart data as a table'), h('div', { class: 'scroll' }, table)));
  return wrap;
}

const SVG = 'http://www.w3.org/2000/svg';
function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  children.forEach((c) => el.append(c instanceof Node ? c : document.createTextNode(String(c))));
  return el;
}

/** A hand-drawn horizontal bar chart. */
function barChart(pairs) {
  if (!pairs.length) return h('p', { class: 'muted' }, 'No evaluations recorded yet.');
  const max = Math.max(...pairs.map(([, n]) => n), 1);
  const rowH = 28;
  const root = svg('svg', { viewBox: `0 0 600 ${pairs.length * rowH + 10}`, role: 'img', 'aria-label': pairs.map(([k, n]) => `${k}: ${n}`).join(', ') });
  pairs.forEach(([k, n], i) => {
    const y = i * rowH + 5;
    const w = Math.round((n / max) * 400);
    root.append(svg('text', { x: 0, y: y + 17, 'font-size': 13 }, k), svg('rect', { x: 120, y, width: Math.max(w, 1), height: 20, fill: '#2456c9', rx: 3 }),
      svg('text', { x: 126 + w, y: y + 15, 'font-size': 12 }, String(n)));
  });
  return root;
}

/**
 * Every estimate with a confidence interval in a results document
 * (objects holding numeric ci_low and ci_high), labelled by where it sits
 * (variation, metric), with its lift (or mean) as the point.
 */
function intervals(doc, label) {
  const out = [];
  if (Array.isArray(doc)) {
    doc.forEach((x) => out.push(...intervals(x, label)));
  } else if (doc && typeof doc === 'object') {
    const here = doc.name || doc.variation || doc.metric;
    const at = here ? [...label, here] : label;
    if (typeof doc.ci_low === 'number' && typeof doc.ci_high === 'number') {
      const mean = typeof doc.lift === 'number' ? doc.lift : typeof doc.mean === 'number' ? doc.mean : (doc.ci_low + doc.ci_high) / 2;
      out.push({ name: at.join(' · ') || 'estimate', mean, lo: doc.ci_low, hi: doc.ci_high });
    }
    for (const [k, v] of Object.entries(doc)) {
      if (v && typeof v === 'object') out.push(...intervals(v, Array.isArray(doc) || k === 'variations' || k === 'metrics' || here ? at : [...at, k]));
    }
  }
  return out;
}

/**
 * Intervals as points with whiskers (experiment results), with a labelled
 * axis; a dashed line marks zero. Each row carries its numbers as data
 * attributes and in its text alternative.
 */
function intervalChart(rows) {
  const lo = Math.min(0, ...rows.map((r) => r.lo));
  const hi = Math.max(0, ...rows.map((r) => r.hi));
  const span = hi - lo || 1;
  const fmt = (v) => (Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(2) : v.toPrecision(3));
  const x = (v) => 190 + ((v - lo) / span) * 380;
  const H = rows.length * 30 + 50;
  const root = svg('svg', { viewBox: `0 0 600 ${H}`, role: 'img', id: 'interval-chart', 'aria-label': `Lift with 95% confidence interval. ${rows.map((r) => `${r.name}: ${fmt(r.mean)} (${fmt(r.lo)} to ${fmt(r.hi)})`).join('; ')}` });
  const axisY = rows.length * 30 + 14;
  root.append(svg('line', { x1: x(0), x2: x(0), y1: 0, y2: axisY, stroke: '#8a94a6', 'stroke-dasharray': '4 3' }),
    svg('line', { x1: x(lo), x2: x(hi), y1: axisY, y2: axisY, stroke: '#8a94a6' }));
  [lo, 0, hi].forEach((v) => root.append(svg('text', { x: x(v), y: axisY + 14, 'font-size': 11, 'text-anchor': 'middle', fill: '#5b6475' }, fmt(v))));
  root.append(svg('text', { x: x((lo + hi) / 2), y: H - 4, 'font-size': 12, 'text-anchor': 'middle', fill: '#1d2330' }, 'Lift over control (treatment − control), 95% interval'));
  rows.forEach((r, i) => {
    const y = i * 30 + 15;
    root.append(svg('g', { 'data-name': r.name, 'data-mean': String(r.mean), 'data-lo': String(r.lo), 'data-hi': String(r.hi) },
      svg('title', {}, `${r.name}: ${fmt(r.mean)} (${fmt(r.lo)} to ${fmt(r.hi)})`),
      svg('text', { x: 0, y: y + 4, 'font-size': 13 }, r.name), svg('line', { x1: x(r.lo), x2: x(r.hi), y1: y, y2: y, stroke: '#2456c9', 'stroke-width': 2 }),
      svg('line', { x1: x(r.lo), x2: x(r.lo), y1: y - 6, y2: y + 6, stroke: '#2456c9' }), svg('line', { x1: x(r.hi), x2: x(r.hi), y1: y - 6, y2: y + 6, stroke: '#2456c9' }),
      svg('circle', { cx: x(r.mean), cy: y, r: 4, fill: '#14213d' })));
  });
  return root;
}

// ---------- segments ----------

async function segmentsPage() {
  const res = await api('GET', '/segments');
  main.replaceChildren(h('h1', {}, 'Segments'),
    can('segments') ? h('div', { class: 'card row' }, h('label', { for: 'new-segment' }, 'New segment key', h('input', { type: 'text', id: 'new-segment', placeholder: 'prod:beta-testers' })),
      h('button', { type: 'button', 'data-edit': 'new-segment', onClick: () => { const k = document.getElementById('new-segment').value.trim(); if (k) location.hash = `#/segment/${encodeURIComponent(k)}`; } }, 'Create')) : null,
    res.ok ? h('ul', {}, res.data.map((k) => h('li', {}, h('a', { href: `#/segment/${encodeURIComponent(k)}` }, k)))) : h('p', { class: 'error' }, errorText(res)));
  state.page = { onChange: (ev) => { if (ev.kind === 'segment') segmentsPage(); } };
}

async function segmentPage(key) {
  const [res, segs] = await Promise.all([api('GET', `/segments/${keyPath(key)}`), api('GET', '/segments')]);
  if (!res.ok && res.status !== 404) { main.replaceChildren(h('h1', {}, key), h('p', { class: 'error' }, errorText(res))); return; }
  const head = [h('p', {}, h('a', { href: '#/segments' }, '← Segments')), h('h1', {}, res.ok ? key : `New segment ${key}`)];
  if (!can('segments')) {
    main.replaceChildren(...head, res.ok ? h('pre', { class: 'json', id: 'segment-json', tabindex: 0 }, JSON.stringify(res.data, null, 2)) : h('p', { class: 'muted' }, 'No such segment.'));
    return;
  }
  const box = h('div');
  const editor = segmentEditor(box, res.ok ? res.data : null, { segments: segs.ok ? segs.data : [] });
  const json = h('pre', { class: 'json', id: 'segment-json' });
  const jsonView = h('details', { class: 'card', onToggle: () => { json.textContent = JSON.stringify(editor.value(), null, 2); } }, h('summary', {}, 'JSON view'), json);
  const save = h('button', { type: 'submit', class: 'primary', 'data-edit': 'save' }, 'Save segment');
  const form = h('form', { 'aria-label': 'Segment editor', novalidate: true, onSubmit: async (e) => {
    e.preventDefault();
    editor.clearErrors();
    const r = await api('PUT', `/segments/${keyPath(key)}`, editor.value());
    if (!r.ok) { editor.showError(r.data && r.data.path, errorText(r)); return; }
    toast(`Saved ${key} (version ${r.data.version})`);
    segmentPage(key);
  } }, box, jsonView, h('div', { class: 'card row' }, save,
    res.ok ? h('button', { type: 'button', class: 'danger', 'data-edit': 'delete', onClick: async () => {
      if (!window.confirm(`Delete segment ${key}?`)) return;
      const r = await api('DELETE', `/segments/${keyPath(key)}`);
      if (!r.ok) { editor.showError('', errorText(r)); return; }
      toast(`Deleted ${key}`);
      location.hash = '#/segments';
    } }, 'Delete') : null));
  main.replaceChildren(...head, form);
}

// ---------- experiments ----------

async function experimentsPage(key) {
  if (key) {
    const [def, results] = await Promise.all([api('GET', `/experiments/${keyPath(key)}`), api('GET', `/experiments/${keyPath(key)}/results`)]);
    const rows = results.ok ? intervals(results.data, []) : [];
    main.replaceChildren(h('p', {}, h('a', { href: '#/experiments' }, '← Experiments')), h('h1', {}, key),
      rows.length ? h('div', { class: 'card chart' }, h('h2', {}, 'Results with confidence intervals'), intervalChart(rows)) : null,
      h('div', { class: 'card' }, h('h2', {}, 'Results'), h('pre', { class: 'json' }, JSON.stringify(results.ok ? results.data : { error: errorText(results) }, null, 2))),
      h('div', { class: 'card' }, h('h2', {}, 'Definition'), h('pre', { class: 'json' }, JSON.stringify(def.ok ? def.data : { error: errorText(def) }, null, 2))));
    return;
  }
  const res = await api('GET', '/experiments');
  if (!res.ok) {
    main.replaceChildren(h('h1', {}, 'Experiments'), h('p', { class: 'muted' }, res.status === 501 ? 'Experiments are not available on this server.' : errorText(res)));
    return;
  }
  const keys = Array.isArray(res.data) ? res.data : Object.keys(res.data || {});
  main.replaceChildren(h('h1', {}, 'Experiments'), h('ul', {}, keys.map((k) => h('li', {}, h('a', { href: `#/experiments/${encodeURIComponent(k)}` }, k)))));
}

// ---------- cluster ----------

async function clusterPage() {
  const res = await api('GET', '/cluster');
  if (!res.ok) { main.replaceChildren(h('h1', {}, 'Cluster'), h('p', { class: 'error' }, errorText(res))); return; }
  const info = res.data;
  const members = Object.keys(info).filter((k) => /^member\d+$/.test(k)).map((k) => Object.fromEntries(info[k].split(',').map((kv) => kv.split('='))));
  main.replaceChildren(h('h1', {}, 'Cluster'),
    h('div', { class: 'card' }, h('p', {}, `This node: ${info.node_id} (${info.role}), leader ${info.leader_id}, term ${info.term}. `,
      info.stale === '1' ? h('span', { class: 'badge stale' }, `stale: ${info.stale_reason}`) : h('span', { class: 'badge on' }, 'fresh'))),
    h('table', { id: 'members' }, h('thead', {}, h('tr', {}, ['Node', 'Role', 'Leader', 'Client address', 'Match index', 'Lag'].map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, members.map((m) => h('tr', {}, h('td', {}, m.id), h('td', {}, m.role), h('td', {}, m.leader === '1' ? 'yes' : ''), h('td', {}, m.client_addr), h('td', {}, m.match_index), h('td', {}, m.lag))))),
    h('details', { class: 'card' }, h('summary', {}, 'All fields (RAFT.INFO)'), h('pre', { class: 'json' }, JSON.stringify(info, null, 2))));
  state.page = { onChange: () => {} };
}

// ---------- users ----------

async function usersPage() {
  const res = await api('GET', '/users');
  if (!res.ok) { main.replaceChildren(h('h1', {}, 'Users'), h('p', { class: 'error' }, errorText(res))); return; }
  const name = h('input', { type: 'text', id: 'user-name' });
  const rules = h('input', { type: 'text', id: 'user-rules', value: 'on >PASSWORD ~prod:* &flag:prod:* +@connection +@flag-eval +@flag-read' });
  const err = h('div', { class: 'error', role: 'alert' });
  main.replaceChildren(h('h1', {}, 'Users'),
    h('table', {}, h('thead', {}, h('tr', {}, ['User', 'Flags', 'Commands', 'Keys', 'Channels', ''].map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, res.data.map((u) => h('tr', {}, h('td', {}, u.name), h('td', {}, (u.flags || []).join(' ')), h('td', {}, u.commands), h('td', {}, u.keys), h('td', {}, u.channels),
        h('td', {}, u.name === 'default' ? null : h('button', { type: 'button', class: 'danger', 'aria-label': `Delete user ${u.name}`, onClick: async () => {
          if (!window.confirm(`Delete user ${u.name}? Their sessions and connections end.`)) return;
          const r = await api('DELETE', `/users/${encodeURIComponent(u.name)}`);
          if (!r.ok) toast(errorText(r), true); else usersPage();
        } }, 'Delete')))))),
    h('form', { class: 'card', 'aria-label': 'Create or change a user', onSubmit: async (e) => {
      e.preventDefault();
      err.textContent = '';
      const r = await api('PUT', `/users/${encodeURIComponent(name.value.trim())}`, { rules: rules.value.trim().split(/\s+/) });
      if (!r.ok) { err.textContent = errorText(r); return; }
      toast(`Saved user ${name.value.trim()}`);
      usersPage();
    } }, h('h2', {}, 'Create or change a user (ACL SETUSER rules)'),
    h('div', { class: 'row' }, h('label', { for: 'user-name' }, 'Name', name), h('label', { for: 'user-rules' }, 'Rules', rules), h('button', { type: 'submit', class: 'primary' }, 'Save')), err));
}

boot();
