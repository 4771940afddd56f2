"""CORS for browser apps: a project may list the browser origins allowed to call the
proxy with its keys (``cors_origins``; default none). Pure: origin checks and headers.

A preflight ``OPTIONS`` carries no key, so it cannot name a project: it is answered for
an origin that *some* live project lists, and the real request is then refused (403,
before anything is forwarded) unless the key's own project lists its ``Origin``. A
request without ``Origin`` (a server, a script) is not affected. A proxy key used from
a browser is readable by whoever uses that page: give such an app its own key with a
small budget, rpm and model list (per-key limits), never a lead's key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from functions.core.errors import InvalidRequest

# What the browser may read of an answer besides the CORS-safelisted headers.
EXPOSED = (
    "x-request-id",
    "x-tollgate-call-id",
    "x-tollgate-cost-usd",
    "x-tollgate-budget-remaining-usd",
    "x-tollgate-max-tokens-clamped",
    "x-tollgate-cache",
    "x-tollgate-dry-run",
    "x-tollgate-soft-limit-exceeded",
    "retry-after",
)
MAX_AGE_S = 600
_ORIGIN = re.compile(r"^https?://[a-z0-9.-]+(:[0-9]{1,5})?$")
_HEADER_LIST = re.compile(r"^[A-Za-z0-9-]+(\s*,\s*[A-Za-z0-9-]+)*$")


def check_origins(value: object, name: str = "cors_origins") -> list[str]:
    """A project's allowed origins, as the browser sends them: scheme, host and port,
    lower case, no path, no wildcard (a wildcard would hand the keys to every site)."""
    if not isinstance(value, list) or len(value) > 50:
        raise InvalidRequest(f"'{name}' must be a list of at most 50 origins.", param=name)
    out = []
    for v in value:
        if not isinstance(v, str) or not _ORIGIN.match(v):
            raise InvalidRequest(
                f"'{name}' takes origins like \"https://app.example.com\" "
                "(lower case scheme and host, optional port, no path, no "
                f"wildcard); not {str(v)[:80]!r}.",
                param=name,
            )
        out.append(v)
    return sorted(set(out))


def allowed(origin: str | None, origins: Iterable[str]) -> bool:
    return origin is not None and origin in set(origins)


def response_headers(origin: str) -> dict[str, str]:
    """On the answer to a request from an allowed origin."""
    return {
        "Access-Control-Allow-Origin": origin,
        "Vary": "Origin",
        "Access-Control-Expose-Headers": ", ".join(EXPOSED),
    }


def preflight_headers(origin: str, requested: str | None) -> dict[str, str]:
    """On the answer to a preflight from an origin some project lists: the headers the
    browser asked for (the openai SDK sends its own x-stainless-* ones) when they are a
    plain list of header names."""
    headers = {
        **response_headers(origin),
        "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
        "Access-Control-Max-Age": str(MAX_AGE_S),
    }
    asked = (requested or "").strip()
    headers["Access-Control-Allow-Headers"] = (
        asked if asked and _HEADER_LIST.match(asked) else "authorization, content-type"
    )
    return headers
