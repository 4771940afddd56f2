"""A fake of OpenAI's organisation Usage and Costs APIs, served over loopback.

Shapes follow OpenAI's API reference (``GET /v1/organization/usage/completions``,
``/usage/embeddings``, ``/costs``): a ``page`` of ``bucket`` objects, each with
``results`` of ``organization.usage.completions.result`` (or ``.embeddings.result``,
``organization.costs.result``); ``group_by`` decides which of ``project_id``,
``api_key_id``, ``model`` (costs: ``project_id``, ``line_item``) a result carries, the
others are null; ``limit`` buckets per page, ``has_more`` and an opaque ``next_page``
that the next call passes as ``page``. Costs come back as a float ``amount.value`` in
USD, as OpenAI sends them.

Tests record calls with ``add_call`` (usage and its cost line items) and read what the
client asked in ``requests_seen``. ``max_page`` caps the buckets per page below what a
client asks, so paging is exercised over a few days.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

ADMIN_KEY = "sk-admin-fake-usage-0001"
DAY = 86400
USAGE_GROUPS = ("project_id", "user_id", "api_key_id", "model", "batch", "service_tier")
COST_GROUPS = ("project_id", "line_item")


@dataclass
class Call:
    ts: int
    project_id: str
    api_key_id: str
    model: str
    endpoint: str  # completions | embeddings
    input_tokens: int
    cached_tokens: int
    output_tokens: int


@dataclass
class Cost:
    ts: int
    project_id: str
    line_item: str
    usd: Decimal


def _usd(per_mtok: str, tokens: int) -> Decimal:
    return Decimal(per_mtok) * tokens / 1_000_000


class FakeUsageApi:
    def __init__(self, admin_keys: Iterable[str] = (ADMIN_KEY,)) -> None:
        self.admin_keys = set(admin_keys)
        self.calls: list[Call] = []
        self.costs: list[Cost] = []
        self.requests_seen: list[tuple[str, dict[str, list[str]]]] = []
        self.max_page = 31
        self.lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}/v1"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset(self) -> None:
        with self.lock:
            self.calls.clear()
            self.costs.clear()
            self.requests_seen.clear()
            self.max_page = 31
            self.admin_keys = {ADMIN_KEY}

    def add_call(
        self,
        ts: int,
        project_id: str,
        api_key_id: str,
        model: str,
        *,
        input_tokens: int,
        cached_tokens: int = 0,
        output_tokens: int = 0,
        prices: tuple[str, str | None, str] = ("0.15", "0.075", "0.60"),
        endpoint: str = "completions",
        times: int = 1,
    ) -> None:
        """``times`` calls at ``ts``, and their cost line items at ``prices`` (USD per
        1M tokens: input, cached input, output), as OpenAI would bill them."""
        inp, cached, out = prices
        with self.lock:
            for _ in range(times):
                self.calls.append(
                    Call(
                        ts,
                        project_id,
                        api_key_id,
                        model,
                        endpoint,
                        input_tokens,
                        cached_tokens,
                        output_tokens,
                    )
                )
                items = [
                    ("input", _usd(inp, input_tokens - cached_tokens)),
                    ("cached input", _usd(cached or inp, cached_tokens)),
                    ("output", _usd(out, output_tokens)),
                ]
                for kind, usd in items:
                    if usd:
                        self.costs.append(Cost(ts, project_id, f"{model}, {kind}", usd))

    # --- answering ---------------------------------------------------------------------

    def _answer(self, path: str, q: dict[str, list[str]], auth: str) -> tuple[int, Any]:
        if auth.removeprefix("Bearer ") not in self.admin_keys:
            return 401, _error(
                "Incorrect API key provided. You must be an organization "
                "owner to use the Admin API.",
                "invalid_api_key",
            )
        kinds = {
            "/v1/organization/usage/completions": "completions",
            "/v1/organization/usage/embeddings": "embeddings",
            "/v1/organization/costs": "costs",
        }
        kind = kinds.get(path)
        if kind is None:
            return 404, _error(f"Unknown path {path}", "unknown_url")
        try:
            start = int(q["start_time"][0])
            end = int(q.get("end_time", [str(int(time.time()))])[0])
            limit = int(q.get("limit", ["7"])[0])
        except (KeyError, ValueError):
            return 400, _error("start_time is required (unix seconds).", "invalid_value")
        if q.get("bucket_width", ["1d"])[0] != "1d":
            return 400, _error("this fake only knows bucket_width=1d", "invalid_value")
        groups = q.get("group_by", []) + q.get("group_by[]", [])
        allowed = COST_GROUPS if kind == "costs" else USAGE_GROUPS
        if any(g not in allowed for g in groups) or not 1 <= limit <= (
            180 if kind == "costs" else 31
        ):
            return 400, _error("invalid group_by or limit", "invalid_value")
        first = start - start % DAY
        if "page" in q:
            first = int(base64.b64decode(q["page"][0]).decode())
        starts = list(range(first, end, DAY))
        page, rest = starts[: min(limit, self.max_page)], starts[min(limit, self.max_page) :]
        data = [self._bucket(kind, s, min(s + DAY, end), groups) for s in page]
        return 200, {
            "object": "page",
            "data": data,
            "has_more": bool(rest),
            "next_page": base64.b64encode(str(rest[0]).encode()).decode() if rest else None,
        }

    def _bucket(self, kind: str, s: int, e: int, groups: list[str]) -> dict[str, Any]:
        with self.lock:
            calls = [c for c in self.calls if s <= c.ts < e and c.endpoint == kind]
            costs = [c for c in self.costs if s <= c.ts < e]
        results: dict[tuple[Any, ...], dict[str, Any]] = {}
        if kind == "costs":
            sums: dict[tuple[Any, ...], Decimal] = {}
            for c in costs:
                k = tuple(getattr(c, g) for g in groups)
                sums[k] = sums.get(k, Decimal(0)) + c.usd
            for k, usd in sums.items():
                r = {
                    "object": "organization.costs.result",
                    # a JSON float, as OpenAI answers
                    "amount": {"value": float(usd), "currency": "usd"},
                    "line_item": None,
                    "project_id": None,
                }
                r.update(zip(groups, k, strict=True))
                results[k] = r
        else:
            for c in calls:
                k = tuple(getattr(c, g, None) for g in groups)
                r = results.setdefault(
                    k,
                    {
                        "object": f"organization.usage.{kind}.result",
                        "input_tokens": 0,
                        "num_model_requests": 0,
                        "project_id": None,
                        "user_id": None,
                        "api_key_id": None,
                        "model": None,
                        "batch": None,
                        **(
                            {
                                "output_tokens": 0,
                                "input_cached_tokens": 0,
                                "input_audio_tokens": 0,
                                "output_audio_tokens": 0,
                                "service_tier": None,
                            }
                            if kind == "completions"
                            else {}
                        ),
                        **dict(zip(groups, k, strict=True)),
                    },
                )
                r["input_tokens"] += c.input_tokens
                r["num_model_requests"] += 1
                if kind == "completions":
                    r["output_tokens"] += c.output_tokens
                    r["input_cached_tokens"] += c.cached_tokens
        return {
            "object": "bucket",
            "start_time": s,
            "end_time": e,
            "results": list(results.values()),
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                u = urlsplit(self.path)
                q = parse_qs(u.query)
                with fake.lock:
                    fake.requests_seen.append((u.path, q))
                status, body = fake._answer(u.path, q, self.headers.get("Authorization", ""))
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


def _error(message: str, code: str) -> dict[str, Any]:
    return {
        "error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    }
