// The dashboard's shell: hash routes, the token prompt, who is signed in.
//
// Routes: #/ (overview), #/jobs?filters, #/jobs/<id>, #/flows, #/flows/<context>/<id>,
// #/runners. Each page gets a fresh `Page`: its timers and sockets end when the user
// navigates away.

import { AuthError, get, onUnauthorized, token } from './api.js';
import { errorBox, replace } from './dom.js';
import { flowPage, flowsPage } from './flows.js';
import { jobPage, jobsPage } from './jobs.js';
import { overviewPage, runnersPage, startSampler } from './overview.js';

/** What a page may hold on to while it is shown. */
class Page {
  constructor() {
    this.live = true;
    this.cleanups = [];
  }

  /** Whether the page is still the one shown. */
  alive() {
    return this.live;
  }

  /** Runs `fn` now and every `ms` while the page is shown (never two runs at once). */
  every(ms, fn) {
    let timer = null;
    const tick = async () => {
      if (!this.live) return;
      try {
        await fn();
      } catch (e) {
        if (!(e instanceof AuthError)) console.warn(e);
      }
      if (this.live) timer = setTimeout(tick, ms);
    };
    this.cleanups.push(() => clearTimeout(timer));
    tick();
  }

  /** Runs `fn` when the page is left. */
  onLeave(fn) {
    this.cleanups.push(fn);
  }

  leave() {
    this.live = false;
    for (const fn of this.cleanups) fn();
  }
}

const routes = [
  [/^\/?$/, 'overview', (main, page) => overviewPage(main, page)],
  [/^\/jobs\/([^/?]+)$/, 'jobs', (main, page, m) => jobPage(main, page, decodeURIComponent(m[1]))],
  [/^\/jobs(?:\?(.*))?$/, 'jobs', (main, page, m) => jobsPage(main, page, new URLSearchParams(m[1] || ''))],
  [/^\/flows\/(\d+)\/(\d+)$/, 'flows', (main, page, m) => flowPage(main, page, Number(m[1]), Number(m[2]))],
  [/^\/flows$/, 'flows', (main, page) => flowsPage(main, page)],
  [/^\/runners$/, 'runners', (main, page) => runnersPage(main, page)],
];

let current = null;

async function route() {
  if (current) current.leave();
  const page = new Page();
  current = page;
  const main = document.getElementById('main');
  let path = location.hash.replace(/^#/, '') || '/';
  try {
    path = decodeURI(path);
  } catch {
    // A malformed escape: matched as it is (and most likely found by no route).
  }
  const found = routes.find(([re]) => re.test(path));
  for (const a of document.querySelectorAll('#nav a')) {
    a.classList.toggle('active', Boolean(found) && a.dataset.page === found[1]);
  }
  replace(main);
  if (!found) {
    replace(main, errorBox(`no page ${path}`));
    return;
  }
  try {
    await found[2](main, page, path.match(found[0]));
  } catch (e) {
    if (page.alive() && !(e instanceof AuthError)) main.append(errorBox(e));
  }
}

// The token prompt: shown on any 401; a submitted token is checked before it is kept.
const overlay = document.getElementById('token-overlay');
const form = document.getElementById('token-form');
const input = document.getElementById('token-input');
const tokenError = document.getElementById('token-error');
const forget = document.getElementById('forget');

function askForToken() {
  if (!overlay.hidden) return;
  overlay.hidden = false;
  tokenError.hidden = !token.get();
  tokenError.textContent = token.get() ? 'The token was refused.' : '';
  input.value = '';
  input.focus();
}

onUnauthorized(askForToken);

form.addEventListener('submit', async (e) => {
  e.preventDefault();
  const typed = input.value.trim();
  if (!typed) return;
  token.set(typed);
  overlay.hidden = true;
  try {
    await refreshWho();
    route();
  } catch (err) {
    if (!(err instanceof AuthError)) {
      tokenError.textContent = err.message;
      tokenError.hidden = false;
    }
  }
});

forget.addEventListener('click', () => {
  token.clear();
  location.reload();
});

async function refreshWho() {
  const who = document.getElementById('who');
  const runtime = await get('/v1/runtime');
  const identity = runtime.identity === 'anonymous' ? 'local user' : runtime.identity;
  replace(who, `${runtime.server_admin ? 'server admin' : identity} · v${runtime.version}`);
  who.title = `identity: ${runtime.identity}`;
  forget.hidden = !token.get();
  return runtime;
}

window.addEventListener('hashchange', route);
startSampler();
refreshWho().catch(() => {});
route();
