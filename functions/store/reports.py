"""Usage reports for the admin API and the log page: aggregates (``GET /usage``), the
records (``GET /queries``, JSON or CSV) and the audit trail (``GET /audit``).

Aggregates are Firestore **aggregation queries over ``usage`` records**: exact for any
time bounds and no extra write on the proxy's hot path (one read per 1000 index entries
matched). Firestore has no GROUP BY, so for ``group_by`` ONE aggregation query (count +
four sums) runs per candidate group (``report_groups``: users, projects, models, key
names, tags or days), a page at a time on a small thread pool; groups without calls are
left out. The filters and the query they make are in ``report_filters``; JSON and CSV
output in ``report_csv`` (re-exported here).

Pages are cursors, never offsets: ``page_token`` is urlsafe base64 of JSON naming the
last group (or the last record's (ts, id)) returned, so a user or record added between
two pages cannot shift the next. A full page looks ahead for one more group with calls,
so a token never leads to an empty page.

One aggregation over several fields only sees documents holding ALL of them (emulator,
verified; null counts as held), so every usage record must carry ``input_tokens``,
``cached_tokens``, ``output_tokens`` and ``cost_nano``: ``ledger.usage_record`` always
does, and a test guards it.

Money is integer nano-dollars shown with ``pricing.format_usd``; ``avg_cost_usd`` is
cost / calls in integers, rounded half up (costs are never negative).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from itertools import islice
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.aggregation import AggregationQuery

from functions.core.errors import InvalidRequest
from functions.core.pricing import format_usd
from functions.core.report_csv import CSV_COLUMNS, record_json, to_csv
from functions.store import indexes
from functions.store.report_filters import (
    UNTAGGED,
    Filters,
    filter_value,
    parse_filters,
    tag_value,
    usage_query,
)
from functions.store.report_groups import GROUP_BY, MAX_DAYS, candidates, day_window, narrow

__all__ = [
    "CSV_COLUMNS",
    "GROUP_BY",
    "MAX_DAYS",
    "UNTAGGED",
    "Filters",
    "aggregate",
    "audit_list",
    "day_window",
    "filter_value",
    "parse_filters",
    "parse_limit",
    "record_json",
    "records",
    "tag_value",
    "to_csv",
    "totals",
]

MAX_GROUPS_PER_PAGE = 200
MAX_RECORDS_PER_PAGE = 1000
WORKERS = 8  # concurrent aggregation queries; enough to hide latency, gentle on quotas
SUMS = ("input_tokens", "cached_tokens", "output_tokens", "cost_nano")


def parse_limit(raw: str | None, *, default: int, maximum: int) -> int:
    """A ``limit`` query-string argument, 1..maximum."""
    if not raw:
        return default
    n = int(raw) if raw.strip().isascii() and raw.strip().isdigit() else 0
    _check_limit(n, maximum)
    return n


def _check_limit(n: int, maximum: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= maximum:
        raise InvalidRequest(f"'limit' must be an integer from 1 to {maximum}.", param="limit")


# --- page tokens -------------------------------------------------------------------


def _encode(kind: str, value: Any) -> str:
    raw = json.dumps({"k": kind, "v": value}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(token: str, kind: str) -> Any:
    """The value inside a token of this kind, or a 400 (a token from another listing,
    grouping or a garbled copy-paste must not silently restart at page one)."""
    try:
        doc = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if isinstance(doc, dict) and doc.get("k") == kind and "v" in doc:
            return doc["v"]
    except ValueError:  # bad base64, UTF-8 or JSON
        pass
    raise InvalidRequest("'page_token' is not a token from this listing.", param="page_token")


# --- aggregates ----------------------------------------------------------------------


def totals(db: firestore.Client, f: Filters) -> dict[str, int]:
    """``{"calls", "input_tokens", "cached_tokens", "output_tokens", "cost_nano"}`` of
    the records matching ``f``, as integers."""
    agg = AggregationQuery(usage_query(db, f)).count(alias="calls")
    for field in SUMS:
        agg = agg.sum(field, alias=field)
    out = {"calls": 0, **dict.fromkeys(SUMS, 0)}
    for result in agg.get():
        for r in result:
            # Empty matches come back as 0.0, and a sum past int64 would be a double
            # (not reachable: int64 nano-dollars is $9.2 billion).
            out[r.alias] = int(round(r.value or 0))
    return out


def total_row(group: str | None, t: Mapping[str, int]) -> dict[str, Any]:
    """One row of an aggregate: the totals of a group (or of everything), money in USD."""
    calls, cost = t["calls"], t["cost_nano"]
    avg = (2 * cost + calls) // (2 * calls) if calls else 0  # half up, in integers
    return {
        "group": group,
        "calls": calls,
        "input_tokens": t["input_tokens"],
        "cached_tokens": t["cached_tokens"],
        "output_tokens": t["output_tokens"],
        "cost_usd": format_usd(cost),
        "avg_cost_usd": format_usd(avg),
    }


def _todo(
    db: firestore.Client, f: Filters, group_by: str, page_token: str | None, now: datetime | None
) -> tuple[Filters, Iterator[str | None]]:
    """The filters (day: with both bounds) and the groups left, from the page token."""
    last: str | None = None
    if page_token:
        value = _decode(page_token, "g:" + group_by)
        if not isinstance(value, str):  # the untagged group is last: never in a token
            raise InvalidRequest(
                "'page_token' is not a token from this listing.", param="page_token"
            )
        last = value
    if group_by == "day":  # newest first: continue with older days
        f, days = day_window(f, now or datetime.now(UTC))
        return f, iter([d for d in days if last is None or d < last])
    return f, candidates(db, f, group_by, last)


def aggregate(
    db: firestore.Client,
    f: Filters,
    group_by: str | None,
    *,
    limit: int = 50,
    page_token: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """``{"data": [row], "next_page_token"}``; without ``group_by`` one total row (zeros
    when nothing matched) and no next page. ``group`` is null for the untagged calls of
    ``group_by="tag"``."""
    if not group_by:  # None, or an empty ?group_by=
        return {"data": [total_row(None, totals(db, f))], "next_page_token": None}
    if group_by not in GROUP_BY:
        raise InvalidRequest(f"'group_by' must be one of {', '.join(GROUP_BY)}.", param="group_by")
    _check_limit(limit, MAX_GROUPS_PER_PAGE)
    f, todo = _todo(db, f, group_by, page_token, now)
    rows: list[dict[str, Any]] = []
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        while len(rows) <= limit:  # one group past the page: is there a next page?
            chunk = list(islice(todo, max(limit - len(rows), WORKERS)))
            if not chunk:
                break
            sums = pool.map(lambda g: totals(db, narrow(f, group_by, g)), chunk)
            rows += [total_row(g, t) for g, t in zip(chunk, sums, strict=True) if t["calls"]]
    more = len(rows) > limit
    rows = rows[:limit]
    token = _encode("g:" + group_by, rows[-1]["group"]) if more else None
    return {"data": rows, "next_page_token": token}


# --- records and audit ------------------------------------------------------------


def _page_by_ts(
    db: firestore.Client, q: firestore.Query, collection: str, limit: int, page_token: str | None
) -> tuple[list[Any], str | None]:
    """Newest first, cursor after (ts, id) of the last item of the previous page: items
    added since (newer) are before the cursor and cannot shift this page."""
    if page_token:
        cur = _decode(page_token, collection)
        try:
            ts, doc_id = datetime.fromisoformat(cur[0]), str(cur[1])
            if not doc_id or "/" in doc_id or len(doc_id) > 256:
                raise ValueError(doc_id)
            q = q.start_after({"ts": ts, indexes.NAME: db.collection(collection).document(doc_id)})
        except (TypeError, ValueError, IndexError, KeyError):
            raise InvalidRequest(
                "'page_token' is not a token from this listing.", param="page_token"
            ) from None
    snaps = list(q.stream())  # limit + 1: the extra one only says whether more exist
    if len(snaps) <= limit:
        return snaps, None
    snaps = snaps[:limit]
    last = snaps[-1]
    ts = last.get("ts").astimezone(UTC).isoformat(timespec="microseconds")
    return snaps, _encode(collection, [ts, last.id])


def records(
    db: firestore.Client, f: Filters, *, limit: int = 100, page_token: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """Usage records matching ``f``, newest first (ts, then id, descending)."""
    _check_limit(limit, MAX_RECORDS_PER_PAGE)
    q = usage_query(db, f, tie_break=True, limit=limit + 1)
    snaps, token = _page_by_ts(db, q, "usage", limit, page_token)
    return [{"call_id": s.id, **(s.to_dict() or {})} for s in snaps], token


def audit_list(
    db: firestore.Client, *, limit: int = 50, page_token: str | None = None
) -> dict[str, Any]:
    """``{"data": [{"id", "ts", "actor", "action", "target", "details"}], "next_page_token"}``
    newest first, JSON-ready."""
    _check_limit(limit, MAX_RECORDS_PER_PAGE)
    q = indexes.query(
        db, "audit", order=[("ts", indexes.DESC), (indexes.NAME, indexes.DESC)], limit=limit + 1
    )
    snaps, token = _page_by_ts(db, q, "audit", limit, page_token)
    return {
        "data": [record_json({"id": s.id, **(s.to_dict() or {})}) for s in snaps],
        "next_page_token": token,
    }
