"""The stack under test: the emulator, the fake upstreams, seeded projects and the
``openai`` function run as production runs it."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    DEAD_PROXY,
    MODEL,
    ROOT,
    TP_USERS,
    UPSTREAM_KEY,
    Config,
    free_port,
    proc_children,
    r3,
    session,
)

# --------------------------------------------------------------------------- processes


class FunctionProcess:
    """``python -m functions_framework --target openai`` as production runs it."""

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        source: Path = ROOT / "functions" / "main.py",
        target: str = "openai",
    ) -> None:
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
                [
                    sys.executable,
                    "-m",
                    "functions_framework",
                    "--source",
                    str(self.source),
                    "--target",
                    self.target,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                ],
                env=self.env,
                cwd=ROOT,
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
            )
        return self

    def first_200(
        self, path: str, data: bytes, headers: dict[str, str], timeout_s: float = 60.0
    ) -> dict[str, Any]:
        """Process start -> port accepting -> first proxied answer (must be 200)."""
        assert self.proc is not None
        deadline = self.started_at + timeout_s
        listening = None
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"the function exited with {self.proc.returncode} (log: {self.log_path})"
                )
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
        return {
            "status": r.status_code,
            "total_ms": r3((done - self.started_at) * 1000),
            "listening_ms": r3((listening - self.started_at) * 1000),
            "first_call_ms": r3((done - sent) * 1000),
            "error": None if r.status_code == 200 else r.text[:300],
        }

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
    # process groups of the helpers (for CPU accounting): "upstream", "emulator"
    pgids: dict[str, int] = field(default_factory=dict)
    admin_token: str = ""

    @property
    def chat_url(self) -> str:
        return self.fn.url + "/v1/chat/completions"

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}", "Content-Type": "application/json"}

    @property
    def direct_auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {UPSTREAM_KEY}", "Content-Type": "application/json"}


def chat_body(
    content: str = "Say hello in five words.", max_tokens: int = 16, **extra: Any
) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": content}],
        **extra,
    }


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


def _start_stack(
    cfg: Config,
    work: Path,
    args: argparse.Namespace,
    closers: list[Callable[[], None]],
    emulator_cls: Any,
) -> Stack:
    tk_dir = work / "tiktoken"
    base_env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OPENAI_API_KEY", "TIKTOKEN_CACHE_DIR", "TOLLGATE_TEST_EMULATOR")
    }
    base_env["PYTHONPATH"] = str(ROOT)
    # In parallel: the emulator, the fake upstreams, and tiktoken's encodings staged
    # from files (the same command deploy.sh uses).
    seed_tk = subprocess.Popen(
        [sys.executable, "-m", "functions.core.encodings", "seed", str(tk_dir)],
        cwd=ROOT,
        env=base_env,
        stdout=subprocess.DEVNULL,
    )
    up_log = open(work / "upstream.log", "wb")  # noqa: SIM115 - closed by a closer
    upstream = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.upstream",
            "--key",
            UPSTREAM_KEY,
            "--latency-ms",
            str(cfg.upstream_latency_ms),
            "--chunk-delay-ms",
            str(cfg.chunk_delay_ms),
            "--chunks",
            str(cfg.stream_chunks),
            "--budget-latency-ms",
            str(cfg.budget_latency_ms),
            "--extra-tokens",
            str(cfg.extra_tokens),
        ],
        cwd=ROOT,
        env={**base_env, "TIKTOKEN_CACHE_DIR": str(tk_dir)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=up_log,
        start_new_session=True,
    )

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
    pgids = {"upstream": upstream.pid}  # start_new_session: its pid is its group
    if args.emulator:
        emulator_host = args.emulator
    else:
        emu = emulator_cls(log_path=work / "emulator.log").start()
        closers.append(emu.stop)
        emulator_host = emu.host
        if getattr(emu, "proc", None) is not None:
            pgids["emulator"] = emu.proc.pid
    if seed_tk.wait(60) != 0:
        raise RuntimeError("python -m functions.core.encodings seed failed")
    assert upstream.stdout is not None
    line = upstream.stdout.readline()
    if not line:
        raise RuntimeError(f"the fake upstreams did not start (log: {work / 'upstream.log'})")
    urls = json.loads(line)

    gcp_project = "bench-" + os.urandom(4).hex()
    secrets_file = work / "secrets.json"
    os.environ.update(
        {
            "FIRESTORE_EMULATOR_HOST": emulator_host,
            "TOLLGATE_GCP_PROJECT": gcp_project,
            "OPENAI_BASE_URL": urls["plain"],
            "TOLLGATE_SECRET_BACKEND": "local",
            "TOLLGATE_SECRETS_FILE": str(secrets_file),
            "TIKTOKEN_CACHE_DIR": str(tk_dir),
            "TOLLGATE_UPSTREAM_TIMEOUT_S": "120",
        }
    )
    os.environ.pop("OPENAI_API_KEY", None)
    from functions.core.settings import Settings
    from functions.store.client import make_client

    # the client the functions use, channel options included: the floor is like for like
    db = make_client(Settings.from_env())
    closers.append(db.close)
    keys, per_call = seed(db, secrets_file, urls, cfg)
    admin_token = "tga_bench_" + os.urandom(16).hex()
    from functions.admin.app import ADMIN_TOKENS_SECRET
    from functions.store.secrets import LocalSecretStore

    # the admin API reads spend for the hot runs (bench/hot.py), as an operator would
    LocalSecretStore(secrets_file).put(ADMIN_TOKENS_SECRET, json.dumps({"bench": admin_token}))

    fn_env = {
        **base_env,
        "TOLLGATE_GCP_PROJECT": gcp_project,
        "FIRESTORE_EMULATOR_HOST": emulator_host,
        "OPENAI_BASE_URL": urls["plain"],
        "TOLLGATE_SECRET_BACKEND": "local",
        "TOLLGATE_SECRETS_FILE": str(secrets_file),
        "TIKTOKEN_CACHE_DIR": str(tk_dir),
        "THREADS": str(args.threads),
        "TOLLGATE_UPSTREAM_TIMEOUT_S": "120",
        # any download (tiktoken's, or anything else) goes to a closed port and fails
        "HTTPS_PROXY": DEAD_PROXY,
        "HTTP_PROXY": DEAD_PROXY,
        "https_proxy": DEAD_PROXY,
        "http_proxy": DEAD_PROXY,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    fn = FunctionProcess(fn_env, work / "function.log")
    closers.append(fn.stop)
    return Stack(
        cfg,
        work,
        emulator_host,
        urls,
        gcp_project,
        keys,
        per_call,
        fn,
        fn_env,
        db,
        closers,
        pgids,
        admin_token,
    )


def seed(
    db: Any, secrets_file: Path, urls: dict[str, str], cfg: Config
) -> tuple[dict[str, str], int]:
    """Projects ``lat`` (alice; t0..t7 for throughput) on the plain upstream, and
    ``exact`` / ``over`` (bob) whose budgets fit exactly N calls of OVERSHOOT_BODY."""
    from functions.core import pricing, tokens
    from functions.store.membership import Membership
    from functions.store.provision import Provisioner
    from functions.store.secrets import LocalSecretStore
    from tests.conftest import MINI, make_price

    prov = Provisioner(db, LocalSecretStore(secrets_file))
    members = Membership(db)
    price = make_price(*MINI)
    prov.add_price(MODEL, price)
    for name in ("plain", "exact", "over", "hot"):
        prov.put_external_key(name, UPSTREAM_KEY, urls[name])
    users = ["alice", "bob", *(f"t{i}" for i in range(TP_USERS))]
    for uid in users:
        prov.create_user(uid, uid.title(), f"{uid}@example.com")
    prov.create_project(
        "lat",
        external_key="plain",
        budget_usd="100000",
        budget_period="monthly",
        allowed_models=[MODEL],
        default_max_output_tokens=256,
    )
    keys = {"alice": members.add_member("lat", "alice", role="lead", budget_usd="50000")}
    for i in range(TP_USERS):
        keys[f"t{i}"] = members.add_member("lat", f"t{i}", budget_usd="1000")
    est_tokens = tokens.estimate_input_tokens("chat", OVERSHOOT_BODY, MODEL)
    per_call = pricing.estimate_nano(
        price.tiers["default"], est_tokens, OVERSHOOT_BODY["max_tokens"]
    )
    for name in ("exact", "over"):
        prov.create_project(
            name,
            external_key=name,
            budget_nano=cfg.overshoot_n * per_call,
            budget_period="monthly",
            allowed_models=[MODEL],
            default_max_output_tokens=256,
        )
        keys[name] = members.add_member(name, "bob")
    return keys, per_call
