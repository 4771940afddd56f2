"""Usage reports for the admin API: aggregates (``GET /usage``), the records
(``GET /queries``, JSON or CSV) and the audit trail (``GET /audit``).

Aggregates are Firestore **aggregation queries over ``usage`` records**: exact for any
time bounds and no extra write on the proxy's hot path (one read per 1000 index entries
matched). Firestore has no GROUP BY, so for ``group_by`` the candidate groups come from
configuration and ONE aggregation query (count + four sums) runs per candidate, a page
at a time on a small thread pool; groups without calls are left out. Candidates:
``user``: every user, or with ``project`` everyone who holds or held a key in it
(``members`` ∪ ``keys.user``: keys are revoked, never deleted, so a removed member's
usage still shows); ``project``: every project, or with ``user`` those they hold or
held keys in; ``model``: every model; ``day``: every UTC day in [after, before), newest
first, at most 366 (``before`` defaults to now; without ``after``, the 30 UTC days
ending with the day of ``before``). A filter on the grouped field leaves one candidate.

Pages are cursors, never offsets: ``page_token`` is urlsafe base64 of JSON naming the
last group (or the last record's (ts, id)) returned, so a user or record added between
two pages cannot shift the next. A full page looks ahead for one more group with calls,
so a token never leads to an empty page.

Every usage query orders by ``ts`` DESCENDING, aggregated or not, so one declared index
per combination of equality filters serves both (the emulator accepts and honours an
order_by in an aggregation query). One aggregation over several fields only sees
documents holding ALL of them (emulator, verified; null counts as held), so every usage
record must carry ``input_tokens``, ``cached_tokens``, ``output_tokens`` and
``cost_nano``: ``ledger.usage_record`` always does, and a test guards it.

Money is integer nano-dollars shown with ``pricing.format_usd``; ``avg_cost_usd`` is
cost / calls in integers, rounded half up (costs are never negative).
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.aggregation import AggregationQuery

from functions import indexes, validate
from functions.errors import InvalidRequest
from functions.pricing import format_usd

GROUP_BY = ("user", "project", "model", "day")
MAX_DAYS = 366
DEFAULT_DAYS = 30
MAX_GROUPS_PER_PAGE = 200
MAX_RECORDS_PER_PAGE = 1000
WORKERS = 8  # concurrent aggregation queries; enough to hide latency, gentle on quotas
SUMS = ("input_tokens", "cached_tokens", "output_tokens", "cost_nano")
CSV_COLUMNS = (
    "ts", "call_id", "project", "user", "key_name", "model", "upstream_model", "route",
    "status", "http_status", "input_tokens", "cached_tokens", "cache_write_tokens",
    "output_tokens", "reasoning_tokens", "cost_usd", "estimate_usd", "latency_ms",
    "streamed", "cached", "estimated", "tag", "request_id")
_MONEY_COLUMNS = frozenset({"cost_usd", "estimate_usd"})
# A cell a spreadsheet would run as a formula: one that starts with = + - @ (spaces
# before them included) or a tab/CR, at the start of the value *or after any character
# a spreadsheet may split cells on* (, ; | tab, line breaks): "a;=1+2" is two cells,
# the second a formula, in a sheet that splits on ";".
_FORMULA_CELL = re.compile(r"(^|[,;|\t\r\n])(\s*[=+\-@]|[\t\r])")


@dataclass(frozen=True)
class Filters:
    user: str | None = None
    project: str | None = None
    model: str | None = None
    after: datetime | None = None  # inclusive: ts >= after
    before: datetime | None = None  # exclusive: ts < before


def parse_filters(args: Mapping[str, str]) -> Filters:
    """Filters from query-string arguments; times need a zone (a 400 names the param)."""
    times: dict[str, datetime | None] = {}
    for name in ("after", "before"):
        raw = args.get(name)
        times[name] = validate.timestamp(raw, name).astimezone(UTC) if raw else None
    after, before = times["after"], times["before"]
    if after is not None and before is not None and after >= before:
        raise InvalidRequest("'after' must be earlier than 'before'.", param="after")
    return Filters(user=filter_value(args, "user"), project=filter_value(args, "project"),
                   model=filter_value(args, "model"), after=after, before=before)


def filter_value(args: Mapping[str, str], name: str) -> str | None:
    """An id to filter on: ids are printable ASCII of at most 256 characters, and
    Firestore refuses query values over 1500 bytes, so anything else is a 400."""
    v = args.get(name) or None
    if v is not None and not validate.is_name(v):
        raise InvalidRequest(f"'{name}' is not an id.", param=name)
    return v


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

def _usage_query(db: firestore.Client, f: Filters, *, tie_break: bool = False,
                 limit: int | None = None) -> firestore.Query:
    equals = {k: v for k in ("user", "project", "model") if (v := getattr(f, k)) is not None}
    ranges = ([("ts", ">=", f.after)] if f.after else []) + (
        [("ts", "<", f.before)] if f.before else [])
    order = [("ts", indexes.DESC)] + ([(indexes.NAME, indexes.DESC)] if tie_break else [])
    return indexes.query(db, "usage", equals=equals, ranges=ranges, order=order, limit=limit)


def _totals(db: firestore.Client, f: Filters) -> dict[str, int]:
    agg = AggregationQuery(_usage_query(db, f)).count(alias="calls")
    for field in SUMS:
        agg = agg.sum(field, alias=field)
    out = {"calls": 0, **dict.fromkeys(SUMS, 0)}
    for result in agg.get():
        for r in result:
            # Empty matches come back as 0.0, and a sum past int64 would be a double
            # (not reachable: int64 nano-dollars is $9.2 billion).
            out[r.alias] = int(round(r.value or 0))
    return out


def _row(group: str | None, t: Mapping[str, int]) -> dict[str, Any]:
    calls, cost = t["calls"], t["cost_nano"]
    avg = (2 * cost + calls) // (2 * calls) if calls else 0  # half up, in integers
    return {"group": group, "calls": calls, "input_tokens": t["input_tokens"],
            "cached_tokens": t["cached_tokens"], "output_tokens": t["output_tokens"],
            "cost_usd": format_usd(cost), "avg_cost_usd": format_usd(avg)}


def _ids(db: firestore.Client, collection: str) -> set[str]:
    return {s.id for s in indexes.query(db, collection).select([]).stream()}


def _related(db: firestore.Client, field: str, value: str, want: str) -> set[str]:
    """``want`` of members and keys whose ``field`` is ``value`` (keys outlive members)."""
    return {str(s.get(want)) for coll in ("members", "keys")
            for s in indexes.query(db, coll, equals={field: value}).select([want]).stream()}


def _day_window(f: Filters, now: datetime) -> tuple[Filters, list[str]]:
    before = f.before or now
    last = (before - timedelta(microseconds=1)).date()
    after = f.after or datetime.combine(last - timedelta(days=DEFAULT_DAYS - 1), time(),
                                        tzinfo=UTC)
    if after >= before:
        return replace(f, after=after, before=before), []
    n = (last - after.date()).days + 1
    if n > MAX_DAYS:
        raise InvalidRequest(f"group_by=day covers at most {MAX_DAYS} days, this range has "
                             f"{n}: narrow 'after'/'before'.", param="after")
    return replace(f, after=after, before=before), [
        (last - timedelta(days=i)).isoformat() for i in range(n)]


def _narrow(f: Filters, group_by: str, group: str) -> Filters:
    if group_by != "day":
        one: dict[str, Any] = {group_by: group}
        return replace(f, **one)
    start = datetime.combine(date.fromisoformat(group), time(), tzinfo=UTC)
    assert f.after is not None and f.before is not None  # set by _day_window
    return replace(f, after=max(f.after, start), before=min(f.before, start + timedelta(days=1)))


def _candidates(db: firestore.Client, f: Filters, group_by: str) -> list[str]:
    if getattr(f, group_by) is not None:
        return [getattr(f, group_by)]
    if group_by == "user":
        ids = _related(db, "project", f.project, "user") if f.project else _ids(db, "users")
    elif group_by == "project":
        ids = _related(db, "user", f.user, "project") if f.user else _ids(db, "projects")
    else:
        ids = _ids(db, "models")
    return sorted(ids)


def aggregate(db: firestore.Client, f: Filters, group_by: str | None, *, limit: int = 50,
              page_token: str | None = None, now: datetime | None = None) -> dict[str, Any]:
    """``{"data": [row], "next_page_token"}``; without ``group_by`` one total row (zeros
    when nothing matched) and no next page."""
    if not group_by:  # None, or an empty ?group_by=
        return {"data": [_row(None, _totals(db, f))], "next_page_token": None}
    if group_by not in GROUP_BY:
        raise InvalidRequest(f"'group_by' must be one of {', '.join(GROUP_BY)}.",
                             param="group_by")
    _check_limit(limit, MAX_GROUPS_PER_PAGE)
    if group_by == "day":
        f, todo = _day_window(f, now or datetime.now(UTC))
        if page_token:  # newest first: continue with older days
            last = str(_decode(page_token, "g:day"))
            todo = [d for d in todo if d < last]
    else:
        todo = _candidates(db, f, group_by)
        if page_token:
            last = str(_decode(page_token, "g:" + group_by))
            todo = [g for g in todo if g > last]

    rows: list[dict[str, Any]] = []
    done = 0
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        while done < len(todo) and len(rows) <= limit:
            chunk = todo[done:done + max(limit - len(rows), WORKERS)]
            done += len(chunk)
            totals = pool.map(lambda g: _totals(db, _narrow(f, group_by, g)), chunk)
            rows += [_row(g, t) for g, t in zip(chunk, totals, strict=True) if t["calls"]]
    more = len(rows) > limit  # the loop looked ahead for one group past the page
    rows = rows[:limit]
    token = _encode("g:" + group_by, rows[-1]["group"]) if more else None
    return {"data": rows, "next_page_token": token}


# --- records and audit ------------------------------------------------------------

def _page_by_ts(db: firestore.Client, q: firestore.Query, collection: str, limit: int,
                page_token: str | None) -> tuple[list[Any], str | None]:
    """Newest first, cursor after (ts, id) of the last item of the previous page: items
    added since (newer) are before the cursor and cannot shift this page."""
    if page_token:
        cur = _decode(page_token, collection)
        try:
            ts, doc_id = datetime.fromisoformat(cur[0]), str(cur[1])
            if not doc_id or "/" in doc_id or len(doc_id) > 256:
                raise ValueError(doc_id)
            q = q.start_after({"ts": ts,
                               indexes.NAME: db.collection(collection).document(doc_id)})
        except (TypeError, ValueError, IndexError, KeyError):
            raise InvalidRequest("'page_token' is not a token from this listing.",
                                 param="page_token") from None
    snaps = list(q.stream())  # limit + 1: the extra one only says whether more exist
    if len(snaps) <= limit:
        return snaps, None
    snaps = snaps[:limit]
    last = snaps[-1]
    ts = last.get("ts").astimezone(UTC).isoformat(timespec="microseconds")
    return snaps, _encode(collection, [ts, last.id])


def records(db: firestore.Client, f: Filters, *, limit: int = 100,
            page_token: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
    """Usage records matching ``f``, newest first (ts, then id, descending)."""
    _check_limit(limit, MAX_RECORDS_PER_PAGE)
    q = _usage_query(db, f, tie_break=True, limit=limit + 1)
    snaps, token = _page_by_ts(db, q, "usage", limit, page_token)
    return [{"call_id": s.id, **(s.to_dict() or {})} for s in snaps], token


def audit_list(db: firestore.Client, *, limit: int = 50,
               page_token: str | None = None) -> dict[str, Any]:
    """``{"data": [{"id", "ts", "actor", "action", "target", "details"}], "next_page_token"}``
    newest first, JSON-ready."""
    _check_limit(limit, MAX_RECORDS_PER_PAGE)
    q = indexes.query(db, "audit", order=[("ts", indexes.DESC), (indexes.NAME, indexes.DESC)],
                      limit=limit + 1)
    snaps, token = _page_by_ts(db, q, "audit", limit, page_token)
    return {"data": [record_json({"id": s.id, **(s.to_dict() or {})}) for s in snaps],
            "next_page_token": token}


# --- output ----------------------------------------------------------------------

def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def record_json(rec: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-ready copy: datetimes as ISO 8601 "Z", every int ``*_nano`` also as
    ``*_usd`` (decimal string), nested maps (upstream's ``usage``, audit details) too."""
    def conv(x: Any) -> Any:
        if isinstance(x, datetime):
            return _iso(x)
        if isinstance(x, Mapping):
            return record_json(x)
        if isinstance(x, list | tuple):
            return [conv(v) for v in x]
        return x

    out = {str(k): conv(v) for k, v in rec.items()}
    for k, v in rec.items():
        if isinstance(k, str) and k.endswith("_nano") and (v is None or type(v) is int):
            out[k[:-5] + "_usd"] = None if v is None else format_usd(v)
    return out


def _cell(column: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    # Tags and model names come from API callers: every cell a spreadsheet would run as
    # a formula is made text with a leading "'" (OWASP "CSV injection"). Our own money
    # strings are numbers.
    if isinstance(value, str) and column not in _MONEY_COLUMNS:
        return _FORMULA_CELL.sub(lambda m: m.group(1) + "'" + m.group(2), text)
    return text


def to_csv(rows: Iterable[Mapping[str, Any]]) -> str:
    """CSV_COLUMNS as a header, then one line per usage record (raw or record_json)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(CSV_COLUMNS)
    for row in rows:
        j = record_json(row)
        w.writerow([_cell(c, j.get(c)) for c in CSV_COLUMNS])
    return buf.getvalue()

