"""Configuration, constants and small helpers shared by the benchmark's sections."""

from __future__ import annotations

import os
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
MODEL = "gpt-4o-mini"
UPSTREAM_KEY = "sk-bench-upstream-key-0001"
PROD_RTT_MS = 8.0  # assumed Cloud Functions -> Firestore round trip, same region
DEAD_PROXY = "http://127.0.0.1:9"  # nothing listens: any download attempt fails
TP_USERS = 8


@dataclass(frozen=True)
class Config:
    name: str
    latency_calls: int = 600
    warmup: int = 400  # the emulator JVM and the worker warm up over a few hundred calls
    streams: int = 60
    stream_chunks: int = 12
    rt_calls: int = 30
    tp_levels: tuple[int, ...] = (1, 8, 32)
    tp_duration_s: float = 8.0
    overshoot_callers: int = 100
    overshoot_n: int = 10
    cold_starts: int = 3
    mem_concurrency: int = 32
    mem_body_mib: float = 7.0
    big_prompt_tokens: int = 100_000
    big_prompt_reps: int = 3
    upstream_latency_ms: float = 20.0
    chunk_delay_ms: float = 10.0
    budget_latency_ms: float = 1000.0
    extra_tokens: int = 1000
    section_limit_s: float = 120.0  # no single load loop runs longer than this
    # bench/hot.py: one project, one member, one key, 2 instances, open-loop paced load
    hot_rate: float = 40.0  # calls/s offered
    hot_duration_s: float = 60.0
    runout_duration_s: float = 20.0  # the budget fits half of rate x duration
    hot_pool: int = 64  # client threads (a bound on calls in flight)
    hot_drain_s: float = 15.0  # after the last scheduled send, queued calls are dropped
    hot_probe_s: float = 15.0  # lower-rate probes when the target rate is not sustained
    exact2_callers: int = 100
    exact2_n: int = 40


FULL = Config("full")
QUICK = Config(
    "quick",
    latency_calls=40,
    warmup=15,
    streams=6,
    stream_chunks=6,
    rt_calls=6,
    tp_duration_s=1.0,
    overshoot_n=5,
    cold_starts=1,
    mem_concurrency=4,
    mem_body_mib=1.0,
    big_prompt_reps=1,
    budget_latency_ms=800.0,
    section_limit_s=30.0,
    hot_rate=20.0,
    hot_duration_s=5.0,
    runout_duration_s=5.0,
    hot_drain_s=10.0,
    hot_probe_s=0.0,
)


# --------------------------------------------------------------------------- helpers


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linear between closest ranks."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def ms_summary(seconds: list[float]) -> dict[str, float | int]:
    ms = [v * 1000 for v in seconds]
    if not ms:
        return {"n": 0}
    return {
        "n": len(ms),
        "p50": r3(pct(ms, 50)),
        "p95": r3(pct(ms, 95)),
        "p99": r3(pct(ms, 99)),
        "mean": r3(statistics.fmean(ms)),
        "min": r3(min(ms)),
        "max": r3(max(ms)),
    }


def r3(x: float) -> float:
    return round(float(x), 3)


def diff(
    a: dict[str, Any], b: dict[str, Any], keys: tuple[str, ...] = ("p50", "p95", "p99")
) -> dict[str, float]:
    return {k: r3(a[k] - b[k]) for k in keys if k in a and k in b}


def session() -> requests.Session:
    s = requests.Session()
    s.trust_env = False  # loopback only, whatever the environment says
    return s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def proc_status_kib(pid: int, field_name: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def proc_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_threads(n: int, target: Callable[[], None], limit_s: float) -> tuple[float, int]:
    """``target`` in n daemon threads, joined within ``limit_s`` in all: (wall seconds,
    how many returned). A thread still running is counted, never waited for further."""
    threads = [threading.Thread(target=target, daemon=True) for _ in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    deadline = time.monotonic() + limit_s
    for t in threads:
        t.join(max(0.1, deadline - time.monotonic()))
    return time.perf_counter() - t0, sum(1 for t in threads if not t.is_alive())


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def timed_post(
    s: requests.Session, url: str, data: bytes, headers: dict[str, str], timeout: float = 60.0
) -> tuple[float, int]:
    t0 = time.perf_counter()
    r = s.post(url, data=data, headers=headers, timeout=timeout)
    r.content  # noqa: B018
    return time.perf_counter() - t0, r.status_code


def read_stream(
    s: requests.Session, url: str, data: bytes, headers: dict[str, str]
) -> dict[str, Any]:
    t0 = time.perf_counter()
    times: list[float] = []
    done_at = None
    with s.post(url, data=data, headers=headers, stream=True, timeout=60) as r:
        status = r.status_code
        buf = b""
        for chunk in r.iter_content(chunk_size=None):
            now = time.perf_counter()
            buf += chunk
            while b"\n\n" in buf:
                event, buf = buf.split(b"\n\n", 1)
                if event.startswith(b"data:") or b"\ndata:" in event:
                    times.append(now)
                    if b"[DONE]" in event:
                        done_at = now
    end = time.perf_counter()
    return {
        "status": status,
        "ttfb": times[0] - t0 if times else None,
        "last": (done_at or (times[-1] if times else end)) - t0,
        "end": end - t0,
        "gaps": [b - a for a, b in zip(times, times[1:], strict=False)],
        "events": len(times),
        "done": done_at is not None,
    }
