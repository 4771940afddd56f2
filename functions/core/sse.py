"""Server-sent events as OpenAI streams them, and what a stream tells us to bill.
Pure: bytes in, events and meter readings out.

Events can split across network reads and lines may end in ``\\r\\n``, so bytes are
buffered until a blank line ends an event; complete events are passed on as the
exact bytes that arrived, so the client sees upstream's stream byte for byte
(except the usage chunk the proxy asked for on the client's behalf).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
# SSE ends lines at CR, LF or CRLF only: str.splitlines() would also split at U+2028,
# U+2029, U+0085 (and more), which JSON strings may hold unescaped.
_LINE_END = re.compile(r"\r\n|\r|\n")
# Responses API terminal events carry the whole response object, usage included.
RESPONSES_TERMINAL = ("response.completed", "response.incomplete", "response.failed")


class EventBuffer:
    """Split a byte stream into complete raw events (each with its blank line)."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        self._buf += chunk
        events: list[bytes] = []
        while True:
            m = _EVENT_END.search(self._buf)
            if m is None:
                return events
            events.append(self._buf[: m.end()])
            self._buf = self._buf[m.end() :]

    @property
    def pending(self) -> bytes:
        return self._buf


@dataclass(frozen=True)
class Event:
    event: str | None
    data: str

    def json(self) -> Any:
        try:
            return json.loads(self.data)
        except ValueError:
            return None


def parse(raw: bytes) -> Event:
    name: str | None = None
    data: list[str] = []
    for line in _LINE_END.split(raw.decode("utf-8", "replace")):
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    return Event(name, "\n".join(data))


def error_event(message: str, code: str) -> bytes:
    """The last event of a stream that failed after its first byte: the SDK raises an
    ``APIError`` for an event whose data has an ``error`` key."""
    body = {"error": {"message": message, "type": "api_error", "param": None, "code": code}}
    return b"event: error\ndata: " + json.dumps(body).encode() + b"\n\n"


@dataclass
class StreamMeter:
    """Watches a stream's events for what billing needs: the usage, the model and tier
    upstream reports, the response id, and the text seen so far (to estimate the
    output of a stream that is cut before its usage arrives)."""

    route: str  # chat | completions | responses
    usage: dict[str, Any] | None = None
    model: str | None = None
    service_tier: str | None = None
    response_id: str | None = None
    finished: bool = False  # [DONE] or a terminal Responses event was seen
    text: list[str] = field(default_factory=list)

    def observe(self, ev: Event) -> bool:
        """Record what ``ev`` says; return True if it is the usage-only chat chunk (the
        one the proxy may have to hide from a client that did not ask for usage)."""
        if ev.data.strip() == "[DONE]":
            self.finished = True
            return False
        obj = ev.json()
        if not isinstance(obj, dict):
            return False
        if self.route == "responses":
            self._responses(obj)
            return False
        self._remember(obj)
        for choice in obj.get("choices") or ():
            if isinstance(choice, dict):
                piece = (
                    (choice.get("delta") or {}).get("content")
                    if self.route == "chat"
                    else choice.get("text")
                )
                if isinstance(piece, str):
                    self.text.append(piece)
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
            return obj.get("choices") == []
        return False

    def _remember(self, obj: dict[str, Any]) -> None:
        if isinstance(obj.get("model"), str):
            self.model = obj["model"]
        if isinstance(obj.get("service_tier"), str):
            self.service_tier = obj["service_tier"]

    def _responses(self, obj: dict[str, Any]) -> None:
        kind = obj.get("type")
        if kind == "response.output_text.delta" and isinstance(obj.get("delta"), str):
            self.text.append(obj["delta"])
        elif kind == "response.reasoning_summary_text.delta" and isinstance(obj.get("delta"), str):
            self.text.append(obj["delta"])
        resp = obj.get("response")
        if isinstance(resp, dict):
            self._remember(resp)
            if isinstance(resp.get("id"), str):
                self.response_id = resp["id"]
            if kind in RESPONSES_TERMINAL:
                self.finished = True
                if isinstance(resp.get("usage"), dict):
                    self.usage = resp["usage"]

    @property
    def seen_text(self) -> str:
        return "".join(self.text)
