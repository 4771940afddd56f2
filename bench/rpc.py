"""Counting Firestore round trips: every gRPC call this process makes, with its time.

``RpcRecorder.install()`` wraps the ``__call__`` of grpc's multi-callables (the
objects the Firestore client's generated stubs call for ``Commit``,
``BatchGetDocuments``, ``RunQuery``, ``BeginTransaction``, ...), so nothing is
guessed: a call is counted when the client really sends it. Each record has the
method, when it started and when it ended (for a server-streaming call, when the
stream terminated), the number of writes in a ``Commit`` and the number of documents
asked for in a ``BatchGetDocuments``.

``sequential(records)`` groups records into waves of calls that overlap in time; the
number of waves is the number of *sequential* round trips (calls issued in parallel
count once).

With ``detail=True`` (the function processes of ``bench/hot.py``, through
``bench/recorded.py``) each record also carries the wall-clock start (comparable
across processes), the path of every document a ``Commit`` writes, and for a
server-streaming read the number of documents it returned; every finished record is
handed to ``sink`` (``JsonlSink``: one JSON line per call, appended as it happens, so
nothing depends on how the process exits).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Rpc:
    method: str
    start: float
    end: float | None = None
    writes: int = 0
    docs: int = 0
    # detail mode only:
    wall: float = 0.0  # time.time() at the start: comparable across processes
    paths: tuple[str, ...] = ()  # documents a Commit writes, relative to the database
    returned: int | None = None  # documents a server-streaming read returned
    error: str | None = None  # the exception's class, if the call failed


def doc_path(write: Any) -> str:
    """The document a ``Write`` touches (update / delete / transform), database-relative."""
    name = ""
    for get in (lambda w: w.update.name, lambda w: w.delete, lambda w: w.transform.document):
        try:
            name = str(get(write) or "")
        except (AttributeError, TypeError):
            name = ""
        if name:
            break
    return name.split("/documents/", 1)[-1] if name else "?"


class _Counted:
    """A server-streaming call's iterator that counts the documents it yields and hands
    the record to the sink once the stream is drained (or dropped)."""

    def __init__(self, inner: Any, rec: Rpc, finish: Callable[[Rpc], None]) -> None:
        self._inner, self._rec, self._finish = inner, rec, finish
        self._done = False
        rec.returned = 0

    def __iter__(self) -> _Counted:
        return self

    def __next__(self) -> Any:
        try:
            item = next(self._inner)
        except BaseException as exc:
            if not isinstance(exc, StopIteration):
                self._rec.error = type(exc).__name__
            self._close()
            raise
        # a query's answer carries ``document``, a batch get's ``found`` (or ``missing``)
        names = [
            str(getattr(getattr(item, f, None), "name", "") or "") for f in ("document", "found")
        ]
        if any(names):
            self._rec.returned = (self._rec.returned or 0) + 1
        return item

    def _close(self) -> None:
        if not self._done:
            self._done = True
            if self._rec.end is None:
                self._rec.end = time.perf_counter()
            self._finish(self._rec)

    def __del__(self) -> None:
        try:
            self._close()
        except Exception:  # noqa: BLE001, S110 - never raise from a finaliser
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _short(method: Any) -> str:
    if isinstance(method, bytes):
        method = method.decode()
    return str(method).rsplit("/", 1)[-1]


class RpcRecorder:
    def __init__(
        self, detail: bool = False, sink: Callable[[Rpc], None] | None = None, keep: bool = True
    ) -> None:
        self.records: list[Rpc] = []
        self.enabled = False
        self.detail = detail  # wall time, written paths, documents returned
        self.sink = sink  # called once per finished call
        self.keep = keep  # also keep the records in memory (``take``)
        self._lock = threading.Lock()
        self._saved: list[tuple[type, str, Any]] = []

    def install(self) -> RpcRecorder:
        from grpc import _channel

        names = (
            "_UnaryUnaryMultiCallable",
            "_UnaryStreamMultiCallable",
            "_SingleThreadedUnaryStreamMultiCallable",
            "_StreamUnaryMultiCallable",
            "_StreamStreamMultiCallable",
        )
        for name in names:
            cls = getattr(_channel, name, None)
            if cls is None:
                continue
            # A server-streaming call returns at once and ends when its stream does. The
            # Firestore transport's channel has an interceptor, which sends unary calls
            # through ``with_call`` rather than ``__call__``: wrap every entry point
            # (none of them calls another, so nothing is counted twice).
            streaming = name.endswith("StreamMultiCallable")
            for attr in ("__call__", "with_call", "future"):
                orig = cls.__dict__.get(attr)
                if orig is None:
                    continue
                self._saved.append((cls, attr, orig))
                # with_call blocks until the answer, like a unary __call__
                setattr(
                    cls,
                    attr,
                    self._wrap(
                        orig,
                        streaming=(streaming and attr == "__call__") or attr == "future",
                        iterates=streaming and attr == "__call__",
                    ),
                )
        return self

    def uninstall(self) -> None:
        for cls, attr, orig in self._saved:
            setattr(cls, attr, orig)
        self._saved.clear()

    def __enter__(self) -> RpcRecorder:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.uninstall()

    def _wrap(self, orig: Any, streaming: bool, iterates: bool = False) -> Any:
        recorder = self

        def call(stub: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            if not recorder.enabled:
                return orig(stub, request, *args, **kwargs)
            rec = Rpc(_short(getattr(stub, "_method", "?")), time.perf_counter())
            try:
                rec.writes = len(request.writes)
                if recorder.detail:
                    rec.paths = tuple(doc_path(w) for w in request.writes)
            except (AttributeError, TypeError):
                pass
            try:
                rec.docs = len(request.documents)
            except (AttributeError, TypeError):
                pass
            if recorder.detail:
                rec.wall = time.time()
            if recorder.keep:
                with recorder._lock:
                    recorder.records.append(rec)
            try:
                result = orig(stub, request, *args, **kwargs)
            except BaseException as exc:
                rec.end = time.perf_counter()
                rec.error = type(exc).__name__
                recorder._finish(rec)
                raise
            if not streaming:
                rec.end = time.perf_counter()
                recorder._finish(rec)
                return result

            def done(*_: Any) -> None:
                rec.end = time.perf_counter()

            if hasattr(result, "add_callback"):
                result.add_callback(done)
            else:
                result.add_done_callback(done)
            if recorder.detail and iterates:
                return _Counted(result, rec, recorder._finish)
            if recorder.sink is not None:
                # no iterator to watch: hand the record over when the call ends
                if hasattr(result, "add_callback"):
                    result.add_callback(lambda *_: recorder._finish(rec))
                else:
                    result.add_done_callback(lambda *_: recorder._finish(rec))
            return result

        return call

    def _finish(self, rec: Rpc) -> None:
        if self.sink is not None:
            try:
                self.sink(rec)
            except Exception:  # noqa: BLE001, S110 - recording must never break a call
                pass

    def take(self) -> list[Rpc]:
        with self._lock:
            out, self.records = self.records, []
        return out


def sequential(records: list[Rpc]) -> int:
    """Waves of overlapping calls: the number of round trips a caller waits for in turn."""
    waves = 0
    wave_end = float("-inf")
    for r in sorted(records, key=lambda r: r.start):
        end = r.end if r.end is not None else r.start
        if r.start >= wave_end:
            waves += 1
            wave_end = end
        else:
            wave_end = max(wave_end, end)
    return waves


class JsonlSink:
    """Appends one JSON line per finished call to ``DIR/rpc-<pid>.jsonl`` (opened in the
    process that makes the call: gunicorn's worker, not its master)."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self._lock = threading.Lock()
        self._pid = -1
        self._file: Any = None

    def __call__(self, rec: Rpc) -> None:
        line = json.dumps(
            {
                "m": rec.method,
                "t": round(rec.wall, 6),
                "ms": round(((rec.end or rec.start) - rec.start) * 1000, 3),
                "w": list(rec.paths),
                "d": rec.docs,
                "r": rec.returned,
                "x": rec.error,
            },
            separators=(",", ":"),
        )
        with self._lock:
            if self._pid != os.getpid():
                self._pid = os.getpid()
                self.dir.mkdir(parents=True, exist_ok=True)
                # line-buffered: every record is on disk as soon as it is written
                self._file = open(
                    self.dir / f"rpc-{self._pid}.jsonl",
                    "a",  # noqa: SIM115
                    buffering=1,
                )
            self._file.write(line + "\n")


def read_jsonl(directory: str | Path) -> list[dict[str, Any]]:
    """Every record ``JsonlSink`` wrote under ``directory`` (a torn last line is skipped)."""
    out: list[dict[str, Any]] = []
    for path in sorted(Path(directory).glob("rpc-*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            rec["pid"] = int(path.stem.split("-", 1)[1])
            out.append(rec)
    return out
