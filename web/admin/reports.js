// Tollgate admin console, part 3: the reports - usage (aggregates, calls, CSV), the
// audit log and the system page (sweep, upstream rate limits).
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
