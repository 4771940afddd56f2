// Tollgate log page: a member's budgets and burn rate, calls, totals, cost per day and
// cost by tag, key, model or member.
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
  keys: new Set(),   // every key name seen, for the key filter
  tags: new Set(),   // every tag seen, offered by the tag filter
  days: [],          // the last api/daily answer, to redraw the chart on resize
  generation: 0,     // bumped per load, so a slow stale answer never overwrites a newer one
};

// A rounded amount whose exact value shows on hover (title) and to screen readers.
function moneyEl(value, className) {
  const node = el("span", "money" + (className ? " " + className : ""), money(value));
  if (value !== null && value !== undefined) node.title = usd(value);
  return node;
}

// A UTC calendar day ("2026-11-27") for people: "Fri, Nov 27" in the viewer's language.
function dayText(iso) {
  return new Date(iso + "T00:00:00Z").toLocaleDateString(undefined, {
    timeZone: "UTC", weekday: "short", month: "short", day: "numeric" });
}

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
  state.models.clear(); state.keys.clear(); state.tags.clear();
  for (const id of ["projects", "call-rows", "group-rows", "chart", "who", "tag-options"]) {
    $(id).replaceChildren();
  }
  for (const id of ["project", "member", "model", "key-name"]) fillSelect($(id), []);
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
  $("group-by-member").hidden = !lead;
  if (!lead && $("group-by").value === "member") $("group-by").value = "tag";
}

// The model and key filters offer what the calls seen so far used; the tag filter is
// free text (any tag may be typed) with the tags seen as suggestions.
function fillCallFilters(calls) {
  for (const call of calls) {
    state.models.add(call.model);
    if (call.key_name) state.keys.add(call.key_name);
    if (call.tag) state.tags.add(call.tag);
  }
  fillSelect($("model"), [...state.models].sort().map((m) => [m, m]));
  fillSelect($("key-name"), [...state.keys].sort().map((k) => [k, k]));
  const seen = [...state.tags].sort().map((t) => { const o = el("option"); o.value = t; return o; });
  $("tag-options").replaceChildren(...seen);
}

function filterParams() {
  const params = new URLSearchParams();
  if ($("from").value) params.set("after", localMidnight($("from").value, 0));
  if ($("to").value) params.set("before", localMidnight($("to").value, 1));
  if ($("project").value) params.set("project", $("project").value);
  if (!$("member-label").hidden && $("member").value) params.set("member", $("member").value);
  if ($("model").value) params.set("model", $("model").value);
  if ($("key-name").value) params.set("key", $("key-name").value);
  if ($("tag").value.trim()) params.set("tag", $("tag").value.trim());
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

// A paragraph of text and rounded amounts (each with its exact value on hover).
function figures(className, parts) {
  const p = el("p", className);
  p.append(...parts.map((part) => (typeof part === "string" ? part : moneyEl(part.usd))));
  return p;
}

function projectCard(p) {
  const card = el("article", "project");
  card.dataset.project = p.id;
  const head = el("div", "project-head");
  head.append(el("h3", "project-name", p.name || p.id), el("span", "badge " + p.role, p.role));
  card.append(head, budgetBar(p.spent_usd, p.held_usd, p.budget_usd, p.name || p.id));
  const period = p.budget_period === "total" ? "in total" : `this period (${p.period})`;
  const [spent, held, budget] = [{ usd: p.spent_usd }, { usd: p.held_usd }, { usd: p.budget_usd }];
  card.append(p.budget_usd === null
    ? figures("figures", [spent, ` spent ${period}, `, held, " held · no budget"])
    : figures("figures", [spent, " spent + ", held, " held of ", budget, ` ${period}`]));
  if (p.member_budget_usd !== null && p.member_budget_usd !== undefined) {
    card.append(figures("figures mine", ["Your budget: ", { usd: p.member_spent_usd },
                                         " spent of ", { usd: p.member_budget_usd }]));
  }
  // top-ups in force (already inside the budgets above): who, how much, until when
  for (const t of p.topups || []) {
    const until = new Date(t.until).toLocaleDateString(undefined, { month: "short", day: "numeric" });
    const who = t.user ? `Top-up for ${t.user}: +` : "Project top-up: +";
    card.append(figures("figures topup", [who, { usd: t.amount_usd },
                                          ` until ${until}${t.note ? ` (${t.note})` : ""}`]));
  }
  if (p.burn) card.append(burnTable(p));
  return card;
}

// Burn rate and projected run-out: the project's, then each member's a lead sees (a
// member sees their own). Computed by the API (docs/log-api.md).
function burnTable(p) {
  const b = p.burn;
  const table = el("table", "burn");
  const since = new Date(b.since).toLocaleDateString(undefined, { month: "short", day: "numeric" });
  table.append(el("caption", "", `Spend per day since ${since}, and when each budget runs out at that pace`));
  const head = el("tr");
  for (const [text, cls] of [["", ""], ["Per day", "num"], ["Left", "num"], ["Runs out", ""]]) {
    const th = el("th", cls, text);
    th.scope = "col";
    head.append(th);
  }
  const body = el("tbody");
  const rows = [["Project", b.project, "project"],
                ...b.members.map((m) => [m.user === state.me.user.id ? `You (${m.user})` : m.user, m, m.user])];
  for (const [label, burn, who] of rows) {
    if (!burn) continue;
    const tr = el("tr", "burn-row");
    tr.dataset.who = who;
    const th = el("th", "", label);
    th.scope = "row";
    const left = el("td", "num");
    if (burn.remaining_usd === null) left.textContent = "–";
    else left.append(moneyEl(burn.remaining_usd));
    const perDay = el("td", "num");
    perDay.append(moneyEl(burn.per_day_usd));
    tr.append(th, perDay, left, runOutCell(burn, b.period_ends, who === "project"));
    body.append(tr);
  }
  table.append(el("thead"), body);
  table.tHead.append(head);
  return table;
}

function runOutCell(burn, periodEnds, isProject) {
  const td = el("td", "runs-out " + burn.outlook);
  td.dataset.outlook = burn.outlook;
  if (burn.outlook === "runs_out") {
    td.dataset.runsOut = burn.runs_out;
    td.textContent = dayText(burn.runs_out);
    td.title = `${burn.runs_out} (UTC) at ${money(burn.per_day_usd)} a day`;
  } else if (burn.outlook === "exhausted") {
    td.textContent = "used up";
  } else if (burn.outlook === "lasts") {
    td.textContent = periodEnds ? "lasts the period" : "beyond a year";
    if (periodEnds) td.title = `the period ends ${periodEnds} (UTC)`;
  } else if (burn.outlook === "idle") {
    td.textContent = "no recent spend";
  } else {
    td.textContent = isProject ? "no budget" : "project budget";
    if (!isProject) td.title = "no budget of their own: the project's budget applies";
  }
  return td;
}

// Spent and held (reserved by calls in flight) as two segments of one bar.
function budgetBar(spent, held, budget, label) {
  const bar = el("div", "bar");
  bar.setAttribute("role", "progressbar");
  bar.setAttribute("aria-label", `Budget used in ${label}`);
  if (budget === null) {
    bar.classList.add("unlimited");
    bar.setAttribute("aria-valuetext", `${money(spent)} spent, no budget`);
    bar.append(el("span", "bar-note", "no budget"));
    return bar;
  }
  const spentPct = percent(spent, budget);
  const heldPct = Math.min(percent(held, budget), 100 - spentPct);
  bar.setAttribute("aria-valuemin", "0");
  bar.setAttribute("aria-valuemax", "100");
  bar.setAttribute("aria-valuenow", spentPct.toFixed(1));
  bar.setAttribute("aria-valuetext",
                   `${money(spent)} of ${money(budget)} spent, ${money(held)} held`);
  const spentSeg = el("span", "seg spent");
  spentSeg.style.width = spentPct + "%";
  const heldSeg = el("span", "seg held");
  heldSeg.style.width = heldPct + "%";
  if (spentPct + heldPct >= 90) bar.classList.add("near");
  bar.append(spentSeg, heldSeg);
  return bar;
}

function setMoney(id, value) {
  $(id).replaceChildren(moneyEl(value));
}

function renderTotals(t) {
  $("total-calls").textContent = int(t.calls);
  $("total-tokens").textContent = int(Number(t.input_tokens) + Number(t.output_tokens));
  setMoney("total-cost", t.cost_usd);
  if (t.calls) setMoney("total-avg", t.avg_cost_usd); else $("total-avg").textContent = "–";
  $("token-detail").textContent = `${int(t.input_tokens)} input (${int(t.cached_tokens)} cached)` +
    ` · ${int(t.output_tokens)} output`;
}

function callRow(c) {
  const tr = el("tr", c.status === "ok" ? "" : "failed");
  const cells = [
    [new Date(c.ts).toLocaleString(), "time"], [c.user, ""], [c.key_name, "key"],
    [c.model, "model"], [c.tag, "tag"],
    [int(c.input_tokens), "num"], [int(c.cached_tokens), "num"], [int(c.output_tokens), "num"],
    [null, "num cost"], [c.status, "status"], [int(c.latency_ms), "num"],
    [check(c.streamed), "flag"], [check(c.cached), "flag"], [check(c.estimated), "flag"],
  ];
  for (const [text, cls] of cells) tr.append(el("td", cls, text));
  tr.firstChild.title = c.ts;
  tr.querySelector(".cost").append(moneyEl(c.cost_usd));
  return tr;
}

function renderCalls(page, append) {
  const rows = $("call-rows");
  if (!append) rows.replaceChildren();
  rows.append(...page.data.map(callRow));
  fillCallFilters(page.data);
  state.nextToken = page.next_page_token || null;
  $("more").hidden = !state.nextToken;
  const empty = rows.children.length === 0;
  $("calls-empty").hidden = !empty;
  $("calls-empty").textContent = empty ? MSG.noCalls : "";
  $("calls").hidden = empty;
  $("csv").disabled = empty;
}

const GROUP_NAMES = { tag: "Tag", key: "Key", model: "Model", member: "Member" };

// Cost by tag, key, model or member, dearest first, each with its share of the cost.
function renderGroups(page, groupBy) {
  const rows = page.data.slice().sort((a, b) => {
    const d = nano(b.cost_usd) - nano(a.cost_usd);
    return d > 0n ? 1 : d < 0n ? -1 : 0;
  });
  const total = rows.reduce((sum, r) => sum + nano(r.cost_usd), 0n);
  $("group-head").textContent = GROUP_NAMES[groupBy];
  $("group-rows").replaceChildren(...rows.map((r) => {
    const tr = el("tr");
    const name = r.group === null
      ? el("td", "group none", groupBy === "tag" ? "(no tag)" : "(none)")
      : el("td", "group", r.group);
    const cost = el("td", "num");
    cost.append(moneyEl(r.cost_usd));
    const share = total > 0n ? Number((nano(r.cost_usd) * 1000n) / total) / 10 : 0;
    const bar = el("span", "share-bar");
    bar.style.width = share * 0.7 + "%"; // leaves room for the figure beside it
    const shareCell = el("td", "share");
    const shareText = share === 0 && nano(r.cost_usd) > 0n ? "< 0.1 %" : share.toFixed(1) + " %";
    shareCell.append(bar, el("span", "share-text", shareText));
    tr.append(name, el("td", "num", int(r.calls)), el("td", "num", int(r.input_tokens)),
              el("td", "num", int(r.output_tokens)), cost, shareCell);
    if (groupBy === "tag" && r.group) state.tags.add(r.group);
    return tr;
  }));
  const empty = rows.length === 0;
  $("groups").hidden = empty;
  $("groups-empty").hidden = !empty;
  $("groups-empty").textContent = empty ? "No calls in this range." : "";
  $("groups-caption").textContent = page.next_page_token
    ? `The first ${rows.length} groups by name; narrow the filters to see others.` : "";
}

// Cost per day as inline SVG bars, oldest on the left, one slot for every day of the
// range (the API lists quiet days too, so a gap in spending shows as one): a day
// without calls gets a thin pale stub. Each day carries a <title> (tooltip and
// accessible text) with its calls and cost, exact cost included. Drawn at the box's
// real pixel width rather than scaled, so labels keep their size: redrawn on resize.
function renderChart(days) {
  state.days = days;
  const box = $("chart");
  box.replaceChildren();
  if (!days.some((d) => d.calls > 0)) {
    box.append(el("p", "empty", "No spend in this range."));
    return;
  }
  const data = days.slice().reverse();
  const W = Math.max(320, box.clientWidth - 24), H = 210, L = 88, R = 12, T = 26, B = 40;
  const dearest = data.reduce((a, d) => (nano(d.cost_usd) > nano(a.cost_usd) ? d : a));
  const max = Number(dearest.cost_usd) || 1;
  const slot = (W - L - R) / data.length;
  const width = Math.max(2, Math.min(slot * 0.7, 48));
  const labelEvery = Math.ceil(data.length / Math.max(1, Math.floor((W - L - R) / 56)));
  const busy = data.filter((d) => d.calls > 0).length;
  const chart = svg("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img",
                             class: "chart-svg",
                             "aria-label": `Cost per day, ${data.length} days, ${busy} with calls` });
  chart.append(svg("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }),
               svg("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" }));
  chart.append(axisText(L - 6, T + 4, money(dearest.cost_usd), "end"),
               axisText(L - 6, H - B, "$0", "end"));
  chart.append(axisText(L, 12, "Cost (USD)", "middle"));
  data.forEach((d, i) => {
    const zero = !(d.calls > 0);
    const h = zero ? 2 : Math.max(1, (Number(d.cost_usd) / max) * (H - T - B));
    const x = L + i * slot + (slot - width) / 2;
    const day = svg("g", { class: "day" + (zero ? " zero" : "") });
    day.dataset.day = d.day;
    const title = svg("title");
    title.textContent = zero ? `${d.day}: no calls`
      : `${d.day}: ${int(d.calls)} calls, ${money(d.cost_usd)} (exactly ${usd(d.cost_usd)})`;
    // the whole column answers the pointer, so a short bar or a quiet day is easy to hover
    const hit = svg("rect", { x: L + i * slot, y: T, width: slot, height: H - T - B, class: "day-hit" });
    const bar = svg("rect", { x, y: H - B - h, width, height: h,
                              class: "day-bar" + (zero ? " zero" : "") });
    bar.dataset.day = d.day;
    day.append(title, hit, bar);
    chart.append(day);
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
    const groupBy = $("group-by").value;
    const [totals, daily, groups, calls] = await Promise.all(
      [apiJson("totals", params), apiJson("daily", params),
       apiJson("usage", groupParams(params, groupBy)), apiJson("calls", page)]);
    if (generation !== state.generation) return;
    state.params = params;
    hideMessage();
    $("view").hidden = false; // before drawing: the chart sizes itself to its box
    renderTotals(totals);
    renderChart(daily.data);
    renderGroups(groups, groupBy);
    renderCalls(calls, false);
    $("calls-caption").textContent =
      `Newest first · times in ${Intl.DateTimeFormat().resolvedOptions().timeZone}`;
  } catch (err) {
    if (generation === state.generation) showError(err);
  } finally {
    if (generation === state.generation) setBusy(false);
  }
}

function groupParams(params, groupBy) {
  const query = new URLSearchParams(params);
  query.set("group_by", groupBy);
  query.set("limit", "50");
  return query;
}

// Another grouping of the same filters: only the breakdown is fetched again.
async function regroup() {
  if (!state.params) return;
  const generation = state.generation;
  const groupBy = $("group-by").value;
  try {
    const page = await apiJson("usage", groupParams(state.params, groupBy));
    if (generation === state.generation && groupBy === $("group-by").value) {
      renderGroups(page, groupBy);
      fillCallFilters([]);
    }
  } catch (err) {
    showError(err);
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
  $("group-by").addEventListener("change", regroup);
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
