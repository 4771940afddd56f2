"""Sections 1 and 2: added latency of plain and streamed calls, proxy vs direct."""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

from bench.common import (
    BENCH,
    UPSTREAM_KEY,
    diff,
    ms_summary,
    proc_cpu_s,
    r3,
    read_stream,
    session,
    timed_post,
)
from bench.floor import floor_summary, make_floor
from bench.stack import FunctionProcess, Stack, chat_body

# --------------------------------------------------------------------------- 1. latency


def bench_latency(st: Stack) -> dict[str, Any]:
    """Sequential calls, rotating proxy / direct / Firestore floor so the three see the
    same conditions (the emulator's JVM keeps warming up for a while)."""
    cfg = st.cfg
    data = json.dumps(chat_body()).encode()
    direct_url = st.urls["plain"] + "/chat/completions"
    ps, ds, ts = session(), session(), session()
    floor = make_floor(st)
    # the platform baseline: the same HTTP hop through functions-framework, no Tollgate
    relay = FunctionProcess(
        {**st.fn_env, "BENCH_UPSTREAM_KEY": UPSTREAM_KEY},
        st.work / "passthrough.log",
        BENCH / "passthrough.py",
        "relay",
    )
    relay.start()
    relay.first_200("/", data, st.direct_auth)
    proxy_t: list[float] = []
    direct_t: list[float] = []
    through_t: list[float] = []
    floor_t: list[tuple[float, float, float]] = []
    errors: Counter[str] = Counter()
    for i in range(cfg.warmup):
        timed_post(ps, st.chat_url, data, st.auth("alice"))
        timed_post(ds, direct_url, data, st.direct_auth)
        timed_post(ts, relay.url + "/", data, st.direct_auth)
        floor(-i - 1)
    worker = st.fn.worker_pid()
    cpu0 = proc_cpu_s(worker)
    deadline = time.monotonic() + cfg.section_limit_s
    done = 0

    def proxy_call() -> None:
        dt, status = timed_post(ps, st.chat_url, data, st.auth("alice"))
        if status == 200:
            proxy_t.append(dt)
        else:
            errors[f"proxy {status}"] += 1

    def direct_call() -> None:
        dt, status = timed_post(ds, direct_url, data, st.direct_auth)
        if status == 200:
            direct_t.append(dt)
        else:
            errors[f"direct {status}"] += 1

    def through_call() -> None:
        dt, status = timed_post(ts, relay.url + "/", data, st.direct_auth)
        if status == 200:
            through_t.append(dt)
        else:
            errors[f"passthrough {status}"] += 1

    steps = [proxy_call, direct_call, through_call, lambda: floor_t.append(floor(done))]
    try:
        for i in range(cfg.latency_calls):
            if time.monotonic() > deadline:
                break
            for k in range(len(steps)):
                steps[(i + k) % len(steps)]()
            done += 1
    finally:
        relay.stop()
    cpu = proc_cpu_s(worker) - cpu0
    proxy, direct = ms_summary(proxy_t), ms_summary(direct_t)
    through = ms_summary(through_t)
    return {
        "calls": done,
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
        "floor": floor_summary(floor_t),
        "upstream_latency_ms": cfg.upstream_latency_ms,
        "proxy_ms": proxy,
        "direct_ms": direct,
        "overhead_ms": diff(proxy, direct),
        "passthrough_ms": through,
        "platform_overhead_ms": diff(through, direct),
        "over_passthrough_ms": diff(proxy, through),
        "worker_cpu_ms_per_call": r3(cpu * 1000 / max(1, len(proxy_t))),
    }


# --------------------------------------------------------------------------- 2. streaming


def bench_streaming(st: Stack) -> dict[str, Any]:
    cfg = st.cfg
    data = json.dumps(
        chat_body(max_tokens=64, stream=True, stream_options={"include_usage": True})
    ).encode()
    direct_url = st.urls["plain"] + "/chat/completions"
    ps, ds = session(), session()
    side: dict[str, dict[str, list[float]]] = {
        n: {"ttfb": [], "last": [], "end": [], "gaps": []} for n in ("proxy", "direct")
    }
    events: dict[str, list[int]] = {"proxy": [], "direct": []}
    errors = 0
    for _ in range(max(2, cfg.warmup // 10)):
        read_stream(ps, st.chat_url, data, st.auth("alice"))
        read_stream(ds, direct_url, data, st.direct_auth)
    deadline = time.monotonic() + cfg.section_limit_s
    done = 0
    for i in range(cfg.streams):
        if time.monotonic() > deadline:
            break
        order = [
            ("proxy", ps, st.chat_url, st.auth("alice")),
            ("direct", ds, direct_url, st.direct_auth),
        ]
        for name, s, url, h in order if i % 2 == 0 else order[::-1]:
            r = read_stream(s, url, data, h)
            if r["status"] != 200 or not r["done"] or r["ttfb"] is None:
                errors += 1
                continue
            for k in ("ttfb", "last", "end"):
                side[name][k].append(r[k])
            side[name]["gaps"].extend(r["gaps"])
            events[name].append(r["events"])
        done += 1
    out: dict[str, Any] = {
        "streams": done,
        "errors": errors,
        "chunk_delay_ms": cfg.chunk_delay_ms,
        "events_per_stream": {n: (max(v) if v else 0) for n, v in events.items()},
    }
    for k, label in (
        ("ttfb", "first_data_byte_ms"),
        ("last", "last_event_ms"),
        ("end", "end_of_body_ms"),
    ):
        p, d = ms_summary(side["proxy"][k]), ms_summary(side["direct"][k])
        out[label] = {"proxy": p, "direct": d, "overhead": diff(p, d)}
    gp, gd = ms_summary(side["proxy"]["gaps"]), ms_summary(side["direct"]["gaps"])
    out["chunk_gap_ms"] = {
        "proxy": gp,
        "direct": gd,
        "p99_delta": r3(gp["p99"] - gd["p99"]) if gp.get("n") and gd.get("n") else None,
    }
    return out
