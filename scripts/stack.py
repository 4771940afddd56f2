"""Run the whole Tollgate stack on loopback: Firestore emulator, a fake OpenAI upstream
(unless a real key is configured), and the functions, each under functions-framework
(gunicorn) as in production. Seeds a demo project and prints URLs and a curl.

    python -m scripts.stack            # until Ctrl-C
    python -m scripts.stack --smoke    # start, make the printed call, check it was booked, stop

Real upstream: set OPENAI_API_KEY (and optionally OPENAI_BASE_URL) before starting.

Ports: the functions use 8081-8083, or three free ports if any of those is taken.
With --port (or TOLLGATE_PORT) they use exactly PORT..PORT+2, and a taken port is an error.
Whatever this script started (emulator, functions, their whole process groups) is stopped
when it exits, on a failure, on Ctrl-C, SIGTERM or SIGHUP alike.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from google.cloud import firestore

from functions.admin.app import ADMIN_TOKENS_SECRET
from functions.store.membership import Membership
from functions.store.provision import Provisioner
from functions.store.secrets import LocalSecretStore
from tests.emulator import Emulator
from tests.fake_upstream import FakeUpstream

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "demo-tollgate"
FUNCTIONS = ("openai", "admin", "log")
DEFAULT_PORT = 8081
DEMO_MODELS = ("gpt-4o-mini", "gpt-4.1-nano", "text-embedding-3-small")
FAKE_KEY = "sk-fake-local-upstream"
# What each function answers to an unauthenticated GET: how we tell our function from any
# other HTTP server that happens to answer on its port. (path, status, content type)
PROBES = {
    "openai": ("/v1/models", 401, "application/json"),
    "admin": ("/users", 401, "application/json"),
    "log": ("/log", 200, "text/html"),
}
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StackError(Exception):
    """An expected failure, reported in one line (no traceback) before everything stops."""


class Stopped(BaseException):
    """A stop signal arrived. BaseException, so no ``except Exception`` on the way (client
    libraries, retry loops) can swallow it before the clean-up in main() runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    raise Stopped(signum)


def seed(
    db: firestore.Client,
    secrets_file: Path,
    upstream_key: str,
    base_url: str | None,
    admin_token: str,
) -> dict[str, str]:
    from functions.core.price_table import openai_price_table

    store = LocalSecretStore(secrets_file)
    store.put(ADMIN_TOKENS_SECRET, json.dumps({"local-admin": admin_token}))
    prov = Provisioner(db, store)
    prov.put_external_key("main", upstream_key, base_url)
    entries, _skipped = openai_price_table()
    for entry in entries:
        for price in entry.prices:
            prov.add_price(entry.model, price)
    prov.create_user("alice", "Alice", "alice@example.com")
    prov.create_user("bob", "Bob", "bob@example.com")
    prov.create_project(
        "demo",
        name="Demo project",
        external_key="main",
        budget_usd="5",
        budget_period="monthly",
        allowed_models=DEMO_MODELS,
        default_max_output_tokens=512,
    )
    members = Membership(db)
    return {
        "alice": members.add_member("demo", "alice", role="lead", budget_usd="2"),
        "bob": members.add_member("demo", "bob", budget_usd="1"),
    }


# ---- ports


def port_free(port: int) -> bool:
    """Whether 127.0.0.1:PORT can be listened on. SO_REUSEADDR as gunicorn sets it, so a
    closed connection in TIME_WAIT does not count as taken; a listener (ours or anyone's,
    on 127.0.0.1 or a wildcard address) still does."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _ports(ports: list[int]) -> str:
    return f"port {ports[0]} is" if len(ports) == 1 else f"ports {', '.join(map(str, ports))} are"


def choose_ports(first: int | None) -> tuple[list[int], str | None]:
    """The functions' ports and, when the defaults were taken, a note saying so.

    ``first`` given (--port, TOLLGATE_PORT): exactly first..first+2, or StackError.
    Otherwise 8081-8083 if all are free, else three ports the kernel picks."""
    if first is not None:
        wanted = [first + i for i in range(len(FUNCTIONS))]
        if not 1024 <= first <= 65535 - len(FUNCTIONS) + 1:
            raise StackError(
                f"--port {first}: choose a first port between 1024 and {65535 - len(FUNCTIONS) + 1}"
            )
        taken = [p for p in wanted if not port_free(p)]
        if taken:
            raise StackError(
                f"{_ports(taken)} in use on 127.0.0.1 by another process; "
                f"the functions need {wanted[0]}-{wanted[-1]}. Choose another --port (or "
                "TOLLGATE_PORT), or give neither to let the stack pick free ports"
            )
        return wanted, None
    wanted = [DEFAULT_PORT + i for i in range(len(FUNCTIONS))]
    taken = [p for p in wanted if not port_free(p)]
    if not taken:
        return wanted, None
    # Hold all three sockets at once so the kernel hands out three different ports.
    socks = [socket.socket() for _ in FUNCTIONS]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        ports = [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()
    note = (
        f"{_ports(taken)} in use by another process: the functions use the free ports "
        f"{', '.join(map(str, ports))} instead"
    )
    return ports, note


# ---- who answers on a port (Linux: /proc)


def _listening_inodes(port: int) -> set[str] | None:
    """Socket inodes listening on PORT (any address, IPv4 or IPv6); None without /proc."""
    tables = [Path("/proc/net/tcp"), Path("/proc/net/tcp6")]
    if not tables[0].exists():
        return None
    inodes = set()
    for table in tables:
        try:
            rows = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            # local_address is HEXIP:HEXPORT; state 0A is LISTEN; field 9 is the inode
            if len(f) > 9 and f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f[9])
    return inodes


def _group_members(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 2 and fields[2] == str(pgid):
            pids.append(int(entry.name))
    return pids


def group_owns_listener(pgid: int, port: int) -> bool | None:
    """Whether a process of the group PGID holds the socket listening on PORT. None where
    this cannot be told (no /proc): the caller then relies on the answer's shape alone."""
    inodes = _listening_inodes(port)
    if inodes is None:
        return None
    for pid in _group_members(pgid):
        fd_dir = Path(f"/proc/{pid}/fd")
        try:
            fds = list(fd_dir.iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                return True
    return False


def _get(url: str) -> tuple[int, str, bytes] | None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only
    try:
        with opener.open(url, timeout=2) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read()
    except OSError:  # nothing listening (yet), or a reset
        return None


def answers_as(target: str, status: int, content_type: str, body: bytes) -> bool:
    """Whether an answer to PROBES[target] has the shape Tollgate's function gives."""
    _path, want_status, want_type = PROBES[target]
    if status != want_status or not content_type.startswith(want_type):
        return False
    if want_type == "text/html":
        return b"<title>Tollgate" in body
    try:
        return isinstance(json.loads(body)["error"]["message"], str)
    except (ValueError, KeyError, TypeError):
        return False


def wait_for_function(
    target: str, proc: subprocess.Popen[bytes], port: int, timeout_s: float = 60.0
) -> None:
    """Return once the function started as PROC answers on PORT; StackError if it exits,
    if another process answers there instead, or if nothing answers in time."""
    path = PROBES[target][0]
    deadline = time.monotonic() + timeout_s
    while True:
        rc = proc.poll()
        if rc is not None:
            raise StackError(
                f"the {target} function (pid {proc.pid}) exited with status {rc} before it "
                f"answered on port {port} (its log is above; 'Connection in use' means "
                "another process took the port meanwhile: run again)"
            )
        answer = _get(f"http://127.0.0.1:{port}{path}")
        if answer is not None:
            owned = group_owns_listener(proc.pid, port)
            if owned is False:
                raise StackError(
                    f"port {port} is answered by another process, not by the {target} "
                    f"function started here (pid {proc.pid}): not using it"
                )
            if not answers_as(target, *answer):
                raise StackError(
                    f"what answers GET {path} on port {port} is not Tollgate's {target} "
                    f"function (HTTP {answer[0]}, {answer[1] or 'no content type'})"
                )
            return
        if time.monotonic() > deadline:
            raise StackError(
                f"the {target} function did not answer on port {port} in {timeout_s:.0f} s"
            )
        time.sleep(0.2)


# ---- processes


def start_function(target: str, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    # Its own process group: gunicorn's workers are children of the master, and stopping
    # the group stops them all.
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "functions_framework",
            "--source",
            str(ROOT / "functions" / "main.py"),
            "--target",
            target,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        cwd=ROOT,
        start_new_session=True,
        stdin=subprocess.DEVNULL,
    )


def stop_group(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """SIGTERM the process group led by PROC, wait, then SIGKILL whatever is left of it
    (members can outlive the leader: gunicorn workers, the emulator's java)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass  # the whole group is gone already
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def smoke(url: str, key: str, db: firestore.Client) -> None:
    body = json.dumps(
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]}
    ).encode()
    headers = {"Authorization": f"alice {key}", "Content-Type": "application/json"}
    req = urllib.request.Request(  # noqa: S310 - a loopback URL we built
        url + "/openai", data=body, method="POST", headers=headers
    )
    with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310
        answer = json.load(r)
        call_id = r.headers["x-tollgate-call-id"]
    # the answer is settled just after its last byte: give the booking a moment
    deadline = time.monotonic() + 10
    rec = None
    while rec is None and time.monotonic() < deadline:
        rec = db.collection("usage").document(call_id).get().to_dict()
        if rec is None:
            time.sleep(0.05)
    assert rec and rec["status"] == "ok" and rec["cost_nano"] > 0, rec
    print(
        f"smoke: {answer['choices'][0]['message']['content']!r} booked as {call_id}, "
        f"cost ${rec['cost_nano'] / 1e9:.9f}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    env_port = os.environ.get("TOLLGATE_PORT")
    ap.add_argument(
        "--port",
        type=int,
        default=int(env_port) if env_port else None,
        help=f"first port; functions use PORT, PORT+1, PORT+2, and a taken one is "
        f"an error (default: {DEFAULT_PORT}-{DEFAULT_PORT + 2}, or free "
        "ports if those are taken)",
    )
    ap.add_argument("--smoke", action="store_true", help="check one call end to end, then stop")
    args = ap.parse_args()

    # Before anything is started: a signal from here on unwinds through the finally below.
    # (A shell starts background jobs with SIGINT ignored; Ctrl-C must still stop us.)
    for signum in STOP_SIGNALS:
        signal.signal(signum, _on_signal)
    procs: list[subprocess.Popen[bytes]] = []
    emulator = Emulator(log_path=ROOT / ".local" / "emulator.log")
    emulator_ours = False
    fake: FakeUpstream | None = None
    running = False
    try:
        ports, note = choose_ports(args.port)
        if note:
            print(note, flush=True)
        (ROOT / ".local").mkdir(exist_ok=True)
        print("starting the Firestore emulator ...", flush=True)
        emulator.start()
        assert emulator.proc is not None
        # Emulator.start() accepts any "Ok" on its port: make sure it is this emulator.
        if group_owns_listener(emulator.proc.pid, emulator.port) is False:
            raise StackError(
                f"port {emulator.port} is answered by another process, not by "
                f"the Firestore emulator started here (pid {emulator.proc.pid})"
            )
        emulator_ours = True
        os.environ["FIRESTORE_EMULATOR_HOST"] = emulator.host
        real_key = os.environ.get("OPENAI_API_KEY")
        if real_key:
            base_url = os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
            upstream_key = real_key
        else:
            fake = FakeUpstream(port=0, valid_keys=(FAKE_KEY,)).start()  # the kernel's port
            base_url, upstream_key = fake.base_url, FAKE_KEY
        secrets_file = ROOT / ".local" / "secrets.json"
        secrets_file.unlink(missing_ok=True)
        db = firestore.Client(project=PROJECT, database="tollgate")
        admin_token = "tga_" + secrets.token_urlsafe(24)
        keys = seed(db, secrets_file, upstream_key, base_url, admin_token)
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "TOLLGATE_GCP_PROJECT": PROJECT,
            "OPENAI_BASE_URL": base_url,
            "TOLLGATE_SECRET_BACKEND": "local",
            "TOLLGATE_SECRETS_FILE": str(secrets_file),
        }
        env.pop("OPENAI_API_KEY", None)  # the functions read keys from the secret store only
        urls = {}
        for target, port in zip(FUNCTIONS, ports, strict=True):
            procs.append(start_function(target, port, env))
            urls[target] = f"http://127.0.0.1:{port}"
        for target, proc, port in zip(FUNCTIONS, procs, ports, strict=True):
            wait_for_function(target, proc, port)
        running = True
        _print_banner(urls, keys, admin_token, emulator.host, base_url, fake is not None)
        if args.smoke:
            smoke(urls["openai"], keys["alice"], db)
            return 0
        while True:
            for target, proc in zip(FUNCTIONS, procs, strict=True):
                if proc.poll() is not None:
                    raise StackError(f"the {target} function exited with status {proc.returncode}")
            time.sleep(0.5)
    except StackError as e:
        print(f"stack: {e}", file=sys.stderr, flush=True)
        return 1
    except Stopped as e:
        name = signal.Signals(e.signum).name
        print(f"\n{name}: stopping", file=sys.stderr, flush=True)
        # Ctrl-C or SIGTERM is how a running stack is meant to stop; during start-up it is
        # an interruption (the shell's 128 + signal number).
        return 0 if running and e.signum != signal.SIGHUP else 128 + e.signum
    finally:
        _stop_all(procs, fake, emulator, emulator_ours)


def _stop_all(
    procs: list[subprocess.Popen[bytes]],
    fake: FakeUpstream | None,
    emulator: Emulator,
    emulator_ours: bool,
) -> None:
    """Stop everything main() started. Never raises, and a second signal cannot cut it
    short: it is what keeps a Java emulator from outliving us."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    steps: list[tuple[str, Callable[[], None]]] = [
        (f"function pid {p.pid}", functools.partial(stop_group, p)) for p in procs
    ]
    if fake is not None:
        steps.append(("fake upstream", fake.stop))
    if emulator.proc is not None:
        if emulator_ours:  # /shutdown first (clean), then its whole group
            steps.append(("emulator", emulator.stop))
        else:  # its port may be another emulator's: never send that one /shutdown
            steps.append(("emulator", functools.partial(stop_group, emulator.proc, grace_s=5)))
    for what, stop in steps:
        try:
            stop()
        except Exception as e:  # keep stopping the rest
            print(f"stack: could not stop the {what}: {e!r}", file=sys.stderr, flush=True)
    print("stopped.", flush=True)


def _print_banner(
    urls: dict[str, str],
    keys: dict[str, str],
    admin_token: str,
    emu: str,
    upstream: str,
    fake: bool,
) -> None:
    o = urls["openai"]
    body = '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]}'
    curl = (
        f"curl -s {o}/openai -H {shlex.quote('Authorization: alice ' + keys['alice'])} "
        f"-H 'Content-Type: application/json' -d {shlex.quote(body)}"
    )
    print(
        f"""
Tollgate is running (Ctrl-C stops everything).
  openai function : {o}          (SDK base_url: {o}/v1)
  admin function  : {urls["admin"]}          (admin token: {admin_token})
  log page        : {urls["log"]}/log      (paste a key to see its calls)
  admin console   : {urls["admin"]}/console/      (sign in with the admin token or alice's key)
  Firestore       : emulator at {emu}, project {PROJECT}
  upstream        : {upstream}{"  (fake upstream: no OPENAI_API_KEY set)" if fake else ""}
  demo project    : 'demo', models {", ".join(DEMO_MODELS)}, budget $5/month
  keys (shown once): alice (lead) {keys["alice"]}
                     bob          {keys["bob"]}

Try it:
  {curl}

Admin CLI (same shell; `pip install .` makes it the `tollgate` command):
  export TOLLGATE_ADMIN_URL={urls["admin"]} TOLLGATE_ADMIN_TOKEN={admin_token}
  .venv/bin/python -m tollgate_cli usage --group-by user

Or with the SDK (pip install openai):
  from openai import OpenAI
  client = OpenAI(base_url="{o}/v1", api_key="{keys["alice"]}")
  print(client.chat.completions.create(
      model="gpt-4o-mini", messages=[{{"role": "user", "content": "Hi"}}]).choices[0].message)
""",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
