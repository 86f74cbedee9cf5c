// The flag editor: a form over every part of the flag model (docs/flags.md).
// It edits a plain copy of the definition and re-renders a section when its
// shape changes. Every input carries data-path, the JSON path the server
// names in `-INVALID <path>: <why>`, so a refusal is shown at its field.

export const OPS = [
  ['eq', 'equals'], ['in', 'is one of'], ['contains', 'contains'], ['starts_with', 'starts with'],
  ['ends_with', 'ends with'], ['matches', 'matches regex'], ['lt', '<'], ['lte', '≤'], ['gt', '>'],
  ['gte', '≥'], ['semver_eq', 'semver ='], ['semver_lt', 'semver <'], ['semver_gt', 'semver >'],
  ['before', 'before (time)'], ['after', 'after (time)'], ['in_segment', 'in segment'], ['exists', 'exists'],
];
const NUMERIC = new Set(['lt', 'lte', 'gt', 'gte']);
const READ_ONLY = ['version', 'revision', 'updated_at', 'updated_by', 'allocations'];
let uid = 0;

/** Creates an element: h('input', {type: 'text', onInput: f}, ...children). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2).toLowerCase(), v);
    else if (k === 'class') el.className = v;
    else if (k === 'value') el.value = v;
    else if (k === 'checked') el.checked = !!v;
    else if (k === 'text') el.textContent = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** A labelled control: the label wraps its text and the control. */
function field(text, control, cls) {
  return h('label', { class: cls }, h('span', {}, text), control);
}

function typeOf(value) {
  if (typeof value === 'boolean') return 'boolean';
  if (typeof value === 'number') return 'number';
  if (typeof value === 'string') return 'string';
  return 'json';
}

function convert(value, type) {
  switch (type) {
    case 'boolean': return value === true || value === 'true';
    case 'number': { const n = Number(value); return Number.isFinite(n) ? n : 0; }
    case 'string': return typeof value === 'string' ? value : JSON.stringify(value);
    default: return typeof value === 'object' && value !== null ? value : {};
  }
}

/** Clause values as typed text: comma-separated, or a JSON array. */
function valuesText(values) {
  const all = values || [];
  if (all.every((v) => typeof v === 'string' && !v.includes(','))) return all.join(', ');
  return JSON.stringify(all);
}

function parseValues(text, op) {
  const t = text.trim();
  if (t.startsWith('[')) {
    try { return JSON.parse(t); } catch { /* the server will say what is wrong */ }
  }
  const parts = t === '' ? [] : t.split(',').map((s) => s.trim()).filter((s) => s !== '');
  if (NUMERIC.has(op)) return parts.map((s) => (Number.isFinite(Number(s)) ? Number(s) : s));
  if (op === 'before' || op === 'after') return parts.map((s) => (/^\d+$/.test(s) ? Number(s) : s));
  return parts;
}

/** The clause builder, shared by flag rules and segment rules. */
function clauseUI(env) {
  const clauseRow = (clauses, c, i, path, sectionName) => {
    const p = `${path}[${i}]`;
    return h('div', { class: 'clause', 'data-path': p },
      field('Attribute', h('input', { type: 'text', value: c.attribute || '', placeholder: c.op === 'in_segment' ? '(not used)' : 'country', 'data-path': `${p}.attribute`,
        onInput: (e) => { if (e.target.value) c.attribute = e.target.value; else delete c.attribute; env.changed(); } })),
      field('Operator', h('select', { 'data-path': `${p}.op`, onChange: (e) => {
        c.op = e.target.value;
        // Values are typed by the operator (numbers for lt/gt...): read them again.
        const vi = e.target.closest('.clause').querySelector('input[data-path$=".values"]');
        c.values = parseValues(vi.value, c.op);
        if (c.op === 'in_segment') vi.setAttribute('list', env.segListId); else vi.removeAttribute('list');
        env.changed();
      } },
        OPS.map(([op, label]) => h('option', { value: op, selected: op === c.op }, `${label} (${op})`)))),
      field('Values (comma-separated, or a JSON array)', h('input', { type: 'text', value: valuesText(c.values), 'data-path': `${p}.values`, list: c.op === 'in_segment' ? env.segListId : undefined,
        onInput: (e) => { c.values = parseValues(e.target.value, c.op); env.changed(); } })),
      h('label', { class: 'inline' }, h('input', { type: 'checkbox', checked: c.negate, 'data-path': `${p}.negate`, onChange: (e) => { if (e.target.checked) c.negate = true; else delete c.negate; env.changed(); } }), 'not'),
      h('button', { type: 'button', 'aria-label': `Remove condition ${i + 1}`, onClick: () => { clauses.splice(i, 1); env.rerender(sectionName); } }, '✕'));
  };

  const clauseBuilder = (owner, path, sectionName) => {
    owner.clauses = owner.clauses || [];
    return h('div', { 'data-path': path },
      h('div', { class: 'muted' }, 'All conditions must match:'),
      owner.clauses.map((c, i) => clauseRow(owner.clauses, c, i, path, sectionName)),
      h('button', { type: 'button', 'data-role': 'add-clause', onClick: () => { owner.clauses.push({ attribute: '', op: 'eq', values: [] }); env.rerender(sectionName); } }, '+ Condition'));
  };
  return { clauseBuilder };
}

/**
 * Mounts the editor into `root` for `definition` (a new flag when null).
 * `ctx` = {segments: [...keys], flags: [...keys], onChange()}.
 * Returns {value(): definition, showError(path, message), clearErrors()}.
 */
export function flagEditor(root, definition, ctx = {}) {
  const d = structuredClone(definition || {
    description: '', tags: [], on: false,
    variations: [{ name: 'off', value: false }, { name: 'on', value: true }],
    off_variation: 'off', targets: [], rules: [], prerequisites: [], fallthrough: { variation: 'off' },
  });
  for (const k of READ_ONLY) delete d[k];
  d.variations = d.variations || [];
  d.targets = d.targets || [];
  d.rules = d.rules || [];
  d.prerequisites = d.prerequisites || [];
  d.tags = d.tags || [];
  let valueType = typeOf(d.variations[0]?.value ?? false);
  const changed = () => ctx.onChange && ctx.onChange();
  const id = (p) => `f${++uid}-${p.replace(/[^a-z0-9]/gi, '_')}`;

  const segList = h('datalist', { id: id('segments') }, (ctx.segments || []).map((s) => h('option', { value: s })));
  const flagList = h('datalist', { id: id('flags') }, (ctx.flags || []).map((s) => h('option', { value: s })));
  const sections = {};
  const section = (name, title, render) => {
    const box = h('section', { class: 'card', 'aria-label': title, 'data-section': name });
    sections[name] = () => { box.replaceChildren(h('h2', {}, title), ...render().flat(Infinity)); };
    sections[name]();
    return box;
  };
  const rerender = (...names) => { names.forEach((n) => sections[n]()); changed(); };

  const variationSelect = (current, path, onPick, label = 'Variation') => field(label, h('select', {
    'data-path': path,
    onChange: (e) => { onPick(e.target.value); changed(); },
  }, d.variations.map((v) => h('option', { value: v.name, selected: v.name === current }, v.name || '(unnamed)')),
  current && !d.variations.some((v) => v.name === current) ? h('option', { value: current, selected: true }, `${current} (missing)`) : null));

  // serve: {variation} or {rollout: [{variation, weight}], bucket_by}
  const serveBuilder = (owner, path, sectionName) => {
    const serve = owner.serve || owner;
    const isRollout = Array.isArray(serve.rollout);
    const name = id(`${path}-mode`);
    const setMode = (rollout) => {
      const target = owner.serve ? owner.serve : owner;
      if (rollout) {
        const n = d.variations.length || 1;
        const base = Math.floor(10000 / n);
        target.rollout = d.variations.map((v, i) => ({ variation: v.name, weight: i === n - 1 ? 10000 - base * (n - 1) : base }));
        delete target.variation;
      } else {
        target.variation = d.variations[0]?.name || '';
        delete target.rollout;
        delete target.bucket_by;
      }
      rerender(sectionName);
    };
    const mode = h('div', { class: 'row', role: 'radiogroup', 'aria-label': 'Serve' },
      h('label', { class: 'inline' }, h('input', { type: 'radio', name, checked: !isRollout, onChange: () => setMode(false) }), 'Fixed variation'),
      h('label', { class: 'inline' }, h('input', { type: 'radio', name, checked: isRollout, 'data-role': 'rollout-mode', onChange: () => setMode(true) }), 'Percentage rollout'));
    if (!isRollout) {
      return h('div', {}, mode, variationSelect(serve.variation, `${path}.variation`, (v) => { serve.variation = v; }));
    }
    // Weights are basis points; the sliders show percent with one decimal.
    const total = h('span', { class: 'sum', 'aria-live': 'polite', 'data-path': `${path}.rollout` });
    const showTotal = () => {
      const sum = serve.rollout.reduce((a, r) => a + (r.weight || 0), 0);
      total.textContent = `Total: ${(sum / 100).toFixed(1)}%${sum === 10000 ? '' : ' — must be 100%'}`;
      total.classList.toggle('bad', sum !== 10000);
    };
    const rows = serve.rollout.map((r, i) => {
      const slider = h('input', { type: 'range', min: 0, max: 10000, step: 10, value: r.weight, 'aria-label': `Weight of ${r.variation}`, 'data-path': `${path}.rollout[${i}].weight`, 'data-variation': r.variation });
      const pct = h('input', { type: 'number', min: 0, max: 100, step: 0.1, value: (r.weight / 100).toString(), 'aria-label': `Percent for ${r.variation}`, 'data-variation': r.variation, 'data-role': 'percent' });
      const set = (w, from) => {
        r.weight = Math.max(0, Math.min(10000, Math.round(w)));
        if (from !== slider) slider.value = r.weight;
        if (from !== pct) pct.value = (r.weight / 100).toString();
        // Two variations: the other takes the rest, so the total stays 100%.
        if (serve.rollout.length === 2) {
          const other = serve.rollout[1 - i];
          other.weight = 10000 - r.weight;
          const box = slider.closest('.weights');
          const os = box.querySelectorAll('input[type=range]')[1 - i];
          const op = box.querySelectorAll('input[type=number]')[1 - i];
          os.value = other.weight; op.value = (other.weight / 100).toString();
        }
        showTotal();
        changed();
      };
      slider.addEventListener('input', () => set(Number(slider.value), slider));
      pct.addEventListener('input', () => set(Number(pct.value) * 100, pct));
      return h('div', { class: 'weight' }, h('span', {}, r.variation), slider, pct);
    });
    const box = h('div', {}, mode, h('div', { class: 'weights' }, rows), total,
      field('Bucket by attribute (default: key)', h('input', { type: 'text', value: serve.bucket_by || '', 'data-path': `${path}.bucket_by`, onInput: (e) => { if (e.target.value) serve.bucket_by = e.target.value; else delete serve.bucket_by; changed(); } })));
    queueMicrotask(showTotal);
    showTotal();
    return box;
  };

  const { clauseBuilder } = clauseUI({ changed, rerender: (n) => rerender(n), segListId: segList.id });

  const general = section('general', 'General', () => [
    h('div', { class: 'grid2' },
      field('Description', h('input', { type: 'text', value: d.description || '', 'data-path': 'description', onInput: (e) => { d.description = e.target.value; changed(); } })),
      field('Tags (comma-separated)', h('input', { type: 'text', value: d.tags.join(', '), 'data-path': 'tags', onInput: (e) => { d.tags = e.target.value.split(',').map((s) => s.trim()).filter(Boolean); changed(); } }))),
    h('div', { class: 'row' },
      h('label', { class: 'inline' }, h('input', { type: 'checkbox', checked: d.on, 'data-path': 'on', onChange: (e) => { d.on = e.target.checked; changed(); } }), 'Flag is on'),
      variationSelect(d.off_variation, 'off_variation', (v) => { d.off_variation = v; }, 'Off variation'),
      field('Salt (optional)', h('input', { type: 'text', value: d.salt || '', 'data-path': 'salt', onInput: (e) => { if (e.target.value) d.salt = e.target.value; else delete d.salt; changed(); } }))),
  ]);

  const variations = section('variations', 'Variations', () => [
    field('Value type', h('select', { 'data-path': 'variations', onChange: (e) => {
      valueType = e.target.value;
      d.variations.forEach((v) => { v.value = convert(v.value, valueType); });
      rerender('variations');
    } }, ['boolean', 'string', 'number', 'json'].map((t) => h('option', { value: t, selected: t === valueType }, t === 'json' ? 'JSON (objects)' : t)))),
    d.variations.map((v, i) => {
      const p = `variations[${i}]`;
      let input;
      if (valueType === 'boolean') {
        input = h('select', { 'data-path': `${p}.value`, onChange: (e) => { v.value = e.target.value === 'true'; changed(); } },
          h('option', { value: 'true', selected: v.value === true }, 'true'), h('option', { value: 'false', selected: v.value !== true }, 'false'));
      } else if (valueType === 'number') {
        input = h('input', { type: 'number', step: 'any', value: String(v.value), 'data-path': `${p}.value`, onInput: (e) => { v.value = Number(e.target.value); changed(); } });
      } else if (valueType === 'string') {
        input = h('input', { type: 'text', value: v.value, 'data-path': `${p}.value`, onInput: (e) => { v.value = e.target.value; changed(); } });
      } else {
        const err = h('div', { class: 'field-error' });
        input = h('div', {}, h('textarea', { rows: 3, 'data-path': `${p}.value`, 'aria-label': `Value of variation ${i + 1} (JSON)`, onInput: (e) => {
          try { v.value = JSON.parse(e.target.value); err.textContent = ''; e.target.removeAttribute('aria-invalid'); } catch (x) { err.textContent = `Not JSON: ${x.message}`; e.target.setAttribute('aria-invalid', 'true'); }
          changed();
        } }, JSON.stringify(v.value, null, 2)), err);
      }
      return h('div', { class: 'row list-item' },
        field('Name', h('input', { type: 'text', value: v.name, 'data-path': `${p}.name`, onChange: (e) => {
          const old = v.name; v.name = e.target.value;
          // Keep references to the renamed variation pointing at it.
          if (d.off_variation === old) d.off_variation = v.name;
          const fix = (s) => { if (!s) return; if (s.variation === old) s.variation = v.name; (s.rollout || []).forEach((r) => { if (r.variation === old) r.variation = v.name; }); };
          fix(d.fallthrough); d.rules.forEach((r) => fix(r.serve)); d.targets.forEach((t) => { if (t.variation === old) t.variation = v.name; });
          rerender('general', 'targets', 'rules', 'fallthrough');
        } })),
        field('Value', input),
        h('button', { type: 'button', 'aria-label': `Remove variation ${v.name}`, onClick: () => { d.variations.splice(i, 1); rerender('variations', 'general', 'targets', 'rules', 'fallthrough'); } }, '✕'));
    }),
    h('button', { type: 'button', onClick: () => {
      d.variations.push({ name: `v${d.variations.length + 1}`, value: convert(valueType === 'string' ? '' : 0, valueType) });
      rerender('variations', 'general', 'targets', 'rules', 'fallthrough');
    } }, '+ Variation'),
  ]);

  const prerequisites = section('prerequisites', 'Prerequisites', () => [
    h('p', { class: 'muted' }, 'Serve the off variation unless these flags serve the named variation.'),
    d.prerequisites.map((pr, i) => h('div', { class: 'row list-item' },
      field('Flag', h('input', { type: 'text', value: pr.flag, list: flagList.id, 'data-path': `prerequisites[${i}].flag`, onInput: (e) => { pr.flag = e.target.value; changed(); } })),
      field('Variation', h('input', { type: 'text', value: pr.variation, 'data-path': `prerequisites[${i}].variation`, onInput: (e) => { pr.variation = e.target.value; changed(); } })),
      h('button', { type: 'button', 'aria-label': `Remove prerequisite ${i + 1}`, onClick: () => { d.prerequisites.splice(i, 1); rerender('prerequisites'); } }, '✕'))),
    h('button', { type: 'button', onClick: () => { d.prerequisites.push({ flag: '', variation: '' }); rerender('prerequisites'); } }, '+ Prerequisite'),
  ]);

  const targets = section('targets', 'Individual targets', () => [
    d.targets.map((t, i) => h('div', { class: 'row list-item' },
      variationSelect(t.variation, `targets[${i}].variation`, (v) => { t.variation = v; }),
      field('Keys (comma or newline separated)', h('textarea', { rows: 2, 'data-path': `targets[${i}].keys`, onInput: (e) => { t.keys = e.target.value.split(/[\n,]/).map((s) => s.trim()).filter(Boolean); changed(); } }, (t.keys || []).join('\n'))),
      h('button', { type: 'button', 'aria-label': `Remove target ${i + 1}`, onClick: () => { d.targets.splice(i, 1); rerender('targets'); } }, '✕'))),
    h('button', { type: 'button', onClick: () => { d.targets.push({ variation: d.variations[0]?.name || '', keys: [] }); rerender('targets'); } }, '+ Target'),
  ]);

  const rules = section('rules', 'Rules', () => [
    d.rules.map((r, i) => h('div', { class: 'list-item', 'data-path': `rules[${i}]`, 'data-rule': i },
      h('div', { class: 'row' },
        field('Rule id', h('input', { type: 'text', value: r.id || '', 'data-path': `rules[${i}].id`, onInput: (e) => { r.id = e.target.value; changed(); } })),
        h('button', { type: 'button', 'aria-label': `Move rule ${i + 1} up`, disabled: i === 0, onClick: () => { d.rules.splice(i - 1, 0, d.rules.splice(i, 1)[0]); rerender('rules'); } }, '↑'),
        h('button', { type: 'button', 'aria-label': `Remove rule ${i + 1}`, onClick: () => { d.rules.splice(i, 1); rerender('rules'); } }, 'Remove rule')),
      clauseBuilder(r, `rules[${i}].clauses`, 'rules'),
      h('h3', { class: 'muted' }, 'Serve'),
      serveBuilder(r, `rules[${i}].serve`, 'rules'))),
    h('button', { type: 'button', 'data-role': 'add-rule', onClick: () => {
      d.rules.push({ id: `rule-${d.rules.length + 1}`, clauses: [{ attribute: '', op: 'in', values: [] }], serve: { variation: d.variations[0]?.name || '' } });
      rerender('rules');
    } }, '+ Rule'),
  ]);

  const fallthrough = section('fallthrough', 'Default rule (fallthrough)', () => {
    d.fallthrough = d.fallthrough || { variation: d.variations[0]?.name || '' };
    return [serveBuilder(d.fallthrough, 'fallthrough', 'fallthrough')];
  });

  const general_error = h('div', { class: 'error', role: 'alert', 'data-path': '' });
  root.replaceChildren(segList, flagList, general_error, general, variations, prerequisites, targets, rules, fallthrough);

  return {
    value() {
      const out = structuredClone(d);
      if (!out.description) delete out.description;
      for (const k of ['tags', 'targets', 'rules', 'prerequisites']) if (out[k] && out[k].length === 0) delete out[k];
      return out;
    },
    showError: (path, message) => showErrorIn(root, general_error, path, message),
    clearErrors: () => clearErrorsIn(root, general_error),
    rolloutOk() {
      const sums = [d.fallthrough, ...d.rules.map((r) => r.serve)].filter((s) => s && Array.isArray(s.rollout))
        .map((s) => s.rollout.reduce((a, r) => a + (r.weight || 0), 0));
      return sums.every((s) => s === 10000);
    },
  };
}

/** Shows a server message at the field its JSON path names (or the closest enclosing one). */
function showErrorIn(root, fallback, path, message) {
  let p = path || '';
  let el = null;
  while (p) {
    el = root.querySelector(`[data-path="${CSS.escape(p)}"]`);
    if (el) break;
    const shorter = p.replace(/(\.[^.[\]]*|\[\d+\])$/, '');
    if (shorter === p) break;
    p = shorter;
  }
  el = el || fallback;
  const msg = h('div', { class: 'field-error', role: 'alert', id: `err-${++uid}`, 'data-error-for': path }, `${path ? `${path}: ` : ''}${message}`);
  if (el === fallback) { fallback.replaceChildren(msg); return msg; }
  el.setAttribute('aria-invalid', 'true');
  el.setAttribute('aria-describedby', msg.id);
  (el.closest('label') || el).after(msg);
  if (el.focus) el.focus();
  return msg;
}

function clearErrorsIn(root, fallback) {
  root.querySelectorAll('.field-error[data-error-for]').forEach((e) => e.remove());
  root.querySelectorAll('[aria-invalid="true"]').forEach((e) => e.removeAttribute('aria-invalid'));
  fallback.replaceChildren();
}

/** Keys typed one per line or comma-separated. */
function keysOf(text) {
  return text.split(/[\n,]/).map((s) => s.trim()).filter(Boolean);
}

/**
 * Mounts a segment editor ({description, included, excluded, rules: [{clauses}]})
 * into `root`; the same interface as the flag editor.
 */
export function segmentEditor(root, definition, ctx = {}) {
  const d = structuredClone(definition || {});
  for (const k of READ_ONLY) delete d[k];
  d.included = d.included || [];
  d.excluded = d.excluded || [];
  d.rules = d.rules || [];
  const changed = () => ctx.onChange && ctx.onChange();
  const segList = h('datalist', { id: `segs-${++uid}` }, (ctx.segments || []).map((s) => h('option', { value: s })));
  const rulesBox = h('section', { class: 'card', 'aria-label': 'Rules' });
  const { clauseBuilder } = clauseUI({ changed, rerender: () => renderRules(), segListId: segList.id });
  const renderRules = () => {
    rulesBox.replaceChildren(h('h2', {}, 'Rules (any matching rule puts a context in the segment)'),
      ...d.rules.map((r, i) => h('div', { class: 'list-item', 'data-path': `rules[${i}]` },
        clauseBuilder(r, `rules[${i}].clauses`, 'rules'),
        h('button', { type: 'button', 'aria-label': `Remove rule ${i + 1}`, onClick: () => { d.rules.splice(i, 1); renderRules(); changed(); } }, 'Remove rule'))),
      h('button', { type: 'button', onClick: () => { d.rules.push({ clauses: [{ attribute: '', op: 'eq', values: [] }] }); renderRules(); changed(); } }, '+ Rule'));
  };
  renderRules();
  const list = (name, label) => h('label', {}, h('span', {}, label), h('textarea', { rows: 3, 'data-path': name,
    onInput: (e) => { d[name] = keysOf(e.target.value); changed(); } }, d[name].join('\n')));
  const general_error = h('div', { class: 'error', role: 'alert' });
  root.replaceChildren(segList, general_error,
    h('section', { class: 'card', 'aria-label': 'General' }, h('h2', {}, 'General'),
      h('label', {}, h('span', {}, 'Description'), h('input', { type: 'text', value: d.description || '', 'data-path': 'description', onInput: (e) => { d.description = e.target.value; changed(); } })),
      h('div', { class: 'grid2' }, list('included', 'Included keys (always in; one per line)'), list('excluded', 'Excluded keys (never in; beats included)'))),
    rulesBox);
  return {
    value() {
      const out = structuredClone(d);
      if (!out.description) delete out.description;
      return out;
    },
    showError: (path, message) => showErrorIn(root, general_error, path, message),
    clearErrors: () => clearErrorsIn(root, general_error),
  };
}

/** A line diff of two texts (LCS), as [{op: ' '|'-'|'+', line}]. */
export function lineDiff(a, b) {
  const x = a.split('\n');
  const y = b.split('\n');
  const n = x.length;
  const m = y.length;
  const t = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--) t[i][j] = x[i] === y[j] ? t[i + 1][j + 1] + 1 : Math.max(t[i + 1][j], t[i][j + 1]);
  const out = [];
  let i = 0;
  let j = 0;
  while (i < n && j < m) {
    if (x[i] === y[j]) { out.push({ op: ' ', line: x[i] }); i++; j++; } else if (t[i + 1][j] >= t[i][j + 1]) { out.push({ op: '-', line: x[i++] }); } else { out.push({ op: '+', line: y[j++] }); }
  }
  while (i < n) out.push({ op: '-', line: x[i++] });
  while (j < m) out.push({ op: '+', line: y[j++] });
  return out;
}
