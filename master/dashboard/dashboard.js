// taskq dashboard (docs/DASHBOARD.md): polls the master's JSON API (/api/<RPC>,
// master/dashboard_api.h) every few seconds as the credential whose token the
// user entered. The token lives in sessionStorage (this tab only, gone when it
// closes) and goes out only as `Authorization: Bearer`, never in a URL.
// Everything the master sends is put into the page as text (textContent),
// never as HTML.

const TOKEN_KEY = 'taskq.token';
const POLL_MS = 3000;
const RING = 120;          // rate samples kept: 6 minutes at POLL_MS
const DEAD_PAGE = 100;     // dead tasks shown per queue
const FAILURE_QUEUES = 10; // queues scanned for recent failures
const FAILURES_SHOWN = 10;

const $ = (id) => document.getElementById(id);
const num = (v) => Number(v ?? 0);

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

// One call: GET /api/<rpc>?<params>, or POST with `body` as JSON.
async function api(rpc, params = {}, body = null) {
  const headers = {};
  if (token()) headers.Authorization = 'Bearer ' + token();
  const init = { headers, cache: 'no-store', credentials: 'omit' };
  let url = '/api/' + rpc;
  if (body !== null) {
    init.method = 'POST';
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  } else {
    const query = new URLSearchParams(params).toString();
    if (query) url += '?' + query;
  }
  const res = await fetch(url, init);
  let data = null;
  try {
    data = await res.json();
  } catch {
    // not JSON: the status says enough
  }
  if (!res.ok) {
    throw new ApiError(res.status, data?.code ?? String(res.status), data?.message ?? res.statusText);
  }
  return data;
}

// An element with properties (`class`, `data-*` as attributes) and children.
function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('data-')) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

const cell = (value, cls = '') => el('td', { class: cls }, value);
// A long text cut to one line; all of it on hover.
const errorCell = (text) => el('td', { class: 'error', title: text ?? '' }, text ?? '');
const numCell = (value, cls = '') => cell(value, ('num ' + cls).trim());

// A time: the clock time if it is today, else date and time.
function when(ms) {
  if (num(ms) <= 0) return '';
  const d = new Date(num(ms));
  return d.toDateString() === new Date().toDateString() ? d.toLocaleTimeString() : d.toLocaleString();
}

function duration(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return s + 's';
  if (s < 3600) return Math.floor(s / 60) + 'm ' + (s % 60) + 's';
  if (s < 86400) return Math.floor(s / 3600) + 'h ' + Math.floor((s % 3600) / 60) + 'm';
  return Math.floor(s / 86400) + 'd ' + Math.floor((s % 86400) / 3600) + 'h';
}

function rate(v) {
  return v >= 10 ? v.toFixed(0) : v.toFixed(1);
}

function setStatus(text, kind = '') {
  const s = $('status');
  s.textContent = text;
  s.className = kind;
}

function showError(what, err) {
  if (err instanceof ApiError && err.status === 401) {
    setStatus(`401: ${err.message} (enter a token above)`, 'error');
  } else if (err instanceof ApiError) {
    setStatus(`${what}: ${err.status} ${err.code}: ${err.message}`, 'error');
  } else {
    setStatus(`${what}: ${err.message ?? err}`, 'error');
  }
}

// A task id that opens the task panel.
function taskLink(id) {
  return el('button', { type: 'button', class: 'link', 'data-task': id,
                        onclick: () => showTask(id) }, id);
}

// --- queues and the rate chart ----------------------------------------------

const samples = [];           // {t, put, done, failed}: totals over all queues
const previous = new Map();   // queue -> {t, put, done, failed} of the last poll
let queues = [];

async function listQueues() {
  const all = [];
  let pageToken = '';
  for (let page = 0; page < 10; page++) {  // at most 10,000 queues
    const params = pageToken ? { page_token: pageToken } : {};
    const answer = await api('ListQueues', params);
    all.push(...answer.queues);
    pageToken = answer.next_page_token;
    if (!pageToken) break;
  }
  return all;
}

function counters(q) {
  return { put: num(q.total_put), done: num(q.total_completed), failed: num(q.total_failed) };
}

function renderQueues(now) {
  const rows = [];
  const totals = { t: now, put: 0, done: 0, failed: 0 };
  for (const q of queues) {
    const name = q.config.name;
    const c = counters(q);
    totals.put += c.put;
    totals.done += c.done;
    totals.failed += c.failed;
    const last = previous.get(name);
    const dt = last ? (now - last.t) / 1000 : 0;
    const per = (k) => (dt > 0 ? rate(Math.max(0, c[k] - last[k]) / dt) : '');
    previous.set(name, { t: now, ...c });
    const dead = num(q.dead);
    const deadCell = numCell(dead, dead > 0 ? 'dead dead-count' : 'dead');
    const nameCell = el('td', { class: 'name' },
      el('button', { type: 'button', class: 'link', onclick: () => selectDeadQueue(name) }, name));
    rows.push(el('tr', { 'data-queue': name }, nameCell,
      numCell(num(q.ready), 'ready'), numCell(num(q.delayed), 'delayed'),
      numCell(num(q.leased), 'leased'), deadCell, numCell(num(q.unfinished), 'unfinished'),
      numCell(num(q.workers), 'workers'), numCell(per('put'), 'put-rate'),
      numCell(per('done'), 'done-rate'), numCell(per('failed'), 'failed-rate'),
      cell(q.shut_down ? 'shut down' : '', 'state')));
  }
  $('queues').tBodies[0].replaceChildren(...rows);
  samples.push(totals);
  if (samples.length > RING) samples.shift();
  drawChart();
}

function drawChart() {
  const svg = $('chart');
  const W = 600, H = 120;
  const rates = [];
  for (let i = 1; i < samples.length; i++) {
    const a = samples[i - 1], b = samples[i];
    const dt = (b.t - a.t) / 1000;
    if (dt <= 0) continue;
    rates.push({ t: b.t, put: Math.max(0, b.put - a.put) / dt,
                 done: Math.max(0, b.done - a.done) / dt,
                 failed: Math.max(0, b.failed - a.failed) / dt });
  }
  const max = Math.max(1, ...rates.map((r) => Math.max(r.put, r.done, r.failed)));
  const ns = 'http://www.w3.org/2000/svg';
  const lines = ['put', 'done', 'failed'].map((key) => {
    const line = document.createElementNS(ns, 'polyline');
    line.setAttribute('class', key);
    // The samples so far fill the width (at least 20 slots), newest right.
    const slots = Math.max(rates.length, 20);
    const points = rates.map((r, i) => {
      const x = (W * (slots - rates.length + i)) / (slots - 1);
      const y = H - 2 - ((H - 4) * r[key]) / max;
      return x.toFixed(1) + ',' + y.toFixed(1);
    });
    line.setAttribute('points', points.join(' '));
    return line;
  });
  svg.replaceChildren(...lines);
  const span = samples.length > 1 ? (samples[samples.length - 1].t - samples[0].t) / 1000 : 0;
  $('chart-scale').textContent = `top = ${rate(max)}/s, last ${duration(span)}`;
}

// --- workers ------------------------------------------------------------------

async function refreshWorkers(now) {
  let answer;
  try {
    answer = await api('ListWorkers');
  } catch (err) {
    if (err instanceof ApiError && (err.status === 404 || err.status === 501)) {
      $('workers-note').textContent = 'This master does not list its workers (no ListWorkers).';
      return;
    }
    throw err;
  }
  const workers = answer.workers ?? [];
  $('workers-note').textContent = workers.length ? '' : 'No worker is connected.';
  const rows = workers.map((w) => {
    const running = (w.running_tasks ?? []).slice(0, 5);
    const runningCell = el('td', { class: 'running' }, String(num(w.running)));
    for (const t of running) runningCell.append(' ', taskLink(t.task_id));
    if (num(w.running) > running.length) runningCell.append(' …');
    return el('tr', { 'data-worker': w.worker_id },
      cell(w.worker_id, 'id'), cell(w.host ?? '', 'host'), cell(w.peer ?? '', 'peer'),
      cell(num(w.since_unix_ms) ? duration((now - num(w.since_unix_ms)) / 1000) : '', 'up'),
      cell((w.queues ?? []).join(', '), 'queues'), numCell(num(w.credits), 'credits'),
      runningCell);
  });
  $('workers').tBodies[0].replaceChildren(...rows);
}

// --- dead letters and recent failures -------------------------------------------

// A table's only row: a note (e.g. the credential may not read this).
function noteRow(table, columns, text) {
  $(table).tBodies[0].replaceChildren(
    el('tr', {}, el('td', { colSpan: columns, class: 'note' }, text)));
}

// A refusal of the role table (403) is shown in the panel, not as an error.
function denied(err, table, columns) {
  if (!(err instanceof ApiError) || err.status !== 403) return false;
  noteRow(table, columns, err.message);
  return true;
}

const lastFailure = (t) => Math.max(0, ...(t.history ?? []).map((a) => num(a.ended_unix_ms)));
let failuresKey = '';

async function refreshFailures() {
  const withDead = queues.filter((q) => num(q.dead) > 0).slice(0, FAILURE_QUEUES);
  // Only when a dead-letter set changed.
  const key = withDead.map((q) => q.config.name + ':' + q.dead + ':' + q.total_failed).join(',');
  if (key === failuresKey) return;
  let pages;
  try {
    pages = await Promise.all(withDead.map((q) =>
      api('ListDead', { queue: q.config.name, limit: DEAD_PAGE })
        .then((a) => (a.tasks ?? []).map((t) => ({ set: q.config.name, task: t })))));
  } catch (err) {
    if (denied(err, 'failures', 6)) return;
    throw err;
  }
  const all = pages.flat().sort((a, b) => lastFailure(b.task) - lastFailure(a.task));
  const rows = all.slice(0, FAILURES_SHOWN).map(({ set, task }) => el('tr', {},
    el('td', {}, taskLink(task.id)), cell(set), cell(task.origin_queue),
    numCell(num(task.attempt)), cell(when(lastFailure(task))),
    errorCell(task.last_error)));
  $('failures').tBodies[0].replaceChildren(...rows);
  failuresKey = key;
}

function selectDeadQueue(name) {
  const select = $('dead-queue');
  if (![...select.options].some((o) => o.value === name)) select.append(el('option', { value: name }, name));
  select.value = name;
  refreshDead().catch((err) => showError('dead letters', err));
}

function renderDeadOptions() {
  const select = $('dead-queue');
  const current = select.value;
  const names = queues.filter((q) => num(q.dead) > 0).map((q) => q.config.name);
  if (current && !names.includes(current)) names.unshift(current);
  const same = names.length === select.options.length &&
               names.every((n, i) => select.options[i].value === n);
  if (!same) {
    select.replaceChildren(...names.map((n) => el('option', { value: n }, n)));
    select.value = current && names.includes(current) ? current : (names[0] ?? '');
  }
}

async function refreshDead() {
  const queue = $('dead-queue').value;
  if (!queue) return noteRow('dead', 6, 'No dead letters.');
  let answer;
  try {
    answer = await api('ListDead', { queue, limit: DEAD_PAGE });
  } catch (err) {
    if (denied(err, 'dead', 6)) return;
    throw err;
  }
  const rows = (answer.tasks ?? []).map((t) => el('tr', { 'data-dead': t.id },
    el('td', {}, taskLink(t.id)), cell(t.origin_queue), cell(t.handler), numCell(num(t.attempt)),
    errorCell(t.last_error),
    el('td', {}, el('button', { type: 'button', 'data-requeue': t.id,
                                onclick: () => act('RequeueDead', { queue, task_id: t.id }) },
                    'Requeue'))));
  if (rows.length === 0) return noteRow('dead', 6, `No dead letters in ${queue}.`);
  $('dead').tBodies[0].replaceChildren(...rows);
}

// An action (admin credentials): its answer or refusal in the status line.
async function act(rpc, body) {
  try {
    const answer = await api(rpc, {}, body);
    const what = rpc === 'RequeueDead' ? `requeued ${answer.requeued}` : `purged ${answer.purged}`;
    setStatus(`${what} from ${body.queue}`, 'ok');
    failuresKey = '';
    await refresh();
  } catch (err) {
    showError(rpc, err);
  }
}

// --- one task ---------------------------------------------------------------------

function payloadText(b64) {
  if (!b64) return '(none)';
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    return `${bytes.length} bytes (binary)`;
  }
}

async function showTask(id) {
  $('task-id').value = id;
  const out = $('task');
  try {
    const t = await api('GetTask', { task_id: id });
    const dl = el('dl');
    const field = (name, value) => {
      if (value === '' || value === undefined || value === null) return;
      dl.append(el('dt', {}, name), el('dd', { 'data-field': name }, value));
    };
    field('id', t.id);
    field('state', String(t.state).replace('TASK_STATE_', '').toLowerCase());
    field('queue', t.queue);
    field('origin queue', t.origin_queue);
    field('handler', t.handler);
    field('attempt', num(t.attempt));
    field('priority', num(t.priority));
    field('enqueued', when(t.enqueued_unix_ms));
    field('not before', when(t.not_before_unix_ms));
    field('worker', t.worker);
    field('last error', t.last_error);
    field('reply to', t.reply_to);
    field('dedup key', t.dedup_key);
    const headers = Object.entries(t.headers ?? {}).map(([k, v]) => `${k}=${v}`).join(', ');
    field('headers', headers);
    field('args', (t.args ?? []).join(' '));
    field('payload', el('pre', {}, payloadText(t.payload)));
    const history = el('table', { id: 'task-history' },
      el('thead', {}, el('tr', {}, ...['attempt', 'worker', 'ended', 'how', 'error'].map((h) => el('th', {}, h)))),
      el('tbody', {}, ...(t.history ?? []).map((a) => el('tr', {},
        numCell(num(a.attempt)), cell(a.worker), cell(when(a.ended_unix_ms)), cell(a.how),
        errorCell(a.error)))));
    out.replaceChildren(dl, el('h3', {}, 'History'),
      (t.history ?? []).length ? history : el('p', { class: 'note' }, 'No attempt has ended yet.'));
  } catch (err) {
    out.replaceChildren(el('p', { class: 'note' },
      err instanceof ApiError ? `${err.status} ${err.code}: ${err.message}` : String(err)));
  }
}

// --- the loop -----------------------------------------------------------------------

let busy = false;

async function refresh() {
  if (busy) return;
  busy = true;
  try {
    const now = Date.now();
    queues = await listQueues();
    renderQueues(now);
    renderDeadOptions();
    const results = await Promise.allSettled([refreshWorkers(now), refreshFailures(), refreshDead()]);
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
    if ($('status').className === 'error') setStatus('');
    $('updated').textContent = 'updated ' + new Date(now).toLocaleTimeString();
  } catch (err) {
    showError('refresh', err);
  } finally {
    busy = false;
  }
}

function init() {
  $('token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const value = $('token').value.trim();
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    $('token').value = '';
    $('token').placeholder = token() ? 'token set (this tab only)' : 'a credential\'s token (tq1...)';
    failuresKey = '';
    setStatus('');
    refresh();
  });
  $('token-forget').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    $('token').placeholder = 'a credential\'s token (tq1...)';
    setStatus('token forgotten');
  });
  if (token()) $('token').placeholder = 'token set (this tab only)';
  $('dead-queue').addEventListener('change', () => refreshDead().catch((e) => showError('dead letters', e)));
  $('dead-requeue-all').addEventListener('click', () => {
    const queue = $('dead-queue').value;
    if (queue && confirm(`Requeue every dead task of ${queue} to its origin queue?`)) {
      act('RequeueDead', { queue });
    }
  });
  $('dead-purge').addEventListener('click', () => {
    const queue = $('dead-queue').value;
    if (queue && confirm(`Purge every dead task of ${queue}? They are deleted for good.`)) {
      act('PurgeDead', { queue });
    }
  });
  $('task-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const id = $('task-id').value.trim();
    if (/^[0-9]+$/.test(id)) showTask(id);
  });
  refresh();
  setInterval(() => {
    if (!document.hidden) refresh();
  }, POLL_MS);
}

init();
