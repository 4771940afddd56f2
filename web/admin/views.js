// Tollgate admin console, part 2: the views, one per section of the page (hash
// navigation: #overview, #projects, #project/ID, #members/ID, #limits/ID, #users,
// #external-keys, #models[/ID], #usage, #audit, #system). Each view builds its DOM off
// the page from admin API answers (docs/admin-api.md) and console.js swaps it in.
// Every string from data is set with textContent (el(), table cells) - never markup.
"use strict";

const PERIODS = [["monthly", "monthly"], ["weekly", "weekly (ISO weeks)"], ["daily", "daily"], ["total", "total (no period)"]];
const NEAR_PERCENT = 80;

// "12.500000000" -> "12.5": a decimal for an input box, "" for none.
const plain = (v) => (v === null || v === undefined ? "" : String(v).replace(/(\.\d*?)0+$/, "$1").replace(/\.$/, ""));
const calls = (n) => `${int(n)} call${Number(n) === 1 ? "" : "s"}`;

async function total(params) {
  return (await get("usage", params)).data[0];
}

// A view's title; `extra` nodes (ids, badges) go beside it, a string under it.
function headRow(title, ...extra) {
  const row = el("div", "head-row");
  const h = el("h2", "", title);
  for (const x of extra.filter(Boolean)) {
    if (x.classList && x.classList.contains("note")) row.append(x);
    else h.append(" ", x);
  }
  row.prepend(h);
  return row;
}

// The start of the current budget period, in UTC (budget.py's periods).
function periodStart(kind, now) {
  if (kind === "total") return null;
  if (kind === "daily") return utcDay(now);
  if (kind === "weekly") return utcDay(now, -((now.getUTCDay() + 6) % 7));
  return new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1));
}

// How close a project is to its budget: spent + held + escrow (all taken) against it.
function level(spend) {
  if (!spend || spend.budget_usd === null || spend.budget_usd === undefined) return { pct: null, kind: "" };
  const taken = Number(spend.spent_usd) + Number(spend.held_usd) + Number(spend.escrow_usd || 0);
  const pct = percent(taken, spend.budget_usd);
  const budgetZero = Number(spend.budget_usd) === 0;
  return { pct: budgetZero ? 100 : pct, kind: budgetZero || pct >= 100 ? "over" : pct >= NEAR_PERCENT ? "near" : "" };
}

function budgetBar(spend, label) {
  const bar = el("div", "bar");
  bar.setAttribute("role", "progressbar");
  bar.setAttribute("aria-label", `Budget used in ${label}`);
  if (spend.budget_usd === null || spend.budget_usd === undefined) {
    bar.classList.add("unlimited");
    bar.append(el("span", "bar-note", "no budget"));
    return bar;
  }
  const lv = level(spend);
  const spentPct = Math.min(100, percent(spend.spent_usd, spend.budget_usd));
  const heldPct = Math.min(100 - spentPct, percent(Number(spend.held_usd) + Number(spend.escrow_usd || 0), spend.budget_usd));
  bar.setAttribute("aria-valuemin", "0");
  bar.setAttribute("aria-valuemax", "100");
  bar.setAttribute("aria-valuenow", spentPct.toFixed(1));
  if (lv.kind) bar.classList.add(lv.kind);
  const s = el("span", "seg spent");
  s.style.width = spentPct + "%";
  const h = el("span", "seg held");
  h.style.width = heldPct + "%";
  bar.append(s, h);
  return bar;
}

function levelBadge(spend) {
  const lv = level(spend);
  if (lv.kind === "over") return badge("over budget", "over");
  if (lv.kind === "near") return badge(`${Math.floor(lv.pct)} % used`, "near");
  return null;
}

function spendLine(spend) {
  const p = el("p", "figures");
  const held = Number(spend.held_usd) + Number(spend.escrow_usd || 0);
  const heldText = usdSum(spend.held_usd, spend.escrow_usd);
  p.append(moneyEl(spend.spent_usd), " spent + ", moneyEl(heldText), " held");
  if (spend.budget_usd !== null && spend.budget_usd !== undefined) p.append(" of ", moneyEl(spend.budget_usd));
  else p.append(" · no budget");
  if (held === 0) p.title = "nothing held by calls in flight";
  return p;
}

function usdSum(a, b) {
  const n = nano(a) + nano(b || "0");
  const whole = n / 1000000000n, frac = (n % 1000000000n).toString().padStart(9, "0");
  return `${whole}.${frac}`;
}

function modelOptions(models, only) {
  return models.data.filter((m) => m.price || (only && only.includes(m.id))).map((m) => [m.id, m.id]);
}

async function projectPicker(view, current, note) {
  const projects = await get("projects");
  const select = el("select");
  select.id = "project-picker";
  select.add(new Option("Choose a project…", ""));
  for (const p of projects.data) select.add(new Option(`${p.name} (${p.id})${p.archived ? " · archived" : ""}`, p.id));
  select.value = current || "";
  select.addEventListener("change", () => { location.hash = `#${view}/${enc(select.value)}`; });
  const label = el("label", "field");
  label.append("Project ", select);
  return section(null, label, note ? el("p", "note", note) : null);
}

// ---- overview -------------------------------------------------------------------------

VIEWS.overview = async (root) => {
  const now = new Date();
  const today = utcDay(now).toISOString(), from = utcDay(now, -29);
  const range = { after: from.toISOString() };
  const [projects, todayRow, rangeRow, days, users, models] = await Promise.all([
    get("projects"), total({ after: today }), total(range),
    allPages("usage", { ...range, group_by: "day", limit: 200 }),
    get("usage", { ...range, group_by: "user", limit: 200 }),
    get("usage", { ...range, group_by: "model", limit: 200 })]);
  const live = projects.data.filter((p) => !p.archived);
  const cards = await Promise.all(live.map(async (p) => {
    const start = periodStart(p.budget_period, now);
    const [detail, pToday, pPeriod] = await Promise.all([
      get("projects/" + enc(p.id)), total({ project: p.id, after: today }),
      total({ project: p.id, after: start ? start.toISOString() : undefined })]);
    return { p: detail, today: pToday, period: pPeriod };
  }));
  const flagged = cards.filter((c) => level(c.p.spend).kind);
  root.append(headRow("Overview", el("span", "note", `Projects in their current budget period; the rest over the last 30 days (UTC), ${day(from.toISOString())} to today.`)));

  const tiles = el("div", "tiles");
  const tile = (label, value, cls) => {
    const t = el("div", "tile " + (cls || ""));
    t.append(el("div", "label", label), value instanceof Node ? value : el("div", "value", value));
    return t;
  };
  const moneyTile = (v) => { const d = el("div", "value"); d.append(moneyEl(v)); return d; };
  tiles.append(tile("Calls today", int(todayRow.calls)), tile("Cost today", moneyTile(todayRow.cost_usd)),
               tile("Calls, 30 days", int(rangeRow.calls)), tile("Cost, 30 days", moneyTile(rangeRow.cost_usd)),
               tile("Projects near or over budget", String(flagged.length), flagged.length ? "alert" : ""));
  tiles.id = "tiles";
  root.append(tiles);

  const grid = el("div", "projects");
  grid.id = "project-cards";
  for (const c of cards) grid.append(projectCard(c));
  if (!cards.length) grid.append(el("p", "empty", "No projects yet: create one under Projects."));
  root.append(grid);

  const chartBox = el("div", "chart");
  chartBox.id = "chart";
  chartBox.append(dayChart(days, from, utcDay(now)));
  root.append(section("Cost per day (UTC), last 30 days", chartBox));

  const top = (rows) => rows.data.slice().sort((a, b) => (nano(b.cost_usd) > nano(a.cost_usd) ? 1 : -1)).slice(0, 5);
  const share = (rows) => rows.data.reduce((s, r) => s + nano(r.cost_usd), 0n);
  const topTable = (rows, what, id) => {
    const sum = share(rows);
    const t = table([[what, (r) => r.group ?? "(none)"], ["Calls", (r) => int(r.calls), "num"],
                     ["Cost", (r) => moneyEl(r.cost_usd), "num"],
                     ["Share", (r) => shareCell(r.cost_usd, sum)]], top(rows),
                    { empty: "No calls in the last 30 days." });
    t.id = id;
    return t;
  };
  const grid2 = el("div", "grid-2");
  grid2.append(section("Top members, 30 days", topTable(users, "Member", "top-members")),
               section("Top models, 30 days", topTable(models, "Model", "top-models")));
  root.append(grid2);
};

function shareCell(cost, sum) {
  const pct = sum > 0n ? Number((nano(cost) * 1000n) / sum) / 10 : 0;
  const bar = el("span", "share-bar");
  bar.style.width = Math.max(2, Math.round(pct * 0.6)) + "px"; // at most 60 px: the cell stays narrow
  const out = el("span", "share");
  out.append(bar, `${pct.toFixed(1)} %`);
  return out;
}

function projectCard(c) {
  const p = c.p, lv = level(p.spend);
  const card = link("", "project/" + enc(p.id), "project " + lv.kind);
  card.dataset.project = p.id;
  const head = el("div", "project-head");
  const title = el("h3", "project-name", p.name);
  title.append(" ", el("span", "project-id", p.id));
  const badges = el("span", "badges");
  badges.append(...[levelBadge(p.spend), badge(p.budget_period)].filter(Boolean));
  head.append(title, badges);
  const today = el("p", "figures sub");
  today.append(`Today ${calls(c.today.calls)}, `, moneyEl(c.today.cost_usd));
  const period = el("p", "figures sub");
  period.append(`This period (${p.spend.period}) ${calls(c.period.calls)}, `, moneyEl(c.period.cost_usd));
  card.append(head, budgetBar(p.spend, p.name), spendLine(p.spend), today, period);
  return card;
}

// Cost per day as SVG bars, one slot for every day from `first` to `last` (UTC), quiet
// days as pale stubs. Scales with its box (a viewBox), so it needs no redraw.
function dayChart(rows, first, last) {
  const byDay = new Map(rows.map((r) => [r.group, r]));
  const data = [];
  for (let d = first; d <= last; d = utcDay(d, 1)) {
    const key = d.toISOString().slice(0, 10);
    data.push({ day: key, calls: byDay.get(key)?.calls || 0, cost_usd: byDay.get(key)?.cost_usd || "0" });
  }
  if (!data.some((d) => d.calls > 0)) return el("p", "empty", "No calls in these 30 days.");
  const W = 1000, H = 190, L = 70, R = 10, T = 16, B = 34;
  const dearest = data.reduce((a, d) => (nano(d.cost_usd) > nano(a.cost_usd) ? d : a));
  const max = Number(dearest.cost_usd) || 1;
  const slot = (W - L - R) / data.length, width = Math.min(slot * 0.7, 40);
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart-svg", role: "img",
                             "aria-label": `Cost per day, ${data.length} days` });
  const text = (x, y, s, anchor) => { const t = svg("text", { x, y, "text-anchor": anchor, class: "axis-label" }); t.textContent = s; return t; };
  chart.append(svg("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }),
               svg("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" }),
               text(L - 6, T + 4, money(dearest.cost_usd), "end"), text(L - 6, H - B, "$0", "end"));
  data.forEach((d, i) => {
    const zero = !(d.calls > 0);
    const h = zero ? 2 : Math.max(2, (Number(d.cost_usd) / max) * (H - T - B));
    const x = L + i * slot + (slot - width) / 2;
    const g = svg("g", { class: "day" + (zero ? " zero" : "") });
    g.dataset.day = d.day;
    const title = svg("title");
    title.textContent = zero ? `${d.day}: no calls` : `${d.day}: ${int(d.calls)} calls, ${money(d.cost_usd)} (exactly ${usd(d.cost_usd)})`;
    g.append(title, svg("rect", { x: L + i * slot, y: T, width: slot, height: H - T - B, class: "day-hit" }),
             svg("rect", { x, y: H - B - h, width, height: h, class: "day-bar" + (zero ? " zero" : "") }));
    chart.append(g);
    if (i % 5 === 0 || i === data.length - 1) chart.append(text(x + width / 2, H - B + 16, d.day.slice(5), "middle"));
  });
  return chart;
}

// ---- projects --------------------------------------------------------------------------

function projectFields(p, models, ext) {
  const cache = p.cache || { enabled: false, ttl_s: 3600 };
  return [
    ...(p.id ? [] : [{ name: "id", label: "Id (letters, digits, - _ .)", required: true, placeholder: "lab" }]),
    { name: "name", label: "Name", value: p.name, placeholder: "Research lab" },
    { name: "external_key", label: "External key", type: "select", value: p.external_key,
      options: ext.data.map((k) => [k.id, `${k.id} (…${k.last4})`]) },
    { name: "budget_usd", label: "Budget (USD)", value: plain(p.budget_usd), placeholder: "no budget", cls: "narrow" },
    { name: "budget_period", label: "Period", type: "select", value: p.budget_period || "monthly", options: PERIODS },
    { name: "default_max_output_tokens", label: "Default output cap (tokens)", type: "number", value: p.default_max_output_tokens, cls: "narrow" },
    { name: "rpm", label: "Requests/min", type: "number", value: p.rpm, cls: "narrow" },
    { name: "tpm", label: "Tokens/min", type: "number", value: p.tpm, cls: "narrow" },
    { name: "cache_enabled", label: "Response cache", type: "checkbox", value: cache.enabled },
    { name: "cache_ttl", label: "Cache TTL (s)", type: "number", value: cache.ttl_s, cls: "narrow" },
    { name: "budget_soft", label: "Soft budget (alerts, never refuses)", type: "checkbox", value: p.budget_soft },
    { name: "clamp_output", label: "Clamp output to the budget left", type: "checkbox", value: p.clamp_output },
    { name: "cors_origins", label: "Browser origins allowed (CORS)", value: (p.cors_origins || []).join(", "),
      cls: "wide", placeholder: "none; e.g. https://app.example.com" },
    { name: "allowed_models", label: "Allowed models (priced models)", type: "checks",
      value: p.allowed_models || [], options: modelOptions(models, p.allowed_models),
      none: "no priced model yet: load the price table under Models and prices" },
  ];
}

function projectBody(v) {
  const body = given({ id: v.id, name: v.name, external_key: v.external_key, budget_usd: v.budget_usd,
                       budget_period: v.budget_period, default_max_output_tokens: num(v.default_max_output_tokens),
                       rpm: num(v.rpm), tpm: num(v.tpm) });
  body.allowed_models = v.allowed_models;
  body.budget_soft = v.budget_soft;
  body.clamp_output = v.clamp_output;
  body.cors_origins = v.cors_origins.split(/[\s,]+/).filter(Boolean);
  body.cache = { enabled: v.cache_enabled, ...(v.cache_ttl ? { ttl_s: Number(v.cache_ttl) } : {}) };
  return body;
}

VIEWS.projects = async (root) => {
  const [projects, models, ext] = await Promise.all([get("projects"), get("models"), get("external-keys")]);
  root.append(headRow("Projects"));
  const list = table([
    ["Project", (p) => [link(p.name, "project/" + enc(p.id)), el("div", "project-id", p.id)]],
    ["Budget", (p) => [moneyEl(p.budget_usd, "no budget"), ` ${p.budget_period}`], "nowrap"],
    ["Models", (p) => (p.allowed_models || []).join(", ") || "none"],
    ["Limits", (p) => [p.rpm ? `${int(p.rpm)} rpm` : "", p.tpm ? ` ${int(p.tpm)} tpm` : ""].join("").trim() || "–"],
    ["Cache", (p) => (p.cache && p.cache.enabled ? `on, ${int(p.cache.ttl_s)} s` : "off")],
    ["External key", (p) => p.external_key],
    ["State", (p) => badge(p.archived ? "archived" : "live", p.archived ? "archived" : "live")],
  ], projects.data, { empty: "No projects yet.", rowClass: (p) => (p.archived ? "dim" : "") });
  list.id = "project-list";
  root.append(section(null, list));
  const create = form(projectFields({}, models, ext), "Create project", async (v) => {
    const made = await send("POST", "projects", projectBody(v));
    done(`Project '${made.id}' created.`);
    go("#project/" + enc(made.id));
  });
  create.id = "create-project";
  root.append(section("Create a project", ext.data.length ? create
    : el("p", "empty", "Add an external key (an OpenAI key) first: every project calls upstream with one.")));
};

VIEWS.project = async (root, id) => {
  const base = "projects/" + enc(id);
  const [p, models, ext, alerts] = await Promise.all([get(base), get("models"), get("external-keys"), get(base + "/alerts")]);
  const head = headRow(p.name, el("span", "project-id", p.id), p.archived ? badge("archived", "archived") : levelBadge(p.spend));
  root.append(head);
  const spend = section(`Spend this period (${p.spend.period}, ${p.budget_period})`, budgetBar(p.spend, p.name), spendLine(p.spend),
                        el("p", "note", `${calls(p.spend.in_flight)} in flight; held = estimates of calls in flight plus escrow reserved by busy instances.`));
  spend.id = "project-spend";
  root.append(spend);

  const fields = projectFields(p, models, ext);
  const before = projectBody(values(form(fields, "", () => {}), fields));
  const settings = form(fields, "Save settings", async (v) => {
    const after = projectBody(v);
    const body = {};
    for (const [k, val] of Object.entries(after)) {
      if (JSON.stringify(val) !== JSON.stringify(before[k])) body[k] = val;
    }
    if (before.budget_usd !== undefined && v.budget_usd === "") body.budget_usd = null; // remove the budget
    if (!Object.keys(body).length) { showMessage("Nothing changed.", "info"); return; }
    await send("PATCH", base, body);
    done(`Project '${id}' saved: ${Object.keys(body).join(", ")}.`);
    await refresh();
  });
  settings.id = "project-settings";
  root.append(section("Settings", settings));
  root.append(await membersCard(id, p), await limitsCard(id, p, models), await topupsCard(id),
              alertsCard(id, alerts));
  const danger = section("Cache and archive",
    el("p", "note", "Flushing drops the cached answers; archiving stops every key of the project at once and cannot be undone here."),
    el("div", "section-actions"));
  danger.lastChild.append(
    button("Flush response cache", async () => {
      const r = await send("POST", base + "/cache/flush");
      done(`Flushed ${int(r.flushed)} cached answers of '${id}'.`);
    }, { confirm: `Flush the response cache of project '${id}'?`, small: false }),
    button("Archive project", async () => {
      await send("POST", base + "/archive");
      done(`Project '${id}' archived: its keys no longer work.`);
      await refresh();
    }, { danger: true, small: false, disabled: p.archived,
         confirm: `Archive project '${id}'? Every key of its members stops working at once.` }));
  root.append(danger);
};

// ---- members and keys ------------------------------------------------------------------

VIEWS.members = async (root, arg) => {
  const lead = state.who.kind === "lead";
  const project = lead ? state.who.project : arg;
  root.append(headRow(lead ? `Members and keys of ${project}` : "Members and keys"));
  if (!lead) root.append(await projectPicker("members", project, "Members, their keys and top-ups; project settings are on the project's page."));
  if (!project) return;
  if (lead) root.append(el("p", "note", "As a project lead you manage the members of your project: add members, change their budgets, rotate and limit their keys, remove them, and top up budgets. An administrator manages leads (you included)."));
  root.append(await membersCard(project, null), await topupsCard(project));
};

VIEWS.limits = async (root, arg) => {
  root.append(headRow("Limits"));
  root.append(await projectPicker("limits", arg, "Per-model limits of a project, for all its members or one of them."));
  if (!arg) return;
  const [p, models] = await Promise.all([get("projects/" + enc(arg)), get("models")]);
  root.append(await limitsCard(arg, p, models));
};

function keyState(k) {
  if (k.revoked_at) return badge("revoked", "revoked");
  if (k.expires_at && new Date(k.expires_at) < new Date()) return badge("expired", "revoked");
  return badge("live", "live");
}

function keyLimits(k) {
  const parts = [];
  if (k.budget_usd !== null && k.budget_usd !== undefined) parts.push(`${money(k.budget_usd)} budget`);
  if (k.rpm) parts.push(`${int(k.rpm)} rpm`);
  if (k.allowed_models && k.allowed_models.length) parts.push(k.allowed_models.join(", "));
  return parts.join(" · ") || "–";
}

async function membersCard(project, p) {
  const lead = state.who.kind === "lead";
  const base = "projects/" + enc(project);
  const [members, users] = await Promise.all([get(base + "/members"), lead ? null : get("users")]);
  const card = section(`Members (${members.data.length})`);
  card.id = "members";
  card.append(el("p", "note", `Spent in the current period (${members.period}); a member without a budget of their own spends from the project's.`));
  const memberTable = table([
    ["Member", (m) => [m.user, lead && m.user === state.who.user ? badge("you") : null]],
    ["Role", (m) => badge(m.role, m.role)],
    ["Budget", (m) => moneyEl(m.budget_usd, "project budget"), "num"],
    ["Spent", (m) => moneyEl(m.spent_usd), "num"],
    ["Keys", (m) => String(m.keys.filter((k) => !k.revoked_at).length), "num"],
    ["Actions", (m) => memberActions(project, m), "actions"],
  ], members.data, { empty: "No members yet." });
  memberTable.id = "member-table";
  card.append(memberTable);

  const keys = members.data.flatMap((m) => m.keys.map((k) => ({ ...k, user: m.user, role: m.role })));
  card.append(el("h3", "", "Keys"));
  const keyTable = table([
    ["Member", (k) => k.user], ["Key", (k) => k.name], ["Last 4", (k) => "…" + k.last4, "mono"],
    ["Created", (k) => day(k.created_at), "nowrap"], ["Last used", (k) => when(k.last_used_at), "nowrap"],
    ["Expires", (k) => (k.expires_at ? when(k.expires_at) : "never"), "nowrap"],
    ["Limits", keyLimits], ["State", keyState],
    ["Actions", (k) => keyActions(project, k, p), "actions"],
  ], keys, { empty: "No keys.", rowClass: (k) => (k.revoked_at ? "dim" : "") });
  keyTable.id = "key-table";
  card.append(keyTable);

  const taken = new Set(members.data.map((m) => m.user));
  const userField = lead
    ? { name: "user", label: "User id (an existing user)", required: true, placeholder: "carol" }
    : { name: "user", label: "User", type: "select", options: users.data.filter((u) => !taken.has(u.id) && !u.disabled).map((u) => [u.id, `${u.name} (${u.id})`]) };
  const addFields = [userField,
    ...(lead ? [] : [{ name: "role", label: "Role", type: "select", options: [["member", "member"], ["lead", "lead"]] }]),
    { name: "budget_usd", label: "Budget (USD)", placeholder: "project budget", cls: "narrow" },
    { name: "key_name", label: "Key name", placeholder: "default" }];
  const add = form(addFields, "Add member", async (v) => {
    if (!v.user) { showMessage("Choose a user (create one under Users first).", "error"); return; }
    const r = await send("POST", base + "/members", given({ user: v.user, role: v.role, budget_usd: v.budget_usd, key_name: v.key_name }));
    done(`'${v.user}' added to '${project}'.`);
    await refresh();
    showSecret(`${v.user} in ${project} (key '${v.key_name || "default"}')`, r.key);
  });
  add.id = "add-member";
  const addBox = el("details", "add");
  addBox.open = true;
  addBox.append(el("summary", "", "Add a member"), add);
  card.append(addBox);

  if (!lead && members.data.length) {
    const models = p ? (p.allowed_models || []).map((m) => [m, m]) : [];
    const keyForm = form([
      { name: "user", label: "Member", type: "select", options: members.data.map((m) => [m.user, m.user]) },
      { name: "name", label: "Key name", required: true, placeholder: "ci" },
      { name: "expires_at", label: "Expires (your time)", type: "datetime" },
      { name: "budget_usd", label: "Budget (USD)", cls: "narrow" },
      { name: "rpm", label: "Requests/min", type: "number", cls: "narrow" },
      ...(models.length ? [{ name: "allowed_models", label: "Models (none ticked: the member's)", type: "checks", options: models }] : []),
    ], "Create key", async (v) => {
      const body = given({ name: v.name, expires_at: v.expires_at, budget_usd: v.budget_usd, rpm: num(v.rpm) });
      if (v.allowed_models && v.allowed_models.length) body.allowed_models = v.allowed_models;
      const r = await send("POST", `${base}/members/${enc(v.user)}/keys`, body);
      done(`Key '${v.name}' created for '${v.user}'.`);
      await refresh();
      showSecret(`${v.user} in ${project} (key '${v.name}')`, r.key);
    });
    keyForm.id = "add-key";
    const keyBox = el("details", "add");
    keyBox.append(el("summary", "", "Add a named key (e.g. one for CI, with its own expiry and limits)"), keyForm);
    card.append(keyBox);
  }
  return card;
}

function memberActions(project, m) {
  const lead = state.who.kind === "lead";
  const base = `projects/${enc(project)}/members/${enc(m.user)}`;
  const edit = el("details", "inline");
  edit.append(el("summary", "", "Change"));
  const fields = [{ name: "budget_usd", label: "Budget (USD, empty: none)", value: plain(m.budget_usd), cls: "narrow" },
    ...(lead ? [] : [{ name: "role", label: "Role", type: "select", value: m.role, options: [["member", "member"], ["lead", "lead"]] }])];
  edit.append(form(fields, "Save", async (v) => {
    const body = {};
    if (v.budget_usd !== plain(m.budget_usd)) body.budget_usd = v.budget_usd === "" ? null : v.budget_usd;
    if (!lead && v.role !== m.role) body.role = v.role;
    if (!Object.keys(body).length) { showMessage("Nothing changed.", "info"); return; }
    await send("PATCH", base, body);
    done(`'${m.user}' updated.`);
    await refresh();
  }));
  const remove = button("Remove", async () => {
    const r = await send("DELETE", base);
    done(`'${m.user}' removed from '${project}'; ${r.keys_revoked} keys revoked.`);
    await refresh();
  }, { danger: true, confirm: `Remove '${m.user}' from '${project}'? Their keys stop working at once.` });
  return [edit, remove];
}

function keyActions(project, k) {
  if (k.revoked_at) return "";
  const lead = state.who.kind === "lead";
  const base = `projects/${enc(project)}/members/${enc(k.user)}/keys/${enc(k.name)}`;
  const rotate = button("Rotate", async () => {
    const r = await send("POST", base + "/rotate", {});
    done(`Key '${k.name}' of '${k.user}' rotated: the old key no longer works.`);
    await refresh();
    showSecret(`${k.user} in ${project} (key '${k.name}', rotated)`, r.key);
  }, { confirm: `Rotate key '${k.name}' of '${k.user}'? The old key stops working at once; the new one is shown once.` });
  const limits = el("details", "inline");
  limits.append(el("summary", "", "Limits"));
  limits.append(form([{ name: "budget_usd", label: "Budget (USD, empty: none)", value: plain(k.budget_usd), cls: "narrow" },
                      { name: "rpm", label: "Requests/min (empty: none)", type: "number", value: k.rpm, cls: "narrow" }],
  "Save", async (v) => {
    await send("PATCH", base, { budget_usd: v.budget_usd === "" ? null : v.budget_usd, rpm: v.rpm === "" ? null : Number(v.rpm) });
    done(`Limits of key '${k.name}' of '${k.user}' saved.`);
    await refresh();
  }));
  const out = [rotate, limits];
  if (!lead) {
    out.push(button("Revoke", async () => {
      await send("DELETE", base);
      done(`Key '${k.name}' of '${k.user}' revoked.`);
      await refresh();
    }, { danger: true, confirm: `Revoke key '${k.name}' of '${k.user}'? It stops working at once.` }));
  }
  return out;
}

// ---- limits, top-ups, alerts ---------------------------------------------------------------

async function limitsCard(project, p, models) {
  const base = `projects/${enc(project)}/limits`;
  const [limits, members] = await Promise.all([get(base), get(`projects/${enc(project)}/members`)]);
  const card = section("Limits per model");
  card.id = "limits";
  card.append(el("p", "note", "A model's limits for the whole project, or for one member on that model; a field left empty is no limit."));
  const list = table([
    ["Model", (l) => l.model], ["Member", (l) => l.user || "every member"],
    ["Budget", (l) => moneyEl(l.budget_usd, "–"), "num"], ["Requests/min", (l) => (l.rpm ? int(l.rpm) : "–"), "num"],
    ["Tokens/min", (l) => (l.tpm ? int(l.tpm) : "–"), "num"],
    ["", (l) => button("Remove", async () => {
      await send("DELETE", l.user ? `${base}/${enc(l.model)}/users/${enc(l.user)}` : `${base}/${enc(l.model)}`);
      done(`Limit on '${l.model}' removed.`);
      await refresh();
    }, { danger: true, confirm: `Remove the limit on '${l.model}'${l.user ? ` for '${l.user}'` : ""}?` }), "actions"],
  ], limits.data, { empty: "No per-model limits." });
  list.id = "limit-list";
  card.append(list);
  const modelIds = [...new Set([...(p.allowed_models || []), ...models.data.filter((m) => m.price).map((m) => m.id)])];
  const setLimit = form([
    { name: "model", label: "Model", type: "select", options: modelIds.map((m) => [m, m]) },
    { name: "user", label: "Member", type: "select", options: [["", "every member"], ...members.data.map((m) => [m.user, m.user])] },
    { name: "budget_usd", label: "Budget (USD)", cls: "narrow" },
    { name: "rpm", label: "Requests/min", type: "number", cls: "narrow" },
    { name: "tpm", label: "Tokens/min", type: "number", cls: "narrow" },
  ], "Set limit", async (v) => {
    const path = v.user ? `${base}/${enc(v.model)}/users/${enc(v.user)}` : `${base}/${enc(v.model)}`;
    await send("PUT", path, given({ budget_usd: v.budget_usd, rpm: num(v.rpm), tpm: num(v.tpm) }));
    done(`Limit on '${v.model}' set.`);
    await refresh();
  });
  setLimit.id = "set-limit";
  card.append(setLimit);
  return card;
}

async function topupsCard(project) {
  const base = `projects/${enc(project)}/topups`;
  const [topups, members] = await Promise.all([get(base), get(`projects/${enc(project)}/members`)]);
  const card = section("Top-ups");
  card.id = "topups";
  card.append(el("p", "note", "Extra budget until a date, for the project or one member; it ends by itself."));
  card.append(table([
    ["For", (t) => t.user || "the project"], ["Amount", (t) => moneyEl(t.amount_usd), "num"],
    ["Until", (t) => when(t.until), "nowrap"], ["Note", (t) => t.note || ""], ["By", (t) => t.by],
    ["", (t) => badge(t.active ? "active" : "ended", t.active ? "live" : "")],
  ], topups.data, { empty: "No top-ups." }));
  card.append(form([
    { name: "user", label: "For", type: "select", options: [["", "the project"], ...members.data.map((m) => [m.user, m.user])] },
    { name: "amount_usd", label: "Amount (USD)", required: true, cls: "narrow" },
    { name: "until", label: "Until (your time)", type: "datetime", required: true },
    { name: "note", label: "Note", placeholder: "launch week" },
  ], "Add top-up", async (v) => {
    await send("POST", base, given(v));
    done("Top-up added.");
    await refresh();
  }));
  return card;
}

function alertsCard(project, alerts) {
  const c = alerts.config;
  const card = section("Budget alerts");
  card.id = "alerts";
  card.append(form([
    { name: "webhook_url", label: "Webhook URL", value: c.webhook_url, cls: "wide", placeholder: "https://hooks.slack.com/services/…" },
    { name: "thresholds", label: "Thresholds (%)", value: (c.thresholds || []).join(", "), placeholder: "50, 80, 100" },
    { name: "format", label: "Format", type: "select", value: c.format,
      options: [["", "from the webhook's host"], ["json", "json"], ["slack", "Slack"], ["google_chat", "Google Chat"]] },
  ], "Save alerts", async (v) => {
    const thresholds = v.thresholds.split(/[\s,]+/).filter(Boolean).map(Number);
    await send("PUT", `projects/${enc(project)}/alerts`, given({ webhook_url: v.webhook_url, thresholds, format: v.format }));
    done("Alert settings saved.");
    await refresh();
  }));
  card.append(el("h3", "", "Alerts sent"), table([
    ["Time", (a) => when(a.ts), "nowrap"], ["Scope", (a) => a.scope], ["Threshold", (a) => `${a.threshold_percent} %`, "num"],
    ["Spent", (a) => moneyEl(a.spent_usd), "num"], ["Budget", (a) => moneyEl(a.budget_usd), "num"],
    ["Delivered", (a) => (a.delivered ? badge("delivered", "ok") : badge(`not yet (${a.attempts || 0} tries)`, "near"))],
    ["Text", (a) => a.text],
  ], alerts.sent, { empty: "No alert sent yet." }));
  return card;
}

// ---- users ------------------------------------------------------------------------------

VIEWS.users = async (root) => {
  const users = await get("users");
  root.append(headRow("Users"));
  const list = table([
    ["User", (u) => u.id, "mono"], ["Name", (u) => u.name], ["Email", (u) => u.email],
    ["Created", (u) => day(u.created_at), "nowrap"],
    ["State", (u) => badge(u.disabled ? "disabled" : "active", u.disabled ? "disabled" : "live")],
    ["Actions", (u) => {
      const edit = el("details", "inline");
      edit.append(el("summary", "", "Edit"), form([
        { name: "name", label: "Name", value: u.name }, { name: "email", label: "Email", value: u.email },
      ], "Save", async (v) => {
        await send("PATCH", "users/" + enc(u.id), given(v));
        done(`User '${u.id}' saved.`);
        await refresh();
      }));
      const toggle = u.disabled
        ? button("Enable", async () => {
          await send("PATCH", "users/" + enc(u.id), { disabled: false });
          done(`User '${u.id}' enabled.`);
          await refresh();
        })
        : button("Disable", async () => {
          await send("POST", `users/${enc(u.id)}/disable`);
          done(`User '${u.id}' disabled: their keys stopped.`);
          await refresh();
        }, { danger: true, confirm: `Disable '${u.id}'? Every key of theirs, in every project, stops at once.` });
      return [edit, toggle];
    }, "actions"],
  ], users.data, { empty: "No users yet.", rowClass: (u) => (u.disabled ? "dim" : "") });
  list.id = "user-list";
  root.append(section(null, list));
  const create = form([
    { name: "id", label: "Id", required: true, placeholder: "carol" },
    { name: "name", label: "Name", placeholder: "Carol" },
    { name: "email", label: "Email", placeholder: "carol@example.com" },
  ], "Create user", async (v) => {
    await send("POST", "users", given(v));
    done(`User '${v.id}' created; add them to a project under Members and keys.`);
    await refresh();
  });
  create.id = "create-user";
  root.append(section("Create a user", create));
};

// ---- external keys ------------------------------------------------------------------------

VIEWS["external-keys"] = async (root) => {
  const keys = await get("external-keys");
  root.append(headRow("External keys"),
              el("p", "note", "The OpenAI keys projects call upstream with. Tollgate checks a key with a test embeddings call before storing it in the secret store and shows only its last 4 characters."));
  const list = table([
    ["Id", (k) => k.id, "mono"], ["Key", (k) => "…" + k.last4, "mono"],
    ["Base URL", (k) => k.base_url || "the default upstream"],
    ["Created", (k) => day(k.created_at), "nowrap"], ["Rotated", (k) => day(k.rotated_at), "nowrap"],
    ["Used by", (k) => k.projects.join(", ") || "no project"],
    ["Actions", (k) => {
      const rotate = el("details", "inline");
      rotate.append(el("summary", "", "Rotate"), form([
        { name: "secret", label: "New secret", type: "password", required: true },
      ], "Check and rotate", async (v) => {
        await send("POST", `external-keys/${enc(k.id)}/rotate`, { secret: v.secret });
        done(`External key '${k.id}' rotated.`);
        await refresh();
      }));
      const del = button("Delete", async () => {
        await send("DELETE", "external-keys/" + enc(k.id));
        done(`External key '${k.id}' deleted.`);
        await refresh();
      }, { danger: true, disabled: k.projects.length > 0, confirm: `Delete external key '${k.id}'?`,
           title: k.projects.length ? "in use by a project: it cannot be deleted" : "" });
      return [rotate, del];
    }, "actions"],
  ], keys.data, { empty: "No external keys yet." });
  list.id = "external-key-list";
  root.append(section(null, list));
  const add = form([
    { name: "id", label: "Id", required: true, placeholder: "main" },
    { name: "secret", label: "Secret", type: "password", required: true, placeholder: "sk-…" },
    { name: "base_url", label: "Base URL (optional)", cls: "wide", placeholder: "https://api.openai.com/v1" },
  ], "Check and add", async (v) => {
    await send("POST", "external-keys", given(v));
    done(`External key '${v.id}' checked and added.`);
    await refresh();
  });
  add.id = "add-external-key";
  root.append(section("Add an external key", add));
};

// ---- models and prices ----------------------------------------------------------------------

const rate = (r) => (r === null || r === undefined ? "–" : "$" + r);
const tier = (price) => (price && price.tiers && price.tiers.default) || {};

VIEWS.models = async (root, arg) => {
  const [models, model] = await Promise.all([get("models"), arg ? get("models/" + enc(arg)) : null]);
  root.append(headRow("Models and prices", el("span", "note", "USD per 1M tokens")));
  const result = el("div", "result");
  const load = button("Load the shipped price table", async () => {
    const r = await send("POST", "models/load-prices", {});
    done(`${r.source}: ${r.loaded} prices loaded, ${r.unchanged} unchanged, ${r.conflicts.length} conflicts, ${r.skipped.length} skipped.`);
    await refresh();
  }, { primary: true, small: false });
  result.append(el("p", "note", "The shipped table is OpenAI's prices as packaged with Tollgate (genai-prices); a stored price with the same start but other rates is kept and reported as a conflict."));
  root.append(section(null, el("div", "section-actions"), result));
  root.lastChild.firstChild.append(load);
  const list = table([
    ["Model", (m) => link(m.id, "models/" + enc(m.id))],
    ["Input", (m) => rate(tier(m.price).input), "num"], ["Cached input", (m) => rate(tier(m.price).cached_input), "num"],
    ["Output", (m) => rate(tier(m.price).output), "num"],
    ["Since", (m) => (m.price ? day(m.price.valid_from) : "no price"), "nowrap"],
  ], models.data, { empty: "No models yet: load the shipped price table." });
  list.id = "model-list";
  root.append(section("Current prices", list));
  if (model) {
    const history = table([
      ["From", (p) => when(p.valid_from), "nowrap"], ["Until", (p) => (p.valid_to ? when(p.valid_to) : "in force"), "nowrap"],
      ["Input", (p) => rate(tier(p).input), "num"], ["Cached input", (p) => rate(tier(p).cached_input), "num"],
      ["Output", (p) => rate(tier(p).output), "num"], ["Cache write", (p) => rate(tier(p).cache_write), "num"],
      ["Source", (p) => p.source || ""],
    ], model.prices.slice().reverse(), { empty: "No price yet." });
    history.id = "price-history";
    root.append(section(`Price history of ${model.id}`, history));
  }
  const addModel = form([{ name: "id", label: "Model id", required: true, placeholder: "gpt-4o-mini" }], "Add model", async (v) => {
    await send("POST", "models", { id: v.id });
    done(`Model '${v.id}' added; give it a price before projects can use it.`);
    go("#models/" + enc(v.id));
  });
  const addPrice = form([
    { name: "model", label: "Model", type: "select", value: arg, options: models.data.map((m) => [m.id, m.id]) },
    { name: "valid_from", label: "Valid from (your time)", type: "datetime", required: true },
    { name: "input", label: "Input", required: true, cls: "narrow" },
    { name: "cached_input", label: "Cached input", cls: "narrow" },
    { name: "output", label: "Output", required: true, cls: "narrow" },
    { name: "cache_write", label: "Cache write", cls: "narrow" },
  ], "Add price", async (v) => {
    const { model: id, ...body } = v;
    await send("POST", `models/${enc(id)}/costs`, given(body));
    done(`Price of '${id}' from ${when(v.valid_from)} added; the previous one ends there.`);
    if (arg === id) await refresh(); else go("#models/" + enc(id));
  });
  addPrice.id = "add-price";
  root.append(section("Add a model", addModel), section("Add a dated price", addPrice));
};
