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
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any


@dataclass
class Rpc:
    method: str
    start: float
    end: float | None = None
    writes: int = 0
    docs: int = 0


def _short(method: Any) -> str:
    if isinstance(method, bytes):
        method = method.decode()
    return str(method).rsplit("/", 1)[-1]


class RpcRecorder:
    def __init__(self) -> None:
        self.records: list[Rpc] = []
        self.enabled = False
        self._lock = threading.Lock()
        self._saved: list[tuple[type, str, Any]] = []

    def install(self) -> RpcRecorder:
        from grpc import _channel

        names = ("_UnaryUnaryMultiCallable", "_UnaryStreamMultiCallable",
                 "_SingleThreadedUnaryStreamMultiCallable", "_StreamUnaryMultiCallable",
                 "_StreamStreamMultiCallable")
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
                setattr(cls, attr, self._wrap(orig, streaming=(
                    streaming and attr == "__call__") or attr == "future"))
        return self

    def uninstall(self) -> None:
        for cls, attr, orig in self._saved:
            setattr(cls, attr, orig)
        self._saved.clear()

    def __enter__(self) -> RpcRecorder:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.uninstall()

    def _wrap(self, orig: Any, streaming: bool) -> Any:
        recorder = self

        def call(stub: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            if not recorder.enabled:
                return orig(stub, request, *args, **kwargs)
            rec = Rpc(_short(getattr(stub, "_method", "?")), time.perf_counter())
            try:
                rec.writes = len(request.writes)
            except (AttributeError, TypeError):
                pass
            try:
                rec.docs = len(request.documents)
            except (AttributeError, TypeError):
                pass
            with recorder._lock:
                recorder.records.append(rec)
            try:
                result = orig(stub, request, *args, **kwargs)
            except BaseException:
                rec.end = time.perf_counter()
                raise
            if not streaming:
                rec.end = time.perf_counter()
                return result

            def done(*_: Any) -> None:
                rec.end = time.perf_counter()

            if hasattr(result, "add_callback"):
                result.add_callback(done)
            else:
                result.add_done_callback(done)
            return result

        return call

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
