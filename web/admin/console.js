// Tollgate admin console, part 1: the API client, sign-in, navigation and the small
// DOM helpers the views (views.js) are built with.
//
// Rules this file keeps (README "Admin console", functions/admin/console.py):
// * the token (an admin token or a lead's proxy key) lives in sessionStorage: gone when
//   the tab closes, never in localStorage, never in a URL; it travels only in the
//   Authorization header of the admin API calls;
// * every string from data goes in with textContent or attribute setters, never as
//   markup: names are chosen by people (and by leads, who are not administrators);
// * no inline script or style (the CSP forbids them);
// * the page is at <function URL>/console/; the API routes hang off <function URL>/.
// * a new key is shown once, in one box, and wiped from the page (and this script's
//   memory) on the next navigation, on sign-out and when dismissed.
"use strict";

const TOKEN_STORE = "tollgate.admin.token";

// The views, by hash name; views.js and reports.js fill it in.
const VIEWS = {};

const state = {
  who: null,         // the /whoami answer
  generation: 0,     // bumped per render, so a slow stale answer never overwrites a newer view
};

const enc = encodeURIComponent;

// ---- formatting (the log page's rules: exact amount on hover, rounded for people) ----

function moneyEl(value, empty) {
  if ((value === null || value === undefined) && empty !== undefined) return el("span", "money", empty);
  const node = el("span", "money", money(value));
  if (value !== null && value !== undefined) node.title = usd(value);
  return node;
}

const when = (iso) => (iso ? new Date(iso).toLocaleString() : "–");
const day = (iso) => (iso ? new Date(iso).toLocaleDateString() : "–");

function percent(part, whole) {
  const w = Number(whole);
  return w > 0 ? (Number(part) / w) * 100 : 0;
}

// A datetime-local value ("2026-12-03T10:00", the viewer's zone) as the API's UTC ISO.
function isoFromLocal(value) {
  return value ? new Date(value).toISOString() : "";
}

// A date input's day as the viewer's local midnight in UTC ISO; "to" is inclusive.
function localMidnight(dayText, plusDays) {
  const [y, m, d] = dayText.split("-").map(Number);
  return new Date(y, m - 1, d + plusDays).toISOString();
}

function utcDay(date, plusDays) {
  return new Date(Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), date.getUTCDate() + (plusDays || 0)));
}

// ---- token and API ------------------------------------------------------------------

function storedToken() {
  try { return sessionStorage.getItem(TOKEN_STORE) || ""; } catch { return ""; }
}

// The admin API's base: the page is at <base>console/. After a trailing slash on the
// function URL the "admin" segment may appear twice; the API answers under one.
function apiBase() {
  const dir = location.pathname.replace(/console\/[^/]*$/, "");
  return dir.replace(/(\/admin)+\/$/, "/admin/");
}

class ApiError extends Error {
  constructor(status, message, param) { super(message); this.status = status; this.param = param; }
}

// At most MAX_IN_FLIGHT requests at once: the overview asks for several figures per
// project, and each report fans out into aggregation queries on the server; a burst of
// them only queues up there (and Firestore answers a flood with errors).
const MAX_IN_FLIGHT = 4;
let inFlight = 0;
const waiting = [];

async function api(method, path, body, params) {
  if (inFlight >= MAX_IN_FLIGHT) await new Promise((resolve) => waiting.push(resolve));
  inFlight++;
  try {
    try {
      return await request(method, path, body, params);
    } catch (err) {
      // A read that failed on the server's side (5xx) is tried once more: reads change
      // nothing, and a transient Firestore error should not blank a whole view.
      if (method !== "GET" || !(err instanceof ApiError) || err.status < 500) throw err;
      await new Promise((resolve) => setTimeout(resolve, 300));
      return await request(method, path, body, params);
    }
  } finally {
    inFlight--;
    if (waiting.length) waiting.shift()();
  }
}

async function request(method, path, body, params) {
  const query = params && String(params) ? "?" + String(params) : "";
  const headers = { Authorization: "Bearer " + storedToken() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let resp;
  try {
    resp = await fetch(apiBase() + path + query, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store", credentials: "omit" });
  } catch {
    throw new ApiError(0, "Could not reach Tollgate. Check your connection, then Refresh.");
  }
  if (!resp.ok) {
    let message = resp.statusText || "HTTP " + resp.status, param = null;
    try {
      const err = (await resp.json()).error;
      message = err.message || message;
      param = err.param;
    } catch { /* not JSON */ }
    throw new ApiError(resp.status, message, param);
  }
  return resp;
}

const query = (obj) => {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(obj || {})) if (v !== undefined && v !== null && v !== "") params.set(k, v);
  return params;
};
const get = async (path, params) => (await api("GET", path, undefined, query(params))).json();
const send = async (method, path, body) => (await api(method, path, body)).json();

// Every page of a paged answer (group_by=day over a month is one page; this is a guard).
async function allPages(path, params, maxPages) {
  const out = [];
  let token = null;
  for (let i = 0; i < (maxPages || 10); i++) {
    const page = await get(path, { ...params, page_token: token });
    out.push(...page.data);
    token = page.next_page_token;
    if (!token) break;
  }
  return out;
}

// ---- messages ------------------------------------------------------------------------

const MSG = {
  signIn: "Sign in with an admin token, or with your proxy key if you lead a project.",
  badToken: "This token was not accepted: it is not an admin token, or the key is revoked or expired. Check it and sign in again.",
};

function showMessage(text, kind) {
  const box = $("message");
  box.textContent = text;
  box.className = "message " + (kind || "info");
  box.hidden = false;
}

function hideMessage() { $("message").hidden = true; }

// The API's own message when it refuses (error.message), with the field it names.
function showError(err) {
  if (err instanceof ApiError && err.status === 401) {
    signOut();
    showMessage(MSG.badToken, "error");
    return;
  }
  if (err instanceof ApiError) {
    const field = err.param ? ` (field: ${err.param})` : "";
    showMessage(err.status ? `Refused: ${err.message}${field} — HTTP ${err.status}` : err.message, "error");
  } else {
    showMessage(String(err && err.message ? err.message : err), "error");
    console.error(err);
  }
}

// ---- a new key, shown once -------------------------------------------------------------

function showSecret(label, key) {
  $("secret-for").textContent = label;
  $("secret-value").textContent = key;
  $("copied").hidden = true;
  $("secret").hidden = false;
  $("secret").scrollIntoView({ block: "nearest" });
}

function clearSecret() {
  $("secret-value").textContent = "";
  $("secret-for").textContent = "";
  $("copied").hidden = true;
  $("secret").hidden = true;
}

async function copySecret() {
  const text = $("secret-value").textContent;
  const done = $("copied");
  try {
    await navigator.clipboard.writeText(text);
    done.textContent = "Copied to the clipboard.";
  } catch {
    // no clipboard permission: select it, so Ctrl-C copies it
    const range = document.createRange();
    range.selectNodeContents($("secret-value"));
    const sel = getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
    done.textContent = "Selected: press Ctrl-C (⌘-C) to copy.";
  }
  done.hidden = false;
}

// ---- DOM builders ------------------------------------------------------------------------

function section(title, ...children) {
  const s = el("section", "card");
  if (title) s.append(el("h2", "", title));
  s.append(...children.filter(Boolean));
  return s;
}

function badge(text, kind) { return el("span", "badge " + (kind || ""), text); }

function link(text, hash, className) {
  const a = el("a", className, text);
  a.href = "#" + hash;
  return a;
}

// A button that runs an async action; a destructive one asks first.
function button(label, action, opts) {
  const o = opts || {};
  const b = el("button", (o.danger ? "danger " : "") + (o.primary ? "primary " : "") + (o.small === false ? "" : "small"), label);
  b.type = "button";
  if (o.title) b.title = o.title;
  if (o.disabled) b.disabled = true;
  b.addEventListener("click", async () => {
    if (o.confirm && !window.confirm(o.confirm)) return;
    b.disabled = true;
    try {
      await action();
    } catch (err) {
      showError(err);
    } finally {
      b.disabled = false;
    }
  });
  return b;
}

// A table: columns are [header, cell(row) -> string | Node, class]. Rows may carry
// a class via rowClass(row).
function table(columns, rows, opts) {
  const o = opts || {};
  if (!rows.length) return el("p", "empty", o.empty || "Nothing yet.");
  const t = el("table", o.className);
  const head = el("tr");
  for (const [label, , cls] of columns) {
    const th = el("th", cls, label);
    th.scope = "col";
    head.append(th);
  }
  t.append(el("thead"), el("tbody"));
  t.tHead.append(head);
  for (const row of rows) {
    const tr = el("tr", o.rowClass ? o.rowClass(row) : "");
    for (const [, cell, cls] of columns) {
      const td = el("td", cls);
      const value = cell(row);
      if (value instanceof Node) td.append(value);
      else if (Array.isArray(value)) td.append(...value.filter((v) => v !== null && v !== undefined));
      else if (value !== null && value !== undefined) td.textContent = String(value);
      tr.append(td);
    }
    t.tBodies[0].append(tr);
  }
  const wrap = el("div", "table-wrap");
  wrap.append(t);
  return wrap;
}

// A form from field specs: {name, label, type, value, options: [[value, label]],
// required, placeholder, hint, cls}. Types: text, password, number, select, checkbox,
// checks (several checkboxes, a list), datetime (datetime-local), date. onSubmit gets
// the values (strings trimmed; checkbox a boolean; checks an array) and the form.
function form(fields, submitLabel, onSubmit, opts) {
  const f = el("form", "form");
  f.autocomplete = "off";
  for (const spec of fields) f.append(field(spec));
  const submit = el("button", "primary", submitLabel);
  submit.type = "submit";
  f.append(submit);
  f.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (opts && opts.confirm && !window.confirm(typeof opts.confirm === "function" ? opts.confirm() : opts.confirm)) return;
    submit.disabled = true;
    try {
      await onSubmit(values(f, fields), f);
    } catch (err) {
      showError(err);
    } finally {
      submit.disabled = false;
    }
  });
  return f;
}

function field(spec) {
  const wrap = el("label", "field " + (spec.cls || ""));
  wrap.dataset.field = spec.name;
  if (spec.type === "checkbox") {
    const input = el("input");
    input.type = "checkbox";
    input.name = spec.name;
    input.checked = Boolean(spec.value);
    wrap.classList.add("check");
    wrap.append(input, spec.label);
    return wrap;
  }
  if (spec.type === "checks") {
    const group = el("div", "field full");
    group.dataset.field = spec.name;
    group.append(el("span", "", spec.label));
    const box = el("div", "checks");
    const chosen = new Set(spec.value || []);
    for (const [value, label] of spec.options) {
      const item = el("label");
      const input = el("input");
      input.type = "checkbox";
      input.name = spec.name;
      input.value = value;
      input.checked = chosen.has(value);
      item.append(input, label);
      box.append(item);
    }
    if (!spec.options.length) box.append(el("span", "hint", spec.none || "none available"));
    group.append(box);
    if (spec.hint) group.append(el("span", "hint", spec.hint));
    return group;
  }
  wrap.append(spec.label);
  let input;
  if (spec.type === "select") {
    input = el("select");
    for (const [value, label] of spec.options) input.add(new Option(label, value));
    if (spec.value !== undefined && spec.value !== null) input.value = String(spec.value);
  } else {
    input = el("input");
    input.type = { datetime: "datetime-local", number: "number", password: "password", date: "date" }[spec.type] || "text";
    if (spec.type === "number") { input.min = spec.min ?? "1"; input.step = "1"; }
    if (spec.value !== undefined && spec.value !== null) input.value = String(spec.value);
    if (spec.placeholder) input.placeholder = spec.placeholder;
    input.spellcheck = false;
    input.autocomplete = spec.type === "password" ? "new-password" : "off";
  }
  input.name = spec.name;
  if (spec.required) input.required = true;
  wrap.append(input);
  if (spec.hint) wrap.append(el("span", "hint", spec.hint));
  return wrap;
}

function values(f, fields) {
  const out = {};
  for (const spec of fields) {
    if (spec.type === "checks") {
      out[spec.name] = [...f.querySelectorAll(`input[type=checkbox]`)]
        .filter((i) => i.name === spec.name && i.checked).map((i) => i.value);
    } else {
      const input = [...f.elements].find((i) => i.name === spec.name);
      if (!input) continue;
      if (spec.type === "checkbox") out[spec.name] = input.checked;
      else if (spec.type === "datetime") out[spec.name] = isoFromLocal(input.value);
      else out[spec.name] = input.value.trim();
    }
  }
  return out;
}

// Keep only fields with a value: the API treats a missing field as "not given".
function given(obj) {
  return Object.fromEntries(Object.entries(obj).filter(([, v]) => v !== "" && v !== undefined));
}

function num(text) { return text === "" || text === undefined ? undefined : Number(text); }

// ---- sign-in, navigation ------------------------------------------------------------------

function signedIn() { return Boolean(state.who); }

async function signIn(event) {
  event.preventDefault();
  const token = $("token").value.trim();
  if (!token) { showMessage(MSG.signIn, "info"); return; }
  try { sessionStorage.setItem(TOKEN_STORE, token); } catch { /* storage disabled */ }
  $("token").value = "";
  await start();
}

function signOut() {
  try { sessionStorage.removeItem(TOKEN_STORE); } catch { /* storage disabled */ }
  state.who = null;
  state.generation++;
  clearSecret();
  $("view").replaceChildren();
  $("who").replaceChildren();
  $("nav").hidden = true;
  $("session").hidden = true;
  $("signin").hidden = false;
  showMessage(MSG.signIn, "info");
}

// Who the token belongs to decides which sections show: a lead gets the member pages
// of their project only (the API refuses them everything else anyway).
async function start() {
  if (!storedToken()) { signOut(); return; }
  try {
    state.who = await get("whoami");
  } catch (err) {
    if (err instanceof ApiError && err.status === 403) {
      const message = err.message;
      signOut();
      showMessage(`This key may not use the admin console: ${message}`, "error");
    } else {
      showError(err);
    }
    return;
  }
  const lead = state.who.kind === "lead";
  $("who").replaceChildren("· signed in as ", el("strong", "", state.who.actor),
                           lead ? ` (lead of ${state.who.project})` : " (administrator)");
  for (const a of $("nav").querySelectorAll("a")) a.hidden = lead && a.hasAttribute("data-admin");
  $("nav").hidden = false;
  $("session").hidden = false;
  $("signin").hidden = true;
  hideMessage();
  const home = lead ? "members/" + enc(state.who.project) : "overview";
  if (!location.hash || location.hash === "#") history.replaceState(null, "", "#" + home);
  render();
}

// "#project/a%2Fb" -> ["project", "a/b"]: ids are encoded in the hash (they may hold
// "/", "#" or "%").
function currentRoute() {
  const hash = location.hash.replace(/^#/, "");
  const slash = hash.indexOf("/");
  if (slash < 0) return [hash, ""];
  try { return [hash.slice(0, slash), decodeURIComponent(hash.slice(slash + 1))]; } catch { return [hash.slice(0, slash), ""]; }
}

// Render the view of the hash. Each render gets a generation; views check it after
// every await so an answer for a view left meanwhile is dropped.
async function render() {
  if (!signedIn()) return;
  clearSecret();
  const [name, arg] = currentRoute();
  const view = VIEWS[name] || VIEWS[state.who.kind === "lead" ? "members" : "overview"];
  for (const a of $("nav").querySelectorAll("a")) {
    a.classList.toggle("active", a.dataset.view === name || (name === "project" && a.dataset.view === "projects"));
  }
  const generation = ++state.generation;
  const root = el("div", "view-root");
  root.dataset.view = name || "home";
  const loading = el("p", "empty", "Loading…");
  $("view").replaceChildren(loading);
  document.body.classList.add("busy");
  try {
    await view(root, arg, generation);
    if (generation !== state.generation) return;
    $("view").replaceChildren(root);
  } catch (err) {
    if (generation !== state.generation) return;
    $("view").replaceChildren();
    showError(err);
  } finally {
    if (generation === state.generation) document.body.classList.remove("busy");
  }
}

// Re-render the current view after a change, keeping the message the change set.
async function refresh() {
  const box = $("message");
  const [text, kind, hidden] = [box.textContent, box.className, box.hidden];
  const secret = [$("secret-for").textContent, $("secret-value").textContent, $("secret").hidden];
  await render();
  if (!hidden && !box.classList.contains("error")) { box.textContent = text; box.className = kind; box.hidden = false; }
  if (!secret[2]) showSecret(secret[0], secret[1]);
}

function done(text) { showMessage(text, "done"); }

// Navigate after a change, keeping the message that says what was done.
function go(hash) {
  state.keepMessage = true;
  location.hash = hash;
}

function init() {
  $("signin").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", signOut);
  $("refresh").addEventListener("click", () => { hideMessage(); render(); });
  $("copy-secret").addEventListener("click", copySecret);
  $("dismiss-secret").addEventListener("click", clearSecret);
  window.addEventListener("hashchange", () => {
    if (!state.keepMessage) hideMessage();
    state.keepMessage = false;
    render();
  });
  start();
}

document.addEventListener("DOMContentLoaded", init);
