"""Sections 5 to 8: throughput, budget overshoot, cold start, memory."""

from __future__ import annotations

import contextlib
import json
import random
import statistics
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import requests

from bench.common import (
    DEAD_PROXY,
    MODEL,
    TP_USERS,
    log,
    ms_summary,
    proc_status_kib,
    r3,
    run_threads,
    session,
    timed_post,
)
from bench.stack import OVERSHOOT_BODY, FunctionProcess, Stack, chat_body

# --------------------------------------------------------------------------- 5. throughput


def _tp_level(st: Stack, c: int, data: bytes) -> dict[str, Any]:
    """c threads, each with its own keep-alive session, call for tp_duration_s."""
    lat: list[float] = []
    statuses: Counter[str] = Counter()
    lock = threading.Lock()
    state = {"start": 0.0, "deadline": 0.0}

    def go() -> None:  # runs once, when every thread is connected and ready
        state["start"] = time.perf_counter()
        state["deadline"] = state["start"] + st.cfg.tp_duration_s

    barrier = threading.Barrier(c, action=go, timeout=60)
    cap = int(st.cfg.tp_duration_s * 2000) + 10  # calls per thread: a bound, never reached

    def worker(idx: int) -> None:
        s = session()
        h = st.auth(f"t{idx % TP_USERS}")
        with contextlib.suppress(Exception):
            timed_post(s, st.chat_url, data, h)  # connect + warm
        barrier.wait()
        n = 0
        while time.perf_counter() < state["deadline"] and n < cap:
            n += 1
            try:
                dt, status = timed_post(s, st.chat_url, data, h, timeout=30)
            except requests.RequestException as e:
                with lock:
                    statuses[type(e).__name__] += 1
                continue
            with lock:
                statuses[str(status)] += 1
                if status == 200:
                    lat.append(dt)
        s.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(c)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(st.cfg.tp_duration_s + 90)
    elapsed = time.perf_counter() - state["start"]
    total = sum(statuses.values())
    ok = statuses.get("200", 0)
    log(f"throughput c={c}: {ok / elapsed:.1f} calls/s, {total - ok} errors")
    return {
        "concurrency": c,
        "duration_s": r3(elapsed),
        "calls": total,
        "ok": ok,
        "errors": total - ok,
        "error_rate": r3(1 - ok / total) if total else None,
        "calls_per_s": r3(ok / elapsed),
        "latency_ms": ms_summary(lat),
        "statuses": dict(statuses),
    }


def bench_throughput(st: Stack) -> dict[str, Any]:
    data = json.dumps(chat_body()).encode()
    levels = [_tp_level(st, c, data) for c in st.cfg.tp_levels]
    return {
        "upstream_latency_ms": st.cfg.upstream_latency_ms,
        "threads": st.fn_env["THREADS"],
        "levels": levels,
        "note": "one project, keys of 8 members round-robin; every call writes the "
        "project's counter twice (reserve, settle)",
    }


# --------------------------------------------------------------------------- 6. overshoot


def bench_overshoot(st: Stack, project: str) -> dict[str, Any]:
    from google.cloud.firestore_v1.base_query import FieldFilter

    from functions.core.budget import period_key

    cfg = st.cfg
    limit = cfg.overshoot_n * st.per_call_nano
    data = json.dumps(OVERSHOOT_BODY).encode()
    statuses: Counter[str] = Counter()
    lock = threading.Lock()
    barrier = threading.Barrier(cfg.overshoot_callers, timeout=60)

    def call() -> None:
        s = session()
        try:
            barrier.wait()
            r = s.post(st.chat_url, data=data, headers=st.auth(project), timeout=60)
            code = ""
            if r.status_code != 200:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    code = " " + str(r.json()["error"]["code"])
            with lock:
                statuses[f"{r.status_code}{code}"] += 1
        except Exception as e:  # noqa: BLE001 - counted, reported
            with lock:
                statuses[type(e).__name__] += 1
        finally:
            s.close()

    wall, returned = run_threads(cfg.overshoot_callers, call, 120)
    # an answer is settled just after its last byte: wait (at most 30 s) for the last
    # settlements before reading the counters
    live_q = (
        st.db.collection("holds")
        .where(filter=FieldFilter("project", "==", project))
        .where(filter=FieldFilter("state", "==", "live"))
    )
    t0 = time.monotonic()
    while any(True for _ in live_q.stream()) and time.monotonic() - t0 < 30:
        time.sleep(0.1)
    waited = time.monotonic() - t0
    period = period_key("monthly", datetime.now(UTC))
    # the project's counter of this period, found by its fields (not by how ids are built)
    counters = [
        c.to_dict() or {}
        for c in st.db.collection("counters")
        .where(filter=FieldFilter("project", "==", project))
        .stream()
    ]
    counter = next(
        (
            c
            for c in counters
            if c.get("period") == period and not c.get("user") and not c.get("model")
        ),
        {},
    )
    usage = [
        s.to_dict() or {}
        for s in st.db.collection("usage")
        .where(filter=FieldFilter("project", "==", project))
        .stream()
    ]
    live = [s.id for s in live_q.stream()]
    ok_recs = [u for u in usage if u.get("status") == "ok"]
    spend = int(counter.get("spent", 0))
    excess = sum(int(u["cost_nano"]) - int(u["estimate_nano"]) for u in ok_recs)
    successes = statuses.get("200", 0)
    return {
        "callers": cfg.overshoot_callers,
        "n_fitting": cfg.overshoot_n,
        "per_call_estimate_nano": st.per_call_nano,
        "limit_nano": limit,
        "successes": successes,
        "statuses": dict(statuses),
        "spend_nano": spend,
        "overshoot_nano": spend - limit,
        "sum_actual_minus_estimate_nano": excess,
        "usage_records": len(usage),
        "usage_cost_sum_nano": sum(int(u.get("cost_nano", 0)) for u in usage),
        "held_after_nano": int(counter.get("held", 0)),
        "inflight_after": int(counter.get("inflight", 0)),
        "waited_for_settlements_s": round(waited, 3),
        "live_holds_after": len(live),
        "all_callers_returned": returned == cfg.overshoot_callers,
        "wall_s": r3(wall),
        "upstream_latency_ms": cfg.budget_latency_ms,
        "extra_prompt_tokens_per_call": cfg.extra_tokens if project == "over" else 0,
    }


# --------------------------------------------------------------------------- 7. cold start


def cold_call(st: Stack) -> tuple[bytes, dict[str, str]]:
    return json.dumps(chat_body("cold start")).encode(), st.auth("alice")


def bench_cold_start_extra(st: Stack, first: dict[str, Any]) -> dict[str, Any]:
    runs = [first]
    for i in range(st.cfg.cold_starts - 1):
        fp = FunctionProcess(st.fn_env, st.work / f"function-cold-{i}.log").start()
        try:
            data, headers = cold_call(st)
            runs.append(fp.first_200("/v1/chat/completions", data, headers))
        finally:
            fp.stop()
    ok = [r["total_ms"] for r in runs if r["status"] == 200]
    return {
        "runs": runs,
        "median_ms": r3(statistics.median(ok)) if ok else None,
        "all_200": len(ok) == len(runs),
        "encodings": "loaded from TIKTOKEN_CACHE_DIR, staged by "
        "`python -m functions.core.encodings seed`",
        "download_blocked_by": f"HTTPS_PROXY={DEAD_PROXY}",
    }


# --------------------------------------------------------------------------- 8. memory


_WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from "
    "at which but have an they you were her she there one all we their time water "
    "people house number river table window garden letter"
).split()


def words_text(n_words: int, seed: int = 1) -> str:
    rnd = random.Random(seed)
    return " ".join(rnd.choice(_WORDS) for _ in range(n_words))


def bench_memory(st: Stack) -> dict[str, Any]:
    from functions.core import tokens

    cfg = st.cfg
    target = int(cfg.mem_body_mib * 1024 * 1024)
    text = words_text(target // 3)[: target - 200]  # < 5 bytes per word: cut to size
    data = json.dumps(chat_body(text)).encode()
    worker = st.fn.worker_pid()
    baseline = proc_status_kib(worker, "VmRSS") or 0
    with contextlib.suppress(OSError):  # reset the peak (VmHWM) to now
        with open(f"/proc/{worker}/clear_refs", "w") as f:
            f.write("5")
    peak = {"rss": baseline}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            v = proc_status_kib(worker, "VmRSS")
            if v:
                peak["rss"] = max(peak["rss"], v)
            stop.wait(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    statuses: Counter[str] = Counter()
    lock = threading.Lock()
    lat: list[float] = []
    barrier = threading.Barrier(cfg.mem_concurrency, timeout=60)

    def call() -> None:
        s = session()
        try:
            barrier.wait()
            dt, status = timed_post(s, st.chat_url, data, st.auth("alice"), timeout=120)
            with lock:
                statuses[str(status)] += 1
                lat.append(dt)
        except Exception as e:  # noqa: BLE001
            with lock:
                statuses[type(e).__name__] += 1
        finally:
            s.close()

    wall, _ = run_threads(cfg.mem_concurrency, call, 180)
    stop.set()
    sampler.join(2)
    hwm = proc_status_kib(worker, "VmHWM") or 0
    settled = proc_status_kib(worker, "VmRSS") or 0

    # one 100k-token prompt: proxy vs direct
    big = words_text(cfg.big_prompt_tokens, seed=2)
    big_body = chat_body(big)
    big_tokens = tokens.estimate_input_tokens("chat", big_body, MODEL)
    big_data = json.dumps(big_body).encode()
    ps, ds = session(), session()
    timed_post(ps, st.chat_url, big_data, st.auth("alice"))  # warm the connections
    timed_post(ds, st.urls["plain"] + "/chat/completions", big_data, st.direct_auth)
    pt: list[float] = []
    dtl: list[float] = []
    big_errors = 0
    for _ in range(cfg.big_prompt_reps):
        dt, status = timed_post(ps, st.chat_url, big_data, st.auth("alice"))
        if status == 200:
            pt.append(dt)
        else:
            big_errors += 1
        dt, status = timed_post(
            ds, st.urls["plain"] + "/chat/completions", big_data, st.direct_auth
        )
        dtl.append(dt)
    p, d = ms_summary(pt), ms_summary(dtl)
    return {
        "concurrency": cfg.mem_concurrency,
        "body_bytes": len(data),
        "body_limit_bytes": 8 * 1024 * 1024,
        "statuses": dict(statuses),
        "ok": statuses.get("200", 0),
        "wall_s": r3(wall),
        "latency_ms": ms_summary(lat),
        "baseline_rss_mib": r3(baseline / 1024),
        "peak_rss_mib": r3(max(peak["rss"], hwm) / 1024),
        "sampled_peak_rss_mib": r3(peak["rss"] / 1024),
        "vm_hwm_mib": r3(hwm / 1024),
        "rss_after_mib": r3(settled / 1024),
        "big_prompt": {
            "tokens": big_tokens,
            "body_bytes": len(big_data),
            "errors": big_errors,
            "proxy_ms": p,
            "direct_ms": d,
            "overhead_ms": r3(p["p50"] - d["p50"]) if p.get("n") else None,
        },
    }
