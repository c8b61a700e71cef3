// The jobs list (filtered, paged) and one job's page (live logs, stop, retry).

import { AuthError, get, jobEvents, post, serverNow, withQuery } from './api.js';
import { SCRIPT_TYPES, STATUSES, TERMINAL, badge, duration, errorBox, h, replace, time } from './dom.js';
import { jobRows } from './overview.js';

const FILTERS = ['status', 'script_type', 'context_id', 'caller_id', 'created_after', 'created_before'];
const PAGE_SIZE = 50;

/** The jobs list: `list_jobs` with the filters of the route's query, 50 a page. */
export async function jobsPage(main, page, query) {
  const filter = Object.fromEntries(FILTERS.map((f) => [f, query.get(f) || '']));
  const select = (name, options) =>
    h('select', { name }, h('option', { value: '' }, 'any'), options.map((o) => h('option', { value: o, selected: filter[name] === o }, o)));
  const text = (name, placeholder) => h('input', { name, value: filter[name], placeholder, size: 14 });
  const form = h(
    'form',
    { class: 'filters', id: 'job-filters' },
    h('label', {}, 'status ', select('status', STATUSES)),
    h('label', {}, 'type ', select('script_type', SCRIPT_TYPES)),
    h('label', {}, 'context ', text('context_id', 'context id')),
    h('label', {}, 'caller ', text('caller_id', 'caller id')),
    h('label', {}, 'created after ', text('created_after', 'RFC 3339')),
    h('label', {}, 'before ', text('created_before', 'RFC 3339')),
    h('button', { type: 'submit' }, 'Filter'),
    h('button', { type: 'button', id: 'last-10-min', title: 'Jobs created in the last 10 minutes', onclick: () => {
      form.elements.created_after.value = new Date(serverNow() - 10 * 60 * 1000).toISOString();
      form.requestSubmit();
    } }, 'Last 10 min'),
  );
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v) q.set(k, v);
    location.hash = q.toString() ? `#/jobs?${q}` : '#/jobs';
  });
  const table = h('div', { id: 'jobs-page' });
  const pager = h('div', { class: 'pager' });
  main.append(h('h1', { text: 'Jobs' }), form, h('div', { class: 'card' }, table, pager));

  // Pages are cursors: `cursors[i]` starts page i (null: the first).
  const cursors = [null];
  let index = 0;
  let next = null;
  const load = async () => {
    const answer = await get(withQuery('/v1/jobs', { ...filter, limit: PAGE_SIZE, cursor: cursors[index] }));
    if (!page.alive()) return;
    next = answer.next_cursor;
    replace(
      table,
      answer.jobs.length === 0
        ? h('p', { class: 'muted' }, next ? 'No job on this page (the listing looks at 5,000 entries a call): go on with Next.' : 'No job matches.')
        : jobRows(answer.jobs),
    );
    replace(
      pager,
      h('button', { type: 'button', id: 'first-page', disabled: index === 0, onclick: () => go(0) }, 'First'),
      h('button', { type: 'button', id: 'prev-page', disabled: index === 0, onclick: () => go(index - 1) }, 'Previous'),
      h('span', { class: 'muted' }, ` page ${index + 1}, oldest first · ${answer.jobs.length} shown `),
      h('button', { type: 'button', id: 'next-page', disabled: !next, onclick: () => go(index + 1) }, 'Next'),
    );
  };
  const go = (i) => {
    if (i > index) cursors[i] = next;
    index = i;
    cursors.length = index + 1;
    load().catch((e) => {
      if (!(e instanceof AuthError)) replace(table, errorBox(e));
    });
  };
  page.every(3000, async () => {
    try {
      await load();
    } catch (e) {
      if (page.alive() && !(e instanceof AuthError)) replace(table, errorBox(e));
      throw e;
    }
  });
}

function field(name, value) {
  return [h('dt', { text: name }), h('dd', {}, value)];
}

/** One job: its params, status history, output, error, live logs; stop and retry. */
export async function jobPage(main, page, id) {
  let job = await get(`/v1/jobs/${encodeURIComponent(id)}`);
  if (!page.alive()) return;
  const head = h('div', { class: 'job-head' });
  const params = h('div', { class: 'card' });
  const history = h('div', { class: 'card', id: 'history' });
  const result = h('div', { class: 'card', id: 'result' });
  const follow = h('span', { id: 'follow', class: 'muted' });
  const logs = h('pre', { id: 'logs', class: 'logs' });
  const message = h('p', { id: 'action-message', class: 'muted' });
  main.append(
    head,
    message,
    h('div', { class: 'grid two' }, params, history),
    result,
    h('div', { class: 'card' }, h('h3', {}, 'Logs ', follow), logs),
  );
  // Statuses seen live on the event stream, with the browser's time of arrival.
  const seen = [];

  const stop = async () => {
    stopButton.disabled = true;
    try {
      const answer = await post(`/v1/jobs/${job.id}/stop`, { reason: 'stopped from the dashboard' });
      replace(message, `Stop requested: the job is ${answer.status}.`);
      await refresh();
    } catch (e) {
      replace(message, errorBox(e));
      stopButton.disabled = false;
    }
  };
  // Retry: a new job with the same script, type, context, timeout, retries and
  // environment (prerequisites are not copied: they ended already). The original
  // stays as it ended.
  const retry = async () => {
    retryButton.disabled = true;
    try {
      const p = job.params;
      const body = { script: p.script, script_type: p.script_type, timeout: p.timeout, retries: p.retries, env_vars: p.env_vars };
      if (p.context_id) body.context_id = p.context_id;
      const answer = await post('/v1/jobs', body);
      location.hash = `#/jobs/${answer.id}`;
    } catch (e) {
      replace(message, errorBox(e));
      retryButton.disabled = false;
    }
  };
  const stopButton = h('button', { type: 'button', id: 'stop', class: 'danger', onclick: stop }, 'Stop');
  const retryButton = h('button', { type: 'button', id: 'retry', onclick: retry, title: 'Create and start a copy of this job' }, 'Retry as a new job');

  const draw = () => {
    const terminal = TERMINAL.has(job.status);
    stopButton.disabled = terminal;
    retryButton.disabled = !terminal;
    replace(
      head,
      h('h1', {}, 'Job ', h('span', { class: 'mono', id: 'job-id' }, job.id), ' ', h('span', { id: 'job-status' }, badge(job.status))),
      h('div', { class: 'actions' }, stopButton, retryButton),
    );
    const p = job.params;
    replace(
      params,
      h('h3', { text: 'Params' }),
      h(
        'dl',
        {},
        field('script type', p.script_type),
        field('context', p.context_id),
        field('caller', p.caller_id),
        field('timeout', `${p.timeout} s`),
        field('retries', p.retries),
        field('attempt', job.attempt),
        field('runner', job.runner || ''),
        field('trace id', h('span', { class: 'mono small' }, job.trace_id || '')),
        field('prerequisites', p.prerequisites.length ? p.prerequisites.map((pr) => h('div', {}, h('a', { href: `#/jobs/${pr}`, class: 'mono' }, pr))) : 'none'),
        field('env vars', Object.keys(p.env_vars).length ? Object.entries(p.env_vars).map(([k, v]) => h('div', { class: 'mono small' }, `${k}=${v}`)) : 'none'),
      ),
      h('h3', { text: 'Script' }),
      h('pre', { class: 'script', id: 'script' }, p.script),
    );
    const steps = [
      ['Created', job.created_at],
      ['queued', job.queued_at],
      [`Started (attempt ${job.attempt})`, job.started_at],
      [job.status, terminal ? job.finished_at : null],
    ].filter(([, at]) => at);
    replace(
      history,
      h('h3', { text: 'Status history' }),
      h('table', { class: 'counts' }, steps.map(([what, at]) => h('tr', {}, h('td', {}, what), h('td', {}, time(at)), h('td', { class: 'muted small' }, duration(job.created_at, at))))),
      seen.length
        ? [h('h4', { text: 'Seen live' }), h('ol', { id: 'live-statuses', class: 'small' }, seen.map(([st, at]) => h('li', {}, badge(st), ` ${time(at)}`)))]
        : null,
    );
    replace(
      result,
      h('h3', { text: 'Output' }),
      job.status === 'Finished' ? h('pre', { id: 'output' }, job.output || '') : h('p', { class: 'muted' }, 'None until it finishes.'),
      job.error ? [h('h3', { text: 'Error' }), h('pre', { id: 'error', class: 'error' }, `${job.error.type}: ${job.error.message}`)] : null,
    );
  };
  const refresh = async () => {
    job = await get(`/v1/jobs/${encodeURIComponent(id)}`);
    if (page.alive()) draw();
  };
  draw();

  // Live logs: the event WebSocket from the next line not shown yet; reconnects (from
  // that line) when it closes before the job ended.
  let cursor = 0;
  let socket = null;
  let retryTimer = null;
  const open = () => {
    replace(follow, '(following live)');
    socket = jobEvents(
      job.id,
      cursor,
      (frame) => {
        if (!page.alive()) return;
        if (frame.type === 'log') {
          if (frame.index >= cursor) {
            logs.append(h('span', { class: 'line', 'data-index': frame.index }, frame.line), '\n');
            cursor = frame.index + 1;
            logs.scrollTop = logs.scrollHeight;
          }
        } else if (frame.type === 'cursor_expired') {
          logs.append(h('span', { class: 'line muted' }, `… lines ${frame.requested} to ${frame.resumed_at - 1} were dropped by the log cap`), '\n');
          cursor = frame.resumed_at;
        } else if (frame.type === 'status' || frame.type === 'end') {
          if (frame.type === 'status' && (seen.length === 0 || seen[seen.length - 1][0] !== frame.status)) seen.push([frame.status, new Date().toISOString()]);
          job.status = frame.status;
          draw();
          refresh().catch(() => {});
        } else if (frame.type === 'error') {
          replace(follow, `(stream ended: ${frame.error.message})`);
        }
      },
      (ended) => {
        if (!page.alive()) return;
        if (ended || TERMINAL.has(job.status)) {
          replace(follow, '(the job ended)');
          return;
        }
        replace(follow, '(reconnecting…)');
        retryTimer = setTimeout(open, 2000);
      },
    );
  };
  open();
  page.onLeave(() => {
    clearTimeout(retryTimer);
    if (socket) socket.close();
  });
}
