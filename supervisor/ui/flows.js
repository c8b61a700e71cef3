// Flows: open one by context and id; its DAG drawn by levels (top to bottom), each job
// coloured by its status, re-read every 2 s.

import { AuthError, rpc, rpcBatch } from './api.js';
import { badge, errorBox, h, replace, s, statusClass } from './dom.js';

const RECENT_KEY = 'hero.flows';

function recentFlows() {
  try {
    const list = JSON.parse(sessionStorage.getItem(RECENT_KEY) || '[]');
    return Array.isArray(list) ? list : [];
  } catch {
    return [];
  }
}

function remember(context, id) {
  const list = recentFlows().filter((f) => !(f[0] === context && f[1] === id));
  list.unshift([context, id]);
  sessionStorage.setItem(RECENT_KEY, JSON.stringify(list.slice(0, 20)));
}

/** The flows page: a flow is opened by its context and id. */
export async function flowsPage(main) {
  const form = h(
    'form',
    { class: 'filters', id: 'flow-open' },
    h('label', {}, 'context ', h('input', { name: 'context', type: 'number', min: 0, required: true, size: 8 })),
    h('label', {}, 'flow id ', h('input', { name: 'id', type: 'number', min: 0, required: true, size: 8 })),
    h('button', { type: 'submit' }, 'Open'),
  );
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const data = new FormData(form);
    location.hash = `#/flows/${Number(data.get('context'))}/${Number(data.get('id'))}`;
  });
  const recent = recentFlows();
  main.append(
    h('h1', { text: 'Flows' }),
    h('p', { class: 'muted' }, 'A flow (flow.create, flow.start) is addressed by its context and its id: the API has no listing of flows, so open one by both. Flows opened in this tab are listed below.'),
    h('div', { class: 'card' }, form),
    h(
      'div',
      { class: 'card' },
      h('h3', { text: 'Opened in this tab' }),
      recent.length
        ? h('ul', {}, recent.map(([c, i]) => h('li', {}, h('a', { href: `#/flows/${c}/${i}` }, `flow ${i} of context ${c}`))))
        : h('p', { class: 'muted' }, 'None yet.'),
    ),
  );
}

const NODE_W = 150;
const NODE_H = 48;
const GAP_X = 28;
const GAP_Y = 64;
const PAD = 20;

/** The DAG as SVG: `levels` top to bottom, each centred; edges dependency -> dependent. */
function drawDag(dag, jobs) {
  const widest = Math.max(1, ...dag.levels.map((l) => l.length));
  const width = PAD * 2 + widest * NODE_W + (widest - 1) * GAP_X;
  const height = PAD * 2 + dag.levels.length * NODE_H + Math.max(0, dag.levels.length - 1) * GAP_Y;
  const at = new Map();
  dag.levels.forEach((level, row) => {
    const rowWidth = level.length * NODE_W + (level.length - 1) * GAP_X;
    const x0 = (width - rowWidth) / 2;
    level.forEach((id, col) => at.set(id, { x: x0 + col * (NODE_W + GAP_X), y: PAD + row * (NODE_H + GAP_Y) }));
  });
  const svg = s('svg', { id: 'dag', viewBox: `0 0 ${width} ${height}`, width, height, class: 'dag', 'data-levels': dag.levels.length });
  svg.append(s('defs', {}, s('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' }, s('path', { d: 'M 0 0 L 10 5 L 0 10 z', class: 'arrowhead' }))));
  for (const [from, to] of dag.edges) {
    const a = at.get(from);
    const b = at.get(to);
    if (!a || !b) continue;
    const x1 = a.x + NODE_W / 2;
    const y1 = a.y + NODE_H;
    const x2 = b.x + NODE_W / 2;
    const y2 = b.y;
    const my = (y1 + y2) / 2;
    svg.append(s('path', { class: 'edge', d: `M ${x1} ${y1} C ${x1} ${my}, ${x2} ${my}, ${x2} ${y2 - 2}`, 'marker-end': 'url(#arrow)', 'data-edge': `${from}-${to}` }));
  }
  dag.levels.forEach((level, row) => {
    for (const id of level) {
      const p = at.get(id);
      const job = jobs.get(id) || {};
      const node = dag.nodes[String(id)] || {};
      const status = job.status || 'unknown';
      const g = s('g', { class: `node ${statusClass(status)}`, 'data-job': id, 'data-level': row, 'data-status': status, transform: `translate(${p.x},${p.y})` });
      g.append(
        s('rect', { width: NODE_W, height: NODE_H, rx: 8 }),
        s('text', { x: 10, y: 19, class: 'title' }, `job ${id}`, s('tspan', { class: 'sub' }, `  ${node.script_type || ''}`)),
        s('text', { x: 10, y: 37, class: 'status' }, status),
      );
      if (job.job_id) {
        const link = s('a', { href: `#/jobs/${job.job_id}` }, g);
        svg.append(link);
      } else {
        svg.append(g);
      }
    }
  });
  return svg;
}

/** One flow: status, its DAG with live colours, its jobs. */
export async function flowPage(main, page, context, id) {
  remember(context, id);
  const head = h('div', { class: 'job-head' });
  const graph = h('div', { class: 'card dag-card' });
  const table = h('div', { class: 'card' });
  main.append(head, graph, table);
  let dag = null;
  page.every(2000, async () => {
    try {
      if (!dag) dag = await rpc('flow.dag', [{ context_id: context, id }]);
      const ids = Object.keys(dag.nodes).map(Number);
      const answers = await rpcBatch([
        { method: 'flow.load', params: [{ context_id: context, id }] },
        ...ids.map((j) => ({ method: 'job.load', params: [{ context_id: context, caller_id: 0, id: j }] })),
      ]);
      if (answers[0].error) throw answers[0].error;
      const flow = answers[0].result;
      const jobs = new Map();
      ids.forEach((j, i) => {
        const a = answers[i + 1];
        jobs.set(j, a.result || { status: 'unknown' });
      });
      if (!page.alive()) return;
      replace(head, h('h1', {}, `Flow ${id} `, h('span', { class: 'muted' }, `context ${context} `), h('span', { id: 'flow-status' }, badge(flow.status))));
      replace(
        graph,
        h('h3', { text: `DAG: ${dag.levels.length} level(s), ${ids.length} job(s)` }),
        drawDag(dag, jobs),
        h('p', { class: 'legend small' }, ['Dispatched', 'WaitingForPrerequisites', 'Started', 'Finished', 'Error'].map((st) => [badge(st), ' '])),
      );
      replace(
        table,
        h('h3', { text: 'Jobs' }),
        h(
          'table',
          { class: 'list' },
          h('thead', {}, h('tr', {}, ['job', 'level', 'status', 'type', 'depends', 'supervisor job', 'result'].map((t) => h('th', { text: t })))),
          h(
            'tbody',
            {},
            dag.levels.flatMap((level, row) =>
              level.map((j) => {
                const job = jobs.get(j);
                const resultText = job.result ? job.result.output ?? (job.result.error_type ? `${job.result.error_type}: ${job.result.error}` : '') : '';
                return h(
                  'tr',
                  {},
                  h('td', {}, j),
                  h('td', {}, row),
                  h('td', {}, badge(job.status)),
                  h('td', {}, dag.nodes[String(j)].script_type),
                  h('td', {}, dag.nodes[String(j)].depends.join(', ')),
                  h('td', {}, job.job_id ? h('a', { href: `#/jobs/${job.job_id}`, class: 'mono' }, job.job_id.slice(0, 8)) : ''),
                  h('td', { class: 'small' }, resultText),
                );
              }),
            ),
          ),
        ),
      );
    } catch (e) {
      if (page.alive() && !(e instanceof AuthError)) replace(head, h('h1', { text: `Flow ${id}` }), errorBox(e));
      throw e;
    }
  });
}
