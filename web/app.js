// Tollgate log page: a member's budgets, calls, totals and cost per day.
//
// Rules this file keeps (docs/log-api.md):
// * every URL is relative and starts with "log/", so the page works at /log and at /;
// * the proxy key lives in localStorage and travels only in the Authorization header,
//   never in a URL (URLs end up in logs and history);
// * text from data (project, model, member names) goes in via textContent or attribute
//   setters only: names are chosen by people and may contain markup;
// * no inline script or style (the CSP forbids them): styles are classes, or
//   element.style, which CSP allows.
"use strict";

const KEY_STORE = "tollgate.key";
const API = "log/api/";
const SVG_NS = "http://www.w3.org/2000/svg";
const PAGE_SIZE = 100;
const MSG = {
  noKey: "Paste the proxy key your project lead gave you, then press Use key.",
  badKey: "This key was not accepted: it may be revoked or expired — ask your project lead for a new one.",
  noCalls: "No calls yet in this range. Make one with curl or the OpenAI SDK, then Refresh.",
  offline: "Could not reach Tollgate. Check your connection, then Refresh.",
};

const state = {
  me: null,          // the last api/me answer
  params: null,      // the filters of the last load: Load more and CSV reuse them
  nextToken: null,
  models: new Set(), // every model seen, to fill the model filter
  days: [],          // the last api/daily answer, to redraw the chart on resize
  generation: 0,     // bumped per load, so a slow stale answer never overwrites a newer one
};

const $ = (id) => document.getElementById(id);

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
  return node;
}

// ---- formatting -----------------------------------------------------------------

// Money arrives as decimal strings with 9 decimals; trim zeros as text (no float
// rounding) but keep cents: "10.000000000" -> "$10.00", "0.000004500" -> "$0.0000045".
function usd(value) {
  if (value === null || value === undefined) return "no budget";
  const [whole, frac = ""] = String(value).split(".");
  return "$" + whole + "." + frac.replace(/0+$/, "").padEnd(2, "0");
}

const int = (n) => Number(n || 0).toLocaleString();
const check = (flag) => (flag ? "✓" : "");

function percent(part, whole) {
  const w = Number(whole);
  if (!(w > 0)) return 0;
  return Math.min(100, Math.max(0, (Number(part) / w) * 100));
}

// A date input's "2026-11-23" means midnight in the viewer's zone; the API wants an
// instant, so send it as UTC ISO. "To" is inclusive: its bound is the next midnight.
function localMidnight(day, plusDays) {
  const [y, m, d] = day.split("-").map(Number);
  return new Date(y, m - 1, d + plusDays).toISOString();
}

// ---- key and API ------------------------------------------------------------------

function storedKey() {
  try { return localStorage.getItem(KEY_STORE) || ""; } catch { return ""; }
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, params) {
  const query = params && params.toString() ? "?" + params.toString() : "";
  const resp = await fetch(API + path + query, {
    headers: { Authorization: "Bearer " + storedKey() },
    cache: "no-store",
    credentials: "omit",
  });
  if (!resp.ok) {
    let message = resp.statusText || "HTTP " + resp.status;
    try { message = (await resp.json()).error.message || message; } catch { /* not JSON */ }
    throw new ApiError(resp.status, message);
  }
  return resp;
}

const apiJson = async (path, params) => (await api(path, params)).json();

// ---- messages and view state ----------------------------------------------------

function showMessage(text, kind) {
  const box = $("message");
  box.textContent = text;
  box.className = "message " + (kind || "info");
  box.hidden = false;
}

function hideMessage() { $("message").hidden = true; }

// A refused key empties the page; any other failure keeps it (and its filters, so a
// bad filter can be corrected) under the message.
function showError(err) {
  if (err instanceof ApiError && err.status === 401) {
    clearView();
    showMessage(MSG.badKey, "error");
  } else {
    showMessage(err instanceof ApiError ? `${err.message} (HTTP ${err.status})` : MSG.offline,
                "error");
  }
}

function setBusy(busy) {
  document.body.classList.toggle("busy", busy);
  for (const id of ["apply", "refresh", "use-key"]) $(id).disabled = busy;
}

function clearView() {
  state.me = null; state.params = null; state.nextToken = null; state.days = [];
  state.models.clear();
  for (const id of ["projects", "call-rows", "chart", "who"]) $(id).replaceChildren();
  for (const id of ["project", "member", "model"]) fillSelect($(id), []);
  $("view").hidden = true;
}

// ---- filters ----------------------------------------------------------------------

// Replace a select's options after its first ("all") one, keeping the choice if it
// is still offered. Values and labels are set as properties, never parsed as HTML.
function fillSelect(select, options, fallback) {
  const keep = select.value;
  while (select.options.length > 1) select.remove(1);
  for (const [value, label] of options) select.add(new Option(label, value));
  const values = options.map(([value]) => value);
  select.value = values.includes(keep) ? keep : (fallback || "");
}

function selectedProject() {
  return (state.me ? state.me.projects : []).find((p) => p.id === $("project").value);
}

// The member filter only means something for a lead within one of their projects.
function updateMemberFilter() {
  const project = selectedProject();
  const lead = Boolean(project && project.role === "lead" && project.members);
  $("member-label").hidden = !lead;
  fillSelect($("member"), lead ? project.members.map((m) => [m, m]) : []);
}

function fillModelFilter(calls) {
  for (const call of calls) state.models.add(call.model);
  fillSelect($("model"), [...state.models].sort().map((m) => [m, m]));
}

function filterParams() {
  const params = new URLSearchParams();
  if ($("from").value) params.set("after", localMidnight($("from").value, 0));
  if ($("to").value) params.set("before", localMidnight($("to").value, 1));
  if ($("project").value) params.set("project", $("project").value);
  if (!$("member-label").hidden && $("member").value) params.set("member", $("member").value);
  if ($("model").value) params.set("model", $("model").value);
  return params;
}

// ---- rendering --------------------------------------------------------------------

function renderMe(me) {
  const who = $("who");
  who.replaceChildren("· signed in as ", el("strong", "", me.user.name || me.user.id));
  $("projects").replaceChildren(...me.projects.map(projectCard));
  const only = me.projects.length === 1 ? me.projects[0].id : "";
  fillSelect($("project"), me.projects.map((p) => [p.id, p.name || p.id]), only);
  updateMemberFilter();
}

function projectCard(p) {
  const card = el("article", "project");
  card.dataset.project = p.id;
  const head = el("div", "project-head");
  head.append(el("h3", "project-name", p.name || p.id), el("span", "badge " + p.role, p.role));
  card.append(head, budgetBar(p.spent_usd, p.held_usd, p.budget_usd, p.name || p.id));
  const period = p.budget_period === "total" ? "in total" : `this period (${p.period})`;
  const line = p.budget_usd === null
    ? `${usd(p.spent_usd)} spent ${period}, ${usd(p.held_usd)} held · no budget`
    : `${usd(p.spent_usd)} spent + ${usd(p.held_usd)} held of ${usd(p.budget_usd)} ${period}`;
  card.append(el("p", "figures", line));
  if (p.member_budget_usd !== null && p.member_budget_usd !== undefined) {
    card.append(el("p", "figures mine",
      `Your budget: ${usd(p.member_spent_usd)} spent of ${usd(p.member_budget_usd)}`));
  }
  return card;
}

// Spent and held (reserved by calls in flight) as two segments of one bar.
function budgetBar(spent, held, budget, label) {
  const bar = el("div", "bar");
  bar.setAttribute("role", "progressbar");
  bar.setAttribute("aria-label", `Budget used in ${label}`);
  if (budget === null) {
    bar.classList.add("unlimited");
    bar.setAttribute("aria-valuetext", `${usd(spent)} spent, no budget`);
    bar.append(el("span", "bar-note", "no budget"));
    return bar;
  }
  const spentPct = percent(spent, budget);
  const heldPct = Math.min(percent(held, budget), 100 - spentPct);
  bar.setAttribute("aria-valuemin", "0");
  bar.setAttribute("aria-valuemax", "100");
  bar.setAttribute("aria-valuenow", spentPct.toFixed(1));
  bar.setAttribute("aria-valuetext", `${usd(spent)} of ${usd(budget)} spent, ${usd(held)} held`);
  const spentSeg = el("span", "seg spent");
  spentSeg.style.width = spentPct + "%";
  const heldSeg = el("span", "seg held");
  heldSeg.style.width = heldPct + "%";
  if (spentPct + heldPct >= 90) bar.classList.add("near");
  bar.append(spentSeg, heldSeg);
  return bar;
}

function renderTotals(t) {
  $("total-calls").textContent = int(t.calls);
  $("total-tokens").textContent = int(Number(t.input_tokens) + Number(t.output_tokens));
  $("total-cost").textContent = usd(t.cost_usd);
  $("total-avg").textContent = t.calls ? usd(t.avg_cost_usd) : "–";
  $("token-detail").textContent = `${int(t.input_tokens)} input (${int(t.cached_tokens)} cached)` +
    ` · ${int(t.output_tokens)} output`;
}

function callRow(c) {
  const tr = el("tr", c.status === "ok" ? "" : "failed");
  const cells = [
    [new Date(c.ts).toLocaleString(), "time"], [c.user, ""], [c.model, "model"],
    [int(c.input_tokens), "num"], [int(c.cached_tokens), "num"], [int(c.output_tokens), "num"],
    [c.cost_usd, "num cost"], [c.status, "status"], [int(c.latency_ms), "num"],
    [check(c.streamed), "flag"], [check(c.cached), "flag"], [check(c.estimated), "flag"],
  ];
  for (const [text, cls] of cells) tr.append(el("td", cls, text));
  tr.firstChild.title = c.ts;
  if (c.tag) tr.cells[2].title = "tag: " + c.tag;
  return tr;
}

function renderCalls(page, append) {
  const rows = $("call-rows");
  if (!append) rows.replaceChildren();
  rows.append(...page.data.map(callRow));
  fillModelFilter(page.data);
  state.nextToken = page.next_page_token || null;
  $("more").hidden = !state.nextToken;
  const empty = rows.children.length === 0;
  $("calls-empty").hidden = !empty;
  $("calls-empty").textContent = empty ? MSG.noCalls : "";
  $("calls").hidden = empty;
  $("csv").disabled = empty;
}

// Cost per day as inline SVG bars, oldest on the left; each bar carries a <title>
// (tooltip and accessible text) with the day, calls and cost. Drawn at the box's
// real pixel width rather than scaled, so labels keep their size: redrawn on resize.
function renderChart(days) {
  state.days = days;
  const box = $("chart");
  box.replaceChildren();
  if (!days.length) { box.append(el("p", "empty", "No spend in this range.")); return; }
  const data = days.slice().reverse();
  const W = Math.max(320, box.clientWidth - 24), H = 210, L = 88, R = 12, T = 26, B = 40;
  const max = Math.max(...data.map((d) => Number(d.cost_usd))) || 1;
  const slot = (W - L - R) / data.length;
  const width = Math.max(2, Math.min(slot * 0.7, 48));
  const labelEvery = Math.ceil(data.length / Math.max(1, Math.floor((W - L - R) / 56)));
  const chart = svg("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img",
                             class: "chart-svg",
                             "aria-label": `Cost per day, ${data.length} days with calls` });
  chart.append(svg("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }),
               svg("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" }));
  chart.append(axisText(L - 6, T + 4, usd(max.toFixed(9)), "end"),
               axisText(L - 6, H - B, "$0", "end"));
  chart.append(axisText(L, 12, "Cost (USD)", "middle"));
  data.forEach((d, i) => {
    const h = Math.max(1, (Number(d.cost_usd) / max) * (H - T - B));
    const x = L + i * slot + (slot - width) / 2;
    const bar = svg("rect", { x, y: H - B - h, width, height: h, class: "day-bar" });
    bar.dataset.day = d.day;
    const title = svg("title");
    title.textContent = `${d.day}: ${int(d.calls)} calls, ${usd(d.cost_usd)}`;
    bar.append(title);
    chart.append(bar);
    if (i % labelEvery === 0) chart.append(axisText(x + width / 2, H - B + 16, d.day.slice(5), "middle"));
  });
  chart.append(axisText((L + W - R) / 2, H - 4, "Day (MM-DD, UTC)", "middle"));
  box.append(chart);
}

function axisText(x, y, text, anchor) {
  const node = svg("text", { x, y, "text-anchor": anchor, class: "axis-label" });
  node.textContent = text;
  return node;
}

// ---- actions ----------------------------------------------------------------------

async function load() {
  const generation = ++state.generation;
  if (!storedKey()) { clearView(); showMessage(MSG.noKey, "info"); return; }
  setBusy(true);
  try {
    const me = await apiJson("me");
    if (generation !== state.generation) return;
    state.me = me;
    renderMe(me);
    const params = filterParams();
    const page = new URLSearchParams(params);
    page.set("limit", String(PAGE_SIZE));
    const [totals, daily, calls] = await Promise.all(
      [apiJson("totals", params), apiJson("daily", params), apiJson("calls", page)]);
    if (generation !== state.generation) return;
    state.params = params;
    hideMessage();
    $("view").hidden = false; // before drawing: the chart sizes itself to its box
    renderTotals(totals);
    renderChart(daily.data);
    renderCalls(calls, false);
    $("calls-caption").textContent =
      `Newest first · times in ${Intl.DateTimeFormat().resolvedOptions().timeZone}`;
  } catch (err) {
    if (generation === state.generation) showError(err);
  } finally {
    if (generation === state.generation) setBusy(false);
  }
}

async function loadMore() {
  if (!state.nextToken) return;
  const generation = state.generation;
  const params = new URLSearchParams(state.params);
  params.set("limit", String(PAGE_SIZE));
  params.set("page_token", state.nextToken);
  $("more").disabled = true;
  try {
    const page = await apiJson("calls", params);
    if (generation === state.generation) renderCalls(page, true);
  } catch (err) {
    showError(err);
  } finally {
    $("more").disabled = false;
  }
}

// Fetch (the key must go in a header, so a plain link cannot do it), then hand the
// bytes to the browser through a temporary object URL.
async function downloadCsv() {
  const params = new URLSearchParams(state.params || "");
  params.set("format", "csv"); // the server follows the pages itself
  $("csv").disabled = true;
  try {
    const blob = await (await api("calls", params)).blob();
    const url = URL.createObjectURL(blob);
    const link = el("a");
    link.href = url;
    link.download = "tollgate-calls.csv";
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  } catch (err) {
    showError(err);
  } finally {
    $("csv").disabled = false;
  }
}

function useKey(event) {
  event.preventDefault();
  const key = $("key").value.trim();
  if (!key) { showMessage(MSG.noKey, "info"); $("key").focus(); return; }
  try { localStorage.setItem(KEY_STORE, key); } catch { /* storage disabled */ }
  $("key").value = "";
  clearView(); // a different key may see different projects
  load();
}

function forgetKey() {
  try { localStorage.removeItem(KEY_STORE); } catch { /* storage disabled */ }
  state.generation++; // drop any answer still on its way
  $("key").value = "";
  clearView();
  setBusy(false);
  showMessage(MSG.noKey, "info");
  updateKeyPlaceholder();
}

function updateKeyPlaceholder() {
  $("key").placeholder = storedKey() ? "key saved in this browser" : "tg_…";
}

function init() {
  $("key-form").addEventListener("submit", (e) => { useKey(e); updateKeyPlaceholder(); });
  $("forget-key").addEventListener("click", forgetKey);
  $("refresh").addEventListener("click", load);
  $("filters").addEventListener("submit", (e) => { e.preventDefault(); load(); });
  $("project").addEventListener("change", updateMemberFilter);
  $("more").addEventListener("click", loadMore);
  $("csv").addEventListener("click", downloadCsv);
  let pending = false;
  window.addEventListener("resize", () => {
    if (pending || $("view").hidden) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; renderChart(state.days); });
  });
  updateKeyPlaceholder();
  load();
}

document.addEventListener("DOMContentLoaded", init);
