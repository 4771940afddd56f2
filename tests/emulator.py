"""Start and stop the real Firestore emulator (``gcloud emulators firestore start``).

Used by the test session, the local stack and the benchmark. The gcloud wrapper
spawns bash and java children that outlive it if only the wrapper is killed, so
the emulator runs in its own process group and is stopped through ``/shutdown``
and then by killing that whole group.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_port_run(n: int) -> int:
    """The first of ``n`` consecutive free loopback ports (the local stack takes three):
    each run is bound whole before it is handed out, so all of it was free at once."""
    for _ in range(100):
        base = free_port()
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {n} consecutive free ports on 127.0.0.1")


def _ok(host: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}/", timeout=1) as r:  # noqa: S310
            return r.read().strip() == b"Ok"
    except OSError:
        return False


class Emulator:
    def __init__(self, port: int | None = None, log_path: str | Path | None = None) -> None:
        self.port = port or free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.log_path = Path(log_path) if log_path else None
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 90.0) -> Emulator:
        gcloud = shutil.which("gcloud")
        if gcloud is None:
            raise RuntimeError(
                "gcloud is not on PATH; install the Google Cloud CLI with the "
                "cloud-firestore-emulator component"
            )
        log = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [gcloud, "emulators", "firestore", "start", f"--host-port={self.host}", "--quiet"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        if not isinstance(log, int):
            log.close()  # the emulator has its own copy of the descriptor
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if _ok(self.host):
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"the Firestore emulator exited with {self.proc.returncode}"
                    f" (log: {self.log_path})"
                )
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(
            f"the Firestore emulator did not answer on {self.host} in "
            f"{timeout_s:.0f} s (log: {self.log_path})"
        )

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            req = urllib.request.Request(f"http://{self.host}/shutdown", data=b"", method="POST")
            urllib.request.urlopen(req, timeout=2).close()  # noqa: S310
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.proc = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
