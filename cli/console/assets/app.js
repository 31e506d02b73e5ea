// Outpost console. Plain JavaScript, no build step. Every value from the
// control plane is put into the page as text (never as HTML).
'use strict';

const main = document.getElementById('main');
let me = {};
let cleanup = []; // closers of the current page (event streams, timers)

// h makes an element: h('td', {class: 'x'}, 'text', child, ...).
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

async function call(method, path, body) {
  const opts = {method, credentials: 'same-origin', headers: {}};
  if (body !== undefined) {
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  const resp = await fetch(path, opts);
  const text = await resp.text();
  let data;
  try { data = JSON.parse(text); } catch (e) { data = {error: text}; }
  if (!resp.ok) throw new Error(data.error || resp.statusText);
  return data;
}
const get = (path) => call('GET', path);

function toast(msg, isError) {
  const t = document.getElementById('toast');
  t.textContent = msg;
  t.className = isError ? 'error' : '';
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => t.classList.add('hidden'), isError ? 15000 : 5000);
}

// confirmAction shows what will happen and resolves with the reason typed
// (or '' when none is asked), or null when cancelled.
function confirmAction(text, askReason) {
  const m = document.getElementById('confirm');
  const reason = document.getElementById('confirm-reason');
  document.getElementById('confirm-text').textContent = text;
  document.getElementById('confirm-reason-label').classList.toggle('hidden', !askReason);
  reason.value = '';
  m.classList.remove('hidden');
  return new Promise((resolve) => {
    const ok = document.getElementById('confirm-ok');
    const cancel = document.getElementById('confirm-cancel');
    const done = (v) => {
      m.classList.add('hidden');
      ok.onclick = cancel.onclick = null;
      resolve(v);
    };
    ok.onclick = () => done(reason.value);
    cancel.onclick = () => done(null);
  });
}

const requestId = () => Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join('');

const shortState = (s) => (s || '').replace(/^(ROLLOUT_STATE_|NODE_STATE_|STAGE_STATE_|STEP_PHASE_|STEP_)/, '');
const stateSpan = (s) => h('span', {class: 'state ' + shortState(s)}, shortState(s) || '?');
const fmtTime = (t) => (t ? new Date(t).toLocaleString() : '');
const fmtDur = (d) => {
  if (!d) return '';
  const s = parseFloat(d);
  return s < 1 ? Math.round(s * 1000) + ' ms' : s.toFixed(1) + ' s';
};
function progress(c) {
  c = c || {};
  const total = c.total || 0;
  const ok = c.succeeded || 0;
  const bad = (c.failed || 0) + (c.rolledBack || 0) + (c.rollbackFailed || 0);
  const bar = h('span', {class: 'bar', title: `${ok} succeeded, ${bad} failed of ${total}`});
  const s1 = h('span');
  s1.style.width = (total ? (100 * ok) / total : 0) + '%';
  bar.append(s1);
  if (bad) {
    const s2 = h('span', {class: 'fail'});
    s2.style.left = s1.style.width;
    s2.style.width = (100 * bad) / total + '%';
    bar.append(s2);
  }
  return h('span', {}, bar, ` ${ok}/${total}`, bad ? h('span', {class: 'error'}, ` (${bad} failed)`) : null);
}

// ---- pages ----

async function pageRollouts(params) {
  const f = h('form', {class: 'filters'},
    h('label', {}, 'App', h('input', {name: 'app', value: params.get('app') || ''})),
    h('label', {}, 'State', h('select', {name: 'state'},
      ['', 'PENDING_APPROVAL', 'APPROVED', 'RUNNING', 'PAUSED', 'PENDING_VALIDATION', 'SUCCEEDED', 'VALIDATED', 'ABORTED', 'FAILED_ROLLED_BACK', 'REJECTED']
        .map((s) => h('option', {value: s, selected: params.get('state') === s}, s || 'any')))),
    h('label', {}, 'Environment', h('input', {name: 'environment', value: params.get('environment') || ''})),
    h('button', {type: 'submit'}, 'Filter'));
  f.addEventListener('submit', (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(f)) if (v) q.set(k, v);
    location.hash = '#/rollouts?' + q;
  });
  const body = h('tbody');
  main.replaceChildren(h('h1', {}, 'Rollouts'), f,
    h('table', {id: 'rollouts'}, h('thead', {}, h('tr', {}, ['Rollout', 'App', 'Rev', 'State', 'Environment', 'Change', 'Requester', 'Progress', 'Created'].map((x) => h('th', {}, x)))), body));
  const load = async () => {
    const q = new URLSearchParams();
    for (const k of ['app', 'state', 'environment']) if (params.get(k)) q.set(k, params.get(k));
    const data = await get('/api/rollouts?' + q);
    body.replaceChildren(...data.rollouts.map((r) => h('tr', {},
      h('td', {}, h('a', {href: '#/rollout/' + encodeURIComponent(r.id)}, r.id)),
      h('td', {}, r.app), h('td', {}, r.revision), h('td', {}, stateSpan(r.state)),
      h('td', {}, r.environment), h('td', {}, r.changeId), h('td', {}, r.requester),
      h('td', {}, progress(r.counts)), h('td', {}, fmtTime(r.created)))));
    if (!data.rollouts.length) body.append(h('tr', {}, h('td', {colspan: 9, class: 'muted'}, 'No rollouts match.')));
  };
  await load();
  const timer = setInterval(() => load().catch((e) => toast(e.message, true)), 5000);
  cleanup.push(() => clearInterval(timer));
}

// Node states and their colours in the grid; nodeStates[i] is NodeState i,
// as the grid event numbers them.
const nodeStates = ['UNSPECIFIED', 'PENDING', 'RUNNING', 'SUCCEEDED', 'FAILED', 'ROLLED_BACK', 'ROLLBACK_FAILED', 'SKIPPED'];
const nodeColors = {
  PENDING: '#d0d7de', RUNNING: '#1f6feb', SUCCEEDED: '#2da44e', FAILED: '#cf222e',
  ROLLED_BACK: '#bf8700', ROLLBACK_FAILED: '#82071e', SKIPPED: '#8c959f', UNSPECIFIED: '#eaeef2',
};

// actions a rollout offers, with what each does, in the words of the confirmation.
const actions = [
  {name: 'pause', role: 'deploy', when: ['RUNNING'], reason: true, says: (r) => `Pause ${r.id}: no new batch starts; nodes already deploying finish.`},
  {name: 'resume', role: 'deploy', when: ['PAUSED'], says: (r) => `Resume ${r.id}: it continues with the next batch.`},
  {name: 'abort', role: 'deploy', when: ['PENDING_APPROVAL', 'APPROVED', 'RUNNING', 'PAUSED', 'PENDING_VALIDATION'], reason: true,
    says: (r) => `Abort ${r.id} (${r.app} revision ${r.revision}): no further node is deployed; nodes done keep the new release. This cannot be undone (use undo to return to an earlier revision).`},
  {name: 'promote', role: 'deploy', when: ['RUNNING', 'PAUSED'], says: (r) => `Promote ${r.id}: the stage waiting for promotion ends its wait and the next stage starts.`},
  {name: 'retry', role: 'deploy', when: ['RUNNING', 'PAUSED', 'ABORTED', 'FAILED_ROLLED_BACK'], says: (r) => `Retry the failed nodes of ${r.id}: they are deployed again.`},
  {name: 'validate', role: 'approve', when: ['PENDING_VALIDATION'], reason: true, says: (r) => `Validate ${r.id}: you confirm the release works; the rollout becomes VALIDATED.`},
  {name: 'undo', role: 'deploy', when: ['SUCCEEDED', 'VALIDATED', 'ABORTED', 'FAILED_ROLLED_BACK'],
    says: (r) => `Undo ${r.app}: a new rollout returns ${r.app} to the revision before its current one, with that revision's plan (approval included).`},
];

function actionButton(a, r) {
  const may = a.role === 'deploy' ? me.mayDeploy : me.mayApprove;
  const state = shortState(r.state);
  let why = '';
  if (!may) why = `your role (${me.role}) cannot ${a.name}: ${a.role === 'deploy' ? 'deployer' : 'approver'} or admin can`;
  else if (!a.when.includes(state)) why = `not possible while ${state}`;
  const b = h('button', {id: 'action-' + a.name, disabled: !!why, title: why || a.says(r)}, a.name);
  b.addEventListener('click', async () => {
    const reason = await confirmAction(a.says(r), a.reason);
    if (reason === null) return;
    try {
      let res;
      if (a.name === 'undo') {
        res = await call('POST', `/api/apps/${encodeURIComponent(r.app)}/undo`, {requestId: requestId()});
        toast(`Undo rollout ${res.id} created`);
        location.hash = '#/rollout/' + encodeURIComponent(res.id);
        return;
      }
      res = await call('POST', `/api/rollouts/${encodeURIComponent(r.id)}/${a.name}`, {reason, requestId: requestId()});
      toast(`${a.name}: ${r.id} is ${shortState(res.state)}`);
    } catch (e) {
      toast(e.message, true);
    }
  });
  return b;
}

async function pageRollout(id) {
  const t0 = performance.now();
  const header = h('div');
  const actionsBar = h('div', {class: 'actions'});
  const stages = h('div');
  const canvas = h('canvas', {id: 'grid', width: 820, height: 40});
  const stats = h('div', {id: 'grid-stats', class: 'muted'});
  const panel = h('div', {id: 'node-panel'}, h('span', {class: 'muted'}, 'Click a node for its steps.'));
  const legend = h('div', {class: 'legend'}, Object.entries(nodeColors).filter(([k]) => k !== 'UNSPECIFIED').map(([k, c]) => {
    const i = h('i');
    i.style.background = c;
    return h('span', {}, i, k);
  }));
  main.replaceChildren(h('h1', {}, 'Rollout ', h('span', {id: 'rollout-id'}, id)), header, actionsBar, stages,
    h('h2', {}, 'Nodes'), legend, h('div', {class: 'grid-wrap'}, h('div', {}, canvas, stats), panel));

  let rollout = null;
  // The grid: ids[i] (in id order) is in state codes[i] (a NodeState
  // number). A node's record (records) comes with a change after the
  // snapshot, or from the console when the node is opened.
  let ids = [];
  let codes = new Uint8Array(0);
  const index = new Map();   // node id -> position in ids
  const records = new Map(); // node id -> RolloutNode
  const steps = new Map();   // node id -> [NodeStepEvent]
  let selected = null;
  let ready = false;
  let cell = 10;
  let cols = 1;

  const ctx = canvas.getContext('2d');
  const stateName = (code) => nodeStates[code] || 'UNSPECIFIED';
  const codeOf = (state) => Math.max(0, nodeStates.indexOf(shortState(state) || 'UNSPECIFIED'));
  const colorOf = (code) => nodeColors[stateName(code)] || nodeColors.UNSPECIFIED;
  function setGrid(newIds, newCodes) {
    ids = newIds;
    codes = newCodes;
    index.clear();
    ids.forEach((nid, i) => index.set(nid, i));
  }
  function layout() {
    const n = ids.length;
    cell = n > 5000 ? 6 : n > 1000 ? 9 : n > 100 ? 14 : 22;
    cols = Math.max(1, Math.floor(820 / cell));
    canvas.width = cols * cell;
    canvas.height = Math.max(1, Math.ceil(n / cols)) * cell;
  }
  function drawCell(i) {
    ctx.fillStyle = colorOf(codes[i]);
    ctx.fillRect((i % cols) * cell, Math.floor(i / cols) * cell, cell - 1, cell - 1);
  }
  // pixel is a colour as one pixel of ImageData seen as 32-bit words.
  function pixel(hex) {
    const b = new Uint8Array(4);
    b.set([1, 3, 5].map((k) => parseInt(hex.slice(k, k + 2), 16)));
    b[3] = 255;
    return new Uint32Array(b.buffer)[0];
  }
  const pixels = nodeStates.map((st) => pixel(nodeColors[st] || nodeColors.UNSPECIFIED));
  const unknownPixel = pixel(nodeColors.UNSPECIFIED);
  // drawAll paints every cell into one ImageData, a row of cells at a
  // time: their first line, copied down. 10,000 fillRect calls would
  // return sooner but leave the canvas to rasterize them afterwards, for
  // longer.
  function drawAll() {
    const start = performance.now();
    layout();
    const w = canvas.width;
    const img = ctx.createImageData(w, canvas.height);
    const px = new Uint32Array(img.data.buffer);
    for (let first = 0; first < codes.length; first += cols) {
      const top = (first / cols) * cell * w;
      const end = Math.min(codes.length, first + cols);
      for (let i = first; i < end; i++) {
        const x = top + (i - first) * cell;
        px.fill(pixels[codes[i]] || unknownPixel, x, x + cell - 1);
      }
      for (let dy = 1; dy < cell - 1; dy++) px.copyWithin(top + dy * w, top, top + w);
    }
    ctx.putImageData(img, 0, 0);
    window.consoleDrawMs = performance.now() - start;
  }
  let redraw = 0;
  function scheduleDraw() {
    if (redraw) return;
    redraw = requestAnimationFrame(() => { redraw = 0; drawAll(); });
  }

  canvas.addEventListener('click', (e) => {
    const rect = canvas.getBoundingClientRect();
    const x = Math.floor((e.clientX - rect.left) / cell);
    const y = Math.floor((e.clientY - rect.top) / cell);
    const i = y * cols + x;
    if (x < cols && i < ids.length) showNode(ids[i]);
  });
  canvas.addEventListener('mousemove', (e) => {
    const rect = canvas.getBoundingClientRect();
    const i = Math.floor((e.clientY - rect.top) / cell) * cols + Math.floor((e.clientX - rect.left) / cell);
    canvas.title = i >= 0 && i < ids.length ? `${ids[i]} ${stateName(codes[i])}` : '';
  });

  // loadRecord gets a node's record from the console, for a node that
  // has not changed since the snapshot.
  let loading = null;
  function loadRecord(nid) {
    if (loading === nid) return;
    loading = nid;
    get(`/api/rollouts/${encodeURIComponent(id)}/nodes/${encodeURIComponent(nid)}`).then((n) => {
      // A change that came meanwhile is newer.
      if (!records.has(nid)) records.set(nid, n);
      if (loading === nid) loading = null;
      if (selected === nid) showNode(nid);
    }, (e) => {
      if (loading === nid) loading = null;
      if (selected === nid) panel.append(h('p', {class: 'error'}, e.message));
    });
  }

  function showNode(nid) {
    selected = nid;
    let n = records.get(nid);
    if (!n) {
      n = {nodeId: nid, state: index.has(nid) ? stateName(codes[index.get(nid)]) : ''};
      loadRecord(nid);
    }
    const evs = steps.get(nid) || [];
    const rows = evs.map((ev) => h('tr', {},
      h('td', {}, shortState(ev.step).toLowerCase().replace(/_/g, ' ')), h('td', {}, stateSpan(ev.phase)),
      h('td', {}, ev.time ? new Date(ev.time).toLocaleTimeString() : ''), h('td', {}, fmtDur(ev.duration)),
      h('td', {}, ev.error ? h('pre', {class: 'step-error'}, ev.error) : (ev.detail || ''))));
    panel.replaceChildren(...[
      h('h2', {}, 'Node ', h('span', {id: 'node-id'}, nid), ' ', stateSpan(n.state)),
      h('dl', {class: 'facts'},
        h('dt', {}, 'datacenter'), h('dd', {}, n.datacenter || ''),
        h('dt', {}, 'stage / batch'), h('dd', {}, `${n.stage || ''} / ${n.batch || 0}`),
        h('dt', {}, 'gateway'), h('dd', {}, n.gateway || ''),
        h('dt', {}, 'release'), h('dd', {}, n.release || ''),
        h('dt', {}, 'previous'), h('dd', {}, n.previousRelease || ''),
        h('dt', {}, 'trace id'), h('dd', {id: 'trace-id'}, n.traceId || (rollout && rollout.traceId) || 'none')),
      n.error ? h('div', {}, h('h2', {}, 'Error (tail of hook output)'), h('pre', {id: 'node-error'}, n.error)) : null,
      h('h2', {}, 'Steps'),
      evs.length ? h('table', {id: 'steps'}, h('thead', {}, h('tr', {}, ['step', 'phase', 'time', 'took', 'detail'].map((x) => h('th', {}, x)))), h('tbody', {}, rows))
        : recordedSteps(nid)].filter(Boolean));
  }

  // recordedSteps shows a node's steps as the audit log recorded them with
  // its result: the live step events of a finished rollout are gone.
  function recordedSteps(nid) {
    const el = h('p', {class: 'muted'}, 'No live step events for this node; reading its result from the audit log…');
    get(`/api/audit?rollout=${encodeURIComponent(id)}`).then((data) => {
      const results = (data.entries || []).filter((e) => e.nodeId === nid && e.details && e.details.steps);
      el.replaceWith(results.length
        ? h('table', {id: 'steps'}, h('thead', {}, h('tr', {}, h('th', {}, 'recorded'), h('th', {}, 'result'), h('th', {}, 'steps (name, outcome, duration)'))),
          h('tbody', {}, results.map((e) => h('tr', {}, h('td', {}, fmtTime(e.time)), h('td', {}, e.message || ''), h('td', {}, e.details.steps)))))
        : h('p', {class: 'muted'}, 'The audit log has no steps for this node yet.'));
    }, (e) => el.replaceWith(h('p', {class: 'error'}, e.message)));
    return el;
  }

  function renderRollout(r) {
    rollout = r;
    const digest = (r.artifact && r.artifact.sha256) || '';
    header.replaceChildren(h('dl', {class: 'facts'},
      h('dt', {}, 'state'), h('dd', {id: 'rollout-state'}, stateSpan(r.state), r.message ? ' — ' + r.message : ''),
      h('dt', {}, 'app / revision'), h('dd', {}, `${r.app} / ${r.revision}`),
      h('dt', {}, 'environment'), h('dd', {}, (r.plan && r.plan.environment) || ''),
      h('dt', {}, 'change id'), h('dd', {}, (r.plan && r.plan.changeId) || ''),
      h('dt', {}, 'requester / approver'), h('dd', {}, `${r.requester || ''} / ${r.approver || ''}`),
      h('dt', {}, 'release'), h('dd', {}, r.releaseId || ''),
      h('dt', {}, 'artifact'), h('dd', {}, `${(r.artifact && r.artifact.name) || ''} sha256:${digest}`),
      h('dt', {}, 'progress'), h('dd', {id: 'rollout-progress'}, progress(r.nodeCounts)),
      h('dt', {}, 'trace id'), h('dd', {}, r.traceId || '')));
    actionsBar.replaceChildren(...actions.map((a) => actionButton(a, r)));
    stages.replaceChildren(h('h2', {}, 'Stages'), h('table', {id: 'stages'},
      h('thead', {}, h('tr', {}, ['Stage', 'State', 'Batches', 'Progress', 'Bake'].map((x) => h('th', {}, x)))),
      h('tbody', {}, (r.stages || []).map((s, i) => h('tr', {class: i === (r.currentStage || 0) ? 'current' : ''},
        h('td', {}, s.name), h('td', {}, stateSpan(s.state)),
        h('td', {}, `${(s.batches || []).length} (current ${(s.currentBatch || 0) + 1}; sizes ${(s.batches || []).map((b) => b.nodeCount || (b.nodeIds || []).length).join(', ')})`),
        h('td', {}, progress(s.nodeCounts)), h('td', {}, s.bake || ''))))));
  }

  const es = new EventSource(`/api/rollouts/${encodeURIComponent(id)}/watch`);
  cleanup.push(() => es.close());
  // When each part of the first snapshot arrived, in ms after opening the
  // page (for BENCHMARKS.md): the stream, the rollout, the grid, drawn.
  const times = window.consoleGridTimes = {};
  const mark = (what) => { if (times[what] === undefined) times[what] = Math.round(performance.now() - t0); };
  // A reconnected stream starts with a new snapshot.
  es.addEventListener('open', () => { mark('stream'); records.clear(); ready = false; });
  es.addEventListener('rollout', (e) => { mark('rollout'); renderRollout(JSON.parse(e.data)); });
  // The snapshot: every node's id and state, in id order.
  es.addEventListener('grid', (e) => {
    mark('grid');
    const g = JSON.parse(e.data);
    setGrid(g.ids || [], Uint8Array.from(g.states || []));
  });
  es.addEventListener('ready', () => {
    ready = true;
    drawAll();
    const ms = performance.now() - t0;
    window.consoleGridMs = ms;
    mark('drawn');
    window.consoleGridNodes = ids.length;
    stats.textContent = `${ids.length} nodes drawn ${Math.round(ms)} ms after opening the page`;
    if (selected) showNode(selected);
  });
  // applyNode records a changed node and repaints its cell (or the whole
  // grid for a node not seen before).
  function applyNode(n) {
    records.set(n.nodeId, n);
    const code = codeOf(n.state);
    const i = index.get(n.nodeId);
    if (i === undefined) {
      const next = [...ids, n.nodeId].sort();
      const nextCodes = Uint8Array.from(next, (nid) => (nid === n.nodeId ? code : codes[index.get(nid)]));
      setGrid(next, nextCodes);
      if (ready) scheduleDraw();
    } else {
      codes[i] = code;
      if (ready) drawCell(i);
    }
    if (selected === n.nodeId) showNode(selected);
  }
  // Changes after the snapshot: the records of the nodes that changed.
  es.addEventListener('nodes', (e) => {
    for (const n of JSON.parse(e.data).nodes || []) applyNode(n);
  });
  es.addEventListener('node', (e) => applyNode(JSON.parse(e.data)));
  es.addEventListener('step', (e) => {
    const ev = JSON.parse(e.data);
    if (!steps.has(ev.nodeId)) steps.set(ev.nodeId, []);
    steps.get(ev.nodeId).push(ev);
    if (selected === ev.nodeId) showNode(selected);
  });
  es.addEventListener('end', () => { es.close(); stats.append(' · finished'); });
  es.addEventListener('failure', (e) => { toast(JSON.parse(e.data).error, true); es.close(); });
}

// renderDiff shows a plan against that of the app's previous revision.
function renderDiff(a, diff) {
  return h('div', {},
    h('p', {class: 'muted'}, diff.previous ? `Plan against revision ${diff.previous.revision} (${diff.previous.rollout}, sha256:${diff.previous.digest})` : 'First revision of this app: the whole plan is new.'),
    h('div', {class: 'diff', id: 'diff-' + a.id}, (diff.lines || []).map((l) => h('div', {class: l.op === '+' ? 'add' : l.op === '-' ? 'del' : ''}, l.op + ' ' + l.text))));
}

async function pageApprovals() {
  const data = await get('/api/approvals');
  const cards = data.approvals.map((a) => {
    const diffView = h('div', {class: 'muted'}, 'Loading the plan diff…');
    get(`/api/rollouts/${encodeURIComponent(a.id)}/diff`).then((diff) => diffView.replaceWith(renderDiff(a, diff)), (e) => diffView.replaceWith(h('p', {class: 'error'}, e.message)));
    const reason = h('input', {id: 'reason-' + a.id, placeholder: 'reason or comment for the audit log', maxlength: 1024, size: 50});
    const decide = (verb) => async () => {
      const text = verb === 'approve'
        ? `Approve ${a.id} (${a.app} revision ${a.revision}, ${(a.counts && a.counts.total) || 0} nodes): it starts deploying as soon as no earlier rollout of ${a.app} runs.`
        : `Reject ${a.id} (${a.app} revision ${a.revision}): it ends REJECTED and deploys nothing.`;
      if (await confirmAction(text, false) === null) return;
      try {
        const r = await call('POST', `/api/rollouts/${encodeURIComponent(a.id)}/${verb}`, {reason: reason.value, requestId: requestId()});
        toast(`${a.id} is ${shortState(r.state)}`);
        if (verb === 'approve') location.hash = '#/rollout/' + encodeURIComponent(a.id);
        else route();
      } catch (e) {
        toast(e.message, true);
      }
    };
    const roleWhy = me.mayApprove ? '' : `your role (${me.role}) cannot approve or reject: approver or admin can`;
    const approveWhy = a.canApprove ? '' : a.reason;
    return h('div', {class: 'card', id: 'approval-' + a.id},
      h('h2', {}, h('a', {href: '#/rollout/' + encodeURIComponent(a.id)}, a.id), ` ${a.app} revision ${a.revision}`),
      h('dl', {class: 'facts'},
        h('dt', {}, 'requester'), h('dd', {}, a.requester), h('dt', {}, 'environment'), h('dd', {}, a.environment),
        h('dt', {}, 'change id'), h('dd', {}, a.changeId), h('dt', {}, 'artifact digest'), h('dd', {}, 'sha256:' + a.digest),
        h('dt', {}, 'signer'), h('dd', {id: 'signer-' + a.id}, a.signer ? a.signer
          : a.signed ? 'signed; no key of this environment checked it (the gateways verify it)' : 'unsigned'),
        h('dt', {}, 'nodes'), h('dd', {}, (a.counts && a.counts.total) || 0)),
      diffView,
      h('div', {class: 'actions'}, reason,
        h('button', {id: 'approve-' + a.id, class: 'primary', disabled: !!approveWhy, title: approveWhy, onclick: decide('approve')}, 'Approve'),
        h('button', {id: 'reject-' + a.id, disabled: !!roleWhy, title: roleWhy, onclick: decide('reject')}, 'Reject'),
        approveWhy ? h('span', {class: 'why', id: 'why-' + a.id}, approveWhy)
          : a.selfApproval ? h('span', {class: 'why', id: 'why-' + a.id}, 'you requested this rollout; this control plane allows self-approval') : null));
  });
  main.replaceChildren(h('h1', {}, 'Approvals'),
    h('p', {class: 'muted'}, `Rollouts waiting for approval; you are ${me.user} (${me.role}).`),
    ...(cards.length ? cards : [h('p', {id: 'no-approvals'}, 'Nothing waits for approval.')]));
}

// driftCells shows what a gateway last observed on a node and its drift
// (see observe in fleet.go).
function driftCells(n) {
  const o = n.observation;
  if (!o) return [h('td', {class: 'muted'}, 'not observed'), h('td', {class: 'muted'}, '—'), h('td', {class: 'muted'}, '')];
  const observed = o.result === 'ok' ? o.release : h('span', {class: 'error', title: o.error || ''}, o.result);
  const drift = o.drift || [];
  return [
    h('td', {title: [o.gateway && 'by gateway ' + o.gateway, o.lock && 'lock: ' + o.lock, o.lastHistory && 'last: ' + o.lastHistory].filter(Boolean).join('\n')}, observed),
    h('td', {class: drift.length ? 'drift' : '', id: 'drift-' + n.id, title: o.driftSince ? 'since ' + fmtTime(o.driftSince) : ''},
      drift.length ? drift.map((k) => k.replace(/_/g, ' ')).join(', ') : 'none'),
    h('td', {}, fmtTime(o.time))];
}

const isDrifted = (n) => !!(n.observation && (n.observation.drift || []).length);

// verifyButton asks the control plane to observe the nodes of dc (all
// when empty) now, and shows the progress in progressEl.
function verifyButton(dc, count, progressEl) {
  const why = me.mayDeploy ? '' : `your role (${me.role}) cannot verify nodes: deployer or admin can`;
  const what = dc ? `the ${count} node(s) of datacenter ${dc}` : `all ${count} node(s)`;
  const says = `Verify ${what} now: a gateway of each datacenter logs in to every node over SSH and runs one read-only command ` +
    `to see which release runs there; nothing on the nodes changes. Nodes in a running rollout and nodes never deployed are skipped. ` +
    `What is seen is recorded as each node's observation, and each new drift writes an audit entry.`;
  const b = h('button', {id: dc ? 'verify-dc-' + dc : 'verify-all', disabled: !!why, title: why || says}, dc ? `Verify ${dc} now` : 'Verify all nodes now');
  b.addEventListener('click', async () => {
    if (await confirmAction(says, false) === null) return;
    for (const x of document.querySelectorAll('button[id^="verify-"]')) x.disabled = true;
    progressEl.textContent = `verifying ${what}…`;
    try {
      const resp = await fetch('/api/fleet/verify', {method: 'POST', credentials: 'same-origin',
        headers: {'Content-Type': 'application/json'}, body: JSON.stringify({datacenter: dc})});
      if (!resp.ok) {
        let msg = resp.statusText;
        try { msg = (await resp.json()).error || msg; } catch (e) { /* not JSON */ }
        throw new Error(msg);
      }
      const reader = resp.body.getReader();
      const dec = new TextDecoder();
      let buf = '';
      let drifted = 0;
      let skipped = 0;
      let last = null;
      for (;;) {
        const {done, value} = await reader.read();
        if (value) buf += dec.decode(value, {stream: true});
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
          const line = JSON.parse(buf.slice(0, i));
          buf = buf.slice(i + 1);
          last = line;
          if (line.error) throw new Error(line.error);
          if (line.node) {
            if (line.skipped) skipped++;
            else if (isDrifted(line.node)) drifted++;
            progressEl.textContent = `verifying: ${line.done}/${line.total}, ${line.node.id}: ${line.skipped ? 'skipped (' + line.skipped + ')' : isDrifted(line.node) ? 'drift' : 'ok'}`;
          }
        }
        if (done) break;
      }
      if (!last || !last.end) throw new Error('the verification ended early');
      toast(`Verified ${last.total} node(s): ${drifted} drifted, ${skipped} skipped`);
      await route();
      document.getElementById('verify-progress').textContent = `last verification: ${last.total} node(s), ${drifted} drifted, ${skipped} skipped`;
    } catch (e) {
      progressEl.textContent = '';
      toast(e.message, true);
      for (const x of document.querySelectorAll('button[id^="verify-"]')) x.disabled = !me.mayDeploy;
    }
  });
  return b;
}

async function pageFleet(params) {
  const data = await get('/api/fleet');
  const onlyDrifted = params.get('drifted') === '1';
  const progress = h('span', {id: 'verify-progress', class: 'muted'});
  const byDC = new Map();
  for (const n of data.nodes) {
    if (!byDC.has(n.datacenter)) byDC.set(n.datacenter, []);
    byDC.get(n.datacenter).push(n);
  }
  const sections = [...byDC.keys()].sort().map((dc) => {
    const all = byDC.get(dc);
    const drifted = all.filter(isDrifted).length;
    const shown = onlyDrifted ? all.filter(isDrifted) : all;
    return h('section', {id: 'dc-' + dc},
      h('h2', {}, `${dc} (${all.length} nodes, `, h('span', {class: drifted ? 'error' : ''}, `${drifted} drifted`), ') ', verifyButton(dc, all.length, progress)),
      h('table', {class: 'fleet'}, h('thead', {}, h('tr', {}, ['Node', 'Address', 'Labels', 'Desired release', 'By rollout', 'Observed release', 'Drift', 'Observed at'].map((x) => h('th', {}, x)))),
        h('tbody', {}, shown.length ? shown.map((n) => h('tr', {id: 'node-' + n.id, class: isDrifted(n) ? 'drifted' : ''},
          h('td', {}, n.id), h('td', {}, n.address),
          h('td', {}, Object.entries(n.labels || {}).map(([k, v]) => `${k}=${v}`).join(', ')),
          h('td', {}, n.desired || h('span', {class: 'muted'}, 'none yet')),
          h('td', {}, n.desiredRollout ? h('a', {href: '#/rollout/' + encodeURIComponent(n.desiredRollout)}, n.desiredRollout) : ''),
          driftCells(n)))
          : h('tr', {}, h('td', {colspan: 8, class: 'muted'}, 'No drifted node in this datacenter.')))));
  });
  const filter = h('input', {type: 'checkbox', id: 'fleet-drifted', checked: onlyDrifted});
  filter.addEventListener('change', () => { location.hash = filter.checked ? '#/fleet?drifted=1' : '#/fleet'; });
  const why = me.mayDeploy ? null : h('span', {class: 'why', id: 'verify-why'}, `your role (${me.role}) cannot verify nodes: deployer or admin can`);
  main.replaceChildren(h('h1', {}, 'Fleet'),
    h('p', {class: 'muted'}, 'Desired: the release Outpost last activated on the node. Observed: what a gateway saw there at its last verification (periodic, or "verify now"). Drift: every difference between them.'),
    h('div', {class: 'actions'}, h('label', {class: 'inline'}, filter, ' drifted only'), verifyButton('', data.nodes.length, progress), why, progress),
    ...(sections.length ? sections : [h('p', {}, 'No nodes.')]));
}

function auditRow(e) {
  return h('tr', {},
    h('td', {}, fmtTime(e.time)), h('td', {}, e.actor || ''), h('td', {}, shortState((e.role || '').replace(/^ROLE_/, ''))),
    h('td', {}, e.action || ''), h('td', {}, e.resource || ''), h('td', {}, e.rolloutId || ''), h('td', {}, e.nodeId || ''),
    h('td', {}, e.result || ''), h('td', {}, e.message || ''));
}

async function pageAudit(params) {
  const names = ['rollout', 'actor', 'action', 'since'];
  const f = h('form', {class: 'filters'},
    names.map((k) => h('label', {}, k, h('input', {name: k, value: params.get(k) || '', placeholder: k === 'since' ? '1h or 2026-01-01T00:00:00Z' : ''}))),
    h('label', {}, 'follow', h('input', {type: 'checkbox', name: 'follow', value: '1', checked: params.get('follow') === '1'})),
    h('button', {type: 'submit'}, 'Filter'));
  f.addEventListener('submit', (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(f)) if (v) q.set(k, v);
    location.hash = '#/audit?' + q;
  });
  const q = new URLSearchParams();
  for (const k of names) if (params.get(k)) q.set(k, params.get(k));
  const data = await get('/api/audit?' + q);
  const body = h('tbody', {}, (data.entries || []).slice().reverse().map(auditRow));
  main.replaceChildren(h('h1', {}, 'Audit log'), f,
    h('table', {id: 'audit'}, h('thead', {}, h('tr', {}, ['Time', 'Actor', 'Role', 'Action', 'Resource', 'Rollout', 'Node', 'Result', 'Message'].map((x) => h('th', {}, x)))), body));
  if (params.get('follow') === '1') {
    q.delete('since');
    const es = new EventSource('/api/audit/follow?' + q);
    cleanup.push(() => es.close());
    es.addEventListener('entry', (e) => body.prepend(auditRow(JSON.parse(e.data))));
    es.addEventListener('failure', (e) => { toast(JSON.parse(e.data).error, true); es.close(); });
  }
}

async function route() {
  for (const c of cleanup) c();
  cleanup = [];
  const [path, query] = (location.hash.slice(1) || '/rollouts').split('?');
  const params = new URLSearchParams(query || '');
  const parts = path.split('/').filter(Boolean);
  for (const a of document.querySelectorAll('header nav a')) a.classList.toggle('active', a.getAttribute('href').slice(2) === parts[0] || (parts[0] === 'rollout' && a.getAttribute('href') === '#/rollouts'));
  try {
    switch (parts[0]) {
      case 'rollout': await pageRollout(decodeURIComponent(parts[1] || '')); break;
      case 'approvals': await pageApprovals(); break;
      case 'fleet': await pageFleet(params); break;
      case 'audit': await pageAudit(params); break;
      default: await pageRollouts(params);
    }
  } catch (e) {
    main.replaceChildren(h('p', {class: 'error', id: 'page-error'}, e.message));
  }
}

(async () => {
  try {
    me = await get('/api/me');
    document.getElementById('me').textContent = `${me.user} (${me.role}) · ${me.controlplane}`;
  } catch (e) {
    main.replaceChildren(h('p', {class: 'error'}, e.message));
    return;
  }
  window.addEventListener('hashchange', route);
  route();
})();
