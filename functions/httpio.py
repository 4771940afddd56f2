"""Request reading and response building shared by the three functions."""

from __future__ import annotations

import json
import logging
import math
import re
import threading
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

import flask

from functions.core.errors import InvalidRequest, RequestTooLarge, TollgateError, redact

# The static pages (the log page, the admin console): their files only, no inline script
# or style, and nothing framed, sniffed or referred elsewhere.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

log = logging.getLogger("tollgate")

JSON = "application/json"


def json_response(
    obj: Any, status: int = 200, headers: dict[str, str] | None = None
) -> flask.Response:
    return flask.Response(json.dumps(obj), status=status, headers=headers or {}, mimetype=JSON)


def error_response(err: TollgateError) -> flask.Response:
    return flask.Response(err.to_json(), status=err.status, headers=err.headers, mimetype=JSON)


def internal_error(exc: BaseException, where: str) -> flask.Response:
    """Log an unexpected failure without its message (it may hold request data) and
    answer a generic OpenAI-shaped 500; the traceback never reaches the client."""
    log.error("unexpected %s in %s: %s", type(exc).__name__, where, redact(str(exc))[:300])
    return error_response(TollgateError())


def read_body(request: flask.Request, max_bytes: int) -> bytes:
    """The raw body, refusing more than ``max_bytes`` without reading all of it."""
    length = request.content_length
    if length is not None and length > max_bytes:
        raise RequestTooLarge(
            f"The request body is {length} bytes; the limit is {max_bytes} bytes."
        )
    data = request.stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise RequestTooLarge(f"The request body is over the limit of {max_bytes} bytes.")
    return data


def parse_json(data: bytes) -> Any:
    """The body as JSON that every parser reads the same way, or a 400.

    The proxy validates and prices this parse but forwards the client's raw bytes (no
    re-serialising on the hot path). That is only safe when upstream cannot read the
    bytes differently, so the two constructs RFC 8259 leaves to the parser are refused:
    a key repeated in one object (Python keeps the last, other parsers the first: a
    priced "model" or "max_tokens" could differ from the one that runs), and the
    non-JSON literals NaN/Infinity/-Infinity and numbers that overflow a double (read as
    inf here, an error or something else elsewhere)."""
    if not data:
        raise InvalidRequest("The request body is empty; send a JSON object.")
    try:
        obj = json.loads(
            data,
            object_pairs_hook=_unique_keys,
            parse_constant=_no_constant,
            parse_float=_finite_float,
        )
    except _Ambiguous as exc:
        raise InvalidRequest(str(exc)) from None
    except (ValueError, RecursionError):
        raise InvalidRequest("The request body is not valid JSON.") from None
    if _SURROGATE.search(data) and not _encodable(obj):
        raise InvalidRequest(
            "The request body holds an unpaired UTF-16 surrogate "
            "(\\ud800-\\udfff), which is not text."
        )
    return obj


class _Ambiguous(ValueError):
    """JSON that parsers may read differently; the message is for the caller."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Ambiguous(
                    f"The request body repeats the key {json.dumps(key[:64])} in "
                    "one object; send each key once."
                )
            seen.add(key)
    return obj


def _no_constant(name: str) -> Any:
    raise _Ambiguous(f"The request body holds {name}, which is not a JSON number.")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Ambiguous(f"The request body holds the number {text[:32]}, too large for a double.")
    return value


# JSON may spell half of a UTF-16 pair as an escape; Python decodes it to a lone
# surrogate that cannot be encoded, and Firestore would fail on it later.
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")


def _encodable(obj: Any) -> bool:
    stack = [obj]
    while stack:
        x = stack.pop()
        if isinstance(x, str):
            try:
                x.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(x, dict):
            stack.extend(x.keys())
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)
    return True


def serve(factory: Any, request: flask.Request, where: str) -> flask.Response:
    """Build (or reuse) the function's app from the environment and let it answer.

    Settings are read per request (a few microseconds) and the app is cached per
    distinct Settings, so tests can point one process at several emulator projects."""
    from functions.core.settings import Settings

    try:
        app = factory(Settings.from_env())
    except Exception as exc:  # noqa: BLE001 - misconfiguration must not leak a traceback
        return internal_error(exc, where)
    return app.handle(request)


K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class OnePer(Generic[K, T]):
    """``functools.cache`` for an instance's one app object per settings, except that
    each is built at most once. With ``functools.cache`` the first burst of concurrent
    requests on a cold instance each built their own (a Firestore client, its gRPC
    channel and thread pools apiece) and all but one were dropped, some with work still
    in flight on them: a load test saw a call fail with gRPC's "Channel deallocated"."""

    def __init__(self, make: Callable[[K], T]) -> None:
        self._make = make
        self._made: dict[K, T] = {}
        self._lock = threading.Lock()

    def __call__(self, key: K) -> T:
        with self._lock:
            if key not in self._made:
                self._made[key] = self._make(key)
            return self._made[key]

    def cache_clear(self) -> None:
        with self._lock:
            self._made.clear()
