// Tollgate admin console, part 3: the reports - usage (aggregates, calls, CSV), the
// audit log, the system page (sweep, upstream rate limits) and the reconciliation with
// OpenAI's Usage and Costs APIs (#reconciliation).
"use strict";

const GROUPS = [["", "no grouping (totals)"], ["project", "project"], ["user", "member"], ["model", "model"],
                ["day", "day (UTC)"], ["tag", "tag"], ["key", "key name"]];
const CALLS_PAGE = 50;

VIEWS.usage = async (root) => {
  const [projects, models, users] = await Promise.all([get("projects"), get("models"), get("users")]);
  root.append(headRow("Usage"));
  const filters = form([
    { name: "project", label: "Project", type: "select", options: [["", "all projects"], ...projects.data.map((p) => [p.id, p.name])] },
    { name: "user", label: "Member", type: "select", options: [["", "everyone"], ...users.data.map((u) => [u.id, u.name])] },
    { name: "model", label: "Model", type: "select", options: [["", "all models"], ...models.data.map((m) => [m.id, m.id])] },
    { name: "key", label: "Key name", placeholder: "any key", cls: "narrow" },
    { name: "tag", label: "Tag", placeholder: "any tag", cls: "narrow" },
    { name: "from", label: "From", type: "date" }, { name: "to", label: "To (inclusive)", type: "date" },
    { name: "group_by", label: "Group by", type: "select", value: "project", options: GROUPS },
  ], "Apply", async (v) => { await loadUsage(out, v); });
  filters.id = "usage-filters";
  const out = el("div");
  root.append(section(null, filters, el("p", "note", "Days are your local days; the API's reports are in UTC.")), out);
  await loadUsage(out, values(filters, [{ name: "project" }, { name: "user" }, { name: "model" }, { name: "key" },
                                        { name: "tag" }, { name: "from" }, { name: "to" }, { name: "group_by" }]));
};

function usageFilters(v) {
  return given({ project: v.project, user: v.user, model: v.model, key: v.key, tag: v.tag,
                 after: v.from ? localMidnight(v.from, 0) : "", before: v.to ? localMidnight(v.to, 1) : "" });
}

async function loadUsage(out, v) {
  const f = usageFilters(v);
  const [groups, calls] = await Promise.all([get("usage", { ...f, group_by: v.group_by, limit: 200 }),
                                             get("queries", { ...f, limit: CALLS_PAGE })]);
  const label = GROUPS.find(([g]) => g === v.group_by)[1];
  const agg = table([
    [v.group_by ? label : "", (r) => (r.group === null ? (v.group_by === "tag" ? "(no tag)" : "all calls") : r.group)],
    ["Calls", (r) => int(r.calls), "num"], ["Input", (r) => int(r.input_tokens), "num"],
    ["Cached", (r) => int(r.cached_tokens), "num"], ["Output", (r) => int(r.output_tokens), "num"],
    ["Cost", (r) => moneyEl(r.cost_usd), "num"], ["Per call", (r) => moneyEl(r.avg_cost_usd), "num"],
  ], groups.data, { empty: "No calls match these filters." });
  agg.id = "usage-groups";
  const aggCard = section("Aggregate", agg);
  if (groups.next_page_token) aggCard.append(el("p", "note", "The first 200 groups; narrow the filters to see others."));

  const rows = el("div");
  const more = button("Load more", async () => {
    const page = await get("queries", { ...f, limit: CALLS_PAGE, page_token: state.callsToken });
    addCalls(rows, page, true);
    more.hidden = !state.callsToken;
  }, { small: false });
  const csv = button("Download CSV", () => downloadCsv(f), { small: false });
  csv.id = "csv";
  more.id = "more-calls";
  const head = el("div", "section-actions");
  head.append(csv);
  const callsCard = section("Calls (newest first)", head, rows, more);
  addCalls(rows, calls, false);
  more.hidden = !state.callsToken;
  out.replaceChildren(aggCard, callsCard);
}

function addCalls(box, page, append) {
  state.callsToken = page.next_page_token || null;
  const existing = append ? (state.calls || []) : [];
  state.calls = existing.concat(page.data);
  const t = table([
    ["Time", (c) => when(c.ts), "nowrap"], ["Project", (c) => c.project], ["Member", (c) => c.user],
    ["Key", (c) => c.key_name], ["Model", (c) => c.model], ["Tag", (c) => c.tag || ""],
    ["Input", (c) => int(c.input_tokens), "num"], ["Output", (c) => int(c.output_tokens), "num"],
    ["Cost", (c) => moneyEl(c.cost_usd), "num"], ["Status", (c) => c.status],
  ], state.calls, { empty: "No calls match these filters." });
  t.id = "calls";
  box.replaceChildren(t);
}

// Fetched with the Authorization header (a link cannot send it, and the token never
// goes in a URL), the pages joined, then handed to the browser as a blob.
async function downloadCsv(f) {
  let text = "", token = null;
  for (let i = 0; i < 20; i++) {
    const resp = await api("GET", "queries", undefined, query({ ...f, format: "csv", limit: 1000, page_token: token }));
    const page = await resp.text();
    text += i === 0 ? page : page.slice(page.indexOf("\n") + 1); // one header row
    token = resp.headers.get("x-next-page-token");
    if (!token) break;
  }
  const url = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
  const a = el("a");
  a.href = url;
  a.download = "tollgate-usage.csv";
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
  done(token ? "Downloaded the first 20,000 calls; narrow the filters for the rest." : "CSV downloaded.");
}

// ---- audit --------------------------------------------------------------------------------

VIEWS.audit = async (root) => {
  const first = await get("audit", { limit: 200 });
  state.audit = first.data;
  state.auditToken = first.next_page_token;
  root.append(headRow("Audit log"), el("p", "note", "Newest first. The actor and action filters apply to the entries loaded so far; Load more fetches older ones."));
  const actor = el("select"), action = el("select");
  actor.id = "audit-actor";
  action.id = "audit-action";
  const labels = [["Actor ", actor], ["Action ", action]].map(([text, sel]) => {
    const l = el("label", "field");
    l.append(text, sel);
    return l;
  });
  const bar = el("div", "form");
  bar.append(...labels);
  const rows = el("div");
  const more = button("Load more", async () => {
    const page = await get("audit", { limit: 200, page_token: state.auditToken });
    state.audit.push(...page.data);
    state.auditToken = page.next_page_token;
    draw();
  }, { small: false });
  more.id = "more-audit";
  const fill = (sel, values) => {
    const keep = sel.value;
    sel.replaceChildren(new Option("all", ""));
    for (const v of values) sel.add(new Option(v, v));
    sel.value = values.includes(keep) ? keep : "";
  };
  const draw = () => {
    fill(actor, [...new Set(state.audit.map((a) => a.actor))].sort());
    fill(action, [...new Set(state.audit.map((a) => a.action))].sort());
    const shown = state.audit.filter((a) => (!actor.value || a.actor === actor.value) && (!action.value || a.action === action.value));
    const t = table([
      ["Time", (a) => when(a.ts), "nowrap"], ["Actor", (a) => a.actor, "nowrap"], ["Action", (a) => a.action, "nowrap"],
      ["Target", (a) => a.target, "nowrap"], ["Details", (a) => el("span", "mono", details(a.details))],
    ], shown, { empty: "No audit entries match." });
    t.id = "audit-log";
    rows.replaceChildren(t, el("p", "note", `${shown.length} of ${state.audit.length} entries loaded.`));
    more.hidden = !state.auditToken;
  };
  actor.addEventListener("change", draw);
  action.addEventListener("change", draw);
  draw();
  root.append(section(null, bar, rows, more));
};

// An audit record's details as "field: value" pairs; money once, as the *_usd string.
function details(d) {
  return Object.entries(d || {}).filter(([k]) => !k.endsWith("_nano"))
    .map(([k, v]) => `${k}: ${typeof v === "string" ? v : JSON.stringify(v)}`).join(" · ");
}

// ---- system -----------------------------------------------------------------------------

VIEWS.system = async (root) => {
  const limits = await get("ratelimits");
  root.append(headRow("System"));
  const result = el("p", "result");
  const sweep = button("Run the sweep now", async () => {
    const r = await send("POST", "sweep");
    done(`Sweep: ${r.swept} expired holds booked, ${r.grants_closed} grants closed, ${r.alerts_resent} alerts re-sent.`);
  }, { small: false });
  root.append(section("Sweep", el("p", "note", "Books expired holds, closes idle escrow grants and re-sends due alerts; Cloud Scheduler runs it every few minutes."), sweep, result));
  root.append(section("Upstream rate limits", el("p", "note", "The x-ratelimit-* headers OpenAI last sent, per external key."), table([
    ["External key", (r) => r.external_key, "mono"], ["Seen", (r) => when(r.seen_at), "nowrap"],
    ["Headers", (r) => Object.entries(r.headers || {}).map(([k, v]) => `${k}: ${v}`).join(" · ")],
  ], limits.data, { empty: "No call has gone upstream yet." })));
};

// ---- reconciliation -----------------------------------------------------------------------
// Tollgate's books against OpenAI's own Usage and Costs APIs (docs/admin-api.md,
// "Reconciliation"): the OpenAI admin key, each external key's OpenAI ids, a run, and
// the stored reconciliations per UTC day and external key. Administrators only.

const FIGURES = [["requests", "Requests"], ["input_tokens", "Input"], ["cached_tokens", "Cached input"],
                 ["output_tokens", "Output"]];
const OPENAI_IDS = ["openai_project_id", "openai_key_id"];

VIEWS.reconciliation = async (root) => {
  const [adminKey, keys] = await Promise.all([get("openai-admin-key"), get("external-keys")]);
  const filters = state.reconFilters || (state.reconFilters = { day: "", external_key: "" });
  root.append(headRow("Reconciliation", el("span", "note", "Tollgate's books against OpenAI's own Usage and Costs APIs, per UTC day and external key.")),
              el("p", "note", "OpenAI's usage data lags by minutes to hours: a day is reconciled again on later runs until two runs after its end see the same figures from OpenAI (stable)."));
  const grid = el("div", "grid-2");
  grid.append(adminKeyCard(adminKey), reconcileCard(keys));
  root.append(grid, openaiIdsCard(keys));
  const out = el("div");
  out.id = "reconciliations";
  const show = form([
    { name: "day", label: "Day (UTC)", type: "date", value: filters.day },
    { name: "external_key", label: "External key", type: "select", value: filters.external_key,
      options: [["", "all keys"], ...keys.data.map((k) => [k.id, k.id])] },
  ], "Show", async (v) => {
    Object.assign(filters, v);
    await loadReconciliations(out, filters);
  });
  show.id = "reconciliation-filters";
  root.append(section("Stored reconciliations", show,
                      el("p", "note", "Each figure: OpenAI / Tollgate, then the drift (OpenAI − Tollgate) and its % of OpenAI's figure. A row past the drift threshold is highlighted."),
                      out));
  await loadReconciliations(out, filters);
};

function adminKeyCard(k) {
  const card = section("OpenAI admin key");
  card.id = "admin-key";
  card.append(el("p", "note", "An organisation owner's admin key (OpenAI dashboard, Admin keys): it reads usage and costs, never proxies a call. Checked with one Costs API call before it is stored in the secret store; only its last 4 characters are shown."));
  const status = el("p", "figures");
  status.id = "admin-key-status";
  if (k.set) {
    const del = button("Delete", async () => {
      await send("DELETE", "openai-admin-key");
      done("OpenAI admin key deleted: reconciliation stops until a new one is set.");
      await refresh();
    }, { danger: true, confirm: "Delete the OpenAI admin key? Reconciliation stops until a new one is set." });
    del.id = "delete-admin-key";
    status.append(badge("set", "ok"), " ", el("span", "mono", "…" + k.last4), ` · by ${k.set_by || "unknown"}, ${when(k.set_at)} `, del);
  } else {
    status.append(badge("not set", "near"), " No admin key: reconciliation cannot run.");
  }
  card.append(status);
  const put = form([{ name: "secret", label: k.set ? "New admin key (rotate)" : "Admin key", type: "password",
                      required: true, placeholder: "sk-admin-…", cls: "wide" }],
  k.set ? "Check and replace" : "Check and save", async (v, f) => {
    f.elements.namedItem("secret").value = ""; // out of the page before anything else, refused or not
    const r = await send("PUT", "openai-admin-key", { secret: v.secret });
    done(`OpenAI admin key checked and saved (…${r.last4}).`);
    await refresh();
  });
  put.id = "admin-key-form";
  card.append(put);
  return card;
}

function reconcileCard(keys) {
  const card = section("Reconcile now");
  card.id = "reconcile";
  card.append(el("p", "note", "Compares one UTC day; without a day, the last 7 complete days not yet stable. Cloud Scheduler runs it daily."));
  const run = form([{ name: "day", label: "Day (UTC, optional)", type: "date" }], "Reconcile", async (v) => {
    const r = await send("POST", "reconcile", given({ day: v.day }));
    if (r.unmapped) {
      showMessage("No external key is mapped to an OpenAI project: nothing was reconciled. Set its OpenAI ids below.", "info");
      return;
    }
    const over = r.data.filter((d) => (d.over_threshold || []).length).length;
    if (!r.days.length) done("Nothing to reconcile: every day of the last week is stable.");
    else done(`Reconciled ${r.days.join(", ")}: ${r.data.length} reconciliation${r.data.length === 1 ? "" : "s"}, ${over} over the drift threshold.`);
    await refresh();
  });
  run.id = "reconcile-form";
  run.elements.namedItem("day").max = new Date().toISOString().slice(0, 10);
  card.append(run);
  if (!keys.data.some((k) => k.openai_project_id)) {
    card.append(el("p", "note", "No external key is mapped to an OpenAI project yet: set its ids below first."));
  }
  return card;
}

function mappedBadge(k) {
  if (!k.openai_project_id) return badge("not reconciled until mapped", "near");
  return k.openai_key_id ? badge("per key", "ok") : badge("whole OpenAI project", "");
}

function openaiIdsCard(keys) {
  const card = section("External keys and their OpenAI ids");
  card.id = "openai-ids";
  card.append(el("p", "note", "Where OpenAI counts each key's usage (its dashboard's API keys page: project proj_…, key key_…). A key with a project id only is compared with the whole OpenAI project."));
  const list = table([
    ["External key", (k) => k.id, "mono"], ["Key", (k) => "…" + k.last4, "mono"],
    ["OpenAI project", (k) => k.openai_project_id || "–", "mono"],
    ["OpenAI key id", (k) => k.openai_key_id || "–", "mono"],
    ["Reconciled", (k) => mappedBadge(k)],
    ["", (k) => {
      const edit = el("details", "inline");
      const ids = form([
        { name: "openai_project_id", label: "OpenAI project id", value: k.openai_project_id, placeholder: "proj_abc123" },
        { name: "openai_key_id", label: "OpenAI key id", value: k.openai_key_id, placeholder: "key_abc123", hint: "empty: the whole project" },
      ], "Save ids", async (v) => {
        const body = {};
        for (const name of OPENAI_IDS) if ((v[name] || null) !== (k[name] || null)) body[name] = v[name] || null;
        if (!Object.keys(body).length) { showMessage("Nothing changed.", "info"); return; }
        await send("PATCH", "external-keys/" + enc(k.id), body);
        done(`OpenAI ids of external key '${k.id}' saved.`);
        await refresh();
      });
      ids.dataset.key = k.id;
      edit.append(el("summary", "", k.openai_project_id ? "Edit ids" : "Map"), ids);
      return edit;
    }, "actions"],
  ], keys.data, { empty: "No external keys yet: add one under External keys.",
                  rowClass: (k) => (k.openai_project_id ? "" : "unmapped") });
  list.id = "openai-id-list";
  card.append(list);
  return card;
}

async function loadReconciliations(out, f) {
  const list = await get("reconciliations", { day: f.day, external_key: f.external_key });
  if (!list.data.length) {
    out.replaceChildren(el("p", "empty", f.day || f.external_key
      ? "No reconciliation matches these filters."
      : "No reconciliation stored yet: set the admin key, map an external key, then Reconcile."));
    return;
  }
  out.replaceChildren(...list.data.map(reconciliationBlock));
}

const signed = (n) => (Number(n) > 0 ? "+" : "") + int(n);
const pct = (p) => (p === null || p === undefined ? "OpenAI: none" : `${p} %`);

// "3 / 3" over "drift 0 (0.00 %)": OpenAI's figure, Tollgate's, and the drift.
function figure(m, f, over) {
  const d = m.drift[f];
  const cell = el("span", "figure");
  cell.append(el("span", "pair", `${int(m.openai[f])} / ${int(m.tollgate[f])}`),
              el("span", "drift" + (over.has(`${m.model} ${f}`) ? " over" : d ? " off" : ""),
                 `drift ${signed(d)} (${pct(m.drift_percent[f])})`));
  return cell;
}

function estimatedCell(t) {
  const cell = el("span", "figure");
  const orphaned = t.orphaned_calls ? ` (${int(t.orphaned_calls)} orphaned)` : "";
  cell.append(el("span", "pair", int(t.estimated_calls) + orphaned));
  if (t.estimated_calls) {
    const cost = el("span", "drift");
    cost.append("at ", moneyEl(t.estimated_cost_usd));
    cell.append(cost);
  }
  return cell;
}

function reconciliationBlock(d) {
  const over = new Set(d.over_threshold || []);
  const box = el("article", "recon" + (over.size ? " over" : ""));
  box.dataset.day = d.day;
  box.dataset.key = d.external_key;
  const head = el("div", "recon-head");
  const title = el("h3", "", `${d.day} · `);
  title.append(el("span", "mono", d.external_key));
  const badges = el("span", "badges");
  badges.append(over.size ? badge(`drift over ${d.threshold_percent} %`, "over") : badge("within the threshold", "ok"),
                d.stable ? badge("stable", "ok") : badge(d.complete ? "not stable yet" : "day not over", "near"),
                badge(`${int(d.runs)} run${Number(d.runs) === 1 ? "" : "s"}`));
  head.append(title, badges);
  const where = d.scope === "project"
    ? `OpenAI project ${d.openai_project_id} (no key id: the whole project's usage)`
    : `OpenAI project ${d.openai_project_id} / key ${d.openai_key_id}`;
  const largest = d.max_drift_percent === null || d.max_drift_percent === undefined
    ? "unbounded (OpenAI counted none of something Tollgate booked)" : `${d.max_drift_percent} %`;
  box.append(head, el("p", "note", `${where} · last run ${when(d.ran_at)} · largest drift ${largest} · ${int(d.unbooked_requests)} unbooked, ${int(d.estimated_calls)} estimated`));
  if (over.size) box.append(el("p", "over-list", `Past ${d.threshold_percent} %: ${[...over].join(", ")}`));
  const rowOver = (m) => FIGURES.some(([f]) => over.has(`${m.model} ${f}`));
  box.append(table([
    ["Model", (m) => m.model, "mono nowrap"],
    ...FIGURES.map(([f, label]) => [label, (m) => figure(m, f, over), "num"]),
    ["Unbooked", (m) => el("span", m.unbooked_requests ? "flag" : "", int(m.unbooked_requests)), "num"],
    ["Estimated", (m) => estimatedCell(m.tollgate), "num"],
  ], d.models || [], { className: "recon-models", empty: "No calls on either side.",
                       rowClass: (m) => (rowOver(m) ? "over" : "") }));
  const c = d.cost || { models: [], shared_with: [] };
  const shared = (c.shared_with || []).length
    ? `, shared with external key${c.shared_with.length === 1 ? "" : "s"} ${c.shared_with.join(", ")}` : "";
  box.append(el("p", "sub-head", `Cost of OpenAI project ${d.openai_project_id}${shared}`),
             table([
               ["Model", (r) => r.model, "mono nowrap"], ["OpenAI", (r) => moneyEl(r.openai_usd), "num"],
               ["Tollgate", (r) => moneyEl(r.tollgate_usd), "num"], ["Drift", (r) => moneyEl(r.drift_usd), "num"],
               ["Drift %", (r) => el("span", over.has(`${r.model} cost`) ? "flag" : "", pct(r.drift_percent)), "num"],
               ["Tollgate calls", (r) => int(r.tollgate_calls), "num"],
             ], c.models || [], { className: "recon-costs", empty: "No cost on either side.",
                                  rowClass: (r) => (over.has(`${r.model} cost`) ? "over" : "") }));
  if (c.other_line_items_usd && nano(c.other_line_items_usd) !== 0n) {
    const other = el("p", "note", "Other line items of the project (no model): ");
    other.append(moneyEl(c.other_line_items_usd));
    box.append(other);
  }
  if (shared) box.append(el("p", "note", "The Costs API has no key: cost is the OpenAI project's, against Tollgate's over every external key mapped to it."));
  return box;
}
