// hero-bench's peer measurement: a BullMQ burn-down on the bench's private Redis.
//
//   node burn_down.mjs <redis socket path | redis:// URL> [jobs=100000] [concurrency=64]
//
// Queues `jobs` no-op jobs first (addBulk in chunks, removeOnComplete; not timed), then
// starts ONE Worker with `concurrency` whose processor returns at once, and times from
// just before the Worker is created to its N-th `completed` event. Prints one JSON line
// on stdout; progress and errors go to stderr. Exits 0 only when every job completed
// exactly once and the queue is empty afterwards.

import { createRequire } from 'node:module';
import { performance } from 'node:perf_hooks';

import { Queue, Worker } from 'bullmq';

const require = createRequire(import.meta.url);
const BULLMQ_VERSION = require('bullmq/package.json').version;
const IOREDIS_VERSION = require('ioredis/package.json').version;

const QUEUE_NAME = 'hero-bench-burn-down';
/** Jobs per addBulk call while queuing. */
const CHUNK = 1000;

function usage(message) {
  console.error(`burn_down.mjs: ${message}`);
  console.error(
    'usage: node burn_down.mjs <redis socket path | redis:// URL> [jobs] [concurrency]',
  );
  process.exit(2);
}

function positiveInt(text, name, fallback) {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n <= 0) usage(`${name} must be a positive integer, got ${text}`);
  return n;
}

const [target, jobsArg, concurrencyArg] = process.argv.slice(2);
if (!target) usage('missing the Redis socket path or URL');
const jobs = positiveInt(jobsArg, 'jobs', 100_000);
const concurrency = positiveInt(concurrencyArg, 'concurrency', 64);

// A unix socket path or a URL; BullMQ needs `maxRetriesPerRequest: null` for the
// worker's (blocking) connection, so every connection gets it.
const connection = target.includes('://')
  ? { url: target, maxRetriesPerRequest: null }
  : { path: target, maxRetriesPerRequest: null };

// Generous, only so a stuck run (no Redis, a lost job) ends instead of hanging the bench.
const giveUpMs = 120_000 + 2 * jobs;
/** What the run is doing, for the watchdog's message. */
let stage = () => `connecting to Redis at ${target}`;
const watchdog = setTimeout(() => {
  console.error(`burn_down.mjs: gave up after ${giveUpMs} ms while ${stage()}`);
  process.exit(1);
}, giveUpMs);
watchdog.unref();

async function main() {
  const queue = new Queue(QUEUE_NAME, { connection });
  queue.on('error', (err) => console.error(`burn_down.mjs: queue error: ${err.message}`));
  await queue.waitUntilReady();
  stage = () => 'queuing the jobs';
  await queue.obliterate({ force: true });

  // Phase 1, not timed: queue every job first.
  const queuedAt = performance.now();
  const noop = { removeOnComplete: true };
  for (let start = 0; start < jobs; start += CHUNK) {
    const n = Math.min(CHUNK, jobs - start);
    const batch = [];
    for (let i = 0; i < n; i++) batch.push({ name: 'noop', data: {}, opts: noop });
    await queue.addBulk(batch);
  }
  const queueSecs = (performance.now() - queuedAt) / 1000;
  const waiting = await queue.getWaitingCount();
  if (waiting !== jobs) throw new Error(`queued ${jobs} jobs but ${waiting} are waiting`);
  console.error(
    `burn_down.mjs: queued ${jobs} jobs in ${queueSecs.toFixed(1)} s; starting the worker`,
  );

  // Phase 2, timed: one worker drains the queue.
  let processed = 0;
  const completed = new Set();
  let failure = null;
  let finish;
  const done = new Promise((resolve) => {
    finish = resolve;
  });
  stage = () => `draining: ${completed.size} of ${jobs} jobs completed`;
  const startedAt = performance.now();
  let lastAt = startedAt;
  const worker = new Worker(
    QUEUE_NAME,
    async () => {
      processed += 1;
    },
    { connection, concurrency },
  );
  worker.on('completed', (job) => {
    if (completed.has(job.id)) {
      failure = new Error(`job ${job.id} completed twice`);
      finish();
      return;
    }
    completed.add(job.id);
    if (completed.size === jobs) {
      lastAt = performance.now();
      finish();
    }
  });
  worker.on('failed', (job, err) => {
    failure = new Error(`job ${job?.id} failed: ${err.message}`);
    finish();
  });
  worker.on('error', (err) => console.error(`burn_down.mjs: worker error: ${err.message}`));

  await done;
  stage = () => 'closing the worker and the queue';
  await worker.close();
  if (failure) {
    await queue.close();
    throw failure;
  }

  // Exactness: every job ran once and nothing is left in the queue.
  const counts = await queue.getJobCounts('waiting', 'active', 'delayed', 'failed', 'completed');
  await queue.close();
  const left = Object.entries(counts).filter(([, n]) => n !== 0);
  if (processed !== jobs) throw new Error(`the processor ran ${processed} times for ${jobs} jobs`);
  if (left.length > 0) {
    throw new Error(`jobs left in the queue after the drain: ${JSON.stringify(counts)}`);
  }

  const drainSecs = Math.max((lastAt - startedAt) / 1000, 1e-3);
  console.log(
    JSON.stringify({
      jobs,
      concurrency,
      queue_secs: Number(queueSecs.toFixed(3)),
      drain_secs: Number(drainSecs.toFixed(3)),
      jobs_per_sec: Math.round(jobs / drainSecs),
      bullmq: BULLMQ_VERSION,
      ioredis: IOREDIS_VERSION,
      node: process.versions.node,
    }),
  );
  clearTimeout(watchdog);
}

main().catch((err) => {
  // The stack for a person, then the one line hero-bench puts in its table.
  if (err?.stack) console.error(err.stack);
  console.error(`burn_down.mjs: ${err?.message ?? err}`);
  process.exit(1);
});
