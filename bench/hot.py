"""Sections 9 to 11 (issue 15, the ledger at scale): one busy project on 2 instances.

Two ``openai`` function processes, started as production starts one (gunicorn, gthread,
``THREADS``) but from ``bench/recorded.py``, which records every Firestore RPC of the
instance (method, wall-clock time, the documents each ``Commit`` writes, the documents
each read returns) to ``rpc-<pid>.jsonl``. Both talk to the one emulator; calls
alternate between them. Everything is read from outside the ledger: the gRPC requests,
the HTTP answers, the admin API's spend (``GET /admin/projects/{id}``, which sums
whatever the ledger keeps), the usage records and the live holds, so the same code
measures the ledger before and after a redesign.

9.  ``hot``: one project, one member, one model, one key; an open-loop paced load
    (calls are sent on schedule, whether earlier ones have answered or not) of
    ``hot_rate`` calls/s for ``hot_duration_s``. Per document: the most writes in any
    10-second window (Firestore sustains about one write per second per document),
    writes and document operations per call, calls/s achieved, latency from the
    scheduled send, and the CPU of every process on the machine. If the rate is not
    sustained, shorter probes at lower rates find the highest rate that is.
10. ``hot_runout``: the same load against a budget (project and member) that fits half
    of the calls: successes, refusals by code, spend vs limit from the counters (admin
    API) and from the usage records, overshoot, live holds after, the unspent gap in
    estimates and refusals that came while the budget still had room.
11. ``exact_n_2_instances``: 100 callers released together, split over the 2
    instances, against a budget of exactly N calls.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import requests

from bench.common import BENCH, MODEL, ROOT, log, ms_summary, r3, run_threads, session
from bench.rpc import read_jsonl
from bench.stack import OVERSHOOT_BODY, FunctionProcess, Stack, chat_body

HOT_BODY = chat_body("Say hello in five words.", max_tokens=16)
WINDOW_S = 10.0  # the sliding window of the per-document write count
WINDOW_TARGET = 10  # one write per second per document, sustained
INSTANCES = 2

# --------------------------------------------------------------------------- the setup


@dataclass
class HotSetup:
    instances: list[FunctionProcess]
    rpc_dir: Any
    keys: dict[str, str]  # project -> its one member's key
    estimate_nano: int  # one HOT_BODY call
    exact_estimate_nano: int  # one OVERSHOOT_BODY call
    budgets: dict[str, int] = field(default_factory=dict)
    admin: Any = None

    @property
    def urls(self) -> list[str]:
        return [f.url + "/v1/chat/completions" for f in self.instances]


def _estimate(body: dict[str, Any]) -> int:
    from functions.core import pricing, tokens
    from tests.conftest import MINI, make_price

    price = make_price(*MINI)
    return pricing.estimate_nano(
        price.tiers["default"],
        tokens.estimate_input_tokens("chat", body, MODEL),
        body["max_tokens"],
    )


def start_hot(st: Stack) -> HotSetup:
    """Seed the three projects and start the two recorded instances."""
    from functions.store.membership import Membership
    from functions.store.provision import Provisioner
    from functions.store.secrets import LocalSecretStore

    cfg = st.cfg
    est, exact_est = _estimate(HOT_BODY), _estimate(OVERSHOOT_BODY)
    prov = Provisioner(st.db, LocalSecretStore(st.work / "secrets.json"))
    members = Membership(st.db)
    half = int(cfg.hot_rate * cfg.runout_duration_s) // 2
    budgets = {"hot": 10**15, "runout": half * est, "exact2": cfg.exact2_n * exact_est}
    keys: dict[str, str] = {}
    for project, user, upstream in (
        ("hot", "hana", "hot"),
        ("runout", "rita", "hot"),
        ("exact2", "ezra", "exact"),
    ):
        prov.create_user(user, user.title(), f"{user}@example.com")
        prov.create_project(
            project,
            external_key=upstream,
            budget_nano=budgets[project],
            budget_period="monthly",
            allowed_models=[MODEL],
            default_max_output_tokens=256,
        )
        # a member budget too (equal to the project's): 2 limited counters per call
        keys[project] = members.add_member(project, user, budget_nano=budgets[project])
    rpc_dir = st.work / "rpc-hot"
    env = {**st.fn_env, "BENCH_RPC_DIR": str(rpc_dir)}
    instances = [
        FunctionProcess(env, st.work / f"function-hot-{i}.log", BENCH / "recorded.py", "openai")
        for i in range(INSTANCES)
    ]
    for f in instances:
        st.closers.append(f.stop)
        f.start()
    data = json.dumps(HOT_BODY).encode()
    for f in instances:  # each instance answers (cold start) before the clock starts
        first = f.first_200("/v1/chat/completions", data, _auth(keys["hot"]))
        if first["status"] != 200:
            raise RuntimeError(f"a recorded instance failed its first call: {first}")
    return HotSetup(instances, rpc_dir, keys, est, exact_est, budgets, AdminReader(st))


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


class AdminReader:
    """The admin API in this process (functions-framework's app, test client): spend as
    an operator sees it, whatever the ledger keeps underneath."""

    def __init__(self, st: Stack) -> None:
        import functions_framework

        app = functions_framework.create_app(
            target="admin", source=str(ROOT / "functions" / "main.py")
        )
        self.client = app.test_client()
        self.headers = {"Authorization": f"Bearer {st.admin_token}"}

    def get(self, path: str) -> Any:
        r = self.client.get("/admin" + path, headers=self.headers)
        if r.status_code != 200:
            raise RuntimeError(f"GET /admin{path}: {r.status_code} {r.get_data(True)[:300]}")
        return r.get_json()

    def spend(self, project: str) -> dict[str, Any]:
        proj = self.get(f"/projects/{project}").get("spend", {})
        members = self.get(f"/projects/{project}/members").get("data", [])
        return {
            "project_spent_nano": _int(proj.get("spent_nano")),
            "project_held_nano": _int(proj.get("held_nano")),
            "project_in_flight": _int(proj.get("in_flight")),
            "member_spent_nano": {str(m.get("user")): _int(m.get("spent_nano")) for m in members},
        }


def _int(v: Any) -> int | None:
    return int(v) if v is not None else None


# --------------------------------------------------------------------------- paced load


@dataclass
class Call:
    i: int
    instance: int
    scheduled: float
    sent: float = 0.0
    done: float = 0.0
    status: str = ""  # "200", "429 budget_exceeded", an exception's name; "" unanswered


def paced(
    urls: list[str],
    headers: dict[str, str],
    data: bytes,
    rate: float,
    duration_s: float,
    pool: int,
    drain_s: float,
    timeout_s: float = 30.0,
) -> tuple[list[Call], float, float]:
    """Open loop: call i is handed to a free client thread at ``t0 + i / rate`` whatever
    happened to earlier calls, alternating between the instances. ``pool`` threads
    (each with a keep-alive session per instance) bound the calls in flight: when all
    are busy, sends start late, and the lateness is reported. ``drain_s`` after the
    last scheduled send, calls not yet sent are dropped (``not sent``); calls in
    flight get their own timeout to finish. Returns the calls, the wall-clock time of
    t0, and the perf_counter t0."""
    n = max(1, int(rate * duration_s))
    q: queue.SimpleQueue[Call | None] = queue.SimpleQueue()
    calls: list[Call] = []
    stop = threading.Event()

    def worker() -> None:
        sessions = [session() for _ in urls]
        try:
            while True:
                c = q.get()
                if c is None or stop.is_set():
                    return
                c.sent = time.perf_counter()
                try:
                    r = sessions[c.instance].post(
                        urls[c.instance], data=data, headers=headers, timeout=timeout_s
                    )
                    code = ""
                    if r.status_code != 200:
                        with contextlib.suppress(ValueError, KeyError, TypeError):
                            code = " " + str(r.json()["error"]["code"])
                    else:
                        r.content  # noqa: B018 - the whole answer
                    c.status = f"{r.status_code}{code}"
                except requests.RequestException as e:
                    c.status = type(e).__name__
                c.done = time.perf_counter()
        finally:
            for s in sessions:
                s.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(pool)]
    for t in threads:
        t.start()
    wall0 = time.time()
    t0 = time.perf_counter()
    for i in range(n):
        at = t0 + i / rate
        delay = at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        c = Call(i, i % len(urls), at)
        calls.append(c)
        q.put(c)
    for _ in threads:
        q.put(None)
    deadline = time.monotonic() + drain_s
    for t in threads:
        t.join(max(0.1, deadline - time.monotonic()))
    stop.set()  # what is still queued is never sent; what is in flight may finish
    deadline = time.monotonic() + timeout_s + 2
    for t in threads:
        t.join(max(0.1, deadline - time.monotonic()))
    return calls, wall0, t0


def _status(c: Call) -> str:
    if c.status:
        return c.status
    return "no answer by the end" if c.sent else "not sent (client threads all busy)"


def load_figures(calls: list[Call], rate: float, duration_s: float, t0: float) -> dict[str, Any]:
    answered = [c for c in calls if c.status[:1].isdigit()]  # an HTTP answer
    ok = [c for c in answered if c.status == "200"]
    refused = [c for c in answered if c.status.startswith("429 budget")]
    statuses = Counter(_status(c) for c in calls)
    end = max((c.done for c in answered), default=t0)
    span = max(end - t0, 1e-9)
    achieved = len(ok) / max(span, duration_s)
    # a budget refusal is an answer (the run-out run expects half of them); anything
    # else that is not a 200 is a failure
    failures = [c for c in calls if c.status != "200" and not c.status.startswith("429 budget")]
    lateness = [c.sent - c.scheduled for c in calls if c.sent]
    per_instance = {
        str(i): {
            "calls": sum(1 for c in calls if c.instance == i),
            "ok": sum(1 for c in ok if c.instance == i),
        }
        for i in range(INSTANCES)
    }
    return {
        "offered_calls_per_s": r3(rate),
        "duration_s": r3(duration_s),
        "calls": len(calls),
        "answered": len(answered),
        "ok": len(ok),
        "errors": len(calls) - len(ok),
        "statuses": dict(statuses),
        "failures": len(failures),
        "achieved_calls_per_s": r3(achieved),
        "answered_calls_per_s": r3(len(answered) / max(span, duration_s)),
        "last_answer_after_s": r3(span),
        # from the scheduled send (open loop: includes any wait for a free client thread)
        "latency_ms": ms_summary([c.done - c.scheduled for c in ok]),
        "service_ms": ms_summary([c.done - c.sent for c in ok]),  # from the actual send
        "refusal_ms": ms_summary([c.done - c.scheduled for c in refused]),
        "send_lateness_ms": ms_summary(lateness),
        "per_instance": per_instance,
        "timeline": timeline(calls, t0, duration_s),
    }


def timeline(
    calls: list[Call], t0: float, duration_s: float, step_s: float = 5.0
) -> list[dict[str, Any]]:
    """Per ``step_s`` of scheduled time: answers by kind and latency (what changed when)."""
    out = []
    for k in range(max(1, int(-(-duration_s // step_s)))):
        lo, hi = t0 + k * step_s, t0 + (k + 1) * step_s
        part = [c for c in calls if lo <= c.scheduled < hi]
        ok = [c.done - c.scheduled for c in part if c.status == "200"]
        ref = [c.done - c.scheduled for c in part if c.status.startswith("429 budget")]
        out.append(
            {
                "from_s": r3(k * step_s),
                "calls": len(part),
                "ok": len(ok),
                "refused": len(ref),
                "other": len(part) - len(ok) - len(ref),
                "ok_p50_ms": ms_summary(ok).get("p50"),
                "refused_p50_ms": ms_summary(ref).get("p50"),
            }
        )
    return out


def sustained(fig: dict[str, Any], rate: float) -> bool:
    """The rate was carried: ≥ 95 % of it answered, no failures (a budget refusal is an
    answer), sends on schedule (p99 ≤ 100 ms late: the client threads kept up)."""
    late = fig["send_lateness_ms"]
    return (
        fig["answered_calls_per_s"] >= 0.95 * rate
        and fig["failures"] == 0
        and late.get("n", 0) > 0
        and late["p99"] <= 100.0
    )


# --------------------------------------------------------------------------- documents


def max_in_window(times: list[float], window_s: float) -> tuple[int, float]:
    """The most events in any window of ``window_s`` seconds, and where it starts."""
    ts = sorted(times)
    best, at, lo = 0, ts[0] if ts else 0.0, 0
    for hi, t in enumerate(ts):
        while t - ts[lo] >= window_s:
            lo += 1
        if hi - lo + 1 > best:
            best, at = hi - lo + 1, ts[lo]
    return best, at


def doc_figures(records: list[dict[str, Any]], w0: float, w1: float, calls: int) -> dict[str, Any]:
    """Writes per document (from the Commit requests) and document operations
    (reads: documents asked for by a batch get, documents returned by a query, at
    least one per query, as Firestore bills them) in the wall-clock window [w0, w1]."""
    sel = [r for r in records if w0 <= r["t"] <= w1]
    methods: Counter[str] = Counter(r["m"] for r in sel)
    by_doc: dict[str, list[float]] = defaultdict(list)
    reads = 0
    failed_commits = 0
    for r in sel:
        m = r["m"]
        if m == "Commit":
            if r.get("x"):
                failed_commits += 1  # an aborted commit writes nothing
                continue
            for p in r["w"]:
                by_doc[p].append(r["t"])
        elif m == "BatchGetDocuments":
            reads += int(r.get("d") or 0)
        elif m == "RunQuery":
            reads += max(1, int(r.get("r") or 0))
        elif m == "RunAggregationQuery":
            reads += 1
    writes = sum(len(v) for v in by_doc.values())
    rpc_ms: dict[str, list[float]] = defaultdict(list)
    for r in sel:
        if r.get("ms") is not None:
            rpc_ms[r["m"]].append(float(r["ms"]) / 1000)
    per_doc: list[dict[str, Any]] = []
    for doc, ts in by_doc.items():
        n10, at = max_in_window(ts, WINDOW_S)
        n1, _ = max_in_window(ts, 1.0)
        per_doc.append(
            {
                "doc": doc,
                "writes": len(ts),
                "max_in_10s": n10,
                "max_in_1s": n1,
                "window_start_s": r3(at - w0),
            }
        )
    per_doc.sort(key=lambda d: (-d["max_in_10s"], -d["writes"], d["doc"]))
    by_coll: dict[str, dict[str, Any]] = {}
    for d in per_doc:
        coll = d["doc"].split("/", 1)[0]
        c = by_coll.setdefault(coll, {"docs": 0, "writes": 0, "max_in_10s": 0})
        c["docs"] += 1
        c["writes"] += d["writes"]
        c["max_in_10s"] = max(c["max_in_10s"], d["max_in_10s"])
    top = per_doc[0] if per_doc else {"doc": None, "max_in_10s": 0, "writes": 0}
    n = max(1, calls)
    return {
        "window_s": WINDOW_S,
        "target_max_in_window": WINDOW_TARGET,
        "max_writes_one_doc_in_10s": top["max_in_10s"],
        "hottest_doc": top["doc"],
        "hottest_doc_writes": top["writes"],
        "max_writes_one_doc_in_1s": max((d["max_in_1s"] for d in per_doc), default=0),
        "writes": writes,
        "writes_per_call": r3(writes / n),
        "reads": reads,
        "reads_per_call": r3(reads / n),
        "doc_ops_per_call": r3((reads + writes) / n),
        "docs_written": len(per_doc),
        "failed_commits": failed_commits,
        "rpcs_per_call": {m: r3(k / n) for m, k in sorted(methods.items())},
        # how long each kind of RPC took, seen from the instances (the emulator's cost)
        "rpc_ms": {
            m: {k: v for k, v in ms_summary(t).items() if k in ("n", "p50", "p99")}
            for m, t in sorted(rpc_ms.items())
        },
        "top_docs": per_doc[:8],
        "by_collection": by_coll,
        "records_in_window": len(sel),
    }


# --------------------------------------------------------------------------- CPU


def _stat_fields(path: str) -> list[str] | None:
    try:
        with open(path) as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def cpu_snapshot(groups: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of every process group in ``groups`` (summed over its live
    processes), of this process (the load generator) and of the whole machine."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {name: 0.0 for name in groups}
    by_pgid = {pg: name for name, pg in groups.items()}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        f = _stat_fields(f"/proc/{d}/stat")
        if f is None:
            continue
        name = by_pgid.get(int(f[2]))
        if name is not None:
            out[name] += (int(f[11]) + int(f[12])) / tick
    f = _stat_fields(f"/proc/{os.getpid()}/stat")
    out["load generator (bench process)"] = (int(f[11]) + int(f[12])) / tick if f else 0.0
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/stat") as fh:
            v = [int(x) for x in fh.readline().split()[1:]]
        out["_machine_busy"] = (sum(v) - v[3] - (v[4] if len(v) > 4 else 0)) / tick
    return out


def cpu_figures(
    before: dict[str, float], after: dict[str, float], wall_s: float, calls: int
) -> dict[str, Any]:
    procs = {}
    for name in before:
        if name.startswith("_"):
            continue
        used = after.get(name, 0.0) - before[name]
        procs[name] = {
            "cpu_s": r3(used),
            "cores": r3(used / wall_s),
            "ms_per_call": r3(used * 1000 / max(1, calls)),
        }
    ours = sum(p["cpu_s"] for p in procs.values())
    busy = after.get("_machine_busy", 0.0) - before.get("_machine_busy", 0.0)
    return {
        "processes": procs,
        "cpus": os.cpu_count(),
        "machine_busy_cores": r3(busy / wall_s),
        "other_processes_cores": r3(max(0.0, busy - ours) / wall_s),
        "note": "CPU of each process group over the run (the function instances "
        "include gunicorn's master); 'other' is the rest of the machine "
        "(other test runs share it)",
    }


def _groups(st: Stack, hs: HotSetup) -> dict[str, int]:
    g = {
        f"function instance {i}": f.proc.pid
        for i, f in enumerate(hs.instances)
        if f.proc is not None
    }
    if "emulator" in st.pgids:
        g["firestore emulator"] = st.pgids["emulator"]
    if "upstream" in st.pgids:
        g["fake upstreams"] = st.pgids["upstream"]
    return g


# --------------------------------------------------------------------------- one run


def _run(
    st: Stack, hs: HotSetup, project: str, rate: float, duration_s: float
) -> tuple[dict[str, Any], list[Call], float]:
    cfg = st.cfg
    data = json.dumps(HOT_BODY).encode()
    groups = _groups(st, hs)
    load0 = os.getloadavg()
    cpu0 = cpu_snapshot(groups)
    c0 = time.perf_counter()
    calls, wall0, t0 = paced(
        hs.urls, _auth(hs.keys[project]), data, rate, duration_s, cfg.hot_pool, cfg.hot_drain_s
    )
    wall_s = time.perf_counter() - c0
    cpu1 = cpu_snapshot(groups)
    load1 = os.getloadavg()
    time.sleep(0.3)  # the last records reach their files
    fig = load_figures(calls, rate, duration_s, t0)
    end = max((c.done for c in calls if c.status), default=t0)
    records = read_jsonl(hs.rpc_dir)
    fig["documents"] = doc_figures(
        records, wall0 - 0.05, wall0 + (end - t0) + 0.5, len([c for c in calls if c.status])
    )
    fig["cpu"] = cpu_figures(cpu0, cpu1, wall_s, len(calls))
    fig["loadavg_before_after"] = [r3(load0[0]), r3(load1[0])]
    fig["sustained"] = sustained(fig, rate)
    return fig, calls, t0


def _live_holds(st: Stack, project: str) -> list[str]:
    from google.cloud.firestore_v1.base_query import FieldFilter

    return [
        s.id
        for s in st.db.collection("holds")
        .where(filter=FieldFilter("project", "==", project))
        .where(filter=FieldFilter("state", "==", "live"))
        .stream()
    ]


def _ledger_check(st: Stack, hs: HotSetup, project: str, settle_s: float = 30.0) -> dict[str, Any]:
    """Spend from the counters (admin API) and from the usage records; live holds.
    Calls a client gave up on may still be running in an instance: first wait (at most
    ``settle_s``) until no hold is live and the admin API shows nothing in flight."""
    from google.cloud.firestore_v1.base_query import FieldFilter

    t0 = time.monotonic()
    while True:
        try:
            spend = hs.admin.spend(project)
            admin_error = None
        except Exception as exc:  # noqa: BLE001 - reported (and failed by the checks)
            spend = {
                "project_spent_nano": None,
                "project_held_nano": None,
                "project_in_flight": None,
                "member_spent_nano": {},
            }
            admin_error = f"{type(exc).__name__}: {exc}"[:300]
        live = _live_holds(st, project)
        if (not live and not spend["project_in_flight"]) or time.monotonic() - t0 > settle_s:
            break
        time.sleep(0.5)
    waited = time.monotonic() - t0
    usage = [
        s.to_dict() or {}
        for s in st.db.collection("usage")
        .where(filter=FieldFilter("project", "==", project))
        .stream()
    ]
    usage_sum = sum(int(u.get("cost_nano", 0)) for u in usage)
    by_status = Counter(str(u.get("status")) for u in usage)
    spent = spend["project_spent_nano"]
    members = list(spend["member_spent_nano"].values())
    return {
        "spend_nano": spent,
        "member_spend_nano": members[0] if members else None,
        "usage_sum_nano": usage_sum,
        "usage_records": len(usage),
        "usage_by_status": dict(by_status),
        "counters_equal_usage": spent == usage_sum and all(m == usage_sum for m in members),
        "held_after_nano": spend["project_held_nano"],
        "in_flight_after": spend["project_in_flight"],
        "live_holds_after": len(live),
        "waited_for_calls_in_flight_s": r3(waited),
        "admin_error": admin_error,
    }


# --------------------------------------------------------------------------- 9. hot


def bench_hot(st: Stack, hs: HotSetup) -> dict[str, Any]:
    cfg = st.cfg
    # warm both instances (connections, caches, the period's first call)
    data = json.dumps(HOT_BODY).encode()
    with session() as s:
        for i in range(4 * INSTANCES):
            s.post(hs.urls[i % INSTANCES], data=data, headers=_auth(hs.keys["hot"]), timeout=30)
    log(
        f"hot: {cfg.hot_rate:.0f} calls/s for {cfg.hot_duration_s:.0f} s over {INSTANCES} instances"
    )
    fig, _, _ = _run(st, hs, "hot", cfg.hot_rate, cfg.hot_duration_s)
    _log_run("hot", fig)
    out: dict[str, Any] = {
        "project": "hot",
        "members": 1,
        "models": 1,
        "keys": 1,
        "instances": INSTANCES,
        "threads_per_instance": st.fn_env["THREADS"],
        "client_threads": cfg.hot_pool,
        "target_calls_per_s": cfg.hot_rate,
        "upstream_latency_ms": cfg.upstream_latency_ms,
        "per_call_estimate_nano": hs.estimate_nano,
        **fig,
    }
    out["ledger"] = _ledger_check(st, hs, "hot")
    probes = []
    if not fig["sustained"] and cfg.hot_probe_s > 0:
        for f in (0.75, 0.5):
            rate = round(cfg.hot_rate * f)
            log(
                f"hot: {cfg.hot_rate:.0f} calls/s not sustained; probing {rate} calls/s "
                f"for {cfg.hot_probe_s:.0f} s"
            )
            p, _, _ = _run(st, hs, "hot", rate, cfg.hot_probe_s)
            _log_run(f"hot probe {rate}", p)
            probes.append(p)
            if p["sustained"]:
                break
    out["probes"] = probes
    carried = [p for p in [fig, *probes] if p["sustained"]]
    best = max(carried, key=lambda p: p["offered_calls_per_s"], default=None)
    out["highest_sustained_calls_per_s"] = best["offered_calls_per_s"] if best else None
    out["at_highest_sustained_rate"] = (
        None
        if best is None
        else {
            k: best[k]
            for k in (
                "offered_calls_per_s",
                "achieved_calls_per_s",
                "duration_s",
                "latency_ms",
                "errors",
            )
        }
        | {
            k: best["documents"][k]
            for k in (
                "max_writes_one_doc_in_10s",
                "hottest_doc",
                "writes_per_call",
                "doc_ops_per_call",
            )
        }
    )
    return out


def _log_run(name: str, fig: dict[str, Any]) -> None:
    d = fig["documents"]
    log(
        f"{name}: {fig['achieved_calls_per_s']:.1f} calls/s achieved of "
        f"{fig['offered_calls_per_s']:.0f}, {fig['errors']} errors, p50 "
        f"{fig['latency_ms'].get('p50')} ms; max {d['max_writes_one_doc_in_10s']} writes to "
        f"{d['hottest_doc']} in 10 s; {d['writes_per_call']} writes/call"
    )


# --------------------------------------------------------------------------- 10. run-out


def bench_runout(st: Stack, hs: HotSetup) -> dict[str, Any]:
    cfg = st.cfg
    limit, est = hs.budgets["runout"], hs.estimate_nano
    fig, calls, t0 = _run(st, hs, "runout", cfg.hot_rate, cfg.runout_duration_s)
    _log_run("run-out", fig)
    ok = [c for c in calls if c.status == "200"]
    refused = [c for c in calls if c.status.startswith("429 budget")]
    refusals = Counter(c.status for c in calls if c.status[:1].isdigit() and c.status != "200")
    failures = Counter(_status(c) for c in calls if not c.status[:1].isdigit())
    # a refusal answered before a later call was even sent, and that later call then
    # succeeded: the budget still had room when it was refused
    sends_ok = sorted(c.sent for c in ok)
    last_ok_sent = sends_ok[-1] if sends_ok else float("-inf")
    false_refusals = sum(1 for c in refused if c.done < last_ok_sent)
    led = _ledger_check(st, hs, "runout")
    spent = led["spend_nano"]
    gap = None if spent is None else limit - spent
    return {
        "project": "runout",
        "instances": INSTANCES,
        "target_calls_per_s": cfg.hot_rate,
        "per_call_estimate_nano": est,
        "limit_nano": limit,
        "member_limit_nano": limit,
        "budget_fits_calls": limit // est,
        "successes": len(ok),
        "refusals": dict(refusals),
        "refused": len(refused),
        "failures": dict(failures),
        **led,
        "overshoot_nano": None if spent is None else spent - limit,
        "gap_nano": gap,
        "gap_estimates": None if gap is None else r3(gap / est),
        "gap_within_one_estimate_per_instance": gap is not None and 0 <= gap <= INSTANCES * est,
        "false_refusals": false_refusals,
        "refused_while_fit_at_end": min(len(refused), gap // est) if gap and gap > 0 else 0,
        "first_refusal_s": r3(min(c.done for c in refused) - t0) if refused else None,
        "last_success_sent_s": r3(last_ok_sent - t0) if ok else None,
        "load": fig,
    }


# --------------------------------------------------------------------------- 11. exact N


def bench_exact_n(st: Stack, hs: HotSetup) -> dict[str, Any]:
    cfg = st.cfg
    n_callers = cfg.exact2_callers
    data = json.dumps(OVERSHOOT_BODY).encode()
    statuses: Counter[str] = Counter()
    per_instance: dict[int, Counter[str]] = {i: Counter() for i in range(INSTANCES)}
    lock = threading.Lock()
    barrier = threading.Barrier(n_callers, timeout=60)
    counter = iter(range(n_callers))
    headers = _auth(hs.keys["exact2"])

    def call() -> None:
        with lock:
            i = next(counter)
        inst = i % INSTANCES
        s = session()
        try:
            barrier.wait()
            r = s.post(hs.urls[inst], data=data, headers=headers, timeout=60)
            code = ""
            if r.status_code != 200:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    code = " " + str(r.json()["error"]["code"])
            key = f"{r.status_code}{code}"
        except Exception as e:  # noqa: BLE001 - counted, reported
            key = type(e).__name__
        finally:
            s.close()
        with lock:
            statuses[key] += 1
            per_instance[inst][key] += 1

    wall, returned = run_threads(n_callers, call, 120)
    led = _ledger_check(st, hs, "exact2")
    limit = hs.budgets["exact2"]
    spent = led["spend_nano"]
    return {
        "callers": n_callers,
        "instances": INSTANCES,
        "n_fitting": cfg.exact2_n,
        "per_call_estimate_nano": hs.exact_estimate_nano,
        "limit_nano": limit,
        "successes": statuses.get("200", 0),
        "statuses": dict(statuses),
        "per_instance": {str(i): dict(c) for i, c in per_instance.items()},
        **led,
        "overshoot_nano": None if spent is None else spent - limit,
        "all_callers_returned": returned == n_callers,
        "wall_s": r3(wall),
        "upstream_latency_ms": cfg.budget_latency_ms,
    }


# --------------------------------------------------------------------------- summary


def latency_summary(res: dict[str, Any]) -> dict[str, Any]:
    """The issue's latency figures under one key: added latency vs the upstream called
    directly, sequential Firestore round trips, and the one-round-trip floor."""
    lat, fs = res.get("latency", {}), res.get("firestore", {})
    rt, floor = fs.get("round_trips", {}), fs.get("floor_ms", {})
    ov = lat.get("overhead_ms", {})
    one = floor.get("reserve", {}).get("p50")
    return {
        "added_ms_vs_direct": {k: ov.get(k) for k in ("p50", "p95", "p99")},
        "proxy_ms": {k: lat.get("proxy_ms", {}).get(k) for k in ("p50", "p99")},
        "direct_ms": {k: lat.get("direct_ms", {}).get(k) for k in ("p50", "p99")},
        "round_trips_before_first_byte": rt.get("before_first_byte"),
        "round_trips_total": rt.get("total"),
        "stream_round_trips_before_first_byte": rt.get("stream_before_first_byte"),
        "stream_round_trips_total": rt.get("stream_total"),
        "one_round_trip_floor_ms_p50": one,
        "target_added_p50_ms": None if one is None else r3(one + 3),
        "note": "added = proxy - upstream direct (latency section, sequential calls); round "
        "trips counted from the gRPC calls of an in-process instance (firestore "
        "section); one round trip = the floor's reserve commit, issued directly",
    }
