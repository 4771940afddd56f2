"""The CLI's side of the admin API: one HTTP call with errors as one line, cursor
pages, and plain-text tables."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

import requests


class Failure(Exception):
    """One line for stderr: an API error or an unreachable URL (never a traceback)."""


class Api:
    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, body: Any = None, **params: Any) -> requests.Response:
        query = {k: v for k, v in params.items() if v is not None}
        try:  # a long read timeout: loading the whole price table takes a while
            r = self.session.request(
                method, self.url + path, json=body, params=query, timeout=(10, 300)
            )
        except requests.RequestException as exc:
            raise Failure(f"cannot reach {self.url} ({type(exc).__name__})") from None
        if r.status_code >= 400:
            try:
                e = r.json()["error"]
                message, code = e["message"], e.get("code") or r.status_code
            except (ValueError, KeyError, TypeError):  # not the API: a proxy, a wrong URL
                raise Failure(f"HTTP {r.status_code} from {self.url}: {r.text[:200]}") from None
            raise Failure(f"{message} ({code})")
        return r

    def __call__(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        return self.call(method, path, body, **params).json()

    def pages(self, path: str, **params: Any) -> Iterator[dict[str, Any]]:
        """Every item of a cursor-paged listing."""
        token = None
        while True:
            page = self("GET", path, page_token=token, **params)
            yield from page["data"]
            if not (token := page.get("next_page_token")):
                return


def seg(*parts: str) -> str:
    """A path from ids, each quoted (a model id may contain ':' or '/')."""
    return "".join("/" + quote(p, safe="") for p in parts)


def given(**kw: Any) -> dict[str, Any]:
    """A body of the options given: one left out means "unchanged" or "the default"."""
    return {k: v for k, v in kw.items() if v is not None}


def cell(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, list):
        return ",".join(map(str, v)) or "-"
    return "-" if v is None else str(v)


def _is_num(v: Any) -> bool:
    """An int, or a decimal string as the API writes money and prices ("0.5", "10")."""
    if isinstance(v, int):
        return not isinstance(v, bool)
    try:  # a canonical decimal only: an id such as "0001" or "1e5" stays text
        return isinstance(v, str) and str(Decimal(v)) == v and Decimal(v).is_finite()
    except InvalidOperation:
        return False


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Padded columns, None shown as '-'; a column of numbers (ints, decimal strings) is
    right-aligned, header included, so digits line up."""
    cells = [[cell(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    right = [
        any(r[i] is not None for r in rows) and all(_is_num(r[i]) for r in rows if r[i] is not None)
        for i in range(len(headers))
    ]
    lines = [
        [c.rjust(w) if n else c.ljust(w) for c, w, n in zip(r, widths, right, strict=True)]
        for r in [list(headers), *cells]
    ]
    return "\n".join("  ".join(line).rstrip() for line in lines)


def fields(d: dict[str, Any], *names: str) -> str:
    return "\n".join(f"{n}: {cell(d.get(n))}" for n in names)
