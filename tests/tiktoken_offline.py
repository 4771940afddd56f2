"""Fixtures for tests that load tiktoken's encodings: every download attempt goes to a
closed port (so a test that would reach the internet fails instead), and the BPE files
are staged once per module in a temporary directory."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from functions.core import encodings

ROOT = Path(__file__).resolve().parent.parent
# Any download attempt goes to a closed port and fails fast instead of reaching the internet.
OFFLINE = {
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "http_proxy": "http://127.0.0.1:9",
}


def offline_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k.upper() not in ("NO_PROXY", "TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR")
    }
    return {**env, **OFFLINE, **extra}


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="module")
def seeded_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiktoken")
    encodings.seed_encoding_cache(str(path))
    return path


@pytest.fixture(autouse=True)
def offline(seeded_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key, value in OFFLINE.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(seeded_dir))
    yield
