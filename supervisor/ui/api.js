// The dashboard's only way to the server: the REST face under /v1, JSON-RPC over HTTP
// POST, and the job event WebSocket, all with the token the user typed (kept in this
// tab's sessionStorage, sent as `Authorization: Bearer`, or on the WebSocket as the
// `hero-bearer.<hex>` subprotocol: a browser cannot set headers there). Never in a URL.

const TOKEN_KEY = 'hero.token';

export const token = {
  get() {
    return sessionStorage.getItem(TOKEN_KEY) || '';
  },
  set(value) {
    sessionStorage.setItem(TOKEN_KEY, value);
  },
  clear() {
    sessionStorage.removeItem(TOKEN_KEY);
  },
};

/** The server answered 401: no token, or a wrong one. */
export class AuthError extends Error {}

/** Any other failed answer: HTTP status, stable code, message. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || code);
    this.status = status;
    this.code = code;
  }
}

let unauthorized = () => {};
let skewMs = 0;

/**
 * The server's clock as far as its answers' `Date` headers tell (to the second): job
 * times are the server's, and the browser's clock may be off.
 */
export function serverNow() {
  return Date.now() + skewMs;
}

/** Called (once per answer) whenever the server answers 401. */
export function onUnauthorized(handler) {
  unauthorized = handler;
}

async function request(method, path, body) {
  const headers = { Accept: 'application/json' };
  const t = token.get();
  if (t) headers.Authorization = `Bearer ${t}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const resp = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store',
    credentials: 'omit',
  });
  const date = Date.parse(resp.headers.get('Date') || '');
  if (!Number.isNaN(date)) skewMs = date - Date.now();
  const text = await resp.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (resp.status === 401) {
    unauthorized();
    throw new AuthError('a token is needed');
  }
  if (!resp.ok) {
    const e = data && data.error ? data.error : {};
    throw new ApiError(resp.status, e.code || `http_${resp.status}`, e.message || text);
  }
  return data;
}

/** GET a /v1 path. */
export function get(path) {
  return request('GET', path);
}

/** POST JSON to a /v1 path. */
export function post(path, body) {
  return request('POST', path, body === undefined ? {} : body);
}

/** `path` with the non-empty entries of `query` as its query string. */
export function withQuery(path, query) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) {
    if (v !== undefined && v !== null && v !== '') q.set(k, v);
  }
  const s = q.toString();
  return s ? `${path}?${s}` : path;
}

function rpcError(error) {
  const code = error.data && error.data.code ? error.data.code : String(error.code);
  const e = new ApiError(200, code, error.message);
  e.rpcCode = error.code;
  return e;
}

let nextId = 1;

/** One JSON-RPC call over HTTP POST; its result, or an ApiError. */
export async function rpc(method, params) {
  const answer = await request('POST', '/', { jsonrpc: '2.0', id: nextId++, method, params });
  if (answer.error) throw rpcError(answer.error);
  return answer.result;
}

/**
 * Several JSON-RPC calls in one batch request: per call, in order, `{result}` or
 * `{error}` (an ApiError).
 */
export async function rpcBatch(calls) {
  if (calls.length === 0) return [];
  const body = calls.map((c) => ({ jsonrpc: '2.0', id: nextId++, method: c.method, params: c.params }));
  const answers = await request('POST', '/', body);
  const byId = new Map((Array.isArray(answers) ? answers : [answers]).map((a) => [a.id, a]));
  return body.map((b) => {
    const a = byId.get(b.id);
    if (!a) return { error: new ApiError(200, 'no_answer', 'no answer in the batch') };
    return a.error ? { error: rpcError(a.error) } : { result: a.result };
  });
}

function hex(text) {
  return Array.from(new TextEncoder().encode(text), (b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * Follows job `id`'s event WebSocket (`/v1/jobs/{id}/events/ws`) from log line `cursor`:
 * `onFrame(frame)` for each frame, `onClose(ended)` when the socket closes (`ended`:
 * an `end` frame came first). Returns the socket.
 */
export function jobEvents(id, cursor, onFrame, onClose) {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const url = `${scheme}//${location.host}/v1/jobs/${encodeURIComponent(id)}/events/ws?cursor=${cursor}`;
  const t = token.get();
  const ws = t ? new WebSocket(url, ['hero', `hero-bearer.${hex(t)}`]) : new WebSocket(url);
  let ended = false;
  ws.onmessage = (e) => {
    let frame;
    try {
      frame = JSON.parse(e.data);
    } catch {
      return;
    }
    if (frame.type === 'end') ended = true;
    onFrame(frame);
  };
  ws.onclose = () => onClose(ended);
  return ws;
}
