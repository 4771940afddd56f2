"""README command 1: the local stack comes up, its printed call works and is booked."""

import os
import subprocess
import sys

from tests.conftest import ROOT
from tests.emulator import free_port


def test_local_stack_smoke():
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "FIRESTORE_EMULATOR_HOST")}
    out = subprocess.run(
        [sys.executable, "-m", "scripts.stack", "--smoke", "--port", str(free_port())],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "curl -s http://127.0.0.1:" in out.stdout and "Authorization: alice tg_" in out.stdout
    assert "smoke: 'Hello from the fake upstream.' booked as call_" in out.stdout
    assert "stopped." in out.stdout
