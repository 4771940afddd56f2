"""Tollgate's benchmark (SPEC §6): one command, on loopback, in one run.

    python -m bench.run                  # full run (< 5 min on 2 cores) -> bench/results.json + .md
    python -m bench.run --quick          # a few seconds, same code path -> bench/results-quick.json
    python -m bench.run --out FILE       # figures to FILE (and FILE with .md)

It starts its own Firestore emulator, the fake upstreams of ``bench/upstream.py``
(fixed latency, fixed stream spacing) in their own process, seeds projects, and runs
the ``openai`` function as production does: ``python -m functions_framework --target
openai`` (gunicorn, gthread, ``THREADS``), with tiktoken's encodings staged in
``TIKTOKEN_CACHE_DIR`` and every download made impossible (``HTTPS_PROXY`` points at a
closed port). Then it measures, see ``bench/README.md``:

1. added latency of a non-streaming chat call, proxy vs upstream direct;
2. streaming: first ``data:`` byte, last event, end of body; gaps between events;
3. the Firestore floor (the call's reads and writes issued directly), and the
   sequential round trips of a call, counted by wrapping gRPC in an in-process proxy;
4. document writes per call, counted from the commit requests;
5. throughput and error rate at concurrency 1, 8, 32;
6. budget overshoot with 100 concurrent callers (exact estimate; estimate too low);
7. cold start: process start to first proxied 200;
8. peak RSS of the worker with near-limit bodies at full concurrency, and a
   100k-token prompt's latency.

Targets of issue 8 are reported with pass/fail, never asserted. Every load loop is
bounded in count and in time; every address is loopback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
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
    warmup: int = 150
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


FULL = Config("full")
QUICK = Config("quick", latency_calls=40, warmup=15, streams=6, stream_chunks=6, rt_calls=6,
               tp_duration_s=1.0, overshoot_n=5, cold_starts=1, mem_concurrency=4,
               mem_body_mib=1.0, big_prompt_reps=1, budget_latency_ms=800.0,
               section_limit_s=30.0)


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
    return {"n": len(ms), "p50": r3(pct(ms, 50)), "p95": r3(pct(ms, 95)),
            "p99": r3(pct(ms, 99)), "mean": r3(statistics.fmean(ms)), "min": r3(min(ms)),
            "max": r3(max(ms))}


def r3(x: float) -> float:
    return round(float(x), 3)


def diff(a: dict[str, Any], b: dict[str, Any], keys: tuple[str, ...] = ("p50", "p95", "p99")
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


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- processes


class FunctionProcess:
    """``python -m functions_framework --target openai`` as production runs it."""

    def __init__(self, env: dict[str, str], log_path: Path,
                 source: Path = ROOT / "functions" / "main.py", target: str = "openai") -> None:
        self.env = env
        self.log_path = log_path
        self.source, self.target = source, target
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def start(self) -> FunctionProcess:
        with open(self.log_path, "ab") as logf:
            self.started_at = time.perf_counter()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "functions_framework", "--source",
                 str(self.source), "--target", self.target,
                 "--host", "127.0.0.1", "--port", str(self.port)],
                env=self.env, cwd=ROOT, start_new_session=True, stdin=subprocess.DEVNULL,
                stdout=logf, stderr=subprocess.STDOUT)
        return self

    def first_200(self, path: str, data: bytes, headers: dict[str, str],
                  timeout_s: float = 60.0) -> dict[str, Any]:
        """Process start -> port accepting -> first proxied answer (must be 200)."""
        assert self.proc is not None
        deadline = self.started_at + timeout_s
        listening = None
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the function exited with {self.proc.returncode} "
                                   f"(log: {self.log_path})")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    listening = time.perf_counter()
                    break
            except OSError:
                time.sleep(0.01)
        if listening is None:
            raise RuntimeError(f"the function did not listen in {timeout_s:.0f} s")
        sent = time.perf_counter()
        with session() as s:
            r = s.post(self.url + path, data=data, headers=headers, timeout=timeout_s)
            r.content  # noqa: B018 - the whole answer
        done = time.perf_counter()
        return {"status": r.status_code, "total_ms": r3((done - self.started_at) * 1000),
                "listening_ms": r3((listening - self.started_at) * 1000),
                "first_call_ms": r3((done - sent) * 1000),
                "error": None if r.status_code == 200 else r.text[:300]}

    def worker_pid(self, timeout_s: float = 10.0) -> int:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            kids = proc_children(self.proc.pid)
            if kids:
                return kids[0]
            time.sleep(0.05)
        raise RuntimeError("no gunicorn worker found")

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None


@dataclass
class Stack:
    cfg: Config
    work: Path
    emulator_host: str
    urls: dict[str, str]
    gcp_project: str
    keys: dict[str, str]
    per_call_nano: int
    fn: FunctionProcess
    fn_env: dict[str, str]
    db: Any
    closers: list[Callable[[], None]] = field(default_factory=list)

    @property
    def chat_url(self) -> str:
        return self.fn.url + "/v1/chat/completions"

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}", "Content-Type": "application/json"}

    @property
    def direct_auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {UPSTREAM_KEY}", "Content-Type": "application/json"}


def chat_body(content: str = "Say hello in five words.", max_tokens: int = 16,
              **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": content}], **extra}


OVERSHOOT_BODY = chat_body("Count from one to ten, please.", max_tokens=100)


def start_stack(cfg: Config, work: Path, args: argparse.Namespace) -> Stack:
    from tests.emulator import Emulator

    closers: list[Callable[[], None]] = []
    try:
        return _start_stack(cfg, work, args, closers, Emulator)
    except BaseException:
        for close in reversed(closers):
            with contextlib.suppress(Exception):
                close()
        raise


def _start_stack(cfg: Config, work: Path, args: argparse.Namespace,
                 closers: list[Callable[[], None]], emulator_cls: Any) -> Stack:
    tk_dir = work / "tiktoken"
    base_env = {k: v for k, v in os.environ.items()
                if k not in ("OPENAI_API_KEY", "TIKTOKEN_CACHE_DIR", "TOLLGATE_TEST_EMULATOR")}
    base_env["PYTHONPATH"] = str(ROOT)
    # In parallel: the emulator, the fake upstreams, and tiktoken's encodings staged
    # from files (the same command deploy.sh uses).
    seed_tk = subprocess.Popen([sys.executable, "-m", "functions.tokens", "seed", str(tk_dir)],
                               cwd=ROOT, env=base_env, stdout=subprocess.DEVNULL)
    up_log = open(work / "upstream.log", "wb")  # noqa: SIM115 - closed by a closer
    upstream = subprocess.Popen(
        [sys.executable, "-m", "bench.upstream", "--key", UPSTREAM_KEY,
         "--latency-ms", str(cfg.upstream_latency_ms),
         "--chunk-delay-ms", str(cfg.chunk_delay_ms), "--chunks", str(cfg.stream_chunks),
         "--budget-latency-ms", str(cfg.budget_latency_ms),
         "--extra-tokens", str(cfg.extra_tokens)],
        cwd=ROOT, env={**base_env, "TIKTOKEN_CACHE_DIR": str(tk_dir)}, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=up_log, start_new_session=True)

    def stop_upstream() -> None:
        assert upstream.stdin is not None
        with contextlib.suppress(OSError):
            upstream.stdin.close()
        try:
            upstream.wait(5)
        except subprocess.TimeoutExpired:
            upstream.kill()
            upstream.wait(5)
        up_log.close()

    closers.append(stop_upstream)
    if args.emulator:
        emulator_host = args.emulator
    else:
        emu = emulator_cls(log_path=work / "emulator.log").start()
        closers.append(emu.stop)
        emulator_host = emu.host
    if seed_tk.wait(60) != 0:
        raise RuntimeError("python -m functions.tokens seed failed")
    assert upstream.stdout is not None
    line = upstream.stdout.readline()
    if not line:
        raise RuntimeError(f"the fake upstreams did not start (log: {work / 'upstream.log'})")
    urls = json.loads(line)

    gcp_project = "bench-" + os.urandom(4).hex()
    secrets_file = work / "secrets.json"
    os.environ.update({
        "FIRESTORE_EMULATOR_HOST": emulator_host, "TOLLGATE_GCP_PROJECT": gcp_project,
        "OPENAI_BASE_URL": urls["plain"], "TOLLGATE_SECRET_BACKEND": "local",
        "TOLLGATE_SECRETS_FILE": str(secrets_file), "TIKTOKEN_CACHE_DIR": str(tk_dir),
        "TOLLGATE_UPSTREAM_TIMEOUT_S": "120"})
    os.environ.pop("OPENAI_API_KEY", None)
    from functions.settings import Settings
    from functions.store import make_client

    # the client the functions use, channel options included: the floor is like for like
    db = make_client(Settings.from_env())
    closers.append(db.close)
    keys, per_call = seed(db, secrets_file, urls, cfg)

    fn_env = {**base_env, "TOLLGATE_GCP_PROJECT": gcp_project,
              "FIRESTORE_EMULATOR_HOST": emulator_host, "OPENAI_BASE_URL": urls["plain"],
              "TOLLGATE_SECRET_BACKEND": "local", "TOLLGATE_SECRETS_FILE": str(secrets_file),
              "TIKTOKEN_CACHE_DIR": str(tk_dir), "THREADS": str(args.threads),
              "TOLLGATE_UPSTREAM_TIMEOUT_S": "120",
              # any download (tiktoken's, or anything else) goes to a closed port and fails
              "HTTPS_PROXY": DEAD_PROXY, "HTTP_PROXY": DEAD_PROXY,
              "https_proxy": DEAD_PROXY, "http_proxy": DEAD_PROXY,
              "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    fn = FunctionProcess(fn_env, work / "function.log")
    closers.append(fn.stop)
    return Stack(cfg, work, emulator_host, urls, gcp_project, keys, per_call, fn, fn_env, db,
                 closers)


def seed(db: Any, secrets_file: Path, urls: dict[str, str], cfg: Config
         ) -> tuple[dict[str, str], int]:
    """Projects ``lat`` (alice; t0..t7 for throughput) on the plain upstream, and
    ``exact`` / ``over`` (bob) whose budgets fit exactly N calls of OVERSHOOT_BODY."""
    from functions import pricing, tokens
    from functions.membership import Membership
    from functions.provision import Provisioner
    from functions.secret_store import LocalSecretStore
    from tests.conftest import MINI, make_price

    prov = Provisioner(db, LocalSecretStore(secrets_file))
    members = Membership(db)
    price = make_price(*MINI)
    prov.add_price(MODEL, price)
    for name in ("plain", "exact", "over"):
        prov.put_external_key(name, UPSTREAM_KEY, urls[name])
    users = ["alice", "bob", *(f"t{i}" for i in range(TP_USERS))]
    for uid in users:
        prov.create_user(uid, uid.title(), f"{uid}@example.com")
    prov.create_project("lat", external_key="plain", budget_usd="100000",
                        budget_period="monthly", allowed_models=[MODEL],
                        default_max_output_tokens=256)
    keys = {"alice": members.add_member("lat", "alice", role="lead", budget_usd="50000")}
    for i in range(TP_USERS):
        keys[f"t{i}"] = members.add_member("lat", f"t{i}", budget_usd="1000")
    est_tokens = tokens.estimate_input_tokens("chat", OVERSHOOT_BODY, MODEL)
    per_call = pricing.estimate_nano(price.tiers["default"], est_tokens,
                                     OVERSHOOT_BODY["max_tokens"])
    for name in ("exact", "over"):
        prov.create_project(name, external_key=name, budget_nano=cfg.overshoot_n * per_call,
                            budget_period="monthly", allowed_models=[MODEL],
                            default_max_output_tokens=256)
        keys[name] = members.add_member(name, "bob")
    return keys, per_call


# --------------------------------------------------------------------------- 1. latency


def timed_post(s: requests.Session, url: str, data: bytes, headers: dict[str, str],
               timeout: float = 60.0) -> tuple[float, int]:
    t0 = time.perf_counter()
    r = s.post(url, data=data, headers=headers, timeout=timeout)
    r.content  # noqa: B018
    return time.perf_counter() - t0, r.status_code


def bench_latency(st: Stack) -> dict[str, Any]:
    """Sequential calls, rotating proxy / direct / Firestore floor so the three see the
    same conditions (the emulator's JVM keeps warming up for a while)."""
    cfg = st.cfg
    data = json.dumps(chat_body()).encode()
    direct_url = st.urls["plain"] + "/chat/completions"
    ps, ds, ts = session(), session(), session()
    floor = make_floor(st)
    # the platform baseline: the same HTTP hop through functions-framework, no Tollgate
    relay = FunctionProcess({**st.fn_env, "BENCH_UPSTREAM_KEY": UPSTREAM_KEY},
                            st.work / "passthrough.log", BENCH / "passthrough.py", "relay")
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
    return {"calls": done, "errors": sum(errors.values()), "error_kinds": dict(errors),
            "floor": floor_summary(floor_t),
            "upstream_latency_ms": cfg.upstream_latency_ms, "proxy_ms": proxy,
            "direct_ms": direct, "overhead_ms": diff(proxy, direct),
            "passthrough_ms": through, "platform_overhead_ms": diff(through, direct),
            "over_passthrough_ms": diff(proxy, through),
            "worker_cpu_ms_per_call": r3(cpu * 1000 / max(1, len(proxy_t)))}


# --------------------------------------------------------------------------- 2. streaming


def read_stream(s: requests.Session, url: str, data: bytes, headers: dict[str, str]
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
    return {"status": status, "ttfb": times[0] - t0 if times else None,
            "last": (done_at or (times[-1] if times else end)) - t0, "end": end - t0,
            "gaps": [b - a for a, b in zip(times, times[1:], strict=False)],
            "events": len(times), "done": done_at is not None}


def bench_streaming(st: Stack) -> dict[str, Any]:
    cfg = st.cfg
    data = json.dumps(chat_body(max_tokens=64, stream=True,
                                stream_options={"include_usage": True})).encode()
    direct_url = st.urls["plain"] + "/chat/completions"
    ps, ds = session(), session()
    side: dict[str, dict[str, list[float]]] = {
        n: {"ttfb": [], "last": [], "end": [], "gaps": []} for n in ("proxy", "direct")}
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
        order = [("proxy", ps, st.chat_url, st.auth("alice")),
                 ("direct", ds, direct_url, st.direct_auth)]
        for name, s, url, h in (order if i % 2 == 0 else order[::-1]):
            r = read_stream(s, url, data, h)
            if r["status"] != 200 or not r["done"] or r["ttfb"] is None:
                errors += 1
                continue
            for k in ("ttfb", "last", "end"):
                side[name][k].append(r[k])
            side[name]["gaps"].extend(r["gaps"])
            events[name].append(r["events"])
        done += 1
    out: dict[str, Any] = {"streams": done, "errors": errors,
                           "chunk_delay_ms": cfg.chunk_delay_ms,
                           "events_per_stream": {n: (max(v) if v else 0)
                                                 for n, v in events.items()}}
    for k, label in (("ttfb", "first_data_byte_ms"), ("last", "last_event_ms"),
                     ("end", "end_of_body_ms")):
        p, d = ms_summary(side["proxy"][k]), ms_summary(side["direct"][k])
        out[label] = {"proxy": p, "direct": d, "overhead": diff(p, d)}
    gp, gd = ms_summary(side["proxy"]["gaps"]), ms_summary(side["direct"]["gaps"])
    out["chunk_gap_ms"] = {"proxy": gp, "direct": gd, "p99_delta": r3(gp["p99"] - gd["p99"])
                           if gp.get("n") and gd.get("n") else None}
    return out


# --------------------------------------------------------------------------- 3. Firestore


FloorFn = Callable[[int], tuple[float, float, float]]


def make_floor(st: Stack) -> FloorFn:
    """The Firestore work of one call, issued directly with the proxy's own client:
    one get_all of the 7 documents the proxy reads, the reserve batch (2 counters +
    hold), the settle batch (2 counters + usage record shaped like the proxy's + hold
    update). Counters of a project of their own. Returns one iteration's three times."""
    from google.cloud.firestore_v1 import Increment

    from functions import auth
    from functions.budget import doc_id, period_key

    db = st.db
    now = datetime.now(UTC)
    period = period_key("monthly", now)
    refs = [db.collection("keys").document(auth.key_hash(st.keys["alice"])),
            db.collection("users").document("alice"),
            db.collection("members").document(doc_id("lat", "alice")),
            db.collection("projects").document("lat"),
            db.collection("models").document(doc_id(MODEL)),
            db.collection("limits").document(doc_id("lat", MODEL)),
            db.collection("limits").document(doc_id("lat", "alice", MODEL))]
    counters = [db.collection("counters").document(doc_id("p", "floor", period)),
                db.collection("counters").document(doc_id("m", "floor", "alice", period))]
    usage_raw = {"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27,
                 "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                 "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                               "accepted_prediction_tokens": 0,
                                               "rejected_prediction_tokens": 0}}

    def one(i: int) -> tuple[float, float, float]:
        call_id = f"call_floor_{os.getpid()}_{i}_{os.urandom(4).hex()}"
        t0 = time.perf_counter()
        docs = list(db.get_all(refs))
        assert len(docs) == len(refs)
        t1 = time.perf_counter()
        b = db.batch()
        for c in counters:
            b.set(c, {"scope": "p", "project": "floor", "period": period,
                      "held": Increment(1000), "inflight": Increment(1),
                      "spent": Increment(0)}, merge=True)
        b.create(db.collection("holds").document(call_id), {
            "call_id": call_id, "project": "floor", "user": "alice", "key_name": "default",
            "model": MODEL, "route": "chat", "period": period,
            "counters": [c.id for c in counters], "estimate_nano": 1000,
            "estimate_tokens": 30, "created_at": now, "expires_at": now, "state": "live",
            "streamed": False, "tag": None})
        b.commit()
        t2 = time.perf_counter()
        b = db.batch()
        for c in counters:
            b.set(c, {"held": Increment(-1000), "inflight": Increment(-1),
                      "spent": Increment(900)}, merge=True)
        b.create(db.collection("usage").document(call_id), {
            "call_id": call_id, "ts": now, "settled_at": now, "period": period,
            "project": "floor", "user": "alice", "key_name": "default", "model": MODEL,
            "route": "chat", "upstream_model": MODEL, "status": "ok", "http_status": 200,
            "input_tokens": 20, "cached_tokens": 0, "cache_write_tokens": 0,
            "output_tokens": 10, "reasoning_tokens": 0, "cost_nano": 900,
            "estimate_nano": 1000, "latency_ms": 20, "streamed": False, "cached": False,
            "estimated": False, "tag": None, "request_id": "req_x", "response_id": None,
            "service_tier": "default", "usage": usage_raw})
        b.update(db.collection("holds").document(call_id),
                 {"state": "settled", "settled_at": now, "purge_at": now})
        b.commit()
        t3 = time.perf_counter()
        return t1 - t0, t2 - t1, t3 - t2

    return one


def floor_summary(samples: list[tuple[float, float, float]]) -> dict[str, Any]:
    return {"get_all": ms_summary([g for g, _, _ in samples]),
            "reserve": ms_summary([r for _, r, _ in samples]),
            "settle": ms_summary([x for _, _, x in samples]),
            "before_upstream": ms_summary([g + r for g, r, _ in samples]),
            "total": ms_summary([g + r + x for g, r, x in samples]),
            "note": "measured interleaved with the latency calls (same emulator state)"}


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
    from functions import upstream as upstream_mod
    from functions.proxy import proxy_for
    from functions.settings import Settings

    recorder = RpcRecorder().install()
    marks: list[float] = []
    orig_post = upstream_mod.Upstream.post

    def post(self: Any, *a: Any, **k: Any) -> Any:
        marks.append(time.perf_counter())
        return orig_post(self, *a, **k)

    upstream_mod.Upstream.post = post  # type: ignore[method-assign]
    # the recorder must see a known sequence exactly: one get_all, one commit
    recorder.enabled = True
    list(st.db.get_all([st.db.collection("bench").document("a"),
                        st.db.collection("bench").document("b")]))
    batch = st.db.batch()
    batch.set(st.db.collection("bench").document("a"), {"x": 1})
    batch.commit()
    time.sleep(0.01)
    seen = recorder.take()
    recorder.enabled = False
    self_check = {"methods": [r.method for r in seen], "sequential": sequential(seen),
                  "writes": sum(r.writes for r in seen), "docs": sum(r.docs for r in seen)}
    self_check["ok"] = (self_check["methods"] == ["BatchGetDocuments", "Commit"]
                        and self_check["sequential"] == 2 and self_check["writes"] == 1
                        and self_check["docs"] == 2)
    app = functions_framework.create_app(target="openai",
                                         source=str(ROOT / "functions" / "main.py"))
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
            time.sleep(0.005)  # stream RPC end callbacks land
            rpcs = recorder.take()
            up = marks[0] if marks else float("inf")
            before = [r for r in rpcs if r.start < up]
            row = {"status": status, "rpcs": len(rpcs), "sequential": sequential(rpcs),
                   "before_upstream": sequential(before), "rpcs_before_upstream": len(before),
                   "writes": sum(r.writes for r in rpcs if r.method == "Commit"),
                   "docs_read": sum(r.docs for r in rpcs),
                   "methods": [r.method for r in sorted(rpcs, key=lambda r: r.start)],
                   "ms": r3(dt * 1000), "t0": t0}
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
            time.sleep(0.005)
            rpcs = recorder.take()
            first_byte = t0 + (r["ttfb"] if r["ttfb"] is not None else 1e9)
            per_stream.append({
                "status": r["status"], "rpcs": len(rpcs), "sequential": sequential(rpcs),
                "before_first_byte": sequential([x for x in rpcs if x.start < first_byte]),
                "writes": sum(x.writes for x in rpcs if x.method == "Commit"),
                "methods": [x.method for x in sorted(rpcs, key=lambda x: x.start)]})
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
        "calls": len(per_call), "errors": len(per_call) - len(ok),
        "before_first_byte": mode(ok, "before_upstream"),
        "before_first_byte_max": max((r["before_upstream"] for r in ok), default=-1),
        "total": mode(ok, "sequential"),
        "total_max": max((r["sequential"] for r in ok), default=-1),
        "rpcs_per_call": mode(ok, "rpcs"),
        "methods": ok[0]["methods"] if ok else [],
        "stream_before_first_byte": mode(oks, "before_first_byte"),
        "stream_total": mode(oks, "sequential"),
        "stream_methods": oks[0]["methods"] if oks else [],
        "first_call_of_instance": {k: first_call.get(k) for k in
                                   ("status", "sequential", "before_upstream", "writes",
                                    "methods")},
        "writes": {"per_call_mode": Counter(writes).most_common(1)[0][0] if writes else -1,
                   "min": min(writes, default=-1), "max": max(writes, default=-1),
                   "mean": r3(statistics.fmean(writes)) if writes else -1,
                   "stream_per_call_mode": mode(oks, "writes"),
                   "ledger_counter_per_call": (r3(ledger_writes) if ledger_writes is not None
                                               else None)},
        "docs_read_per_call": mode(ok, "docs_read"),
        "store_reads_counter_per_call": r3(store_reads) if store_reads is not None else None,
    }
    result["in_process_stages_ms"] = breakdown
    if profile is not None:
        result["profile"] = profile
    return result


STAGES = (("handle", "functions.proxy", "Proxy", "handle"),
          ("load_call_context", "functions.store", "Store", "load_call_context"),
          ("estimate_input_tokens", "functions.tokens", None, "estimate_input_tokens"),
          ("reserve", "functions.ledger", "Ledger", "reserve"),
          ("secret", "functions.proxy", "Proxy", "_secret_for"),
          ("upstream", "functions.upstream", "Upstream", "post"),
          ("settle", "functions.ledger", "Ledger", "settle"))


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
            o["rest_of_handler"] = r3(o["handle"] - sum(o[k] for k in o if k != "handle"))
        return o

    return {"wall": table(times), "thread_cpu": table(cpu),
            "client_round_trip": r3(pct(wall, 50) * 1000),
            "note": "p50 ms per stage of a warm non-streaming call served in-process "
                    "(werkzeug): wall time, and CPU time of the handling thread; the "
                    "upstream's 20 ms are in 'upstream' wall"}


def run_profile(app: Any, st: Stack, n: int) -> dict[str, Any]:
    """cProfile of n proxied calls through the app's test client in this thread."""
    import cProfile
    import io
    import pstats

    client = app.test_client()
    data = json.dumps(chat_body()).encode()
    headers = st.auth("alice")
    for _ in range(5):
        client.post("/v1/chat/completions", data=data, headers=headers)
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    c0 = time.thread_time()
    prof.enable()
    for _ in range(n):
        client.post("/v1/chat/completions", data=data, headers=headers)
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
    return {"calls": n, "thread_cpu_ms_per_call": r3(cpu * 1000 / n),
            "wall_ms_per_call": r3(wall * 1000 / n), "report": str(BENCH / "profile.txt")}


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
    return {"concurrency": c, "duration_s": r3(elapsed), "calls": total, "ok": ok,
            "errors": total - ok, "error_rate": r3(1 - ok / total) if total else None,
            "calls_per_s": r3(ok / elapsed), "latency_ms": ms_summary(lat),
            "statuses": dict(statuses)}


def bench_throughput(st: Stack) -> dict[str, Any]:
    data = json.dumps(chat_body()).encode()
    levels = [_tp_level(st, c, data) for c in st.cfg.tp_levels]
    return {"upstream_latency_ms": st.cfg.upstream_latency_ms, "threads": st.fn_env["THREADS"],
            "levels": levels,
            "note": "one project, keys of 8 members round-robin; every call writes the "
                    "project's counter twice (reserve, settle)"}


# --------------------------------------------------------------------------- 6. overshoot


def bench_overshoot(st: Stack, project: str) -> dict[str, Any]:
    from google.cloud.firestore_v1.base_query import FieldFilter

    from functions.budget import period_key

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

    threads = [threading.Thread(target=call, daemon=True) for _ in range(cfg.overshoot_callers)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    deadline = time.monotonic() + 120
    for t in threads:
        t.join(max(0.1, deadline - time.monotonic()))
    wall = time.perf_counter() - t0
    returned = sum(1 for t in threads if not t.is_alive())
    period = period_key("monthly", datetime.now(UTC))
    # the project's counter of this period, found by its fields (not by how ids are built)
    counters = [c.to_dict() or {} for c in st.db.collection("counters").where(
        filter=FieldFilter("project", "==", project)).stream()]
    counter = next((c for c in counters if c.get("period") == period
                    and not c.get("user") and not c.get("model")), {})
    usage = [s.to_dict() or {} for s in st.db.collection("usage").where(
        filter=FieldFilter("project", "==", project)).stream()]
    live = [s.id for s in st.db.collection("holds").where(
        filter=FieldFilter("project", "==", project)).where(
        filter=FieldFilter("state", "==", "live")).stream()]
    ok_recs = [u for u in usage if u.get("status") == "ok"]
    spend = int(counter.get("spent", 0))
    excess = sum(int(u["cost_nano"]) - int(u["estimate_nano"]) for u in ok_recs)
    successes = statuses.get("200", 0)
    return {
        "callers": cfg.overshoot_callers, "n_fitting": cfg.overshoot_n,
        "per_call_estimate_nano": st.per_call_nano, "limit_nano": limit,
        "successes": successes, "statuses": dict(statuses),
        "spend_nano": spend, "overshoot_nano": spend - limit,
        "sum_actual_minus_estimate_nano": excess,
        "usage_records": len(usage), "usage_cost_sum_nano": sum(
            int(u.get("cost_nano", 0)) for u in usage),
        "held_after_nano": int(counter.get("held", 0)),
        "inflight_after": int(counter.get("inflight", 0)),
        "live_holds_after": len(live), "all_callers_returned": returned == len(threads),
        "wall_s": r3(wall), "upstream_latency_ms": cfg.budget_latency_ms,
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
    return {"runs": runs, "median_ms": r3(statistics.median(ok)) if ok else None,
            "all_200": len(ok) == len(runs),
            "encodings": "loaded from TIKTOKEN_CACHE_DIR, staged by "
                         "`python -m functions.tokens seed`",
            "download_blocked_by": f"HTTPS_PROXY={DEAD_PROXY}"}


# --------------------------------------------------------------------------- 8. memory


_WORDS = ("the of and to in is that for it as was with be by on not he this are or his from "
          "at which but have an they you were her she there one all we their time water "
          "people house number river table window garden letter").split()


def words_text(n_words: int, seed: int = 1) -> str:
    rnd = random.Random(seed)
    return " ".join(rnd.choice(_WORDS) for _ in range(n_words))


def bench_memory(st: Stack) -> dict[str, Any]:
    from functions import tokens

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

    t0 = time.perf_counter()
    threads = [threading.Thread(target=call, daemon=True) for _ in range(cfg.mem_concurrency)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 180
    for t in threads:
        t.join(max(0.1, deadline - time.monotonic()))
    wall = time.perf_counter() - t0
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
        dt, status = timed_post(ds, st.urls["plain"] + "/chat/completions", big_data,
                                st.direct_auth)
        dtl.append(dt)
    p, d = ms_summary(pt), ms_summary(dtl)
    return {
        "concurrency": cfg.mem_concurrency, "body_bytes": len(data),
        "body_limit_bytes": 8 * 1024 * 1024, "statuses": dict(statuses),
        "ok": statuses.get("200", 0), "wall_s": r3(wall),
        "latency_ms": ms_summary(lat),
        "baseline_rss_mib": r3(baseline / 1024), "peak_rss_mib": r3(max(peak["rss"], hwm) / 1024),
        "sampled_peak_rss_mib": r3(peak["rss"] / 1024), "vm_hwm_mib": r3(hwm / 1024),
        "rss_after_mib": r3(settled / 1024),
        "big_prompt": {"tokens": big_tokens, "body_bytes": len(big_data),
                       "errors": big_errors, "proxy_ms": p, "direct_ms": d,
                       "overhead_ms": r3(p["p50"] - d["p50"]) if p.get("n") else None},
    }


# --------------------------------------------------------------------------- targets


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(name: str, target: str, measured: Any, ok: Any) -> None:
        out.append({"name": name, "target": target, "measured": measured,
                    "pass": bool(ok) if ok is not None else None})

    lat, fs = res.get("latency", {}), res.get("firestore", {})
    floor = fs.get("floor_ms", {}).get("total", {})
    ov = lat.get("overhead_ms", {})
    if "p50" in ov and "p50" in floor:
        add("p50 overhead", "<= Firestore floor p50 + 3 ms",
            f"{ov['p50']:.2f} ms vs floor {floor['p50']:.2f} + 3 ms",
            ov["p50"] <= floor["p50"] + 3)
    op = lat.get("over_passthrough_ms", {})
    if "p50" in op and "p50" in floor:
        add("p50 overhead above the pass-through function (platform hop removed)",
            "<= Firestore floor p50 + 3 ms",
            f"{op['p50']:.2f} ms vs floor {floor['p50']:.2f} + 3 ms",
            op["p50"] <= floor["p50"] + 3)
    if "p99" in ov and "p99" in floor:
        add("p99 overhead", "<= Firestore floor p99 + 15 ms",
            f"{ov['p99']:.2f} ms vs floor {floor['p99']:.2f} + 15 ms",
            ov["p99"] <= floor["p99"] + 15)
    rt = fs.get("round_trips", {})
    if "before_first_byte" in rt:
        add("round trips before first byte", "<= 2 sequential",
            f"{rt['before_first_byte']} (max {rt['before_first_byte_max']}; stream "
            f"{rt['stream_before_first_byte']})",
            max(rt["before_first_byte"], rt["stream_before_first_byte"]) <= 2)
        add("round trips in total (non-streaming)", "<= 3 sequential",
            f"{rt['total']} (max {rt['total_max']})", rt["total"] <= 3)
    stm = res.get("streaming", {})
    sto = stm.get("first_data_byte_ms", {}).get("overhead", {})
    if "p50" in sto and "p50" in ov:
        add("streaming first-byte overhead", "within 5 ms of the non-streaming overhead",
            f"{sto['p50']:.2f} ms vs {ov['p50']:.2f} ms (p50)",
            sto["p50"] <= ov["p50"] + 5)
    gap = stm.get("chunk_gap_ms", {})
    if gap.get("p99_delta") is not None:
        add("chunk gaps", "p99 within 2 ms of upstream's",
            f"{gap['proxy']['p99']:.2f} vs {gap['direct']['p99']:.2f} ms "
            f"(+{gap['p99_delta']:.2f})", gap["p99_delta"] <= 2)
    ex = res.get("overshoot", {}).get("exact", {})
    if "successes" in ex:
        add("overshoot, estimate exact", "successes == N and overshoot == 0",
            f"{ex['successes']}/{ex['n_fitting']} succeeded, overshoot {ex['overshoot_nano']} "
            "nano-$", ex["successes"] == ex["n_fitting"] and ex["overshoot_nano"] == 0)
    over = res.get("overshoot", {}).get("over", {})
    if "successes" in over:
        add("overshoot, estimate too low", "overshoot == sum(actual - estimate)",
            f"{over['overshoot_nano']} vs {over['sum_actual_minus_estimate_nano']} nano-$ "
            f"({over['successes']}/{over['n_fitting']} admitted)",
            over["overshoot_nano"] == over["sum_actual_minus_estimate_nano"])
    runs = [r for r in (ex, over) if "successes" in r]
    if runs:
        add("no deadlock, no live hold left", "every caller answered, 0 live holds, held 0",
            "; ".join(f"{'all' if r['all_callers_returned'] else 'NOT all'} answered in "
                      f"{r['wall_s']:.1f} s, {r['live_holds_after']} live holds, held "
                      f"{r['held_after_nano']}" for r in runs),
            all(r["all_callers_returned"] and r["live_holds_after"] == 0
                and r["held_after_nano"] == 0 and r["inflight_after"] == 0 for r in runs))
    cs = res.get("cold_start", {})
    if "all_200" in cs:
        add("cold start without download", "first proxied call 200 with downloads blocked",
            f"median {cs['median_ms']} ms", cs["all_200"])
    dur = res.get("meta", {}).get("duration_s")
    if dur is not None and res.get("meta", {}).get("mode") == "full":
        add("benchmark duration", "< 5 minutes on 2 cores", f"{dur:.0f} s", dur < 300)
    return out


# --------------------------------------------------------------------------- report


def fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.2f}{unit}"
    return f"{v}{unit}"


def markdown(res: dict[str, Any]) -> str:
    m = res["meta"]
    lines = [f"# Tollgate benchmark ({m['mode']})", "",
             f"{m['finished']} · {m['cpus']} CPUs · Python {m['python']} · "
             f"upstream latency {m['upstream_latency_ms']:.0f} ms, stream chunks every "
             f"{m['chunk_delay_ms']:.0f} ms · gunicorn gthread THREADS={m['threads']} · "
             f"Firestore emulator · run took {m['duration_s']:.0f} s", "",
             f"Reproduce: `{m['command']}`", "",
             "| measure | proxy | direct / floor | added |", "| --- | --- | --- | --- |"]

    def row(name: str, a: Any, b: Any, c: Any) -> None:
        lines.append(f"| {name} | {a} | {b} | {c} |")

    lat = res.get("latency", {})
    if "proxy_ms" in lat:
        for q in ("p50", "p95", "p99"):
            row(f"non-streaming call, {q} ({lat['calls']} calls)",
                fmt(lat["proxy_ms"][q], " ms"), fmt(lat["direct_ms"][q], " ms"),
                fmt(lat["overhead_ms"][q], " ms"))
        row("proxy CPU per call (gunicorn worker)", fmt(lat["worker_cpu_ms_per_call"], " ms"),
            "", "")
        if lat.get("passthrough_ms"):
            for q in ("p50", "p99"):
                row(f"pass-through function (the same HTTP hop, no Tollgate), {q}",
                    fmt(lat["passthrough_ms"][q], " ms"), fmt(lat["direct_ms"][q], " ms"),
                    fmt(lat["platform_overhead_ms"][q], " ms"))
            floor_p50 = res.get("firestore", {}).get("floor_ms", {}).get("total", {}).get("p50")
            if floor_p50 is not None:
                own = lat["over_passthrough_ms"]["p50"] - floor_p50
                row("Tollgate's own work, p50 (proxy − pass-through − Firestore floor)",
                    fmt(own, " ms"), "", "")
    stm = res.get("streaming", {})
    if "first_data_byte_ms" in stm:
        for k, label in (("first_data_byte_ms", "stream: first data byte"),
                         ("last_event_ms", "stream: last event ([DONE])"),
                         ("end_of_body_ms", "stream: end of body")):
            v = stm[k]
            for q in ("p50", "p99"):
                row(f"{label}, {q}", fmt(v["proxy"].get(q), " ms"),
                    fmt(v["direct"].get(q), " ms"), fmt(v["overhead"].get(q), " ms"))
        g = stm["chunk_gap_ms"]
        row("stream: gap between events, p99", fmt(g["proxy"].get("p99"), " ms"),
            fmt(g["direct"].get("p99"), " ms"), fmt(g["p99_delta"], " ms"))
    fs = res.get("firestore", {})
    fl = fs.get("floor_ms", {})
    if fl:
        for k in ("get_all", "reserve", "settle", "total"):
            row(f"Firestore floor: {k}, p50 / p99", "",
                f"{fmt(fl[k].get('p50'), ' ms')} / {fmt(fl[k].get('p99'), ' ms')}", "")
    rt = fs.get("round_trips", {})
    if "total" in rt:
        row("sequential Firestore round trips (before first byte / total)",
            f"{rt['before_first_byte']} / {rt['total']}", "", "")
        row("  streaming (before first byte / total)",
            f"{rt['stream_before_first_byte']} / {rt['stream_total']}", "", "")
        row("  first call of an instance", f"{rt['first_call_of_instance']['before_upstream']}"
            f" / {rt['first_call_of_instance']['sequential']}", "", "")
        row("document writes per call", fmt(rt["writes"]["per_call_mode"]),
            f"min {rt['writes']['min']}, max {rt['writes']['max']}", "")
        pj = fs.get("projected_production_overhead_ms", {})
        first_byte = fmt(pj.get("first_byte"), " ms")
        row(f"projected production overhead ({PROD_RTT_MS:.0f} ms per round trip + CPU)",
            fmt(pj.get("non_streaming"), " ms"), "", f"first byte {first_byte}")
    tp = res.get("throughput", {})
    for lv in tp.get("levels", []):
        row(f"throughput at concurrency {lv['concurrency']}", fmt(lv["calls_per_s"], " calls/s"),
            f"p50 {fmt(lv['latency_ms'].get('p50'), ' ms')}",
            f"errors {lv['errors']}/{lv['calls']}")
    for name in ("exact", "over"):
        o = res.get("overshoot", {}).get(name, {})
        if "successes" in o:
            row(f"overshoot run '{name}' ({o['callers']} callers, N={o['n_fitting']})",
                f"{o['successes']} ok, spend {o['spend_nano']}",
                f"limit {o['limit_nano']}",
                f"overshoot {o['overshoot_nano']} (Σ actual−estimate "
                f"{o['sum_actual_minus_estimate_nano']}), live holds {o['live_holds_after']}, "
                f"{o['wall_s']:.1f} s")
    cs = res.get("cold_start", {})
    if "median_ms" in cs:
        row("cold start: process start to first proxied 200", fmt(cs["median_ms"], " ms"),
            f"runs {[r['total_ms'] for r in cs['runs']]}", "")
    mem = res.get("memory", {})
    if "peak_rss_mib" in mem:
        row(f"worker peak RSS, {mem['concurrency']} × {mem['body_bytes'] / 2**20:.1f} MiB bodies",
            fmt(mem["peak_rss_mib"], " MiB"), f"baseline {fmt(mem['baseline_rss_mib'], ' MiB')}",
            f"{mem['ok']}/{mem['concurrency']} ok in {mem['wall_s']:.1f} s")
        b = mem["big_prompt"]
        row(f"{b['tokens']}-token prompt, p50", fmt(b["proxy_ms"].get("p50"), " ms"),
            fmt(b["direct_ms"].get("p50"), " ms"), fmt(b["overhead_ms"], " ms"))
    lines += ["", "## Targets (issue 8)", "", "| target | measured | pass |", "| --- | --- | --- |"]
    for t in res.get("targets", []):
        verdict = "pass" if t["pass"] else ("FAIL" if t["pass"] is False else "-")
        lines.append(f"| {t['name']}: {t['target']} | {t['measured']} | {verdict} |")
    errs = {k: v["error"] for k, v in res.items() if isinstance(v, dict) and "error" in v}
    if errs:
        lines += ["", "## Sections that failed", ""]
        lines += [f"- {k}: {v}" for k, v in errs.items()]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


@contextlib.contextmanager
def section(res: dict[str, Any], name: str) -> Iterator[dict[str, Any]]:
    log(f"{name} ...")
    t0 = time.perf_counter()
    box: dict[str, Any] = {}
    try:
        yield box
        res[name] = box.get("value", box)
    except Exception as exc:  # noqa: BLE001 - one broken section must not hide the others
        traceback.print_exc()
        res[name] = {"error": f"{type(exc).__name__}: {exc}"}
    log(f"{name} done in {time.perf_counter() - t0:.1f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small counts, a few seconds")
    ap.add_argument("--out", help="results file (default bench/results.json, quick: "
                                  "bench/results-quick.json); the .md goes next to it")
    ap.add_argument("--threads", type=int, default=32, help="gunicorn THREADS (default 32)")
    ap.add_argument("--emulator", help="use this running emulator (host:port) instead")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="also cProfile N in-process calls (bench/profile.txt)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs)")
    args = ap.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    out = Path(args.out) if args.out else BENCH / (
        "results-quick.json" if args.quick else "results.json")
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="tollgate-bench-"))
    cmd = "python -m bench.run" + (" --quick" if args.quick else "")
    res: dict[str, Any] = {"meta": {
        "mode": cfg.name, "command": cmd, "cpus": os.cpu_count(),
        "python": platform.python_version(), "platform": platform.platform(),
        "upstream_latency_ms": cfg.upstream_latency_ms, "chunk_delay_ms": cfg.chunk_delay_ms,
        "threads": args.threads, "production_rtt_ms_assumed": PROD_RTT_MS,
        "config": {k: v for k, v in cfg.__dict__.items()},
        "started": datetime.now(UTC).isoformat(timespec="seconds")}}
    failed = False
    log(f"{cfg.name} run, work dir {work}")
    try:
        st = start_stack(cfg, work, args)
    except Exception:
        traceback.print_exc()
        log(f"could not start the stack; logs in {work}")
        return 2
    try:
        data, headers = cold_call(st)
        st.fn.start()
        first = st.fn.first_200("/v1/chat/completions", data, headers)
        log(f"function up: first proxied answer {first['status']} after {first['total_ms']} ms")
        if first["status"] != 200:
            raise RuntimeError(f"first call failed: {first}")
        floor: dict[str, Any] = {}
        with section(res, "latency") as box:
            box["value"] = bench_latency(st)
            floor = box["value"].pop("floor")
        with section(res, "streaming") as box:
            box["value"] = bench_streaming(st)
        with section(res, "firestore") as box:
            if not floor:
                raise RuntimeError("no floor: the latency section failed")
            box["floor_ms"] = floor
            box["round_trips"] = bench_round_trips(st, args.profile)
            box["production_rtt_ms_assumed"] = PROD_RTT_MS
        fs = res.get("firestore", {})
        rt = fs.get("round_trips", {})
        if "total" in rt and "overhead_ms" in res.get("latency", {}):
            cpu = max(0.0, res["latency"]["overhead_ms"]["p50"] - fs["floor_ms"]["total"]["p50"])
            fs["projected_production_overhead_ms"] = {
                "assumption": f"{PROD_RTT_MS} ms per sequential Firestore round trip "
                              "(function and Firestore in one region) plus the measured "
                              "overhead above the emulator floor (CPU)",
                "non_streaming": r3(rt["total"] * PROD_RTT_MS + cpu),
                "first_byte": r3(rt["before_first_byte"] * PROD_RTT_MS + cpu),
                "cpu_above_floor_ms": r3(cpu)}
        res["writes"] = {k: v for k, v in rt.get("writes", {}).items()} if rt else {}
        with section(res, "throughput") as box:
            box["value"] = bench_throughput(st)
        with section(res, "overshoot") as box:
            box["exact"] = bench_overshoot(st, "exact")
            box["over"] = bench_overshoot(st, "over")
        with section(res, "memory") as box:
            box["value"] = bench_memory(st)
        with section(res, "cold_start") as box:
            st.fn.stop()  # one function process at a time on 2 cores
            box["value"] = bench_cold_start_extra(st, first)
    except Exception:
        traceback.print_exc()
        failed = True
    finally:
        for close in reversed(st.closers):
            with contextlib.suppress(Exception):
                close()
    res["meta"]["duration_s"] = r3(time.perf_counter() - started)
    res["meta"]["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    res["targets"] = targets(res)
    failed = failed or any(isinstance(v, dict) and "error" in v for v in res.values())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2, default=str) + "\n")
    md = markdown(res)
    out.with_suffix(".md").write_text(md)
    print(md)
    log(f"wrote {out} and {out.with_suffix('.md')}")
    if failed or args.keep:
        log(f"logs kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
