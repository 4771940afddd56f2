"""README command 1: the local stack comes up, its printed call works and is booked; and
(audit item 12) it never takes another process's server for its own, and whatever it
started is gone when it exits, however it exits."""

from __future__ import annotations

import os
import queue
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from scripts import stack
from tests.conftest import ROOT
from tests.emulator import free_port, free_port_run

MARK = "TOLLGATE_STACK_TEST_MARK"  # inherited by every process the stack starts


def stack_env(mark: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "FIRESTORE_EMULATOR_HOST", "TOLLGATE_PORT")
    }
    return {**env, MARK: mark}


def marked(mark: str) -> dict[int, str]:
    """pid -> command line of every live process carrying MARK=mark in its environment."""
    needle = f"{MARK}={mark}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found[int(entry.name)] = (
                    (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                )
        except OSError:
            continue  # gone meanwhile, or not ours to read
    return found


def assert_nothing_left(mark: str) -> None:
    deadline = time.monotonic() + 10  # killed grandchildren are reaped by init, not us
    while (left := marked(mark)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in left:  # don't let one failure leak a Java emulator into the next test
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert left == {}, f"still running after the stack exited: {left}"


class Dummy(BaseHTTPRequestHandler):
    """Another program's web server: answers 200 to anything, and counts."""

    hits: list[str] = []

    def do_GET(self) -> None:
        Dummy.hits.append(f"{self.server.server_address[1]} {self.command} {self.path}")
        body = b"hello from someone else's server"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def occupied(ports: list[int]) -> Iterator[list[int]]:
    """Serve Dummy on each port we can bind; a port another process holds already is just
    as taken. Yields the ports that are ours."""
    servers = []
    for port in ports:
        try:
            servers.append(ThreadingHTTPServer(("127.0.0.1", port), Dummy))
        except OSError:
            continue
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    Dummy.hits = []
    try:
        yield [s.server_address[1] for s in servers]
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()


def test_local_stack_smoke():
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "FIRESTORE_EMULATOR_HOST")
    }
    out = subprocess.run(
        [sys.executable, "-m", "scripts.stack", "--smoke", "--port", str(free_port_run(3))],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "curl -s http://127.0.0.1:" in out.stdout and "Authorization: alice tg_" in out.stdout
    assert "smoke: 'Hello from the fake upstream.' booked as call_" in out.stdout
    assert "stopped." in out.stdout


def test_audit12_stack_moves_off_taken_default_ports_and_leaves_nothing_running():
    """8081-8083 answered by another program: the stack runs on free ports, never talks to
    that program, and leaves no process behind."""
    mark = secrets.token_hex(8)
    defaults = [stack.DEFAULT_PORT + i for i in range(3)]
    with occupied(defaults):
        out = subprocess.run(
            [sys.executable, "-m", "scripts.stack", "--smoke"],
            cwd=ROOT,
            env=stack_env(mark),
            capture_output=True,
            text=True,
            timeout=240,
        )
        hits = list(Dummy.hits)
    try:
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        assert "in use by another process: the functions use the free ports" in out.stdout
        ports = {
            name: int(port)
            for name, port in re.findall(
                r"(openai function|admin function|log page) +: http://127\.0\.0\.1:(\d+)",
                out.stdout,
            )
        }
        assert len(ports) == 3 and not set(ports.values()) & set(defaults), ports
        assert "smoke: 'Hello from the fake upstream.' booked as call_" in out.stdout
        assert "Traceback" not in out.stderr and "stopped." in out.stdout
        assert hits == []  # nothing was sent to the other program's server
    finally:
        assert_nothing_left(mark)


def test_audit12_stack_fails_clearly_on_a_taken_explicit_port():
    mark = secrets.token_hex(8)
    first = free_port()
    with occupied([first + 1]) as ours:
        if not ours:
            pytest.skip(f"port {first + 1} is busy")
        out = subprocess.run(
            [sys.executable, "-m", "scripts.stack", "--smoke", "--port", str(first)],
            cwd=ROOT,
            env=stack_env(mark),
            capture_output=True,
            text=True,
            timeout=240,
        )
        hits = list(Dummy.hits)
    try:
        assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
        assert f"port {first + 1} is in use on 127.0.0.1 by another process" in out.stderr
        assert "Choose another --port" in out.stderr and "Traceback" not in out.stderr
        assert "Tollgate is running" not in out.stdout and "emulator" not in out.stdout
        assert hits == []
    finally:
        assert_nothing_left(mark)


def test_audit12_stack_takes_only_its_own_process_as_up():
    """What answers on a function's port counts only if it is the process the stack
    started (it holds the listening socket) and answers like Tollgate's function."""
    with occupied([free_port()]) as (port,):
        alive = subprocess.Popen(["sleep", "60"], start_new_session=True)
        try:
            with pytest.raises(stack.StackError, match="another process"):
                stack.wait_for_function("openai", alive, port, timeout_s=10)
        finally:
            stack.stop_group(alive)
        with pytest.raises(stack.StackError, match="exited with status"):
            stack.wait_for_function("openai", alive, port, timeout_s=10)
    assert not stack.answers_as("log", 200, "text/plain", b"hello")
    assert not stack.answers_as("openai", 200, "application/json", b"{}")
    assert stack.answers_as(
        "openai",
        401,
        "application/json",
        b'{"error": {"message": "A Tollgate proxy key is needed"}}',
    )


def _lines(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


@pytest.mark.parametrize("when", ["starting", "running"])
def test_audit12_stack_stops_everything_it_started_on_sigterm(when: str):
    """SIGTERM while the emulator starts (the Java process is up, nothing answers yet), or
    once everything runs: the stack stops every process it started, emulator included."""
    mark = secrets.token_hex(8)
    proc = subprocess.Popen(
        [sys.executable, "-m", "scripts.stack"],
        cwd=ROOT,
        env=stack_env(mark),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines, seen = _lines(proc), []
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            if when == "starting":
                if any("java" in cmd for cmd in marked(mark).values()):
                    break
                time.sleep(0.05)
            else:
                try:
                    seen.append(lines.get(timeout=1))
                except queue.Empty:
                    continue
                if "Tollgate is running" in seen[-1]:
                    break
        assert proc.poll() is None, "".join(seen)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
        while not lines.empty():
            seen.append(lines.get())
        output = "".join(seen)
        assert rc == (0 if when == "running" else 128 + signal.SIGTERM), output
        assert "SIGTERM: stopping" in output and "stopped." in output
        assert "Traceback" not in output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert_nothing_left(mark)
