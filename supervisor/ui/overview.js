// The overview (counts, queues, throughput, runners, the newest jobs) and the runners page.

import { AuthError, get, rpc, serverNow, withQuery } from './api.js';
import { STATUSES, TERMINAL, badge, errorBox, h, num, replace, s, shortId, time } from './dom.js';

// Throughput: `stats` is polled every few seconds for as long as the dashboard is open
// (whatever page is shown), and the jobs that reached Finished or Error between two
// polls are the change of those two counts. Retention removing old jobs in between
// lowers the figure (it is net of what retention removed).
const SAMPLE_MS = 3000;
const WINDOW_MS = 5 * 60 * 1000;
const samples = [];
const listeners = new Set();
let latest = null;

/** Starts polling `/v1/runtime` (stats) for the throughput chart. */
export function startSampler() {
  const tick = async () => {
    try {
      const runtime = await get('/v1/runtime');
      latest = { runtime, error: null };
      if (runtime.server_admin && runtime.jobs_by_status) {
        const st = runtime.jobs_by_status;
        samples.push({ t: Date.now(), ended: (st.Finished || 0) + (st.Error || 0) });
        while (samples.length && samples[0].t < Date.now() - WINDOW_MS - SAMPLE_MS) samples.shift();
      }
    } catch (e) {
      latest = { runtime: latest && latest.runtime, error: e };
    }
    for (const fn of listeners) fn(latest);
    setTimeout(tick, SAMPLE_MS);
  };
  tick();
}

/** Jobs ended per second between consecutive samples: `[{t, rate}]`. */
export function rates() {
  const out = [];
  for (let i = 1; i < samples.length; i++) {
    const dt = (samples[i].t - samples[i - 1].t) / 1000;
    if (dt <= 0) continue;
    out.push({ t: samples[i].t, rate: Math.max(0, samples[i].ended - samples[i - 1].ended) / dt });
  }
  return out;
}

function chart() {
  const width = 600;
  const height = 150;
  const left = 40;
  const bottom = 20;
  const points = rates();
  const now = Date.now();
  const max = Math.max(1, ...points.map((p) => p.rate));
  const x = (t) => left + ((t - (now - WINDOW_MS)) / WINDOW_MS) * (width - left - 4);
  const y = (r) => height - bottom - (r / max) * (height - bottom - 10);
  const svg = s('svg', {
    id: 'throughput',
    viewBox: `0 0 ${width} ${height}`,
    class: 'chart',
    role: 'img',
    'aria-label': 'jobs ended per second, last 5 minutes',
    'data-points': points.length,
  });
  for (const frac of [0, 0.5, 1]) {
    const yy = y(max * frac);
    svg.append(
      s('line', { x1: left, x2: width - 4, y1: yy, y2: yy, class: 'grid' }),
      s('text', { x: left - 6, y: yy + 4, class: 'axis', 'text-anchor': 'end' }, formatRate(max * frac)),
    );
  }
  for (const m of [5, 4, 3, 2, 1, 0]) {
    const anchor = m === 5 ? 'start' : m === 0 ? 'end' : 'middle';
    svg.append(s('text', { x: x(now - m * 60000), y: height - 4, class: 'axis', 'text-anchor': anchor }, m ? `-${m} min` : 'now'));
  }
  const visible = points.filter((p) => p.t >= now - WINDOW_MS);
  if (visible.length > 0) {
    const line = visible.map((p) => `${x(p.t).toFixed(1)},${y(p.rate).toFixed(1)}`).join(' ');
    const first = visible[0];
    const last = visible[visible.length - 1];
    svg.append(
      s('polygon', { class: 'area', points: `${x(first.t).toFixed(1)},${y(0)} ${line} ${x(last.t).toFixed(1)},${y(0)}` }),
      s('polyline', { class: 'line', points: line }),
    );
  }
  return svg;
}

function formatRate(r) {
  return r >= 100 ? num(Math.round(r)) : r >= 10 ? r.toFixed(0) : r.toFixed(1);
}

function countTable(title, counts, keys, attr) {
  const names = keys || Object.keys(counts || {});
  return h(
    'div',
    { class: 'card' },
    h('h3', { text: title }),
    h(
      'table',
      { class: 'counts' },
      names.map((k) =>
        h('tr', {}, h('td', {}, attr === 'status' ? badge(k) : k), h('td', { class: 'num', [`data-count-${attr}`]: k }, num(counts[k]))),
      ),
    ),
  );
}

/** A pool's state in one word: up (every slot connected), degraded, down. */
export function runnerState(r) {
  if (r.connected >= r.processes && r.processes > 0) return 'up';
  return r.connected > 0 ? 'degraded' : 'down';
}

function runnersTable(runners) {
  if (!runners || runners.length === 0) return h('p', { class: 'muted' }, 'No runner pools.');
  return h(
    'table',
    { class: 'list', id: 'runners' },
    h('thead', {}, h('tr', {}, ['pool', 'state', 'script types', 'transport', 'connected', 'in flight', 'restarts', 'protocol', 'failures', 'last error'].map((t) => h('th', { text: t })))),
    h(
      'tbody',
      {},
      runners.map((r) =>
        h(
          'tr',
          { 'data-runner': r.name, 'data-state': runnerState(r) },
          h('td', { class: 'mono' }, r.name),
          h('td', {}, h('span', { class: `badge rs-${runnerState(r)}` }, runnerState(r))),
          h('td', {}, r.script_types.join(', ')),
          h('td', {}, r.transport),
          h('td', { class: 'num' }, `${r.connected} / ${r.processes}`),
          h('td', { class: 'num' }, `${r.in_flight} / ${r.max_in_flight}`),
          h('td', { class: 'num' }, num(r.restarts)),
          h('td', {}, r.protocol || '–', h('span', { class: 'muted' }, ` (hello ${r.hello})`)),
          h('td', { class: 'num' }, num(r.failures)),
          h('td', { class: 'small' }, r.last_error || ''),
        ),
      ),
    ),
  );
}

function queues(runtime) {
  const rows = Object.entries(runtime.queued || {}).map(([t, n]) => h('tr', {}, h('td', {}, `${t} queue`), h('td', { class: 'num', 'data-queue': t }, num(n))));
  for (const lane of runtime.lanes || []) {
    rows.push(h('tr', {}, h('td', {}, `context ${lane.context_id} lane ${lane.script_type}`), h('td', { class: 'num' }, num(lane.queued))));
  }
  rows.push(h('tr', {}, h('td', {}, 'delayed (retry backoff)'), h('td', { class: 'num', 'data-queue': 'delayed' }, num(runtime.delayed))));
  return h('div', { class: 'card' }, h('h3', { text: 'Queue depths' }), h('table', { class: 'counts' }, rows));
}

/** The overview page. */
export async function overviewPage(main, page) {
  const figures = h('section', { id: 'figures' });
  const recent = h('section', { class: 'card', id: 'recent' });
  main.append(h('h1', { text: 'Overview' }), figures, recent);

  const draw = (state) => {
    if (!page.alive() || !state) return;
    const runtime = state.runtime;
    if (!runtime) {
      if (state.error && !(state.error instanceof AuthError)) replace(figures, errorBox(state.error));
      return;
    }
    if (!runtime.server_admin) {
      replace(figures, h('p', { class: 'muted' }, `Signed in as ${runtime.identity}. The server's figures (counts, queues, runners) are for server admins; the newest jobs of your contexts are below.`));
      return;
    }
    const up = Math.floor(runtime.uptime_secs || 0);
    replace(
      figures,
      h('p', { class: 'muted' }, `version ${runtime.version} · up ${Math.floor(up / 3600)} h ${Math.floor((up % 3600) / 60)} min ${up % 60} s`),
      h(
        'div',
        { class: 'grid' },
        countTable('Jobs by status', runtime.jobs_by_status, STATUSES, 'status'),
        countTable('Jobs by script type', runtime.jobs_by_script_type, null, 'type'),
        queues(runtime),
      ),
      h('div', { class: 'card' }, h('h3', { text: 'Throughput: jobs ended per second, last 5 minutes' }), chart()),
      h('div', { class: 'card' }, h('h3', {}, 'Runners ', h('a', { href: '#/runners', class: 'small' }, 'details')), runnersTable(runtime.runners)),
    );
  };
  listeners.add(draw);
  page.onLeave(() => listeners.delete(draw));
  draw(latest);

  // The newest jobs: those created since 10 minutes before the page opened, found by
  // listing (oldest first) from the newest one seen on; the ones shown that have not
  // ended are re-read each time, so they change status here as they run. When more
  // than 1,000 were created since the last look, it skips ahead to the last 10 s.
  const shown = new Map();
  let since = new Date(serverNow() - 10 * 60 * 1000).toISOString();
  page.every(2000, async () => {
    let cursor = null;
    for (let pages = 0; pages < 5; pages++) {
      const answer = await get(withQuery('/v1/jobs', { created_after: since, limit: 200, cursor }));
      for (const j of answer.jobs) shown.set(j.id, j);
      cursor = answer.next_cursor;
      if (!cursor) break;
    }
    if (cursor) {
      shown.clear();
      since = new Date(serverNow() - 10 * 1000).toISOString();
      const answer = await get(withQuery('/v1/jobs', { created_after: since, limit: 1000 }));
      for (const j of answer.jobs) shown.set(j.id, j);
    }
    const newest = [...shown.values()].sort((a, b) => (a.created_at < b.created_at ? 1 : a.created_at > b.created_at ? -1 : 0)).slice(0, 12);
    shown.clear();
    for (const j of newest) shown.set(j.id, j);
    if (newest.length) since = new Date(new Date(newest[0].created_at).getTime() - 1).toISOString();
    await Promise.all(
      newest
        .filter((j) => !TERMINAL.has(j.status))
        .map(async (j) => {
          try {
            const full = await get(`/v1/jobs/${j.id}`);
            Object.assign(j, { status: full.status, started_at: full.started_at, finished_at: full.finished_at, attempt: full.attempt });
          } catch {
            shown.delete(j.id);
          }
        }),
    );
    if (!page.alive()) return;
    replace(
      recent,
      h('h3', {}, 'Newest jobs ', h('a', { href: '#/jobs', class: 'small' }, 'all jobs')),
      newest.length === 0
        ? h('p', { class: 'muted' }, 'No job created in the last 10 minutes.')
        : jobRows([...shown.values()]),
    );
  });
}

/** A table of job summaries (as `list_jobs` gives them), each row linking to the job. */
export function jobRows(jobs) {
  return h(
    'table',
    { class: 'list jobs' },
    h('thead', {}, h('tr', {}, ['job', 'status', 'type', 'context', 'caller', 'created', 'started', 'finished', 'attempt'].map((t) => h('th', { text: t })))),
    h(
      'tbody',
      {},
      jobs.map((j) =>
        h(
          'tr',
          { 'data-job': j.id, 'data-status': j.status },
          h('td', {}, h('a', { href: `#/jobs/${j.id}` }, shortId(j.id))),
          h('td', {}, badge(j.status)),
          h('td', {}, j.script_type),
          h('td', {}, j.context_id),
          h('td', { class: 'small' }, j.caller_id),
          h('td', {}, time(j.created_at)),
          h('td', {}, time(j.started_at)),
          h('td', {}, time(j.finished_at)),
          h('td', { class: 'num' }, j.attempt),
        ),
      ),
    ),
  );
}

/** The runners page: every pool (`list_runners`), live. */
export async function runnersPage(main, page) {
  const body = h('section', {});
  main.append(
    h('h1', { text: 'Runners' }),
    h('p', { class: 'muted' }, 'Runner pools: configured ones, the built-in runner, and registered runners (runner.create) as <pool>.<n>. State: up when every process or connection is live.'),
    body,
  );
  page.every(2000, async () => {
    try {
      const runners = await rpc('list_runners', []);
      if (page.alive()) replace(body, h('div', { class: 'card' }, runnersTable(runners)));
    } catch (e) {
      if (page.alive() && !(e instanceof AuthError)) replace(body, errorBox(e));
      throw e;
    }
  });
}
