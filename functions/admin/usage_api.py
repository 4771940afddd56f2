"""The HTTP client of OpenAI's organisation Usage and Costs APIs, and nothing else.

``GET /organization/usage/completions``, ``/organization/usage/embeddings`` and
``/organization/costs`` answer ``{"object": "page", "data": [bucket...], "has_more",
"next_page"}``; each bucket is ``{"object": "bucket", "start_time", "end_time",
"results": [...]}``. A page holds at most ``limit`` buckets (31 for ``1d``), and the
cursor ``page`` (the previous answer's ``next_page``) asks for the rest. These calls
need an organisation *admin* key; it is sent here only, never to the proxy's upstream.

Every failure becomes an OpenAI-shaped error naming the endpoint and OpenAI's own
reason, never the key (``errors.redact`` scrubs anything key-like as well).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import requests

from functions.core.errors import (
    AdminKeyRefused,
    UpstreamBadResponse,
    UpstreamUnavailable,
    redact,
)

TIMEOUT_S = (5.0, 60.0)
MAX_PAGES = 200  # a runaway cursor must end: 200 pages of 1d buckets is years
COMPLETIONS, EMBEDDINGS, COSTS = ("usage/completions", "usage/embeddings", "costs")


@dataclass(frozen=True)
class Bucket:
    start_time: int
    end_time: int
    results: tuple[dict[str, Any], ...]


class UsageApi:
    def __init__(
        self,
        admin_key: str,
        base_url: str = "https://api.openai.com/v1",
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._key = admin_key
        self.session = session or requests.Session()
        self.session.trust_env = False  # no proxy from the environment sees the admin key

    def buckets(
        self, endpoint: str, start: int, end: int, group_by: Sequence[str] = (), limit: int = 31
    ) -> Iterator[Bucket]:
        """Every 1-day bucket of ``endpoint`` in [start, end), following ``next_page``."""
        params: dict[str, Any] = {
            "start_time": start,
            "end_time": end,
            "bucket_width": "1d",
            "limit": limit,
        }
        if group_by:
            params["group_by"] = list(group_by)  # repeated: group_by=a&group_by=b
        for _ in range(MAX_PAGES):
            page = self._get(endpoint, params)
            for b in page.get("data") or ():
                yield _bucket(endpoint, b)
            cursor = page.get("next_page")
            if not page.get("has_more") or not cursor:
                return
            params["page"] = cursor
        raise UpstreamBadResponse(
            f"OpenAI's {endpoint} API kept answering has_more after {MAX_PAGES} pages."
        )

    def check(self) -> None:
        """One cheap call (one bucket of costs): raises AdminKeyRefused if the key cannot
        read the organisation's usage."""
        now = int(time.time())
        self._get(COSTS, {"start_time": now - 86400, "bucket_width": "1d", "limit": 1})

    def _get(self, endpoint: str, params: dict[str, Any]) -> dict[str, Any]:
        url = f"{self.base_url}/organization/{endpoint}"
        try:
            r = self.session.get(
                url,
                params=params,
                timeout=TIMEOUT_S,
                allow_redirects=False,
                headers={"Authorization": f"Bearer {self._key}"},
            )
        except requests.RequestException as e:
            raise UpstreamUnavailable(
                f"OpenAI's {endpoint} API could not be reached ({type(e).__name__})."
            ) from None
        if r.status_code == 200:
            try:
                page = r.json()
            except ValueError:
                page = None
            if not isinstance(page, dict) or not isinstance(page.get("data", []), list):
                raise UpstreamBadResponse(
                    f"OpenAI's {endpoint} API answered 200 without a page of buckets."
                )
            return page
        reason = _reason(r)
        if r.status_code in (401, 403):
            raise AdminKeyRefused(
                f"OpenAI refused the admin key on {endpoint} "
                f"({r.status_code}{reason}); it needs an organisation admin "
                "key with read access to usage.",
                param="secret",
            )
        raise UpstreamBadResponse(f"OpenAI's {endpoint} API answered {r.status_code}{reason}.")


def _reason(r: requests.Response) -> str:
    try:
        err = json.loads(r.content).get("error") or {}
        return redact(f": {err.get('code') or err.get('type')}: {err.get('message')}")[:300]
    except (ValueError, AttributeError):
        return ""


def _bucket(endpoint: str, b: Any) -> Bucket:
    try:
        return Bucket(
            int(b["start_time"]),
            int(b["end_time"]),
            tuple(r for r in b.get("results") or () if isinstance(r, dict)),
        )
    except (KeyError, TypeError, ValueError):
        raise UpstreamBadResponse(f"OpenAI's {endpoint} API answered a malformed bucket.") from None
