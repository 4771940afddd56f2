"""A fake OpenAI-compatible upstream, served over loopback.

Tests point the proxy at ``FakeUpstream().base_url``, queue behaviours with
``push()`` (errors, stalls, broken JSON, slow or truncated streams), call the
proxy, then assert on ``received`` and on what the proxy booked.  The same
server is the local dev stack's upstream:

    python -m tests.fake_upstream --host 127.0.0.1 --port 8090 [--key sk-fake-local]

Standard library only, so it runs anywhere the tests run.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import select
import signal
import socket
import struct
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

__all__ = [
    "Behaviour",
    "Error",
    "FakeUpstream",
    "InvalidJSON",
    "Received",
    "Stall",
    "Stream",
    "main",
]

DEFAULT_KEY = "sk-fake-upstream"
ANSWER_TEXT = "Hello from the fake upstream."
STREAM_WORD = "word "
EMBEDDING_DIMENSIONS = 8
# OpenAI's own default for the legacy completions endpoint when max_tokens is absent.
COMPLETIONS_DEFAULT_MAX_TOKENS = 16
MODELS = (
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1-mini",
    "o3-mini",
    "gpt-3.5-turbo-instruct",
    "text-embedding-3-small",
)

PromptCounter = Callable[[str, dict[str, Any]], int]


# --------------------------------------------------------------------------- records


@dataclass
class Received:
    """One request as the fake saw it."""

    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    json: Any | None  # parsed body, or None when empty / not JSON
    # Set when the client went away before the fake finished answering
    # (typically mid-stream; noticed at the fake's next write).
    client_closed: bool = False


# --------------------------------------------------------------------------- behaviours


@dataclass
class Error:
    """Answer with this status; the body defaults to an OpenAI error fitting the status."""

    status: int
    body: dict[str, Any] | None = None
    headers: dict[str, str] | None = None


@dataclass
class Stall:
    """Send nothing (not even headers) for ``seconds``, then answer normally."""

    seconds: float


@dataclass
class InvalidJSON:
    """200 with ``content-type: application/json`` and a body that is not JSON."""


@dataclass
class Stream:
    """Knobs for a streaming request (ignored when the request does not stream).

    ``cut_after=k`` closes the TCP connection after k SSE events (``data: [DONE]``
    counts as one), without the terminating zero-length chunk.
    """

    chunk_delay_s: float = 0.0
    cut_after: int | None = None
    no_usage: bool = False
    chunks: int = 3


Behaviour = Error | Stall | InvalidJSON | Stream


# --------------------------------------------------------------------------- the fake


class FakeUpstream:
    """An OpenAI-compatible HTTP server on a background thread.

    Per request: record it, pop the next queued behaviour (if any), sleep
    ``latency_s`` (and a Stall's seconds), check the key (401 wins over any
    behaviour), then apply an Error / InvalidJSON behaviour or answer normally.
    """

    # Knobs for the default (normal) answer; reset() restores these values.
    cached_tokens: int  # reported cached prompt tokens, capped at the prompt
    reasoning_tokens: int  # reported reasoning tokens, capped at the output
    completion_tokens: int  # output tokens per choice, capped by the request's cap
    bill_cap: bool  # output per choice = the request's cap (the worst case)
    prompt_tokens: PromptCounter | None  # (route path, body) -> prompt tokens; None: rough count
    service_tier: str | None  # echoed on chat/responses bodies; None omits the field
    # The OpenAI project's default tier: served (and reported) to a chat/responses request
    # that asks for no tier or "auto". None: report ``service_tier`` whatever was asked.
    project_tier: str | None
    snapshot_suffix: str  # answer "model" = request model + suffix (not embeddings)
    latency_s: float  # sleep before every answer
    valid_keys: set[str]  # accepted Bearer secrets

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        valid_keys: Iterable[str] = (DEFAULT_KEY,),
    ) -> None:
        self.host = host
        self.port = port
        self._default_keys = frozenset(valid_keys)
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._queue: deque[Behaviour] = deque()
        self.received: list[Received] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.reset()

    # ---- lifecycle

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeUpstream is not started; call start() first")
        host, port = str(self._server.server_address[0]), self._server.server_address[1]
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"  # a wildcard bind is reachable on loopback
        return f"http://{host}:{port}/v1"

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError("FakeUpstream is already running")
        self._server = _Server((self.host, self.port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-upstream:{self._server.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self if self._server is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---- test controls

    def reset(self) -> None:
        """Restore default knobs and keys; forget received requests and queued behaviours."""
        with self._lock:
            # Cleared in place so a list reference held by a test stays valid.
            self.received.clear()
            self._queue.clear()
        self.valid_keys = set(self._default_keys)
        self.cached_tokens = 0
        self.reasoning_tokens = 0
        self.completion_tokens = 7
        self.bill_cap = False
        self.prompt_tokens = None
        self.service_tier = "default"
        self.project_tier = None
        self.snapshot_suffix = "-2099-01-01"
        self.latency_s = 0.0

    def push(self, *behaviours: Behaviour) -> None:
        """Queue one-shot behaviours; each following request (any route) consumes one."""
        for behaviour in behaviours:
            if not isinstance(behaviour, Error | Stall | InvalidJSON | Stream):
                raise TypeError(f"not a behaviour: {behaviour!r}")
        with self._lock:
            self._queue.extend(behaviours)

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[Received]:
        """Block until at least n requests arrived; return a snapshot of ``received``."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.received) >= n, timeout):
                raise TimeoutError(
                    f"expected {n} request(s) within {timeout}s, got {len(self.received)}"
                )
            return list(self.received)

    # ---- used by the handler threads

    def _record(self, record: Received) -> None:
        with self._arrived:
            self.received.append(record)
            self._arrived.notify_all()

    def _next_behaviour(self) -> Behaviour | None:
        with self._lock:
            return self._queue.popleft() if self._queue else None

    def _authorised(self, authorization: str | None) -> bool:
        scheme, _, key = (authorization or "").partition(" ")
        return scheme.lower() == "bearer" and key.strip() in self.valid_keys


# --------------------------------------------------------------------------- HTTP plumbing


class _ClientGone(ConnectionError):
    """The client closed its end before the answer was complete."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # stalled or streaming handlers must not block stop()
    request_queue_size = 256  # listen backlog: tests open ~100 connections at once

    def __init__(self, address: tuple[str, int], fake: FakeUpstream) -> None:
        self.fake = fake
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client hanging up is routine here (timeouts, cut streams); only real bugs print.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked streaming, as the real API
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Stay silent: tests and the dev stack do not want a line per request."""

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    # ---- request side

    def _dispatch(self) -> None:
        fake = self.server.fake
        body = self._read_body()
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        record = Received(self.command, self.path, headers, body, _parse_json(body))
        # Recorded before answering, so a test sees it as soon as its call returns.
        fake._record(record)
        try:
            self._answer(fake, record, fake._next_behaviour())
        except ConnectionError:
            record.client_closed = True
            self.close_connection = True

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked_body()
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True  # cannot find the next request boundary
            return b""
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunked_body(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size_line = self.rfile.readline(65537)
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                # Skip optional trailers up to the blank line that ends the body.
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline(65537)  # the CRLF after each chunk's data

    # ---- answer selection

    def _answer(self, fake: FakeUpstream, record: Received, behaviour: Behaviour | None) -> None:
        if fake.latency_s > 0:
            time.sleep(fake.latency_s)
        if isinstance(behaviour, Stall):
            time.sleep(behaviour.seconds)
            if self._client_gone():
                raise _ClientGone
        if not fake._authorised(record.headers.get("authorization")):
            self._send_json(401, _unauthorised_body(record.headers.get("authorization")))
            return
        if isinstance(behaviour, Error):
            error = behaviour.body
            if error is None:
                error = _default_error(behaviour.status)
            self._send_json(behaviour.status, error, behaviour.headers)
            return
        if isinstance(behaviour, InvalidJSON):
            self._send_bytes(200, b"{not json", "application/json")
            return

        self._serve_route(record, behaviour)

    def _serve_route(self, record: Received, behaviour: Behaviour | None) -> None:
        fake = self.server.fake
        path = urlsplit(self.path).path.rstrip("/")
        if self.command == "GET" and path == "/v1/models":
            self._send_json(200, {"object": "list", "data": [_model(m) for m in MODELS]})
            return
        if self.command == "GET" and path.startswith("/v1/models/"):
            # Any id is served: tests use arbitrary model names.
            self._send_json(200, _model(path.removeprefix("/v1/models/")))
            return
        route = _ROUTES.get(path) if self.command == "POST" else None
        if route is None:
            self._send_json(404, _error_body(f"Invalid URL ({self.command} {self.path})"))
            return

        request = record.json
        problem = _validate(request, route.required)
        if problem is not None:
            self._send_json(400, problem)
            return
        assert isinstance(request, dict)  # _validate checked it
        answer = route.build(fake, path, request)
        if request.get("stream") is True and route.events is not None:
            spec = behaviour if isinstance(behaviour, Stream) else Stream()
            self._send_stream(route.events(answer, request, spec), spec)
        else:
            self._send_json(200, answer)

    # ---- response side

    def _start(
        self,
        status: int,
        content_type: str,
        length: int | None,
        extra: dict[str, str] | None = None,
    ) -> None:
        """Send the status line and headers; length None means chunked transfer encoding."""
        headers = _standard_headers()
        headers["content-type"] = content_type
        if length is None:
            headers["transfer-encoding"] = "chunked"
            headers["cache-control"] = "no-cache"
        else:
            headers["content-length"] = str(length)
        for name, value in (extra or {}).items():
            headers[name.lower()] = value
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def _send_bytes(
        self,
        status: int,
        payload: bytes,
        content_type: str,
        extra: dict[str, str] | None = None,
    ) -> None:
        if "gzip" in self.headers.get("Accept-Encoding", "").lower():
            # as OpenAI (behind Cloudflare) does for JSON answers when asked
            payload = gzip.compress(payload)
            extra = {**(extra or {}), "Content-Encoding": "gzip"}
        self._start(status, content_type, len(payload), extra)
        self.wfile.write(payload)

    def _send_json(self, status: int, obj: Any, extra: dict[str, str] | None = None) -> None:
        self._send_bytes(status, json.dumps(obj).encode(), "application/json", extra)

    def _send_stream(self, events: list[bytes], spec: Stream) -> None:
        self._start(200, "text/event-stream; charset=utf-8", None)
        for sent, event in enumerate(events):
            if spec.cut_after is not None and sent >= spec.cut_after:
                self._cut()
                return
            if sent and spec.chunk_delay_s > 0:
                time.sleep(spec.chunk_delay_s)
            # Checking first means a departed client is noticed at this write, not the one
            # after it (a write into a half-dead socket usually still succeeds once).
            if self._client_gone():
                raise _ClientGone
            self.wfile.write(b"%X\r\n%s\r\n" % (len(event), event))
        if spec.cut_after is not None and len(events) >= spec.cut_after:
            self._cut()
            return
        self.wfile.write(b"0\r\n\r\n")

    def _cut(self) -> None:
        """Drop the connection mid-body, as a crashing upstream or a broken network would."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _client_gone(self) -> bool:
        """True when the client has closed its end (EOF or reset pending on the socket)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            return bool(self.connection.recv(1, socket.MSG_PEEK) == b"")
        except (OSError, ValueError):
            return True


# --------------------------------------------------------------------------- bodies


def _hex() -> str:
    return uuid.uuid4().hex


def _standard_headers() -> dict[str, str]:
    # The proxy must strip the identifying ones (request id, org, project, cookies)
    # and pass the rate-limit ones through; see the proxy's header tests.
    return {
        "x-request-id": f"req_{_hex()}",
        "openai-organization": "org-fake",
        "openai-project": "proj_fake",
        "openai-processing-ms": "1",
        "set-cookie": "__cf_bm=fake; path=/",
        "x-ratelimit-limit-requests": "10000",
        "x-ratelimit-remaining-requests": "9999",
        "x-ratelimit-reset-requests": "6ms",
        "x-ratelimit-limit-tokens": "30000000",
        "x-ratelimit-remaining-tokens": "29999000",
        "x-ratelimit-reset-tokens": "2ms",
    }


def _parse_json(body: bytes) -> Any | None:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


def _error_body(
    message: str,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _validate(request: Any, required: tuple[str, ...]) -> dict[str, Any] | None:
    """The 400 body OpenAI would send for this request, or None when it is acceptable."""
    if not isinstance(request, dict):
        return _error_body(
            "We could not parse the JSON body of your request. (HINT: This likely means "
            "you aren't using your HTTP library correctly.)"
        )
    for name in required:
        if request.get(name) is None:
            return _error_body(
                f"Missing required parameter: '{name}'.",
                param=name,
                code="missing_required_parameter",
            )
    if "model" in request and not isinstance(request["model"], str):  # optional: moderations
        return _error_body("Invalid type for 'model': expected a string.", param="model")
    return None


# status -> (type, code, message), modelled on what api.openai.com returns.
_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request (fake upstream)."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "permission_denied", "You are not allowed to do this."),
    404: (
        "invalid_request_error",
        "model_not_found",
        "The model does not exist or you do not have access to it.",
    ),
    409: ("invalid_request_error", "conflict", "Conflict (fake upstream)."),
    422: ("invalid_request_error", None, "Unprocessable request (fake upstream)."),
    429: (
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for requests (fake upstream). Please try again in 6ms.",
    ),
    500: (
        "server_error",
        "server_error",
        "The server had an error while processing your request. Sorry about that!",
    ),
    502: ("server_error", "bad_gateway", "Bad gateway (fake upstream)."),
    503: (
        "server_error",
        "service_unavailable",
        "The engine is currently overloaded, please try again later.",
    ),
    504: ("server_error", "timeout", "Gateway timeout (fake upstream)."),
}


def _default_error(status: int) -> dict[str, Any]:
    if status in _ERRORS:
        type_, code, message = _ERRORS[status]
    elif status >= 500:
        type_, code, message = "server_error", "server_error", f"Server error {status}."
    else:
        type_, code, message = "invalid_request_error", None, f"Request failed with {status}."
    return _error_body(message, type_, code=code)


def _unauthorised_body(authorization: str | None) -> dict[str, Any]:
    _, _, key = (authorization or "").partition(" ")
    key = key.strip()
    if not key:
        message = "You didn't provide an API key."
    else:
        # Like OpenAI: echo only enough of the key to recognise it.
        shown = f"{key[:3]}...{key[-4:]}" if len(key) > 8 else "***"
        message = f"Incorrect API key provided: {shown}."
    return _error_body(message, code="invalid_api_key")


def _model(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 1700000000, "owned_by": "openai"}


def _int_param(value: Any, default: int) -> int:
    # bool is an int subclass; a JSON true is not a count.
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _cap(body: dict[str, Any], *names: str) -> int | None:
    """The request's output-token cap: the first of ``names`` that is set."""
    for name in names:
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _items(value: Any) -> list[Any]:
    """Split an OpenAI ``input``/``prompt`` into items: a list of token ids is ONE item."""
    if (
        isinstance(value, list)
        and value
        and not all(isinstance(x, int) and not isinstance(x, bool) for x in value)
    ):
        return value
    return [value]


@dataclass(frozen=True)
class _Tokens:
    prompt: int
    cached: int
    output: int  # across every generated choice
    reasoning: int
    capped: bool  # each choice stopped at the cap -> finish_reason "length"

    @property
    def total(self) -> int:
        return self.prompt + self.output


def _tokens(
    fake: FakeUpstream,
    route: str,
    body: dict[str, Any],
    counted: str,
    cap: int | None,
    billed_choices: int,
) -> _Tokens:
    if fake.prompt_tokens is not None:
        prompt = fake.prompt_tokens(route, body)
    else:
        prompt = max(1, len(json.dumps(body.get(counted))) // 4)
    if fake.bill_cap and cap is not None:
        per_choice = cap
    elif cap is not None:
        per_choice = min(fake.completion_tokens, cap)
    else:
        per_choice = fake.completion_tokens
    output = per_choice * billed_choices
    return _Tokens(
        prompt=prompt,
        cached=min(max(fake.cached_tokens, 0), prompt),
        output=output,
        reasoning=min(max(fake.reasoning_tokens, 0), output),
        capped=cap is not None and per_choice >= cap,
    )


def _chat_usage(tokens: _Tokens) -> dict[str, Any]:
    return {
        "prompt_tokens": tokens.prompt,
        "completion_tokens": tokens.output,
        "total_tokens": tokens.total,
        "prompt_tokens_details": {"cached_tokens": tokens.cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": tokens.reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _with_tier(fake: FakeUpstream, obj: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    if fake.project_tier is not None:
        asked = body.get("service_tier")
        obj["service_tier"] = fake.project_tier if asked in (None, "auto") else asked
    elif fake.service_tier is not None:
        obj["service_tier"] = fake.service_tier
    return obj


def _chat_completion(fake: FakeUpstream, route: str, body: dict[str, Any]) -> dict[str, Any]:
    n = max(1, _int_param(body.get("n"), 1))
    tokens = _tokens(
        fake, route, body, "messages", _cap(body, "max_completion_tokens", "max_tokens"), n
    )
    finish = "length" if tokens.capped else "stop"
    return _with_tier(
        fake,
        {
            "id": f"chatcmpl-{_hex()}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"] + fake.snapshot_suffix,
            "choices": [
                {
                    "index": i,
                    "message": {
                        "role": "assistant",
                        "content": ANSWER_TEXT,
                        "refusal": None,
                        "annotations": [],
                    },
                    "logprobs": None,
                    "finish_reason": finish,
                }
                for i in range(n)
            ],
            "usage": _chat_usage(tokens),
            "system_fingerprint": "fp_fake",
        },
        body,
    )


def _text_completion(fake: FakeUpstream, route: str, body: dict[str, Any]) -> dict[str, Any]:
    prompts = len(_items(body["prompt"]))
    n = max(1, _int_param(body.get("n"), 1))
    best_of = max(n, _int_param(body.get("best_of"), n))
    cap = _cap(body, "max_tokens")
    # As on the real API: one choice per prompt per n, and best_of candidates are billed.
    tokens = _tokens(
        fake,
        route,
        body,
        "prompt",
        COMPLETIONS_DEFAULT_MAX_TOKENS if cap is None else cap,
        prompts * best_of,
    )
    finish = "length" if tokens.capped else "stop"
    return {
        "id": f"cmpl-{_hex()}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": body["model"] + fake.snapshot_suffix,
        "choices": [
            {"text": ANSWER_TEXT, "index": i, "logprobs": None, "finish_reason": finish}
            for i in range(prompts * n)
        ],
        "usage": {
            "prompt_tokens": tokens.prompt,
            "completion_tokens": tokens.output,
            "total_tokens": tokens.total,
        },
        "system_fingerprint": "fp_fake",
    }


def _embeddings(fake: FakeUpstream, route: str, body: dict[str, Any]) -> dict[str, Any]:
    dimensions = max(1, _int_param(body.get("dimensions"), EMBEDDING_DIMENSIONS))
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for index, _ in enumerate(_items(body["input"])):
        # Multiples of 1/16 survive the float32 round trip exactly.
        vector = [index + (k + 1) / 16 for k in range(dimensions)]
        embedding: list[float] | str = (
            base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
            if as_base64
            else vector
        )
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    prompt = (
        fake.prompt_tokens(route, body)
        if fake.prompt_tokens is not None
        else max(1, len(json.dumps(body["input"])) // 4)
    )
    return {
        "object": "list",
        "data": data,
        "model": body["model"],
        "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
    }


_MODERATION_CATEGORIES = ("harassment", "hate", "illicit", "self-harm", "sexual", "violence")


def _moderation(fake: FakeUpstream, route: str, body: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's moderation object: one result per input; no ``usage`` (it is free).
    An input containing "kill" is flagged as violence."""
    results = []
    for item in _items(body["input"]):
        text = json.dumps(item).lower()
        hit = "kill" in text
        results.append(
            {
                "flagged": hit,
                "categories": {c: hit and c == "violence" for c in _MODERATION_CATEGORIES},
                "category_scores": {
                    c: (0.93 if hit and c == "violence" else 0.0001) for c in _MODERATION_CATEGORIES
                },
                "category_applied_input_types": {c: ["text"] for c in _MODERATION_CATEGORIES},
            }
        )
    return {
        "id": f"modr-{_hex()}",
        "model": body.get("model") or "omni-moderation-latest",
        "results": results,
    }


def _response(fake: FakeUpstream, route: str, body: dict[str, Any]) -> dict[str, Any]:
    cap = _cap(body, "max_output_tokens")
    tokens = _tokens(fake, route, body, "input", cap, 1)
    return _with_tier(
        fake,
        {
            "id": f"resp_{_hex()}",
            "object": "response",
            "created_at": int(time.time()),
            "status": "completed",
            "error": None,
            "incomplete_details": None,
            "instructions": body.get("instructions"),
            "max_output_tokens": cap,
            "model": body["model"] + fake.snapshot_suffix,
            "output": [_message_item(ANSWER_TEXT)],
            "parallel_tool_calls": True,
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": {"effort": None, "summary": None},
            "store": True,
            "temperature": 1.0,
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": [],
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": {
                "input_tokens": tokens.prompt,
                "input_tokens_details": {"cached_tokens": tokens.cached},
                "output_tokens": tokens.output,
                "output_tokens_details": {"reasoning_tokens": tokens.reasoning},
                "total_tokens": tokens.total,
            },
            "user": None,
            "metadata": {},
        },
        body,
    )


def _message_item(text: str, item_id: str | None = None) -> dict[str, Any]:
    return {
        "type": "message",
        "id": item_id or f"msg_{_hex()}",
        "status": "completed",
        "role": "assistant",
        "content": [_output_text(text)],
    }


def _output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": []}


# --------------------------------------------------------------------------- streams


def _sse(payload: Any, event: str | None = None) -> bytes:
    data = json.dumps(payload, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {data}\n\n".encode()


_DONE = b"data: [DONE]\n\n"


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _chat_events(completion: dict[str, Any], body: dict[str, Any], spec: Stream) -> list[bytes]:
    include_usage = _include_usage(body)
    base = {key: completion[key] for key in ("id", "created", "model", "system_fingerprint")}
    base["object"] = "chat.completion.chunk"
    if "service_tier" in completion:
        base["service_tier"] = completion["service_tier"]
    indices = [choice["index"] for choice in completion["choices"]]

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        payload: dict[str, Any] = {**base, "choices": [choice]}
        if include_usage:
            payload["usage"] = None  # OpenAI sends an explicit null until the usage chunk
        return _sse(payload)

    events = [chunk(i, {"role": "assistant", "content": "", "refusal": None}) for i in indices]
    for _ in range(spec.chunks):
        events += [chunk(i, {"content": STREAM_WORD}) for i in indices]
    events += [chunk(c["index"], {}, c["finish_reason"]) for c in completion["choices"]]
    if include_usage and not spec.no_usage:
        events.append(_sse({**base, "choices": [], "usage": completion["usage"]}))
    return [*events, _DONE]


def _completion_events(
    completion: dict[str, Any], body: dict[str, Any], spec: Stream
) -> list[bytes]:
    include_usage = _include_usage(body)
    base = {key: completion[key] for key in ("id", "object", "created", "model")}

    def chunk(index: int, text: str, finish: str | None = None) -> bytes:
        choice = {"text": text, "index": index, "logprobs": None, "finish_reason": finish}
        payload: dict[str, Any] = {**base, "choices": [choice]}
        if include_usage:
            payload["usage"] = None
        return _sse(payload)

    events: list[bytes] = []
    for _ in range(spec.chunks):
        events += [chunk(c["index"], STREAM_WORD) for c in completion["choices"]]
    events += [chunk(c["index"], "", c["finish_reason"]) for c in completion["choices"]]
    if include_usage and not spec.no_usage:
        events.append(_sse({**base, "choices": [], "usage": completion["usage"]}))
    return [*events, _DONE]


def _response_events(response: dict[str, Any], body: dict[str, Any], spec: Stream) -> list[bytes]:
    text = STREAM_WORD * spec.chunks
    item_id = response["output"][0]["id"]
    done_item = _message_item(text, item_id)
    final = {**response, "output": [done_item]}
    if spec.no_usage:
        final["usage"] = None
    in_progress = {**response, "status": "in_progress", "output": [], "usage": None}
    where = {"item_id": item_id, "output_index": 0, "content_index": 0}

    steps: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"response": in_progress}),
        ("response.in_progress", {"response": in_progress}),
        (
            "response.output_item.added",
            {
                "output_index": 0,
                "item": {**done_item, "status": "in_progress", "content": []},
            },
        ),
        ("response.content_part.added", {**where, "part": _output_text("")}),
        *[
            ("response.output_text.delta", {**where, "delta": STREAM_WORD, "logprobs": []})
            for _ in range(spec.chunks)
        ],
        ("response.output_text.done", {**where, "text": text, "logprobs": []}),
        ("response.content_part.done", {**where, "part": _output_text(text)}),
        ("response.output_item.done", {"output_index": 0, "item": done_item}),
        ("response.completed", {"response": final}),
    ]
    return [
        _sse({"type": kind, "sequence_number": seq, **fields}, event=kind)
        for seq, (kind, fields) in enumerate(steps)
    ]


@dataclass(frozen=True)
class _Route:
    required: tuple[str, ...]
    build: Callable[[FakeUpstream, str, dict[str, Any]], dict[str, Any]]
    # Turns the full answer into SSE events; None when the route cannot stream.
    events: Callable[[dict[str, Any], dict[str, Any], Stream], list[bytes]] | None = None


_ROUTES: dict[str, _Route] = {
    "/v1/chat/completions": _Route(("model", "messages"), _chat_completion, _chat_events),
    "/v1/completions": _Route(("model", "prompt"), _text_completion, _completion_events),
    "/v1/embeddings": _Route(("model", "input"), _embeddings),
    "/v1/responses": _Route(("model",), _response, _response_events),
    "/v1/moderations": _Route(("input",), _moderation),
}


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fake_upstream",
        description="Serve a fake OpenAI-compatible API (the local dev stack's upstream).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090, help="0 picks a free port")
    parser.add_argument(
        "--key",
        dest="keys",
        action="append",
        help=f"accepted Bearer secret; repeatable (default: {DEFAULT_KEY})",
    )
    args = parser.parse_args(argv)

    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())

    with FakeUpstream(args.host, args.port, args.keys or (DEFAULT_KEY,)) as fake:
        # The URL alone on stdout so scripts can read it; the chatter goes to stderr.
        print(fake.base_url, flush=True)
        print(
            f"fake upstream: accepting keys {sorted(fake.valid_keys)}; Ctrl-C to stop",
            file=sys.stderr,
            flush=True,
        )
        # A timed wait keeps the main thread responsive to signals.
        while not stopping.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
