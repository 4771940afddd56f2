"""Sections 3 and 4: the Firestore floor, counted round trips and writes, stage times."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from bench.common import BENCH, MODEL, ROOT, ms_summary, pct, r3, read_stream, session, timed_post
from bench.stack import Stack, chat_body

# --------------------------------------------------------------------------- 3. Firestore


FloorFn = Callable[[int], tuple[float, float, float]]


def make_floor(st: Stack) -> FloorFn:
    """The Firestore work of one call, issued directly with the proxy's own client:
    one get_all of the 7 documents the proxy reads, the reserve batch (2 counters +
    hold), the settle batch (2 counters + usage record shaped like the proxy's + hold
    update). Counters of a project of their own. Returns one iteration's three times."""
    from google.cloud.firestore_v1 import Increment

    from functions.core import auth, ids
    from functions.core.budget import period_key

    db = st.db
    now = datetime.now(UTC)
    period = period_key("monthly", now)
    refs = [
        db.collection("keys").document(auth.key_hash(st.keys["alice"])),
        db.collection("users").document("alice"),
        db.collection("members").document(ids.member("lat", "alice")),
        db.collection("projects").document("lat"),
        db.collection("models").document(ids.model(MODEL)),
        db.collection("limits").document(ids.limit("lat", MODEL)),
        db.collection("limits").document(ids.limit("lat", MODEL, "alice")),
    ]
    counters = [
        db.collection("counters").document(ids.project_counter("floor", period)),
        db.collection("counters").document(ids.member_counter("floor", "alice", period)),
    ]
    usage_raw = {
        "prompt_tokens": 20,
        "completion_tokens": 7,
        "total_tokens": 27,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }

    def one(i: int) -> tuple[float, float, float]:
        call_id = f"call_floor_{os.getpid()}_{i}_{os.urandom(4).hex()}"
        t0 = time.perf_counter()
        docs = list(db.get_all(refs))
        assert len(docs) == len(refs)
        t1 = time.perf_counter()
        b = db.batch()
        for c in counters:
            b.set(
                c,
                {
                    "scope": "p",
                    "project": "floor",
                    "period": period,
                    "held": Increment(1000),
                    "inflight": Increment(1),
                    "spent": Increment(0),
                },
                merge=True,
            )
        b.create(
            db.collection("holds").document(call_id),
            {
                "call_id": call_id,
                "project": "floor",
                "user": "alice",
                "key_name": "default",
                "model": MODEL,
                "route": "chat",
                "period": period,
                "counters": [c.id for c in counters],
                "estimate_nano": 1000,
                "estimate_tokens": 30,
                "created_at": now,
                "expires_at": now,
                "state": "live",
                "streamed": False,
                "tag": None,
            },
        )
        b.commit()
        t2 = time.perf_counter()
        b = db.batch()
        for c in counters:
            b.set(
                c,
                {"held": Increment(-1000), "inflight": Increment(-1), "spent": Increment(900)},
                merge=True,
            )
        b.create(
            db.collection("usage").document(call_id),
            {
                "call_id": call_id,
                "ts": now,
                "settled_at": now,
                "period": period,
                "project": "floor",
                "user": "alice",
                "key_name": "default",
                "model": MODEL,
                "route": "chat",
                "upstream_model": MODEL,
                "status": "ok",
                "http_status": 200,
                "input_tokens": 20,
                "cached_tokens": 0,
                "cache_write_tokens": 0,
                "output_tokens": 10,
                "reasoning_tokens": 0,
                "cost_nano": 900,
                "estimate_nano": 1000,
                "latency_ms": 20,
                "streamed": False,
                "cached": False,
                "estimated": False,
                "tag": None,
                "request_id": "req_x",
                "response_id": None,
                "service_tier": "default",
                "usage": usage_raw,
            },
        )
        b.update(
            db.collection("holds").document(call_id),
            {"state": "settled", "settled_at": now, "purge_at": now},
        )
        b.commit()
        t3 = time.perf_counter()
        return t1 - t0, t2 - t1, t3 - t2

    return one


def floor_summary(samples: list[tuple[float, float, float]]) -> dict[str, Any]:
    return {
        "get_all": ms_summary([g for g, _, _ in samples]),
        "reserve": ms_summary([r for _, r, _ in samples]),
        "settle": ms_summary([x for _, _, x in samples]),
        "before_upstream": ms_summary([g + r for g, r, _ in samples]),
        "total": ms_summary([g + r + x for g, r, x in samples]),
        "note": "measured interleaved with the latency calls (same emulator state)",
    }


def _quiet_handler() -> Any:
    from werkzeug.serving import WSGIRequestHandler

    class Quiet(WSGIRequestHandler):
        def log_request(self, *args: Any, **kwargs: Any) -> None:
            pass

    return Quiet


def bench_round_trips(st: Stack, profile_calls: int = 0) -> dict[str, Any]:
    """Serve the same ``openai`` entry point in this process (functions_framework's app
    under werkzeug), count every gRPC call it makes per proxied call, and note when
    the request went upstream and when the client saw its first byte."""
    import functions_framework
    from werkzeug.serving import make_server

    from bench.rpc import RpcRecorder, sequential
    from functions.core.settings import Settings
    from functions.proxy import upstream as upstream_mod
    from functions.proxy.app import proxy_for

    recorder = RpcRecorder().install()
    marks: list[float] = []
    orig_post = upstream_mod.Upstream.post

    def post(self: Any, *a: Any, **k: Any) -> Any:
        marks.append(time.perf_counter())
        return orig_post(self, *a, **k)

    upstream_mod.Upstream.post = post  # type: ignore[method-assign]
    # the recorder must see a known sequence exactly: one get_all, one commit
    recorder.enabled = True
    list(
        st.db.get_all(
            [st.db.collection("bench").document("a"), st.db.collection("bench").document("b")]
        )
    )
    batch = st.db.batch()
    batch.set(st.db.collection("bench").document("a"), {"x": 1})
    batch.commit()
    time.sleep(0.01)
    seen = recorder.take()
    recorder.enabled = False
    self_check = {
        "methods": [r.method for r in seen],
        "sequential": sequential(seen),
        "writes": sum(r.writes for r in seen),
        "docs": sum(r.docs for r in seen),
    }
    self_check["ok"] = (
        self_check["methods"] == ["BatchGetDocuments", "Commit"]
        and self_check["sequential"] == 2
        and self_check["writes"] == 1
        and self_check["docs"] == 2
    )
    app = functions_framework.create_app(
        target="openai", source=str(ROOT / "functions" / "main.py")
    )
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_quiet_handler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}/v1/chat/completions"
    plain = json.dumps(chat_body()).encode()
    streamed = json.dumps(chat_body(max_tokens=64, stream=True)).encode()
    s = session()
    per_call: list[dict[str, Any]] = []
    per_stream: list[dict[str, Any]] = []
    first_call: dict[str, Any] = {}
    try:
        recorder.enabled = True
        for i in range(st.cfg.rt_calls + 1):
            marks.clear()
            recorder.take()
            t0 = time.perf_counter()
            dt, status = timed_post(s, url, plain, st.auth("alice"))
            time.sleep(0.03)  # the settlement after the last byte, and RPC end callbacks, land
            rpcs = recorder.take()
            up = marks[0] if marks else float("inf")
            before = [r for r in rpcs if r.start < up]
            row = {
                "status": status,
                "rpcs": len(rpcs),
                "sequential": sequential(rpcs),
                "before_upstream": sequential(before),
                "rpcs_before_upstream": len(before),
                "writes": sum(r.writes for r in rpcs if r.method == "Commit"),
                "docs_read": sum(r.docs for r in rpcs),
                "methods": [r.method for r in sorted(rpcs, key=lambda r: r.start)],
                "ms": r3(dt * 1000),
                "t0": t0,
            }
            if i == 0:
                first_call = row  # the instance's first call (cold caches)
            else:
                per_call.append(row)
        # cross-check with the proxy's own counters (Ledger.writes, Store.reads)
        proxy = proxy_for(Settings.from_env())
        w0 = getattr(proxy.ledger, "writes", None)
        r0 = getattr(proxy.store, "reads", None)
        for _ in range(st.cfg.rt_calls):
            timed_post(s, url, plain, st.auth("alice"))
        n = max(1, st.cfg.rt_calls)
        ledger_writes = (proxy.ledger.writes - w0) / n if w0 is not None else None
        store_reads = (proxy.store.reads - r0) / n if r0 is not None else None
        for _ in range(max(3, st.cfg.rt_calls // 3)):
            marks.clear()
            recorder.take()
            t0 = time.perf_counter()
            r = read_stream(s, url, streamed, st.auth("alice"))
            time.sleep(0.03)
            rpcs = recorder.take()
            first_byte = t0 + (r["ttfb"] if r["ttfb"] is not None else 1e9)
            per_stream.append(
                {
                    "status": r["status"],
                    "rpcs": len(rpcs),
                    "sequential": sequential(rpcs),
                    "before_first_byte": sequential([x for x in rpcs if x.start < first_byte]),
                    "writes": sum(x.writes for x in rpcs if x.method == "Commit"),
                    "methods": [x.method for x in sorted(rpcs, key=lambda x: x.start)],
                }
            )
        recorder.enabled = False
        recorder.uninstall()
        upstream_mod.Upstream.post = orig_post  # type: ignore[method-assign]
        breakdown = stage_breakdown(url, st)
        profile = run_profile(app, st, profile_calls) if profile_calls else None
    finally:
        recorder.enabled = False
        recorder.uninstall()
        upstream_mod.Upstream.post = orig_post  # type: ignore[method-assign]
        server.shutdown()
        thread.join(5)
        s.close()

    def mode(rows: list[dict[str, Any]], k: str) -> int:
        return Counter(r[k] for r in rows).most_common(1)[0][0] if rows else -1

    ok = [r for r in per_call if r["status"] == 200]
    oks = [r for r in per_stream if r["status"] == 200]
    writes = [r["writes"] for r in ok]
    result = {
        "recorder_self_check": self_check,
        "calls": len(per_call),
        "errors": len(per_call) - len(ok),
        "before_first_byte": mode(ok, "before_upstream"),
        "before_first_byte_max": max((r["before_upstream"] for r in ok), default=-1),
        "total": mode(ok, "sequential"),
        "total_max": max((r["sequential"] for r in ok), default=-1),
        "rpcs_per_call": mode(ok, "rpcs"),
        "methods": ok[0]["methods"] if ok else [],
        "stream_before_first_byte": mode(oks, "before_first_byte"),
        "stream_total": mode(oks, "sequential"),
        "stream_methods": oks[0]["methods"] if oks else [],
        "first_call_of_instance": {
            k: first_call.get(k)
            for k in ("status", "sequential", "before_upstream", "writes", "methods")
        },
        "writes": {
            "per_call_mode": Counter(writes).most_common(1)[0][0] if writes else -1,
            "min": min(writes, default=-1),
            "max": max(writes, default=-1),
            "mean": r3(statistics.fmean(writes)) if writes else -1,
            "stream_per_call_mode": mode(oks, "writes"),
            "ledger_counter_per_call": (r3(ledger_writes) if ledger_writes is not None else None),
        },
        "docs_read_per_call": mode(ok, "docs_read"),
        "store_reads_counter_per_call": r3(store_reads) if store_reads is not None else None,
    }
    result["in_process_stages_ms"] = breakdown
    if profile is not None:
        result["profile"] = profile
    return result


STAGES = (
    ("handle", "functions.proxy.app", "Proxy", "handle"),
    ("load_call_context", "functions.store.client", "Store", "load_call_context"),
    ("estimate_input_tokens", "functions.core.tokens", None, "estimate_input_tokens"),
    ("reserve", "functions.store.ledger", "Ledger", "reserve"),
    ("secret", "functions.proxy.forward", "Forwarder", "_secret_for"),
    ("upstream", "functions.proxy.upstream", "Upstream", "post"),
    ("settle", "functions.store.ledger", "Ledger", "settle"),
)


def stage_breakdown(url: str, st: Stack) -> dict[str, Any]:
    """Where a warm call's time goes, in-process: wall time of each stage of the proxy
    (p50 over the calls) and the handler thread's CPU time. Stages missing from the
    code (renamed) are skipped."""
    import importlib

    times: dict[str, list[float]] = {name: [] for name, *_ in STAGES}
    cpu: dict[str, list[float]] = {name: [] for name, *_ in STAGES}
    restore: list[tuple[Any, str, Any]] = []
    for name, mod_name, cls_name, attr in STAGES:
        mod = importlib.import_module(mod_name)
        owner = getattr(mod, cls_name) if cls_name else mod
        orig = getattr(owner, attr, None)
        if orig is None:
            continue

        def timed(*a: Any, __orig: Any = orig, __name: str = name, **k: Any) -> Any:
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                return __orig(*a, **k)
            finally:
                times[__name].append(time.perf_counter() - t0)
                cpu[__name].append(time.thread_time() - c0)

        restore.append((owner, attr, orig))
        setattr(owner, attr, timed)
    data = json.dumps(chat_body()).encode()
    wall: list[float] = []
    try:
        with session() as s:
            for _ in range(st.cfg.rt_calls * 2):
                dt, status = timed_post(s, url, data, st.auth("alice"))
                if status == 200:
                    wall.append(dt)
    finally:
        for owner, attr, orig in restore:
            setattr(owner, attr, orig)

    def table(d: dict[str, list[float]]) -> dict[str, float]:
        o = {k: r3(pct(v, 50) * 1000) for k, v in d.items() if v}
        if "handle" in o:
            # a plain answer is settled after its last byte, outside ``handle``
            o["rest_of_handler"] = r3(
                o["handle"] - sum(o[k] for k in o if k not in ("handle", "settle"))
            )
        return o

    return {
        "wall": table(times),
        "thread_cpu": table(cpu),
        "client_round_trip": r3(pct(wall, 50) * 1000),
        "note": "p50 ms per stage of a warm non-streaming call served in-process "
        "(werkzeug): wall time, and CPU time of the handling thread; the "
        "upstream's 20 ms are in 'upstream' wall; 'settle' runs after the "
        "answer's last byte is written",
    }


def run_profile(app: Any, st: Stack, n: int) -> dict[str, Any]:
    """cProfile of n proxied calls through the app's test client in this thread."""
    import cProfile
    import io
    import pstats

    client = app.test_client()
    data = json.dumps(chat_body()).encode()
    headers = st.auth("alice")
    for _ in range(5):
        client.post("/v1/chat/completions", data=data, headers=headers, buffered=True)
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    c0 = time.thread_time()
    prof.enable()
    for _ in range(n):
        client.post("/v1/chat/completions", data=data, headers=headers, buffered=True)
    prof.disable()
    cpu = time.thread_time() - c0
    wall = time.perf_counter() - t0
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    buf.write("# Tollgate's own functions, by cumulative time (wall, includes waits)\n")
    stats.sort_stats("cumulative").print_stats(r"functions/", 60)
    buf.write("\n# everything, by own time\n")
    stats.sort_stats("tottime").print_stats(40)
    buf.write("\n# everything, by cumulative time\n")
    stats.sort_stats("cumulative").print_stats(80)
    path = st.work / "profile.txt"
    path.write_text(buf.getvalue())
    shutil.copy(path, BENCH / "profile.txt")
    return {
        "calls": n,
        "thread_cpu_ms_per_call": r3(cpu * 1000 / n),
        "wall_ms_per_call": r3(wall * 1000 / n),
        "report": str(BENCH / "profile.txt"),
    }
