// hero-bench's peer measurement of enqueueing: BullMQ's `addBulk` on the bench's
// private Redis, beside hero's JSON-RPC batch create-and-start of the same count.
//
//   node enqueue.mjs <redis socket path | redis:// URL> [jobs=100000] [in_flight=8] [chunk=1000]
//
// Adds `jobs` no-op jobs (removeOnComplete) with `addBulk` calls of `chunk` jobs each,
// `in_flight` calls at a time on one Queue (one ioredis connection, as BullMQ's Queue
// has), and times from the first call to the last one's answer. No worker runs: the
// jobs stay waiting, and the script checks that exactly `jobs` are. Prints one JSON line
// on stdout; errors go to stderr.

import { createRequire } from 'node:module';
import { performance } from 'node:perf_hooks';

import { Queue } from 'bullmq';

const require = createRequire(import.meta.url);
const BULLMQ_VERSION = require('bullmq/package.json').version;

const QUEUE_NAME = 'hero-bench-enqueue';

function usage(message) {
  console.error(`enqueue.mjs: ${message}`);
  console.error(
    'usage: node enqueue.mjs <redis socket path | redis:// URL> [jobs] [in_flight] [chunk]',
  );
  process.exit(2);
}

function positiveInt(text, name, fallback) {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n <= 0) usage(`${name} must be a positive integer, got ${text}`);
  return n;
}

const [target, jobsArg, inFlightArg, chunkArg] = process.argv.slice(2);
if (!target) usage('missing the Redis socket path or URL');
const jobs = positiveInt(jobsArg, 'jobs', 100_000);
const inFlight = positiveInt(inFlightArg, 'in_flight', 8);
const chunk = positiveInt(chunkArg, 'chunk', 1000);

const connection = target.includes('://')
  ? { url: target, maxRetriesPerRequest: null }
  : { path: target, maxRetriesPerRequest: null };

// Only so a stuck run ends instead of hanging the bench.
const giveUpMs = 60_000 + jobs;
const watchdog = setTimeout(() => {
  console.error(`enqueue.mjs: gave up after ${giveUpMs} ms`);
  process.exit(1);
}, giveUpMs);
watchdog.unref();

async function main() {
  const queue = new Queue(QUEUE_NAME, { connection });
  queue.on('error', (err) => console.error(`enqueue.mjs: queue error: ${err.message}`));
  await queue.waitUntilReady();
  await queue.obliterate({ force: true });

  const opts = { removeOnComplete: true };
  let next = 0;
  // Each lane takes the next chunk until none is left: `inFlight` addBulk calls at once.
  const lane = async () => {
    while (next < jobs) {
      const n = Math.min(chunk, jobs - next);
      next += n;
      const batch = [];
      for (let i = 0; i < n; i++) batch.push({ name: 'noop', data: {}, opts });
      await queue.addBulk(batch);
    }
  };
  const startedAt = performance.now();
  await Promise.all(Array.from({ length: inFlight }, lane));
  const secs = Math.max((performance.now() - startedAt) / 1000, 1e-3);

  const waiting = await queue.getWaitingCount();
  await queue.close();
  if (waiting !== jobs) throw new Error(`added ${jobs} jobs but ${waiting} are waiting`);
  console.log(
    JSON.stringify({
      jobs,
      in_flight: inFlight,
      chunk,
      secs: Number(secs.toFixed(4)),
      jobs_per_sec: Math.round(jobs / secs),
      bullmq: BULLMQ_VERSION,
    }),
  );
  clearTimeout(watchdog);
}

main().catch((err) => {
  if (err?.stack) console.error(err.stack);
  console.error(`enqueue.mjs: ${err?.message ?? err}`);
  process.exit(1);
});
