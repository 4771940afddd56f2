"""Usage records and audit entries made ready for people: JSON (datetimes as ISO 8601,
every ``*_nano`` also as ``*_usd``) and CSV with full precision, safe to open in a
spreadsheet."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from functions.core.pricing import format_usd

CSV_COLUMNS = (
    "ts",
    "call_id",
    "project",
    "user",
    "key_name",
    "model",
    "upstream_model",
    "route",
    "status",
    "http_status",
    "input_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost_usd",
    "estimate_usd",
    "latency_ms",
    "streamed",
    "cached",
    "estimated",
    "tag",
    "request_id",
)
_MONEY_COLUMNS = frozenset({"cost_usd", "estimate_usd"})
# A cell a spreadsheet would run as a formula: one that starts with = + - @ (spaces
# before them included) or a tab/CR, at the start of the value *or after any character
# a spreadsheet may split cells on* (, ; | tab, line breaks): "a;=1+2" is two cells,
# the second a formula, in a sheet that splits on ";".
_FORMULA_CELL = re.compile(r"(^|[,;|\t\r\n])(\s*[=+\-@]|[\t\r])")


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
