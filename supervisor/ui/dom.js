// Small DOM helpers, formatting and the status colours shared by every page.

/** Supervisor job statuses, in lifecycle order. */
export const STATUSES = ['Created', 'Dispatched', 'WaitingForPrerequisites', 'Started', 'Finished', 'Error'];
/** Script types, canonical spelling. */
export const SCRIPT_TYPES = ['SAL', 'OSIS', 'V', 'Python'];
/** Statuses a job never leaves. */
export const TERMINAL = new Set(['Finished', 'Error']);

function build(el, attrs, children) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'text') el.textContent = v;
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** An HTML element: `h('a', {href, class, onclick}, ...children)`. */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** An SVG element. */
export function s(tag, attrs, ...children) {
  return build(document.createElementNS('http://www.w3.org/2000/svg', tag), attrs, children);
}

/** The CSS class of a status (`st-finished`, `st-waitingforprerequisites`). */
export function statusClass(status) {
  return `st-${String(status || 'unknown').toLowerCase()}`;
}

/** A coloured status badge. */
export function badge(status) {
  return h('span', { class: `badge ${statusClass(status)}`, 'data-status': status }, status || '?');
}

function pad(n) {
  return String(n).padStart(2, '0');
}

/** An RFC 3339 time as local `YYYY-MM-DD HH:MM:SS` (or `HH:MM:SS` today); '' for none. */
export function time(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const clock = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  const today = new Date();
  if (d.toDateString() === today.toDateString()) return clock;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${clock}`;
}

/** Seconds between two RFC 3339 times, as `1.2 s`; '' when either is missing. */
export function duration(from, to) {
  if (!from || !to) return '';
  const ms = new Date(to) - new Date(from);
  if (!(ms >= 0)) return '';
  return ms < 10000 ? `${(ms / 1000).toFixed(2)} s` : `${Math.round(ms / 1000)} s`;
}

/** A number with thousands separators. */
export function num(n) {
  return Number(n || 0).toLocaleString('en-US');
}

/** The first 8 characters of a job id, the whole one in a tooltip. */
export function shortId(id) {
  return h('span', { class: 'mono', title: id }, String(id).slice(0, 8));
}

/** A message box for a failed load. */
export function errorBox(e) {
  return h('p', { class: 'error' }, e && e.message ? e.message : String(e));
}

/** Replaces the children of `el`. */
export function replace(el, ...children) {
  el.replaceChildren();
  build(el, {}, children);
  return el;
}
