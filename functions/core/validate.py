"""Field rules for the admin API: each reader returns a clean value or raises a 400
that names the field. Pure functions over the parsed JSON body."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from functions.core.errors import InvalidRequest

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}\Z")  # \Z: "$" lets "id\n" through
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}\Z")
MAX_USD = Decimal(1_000_000_000)  # int64 nano-dollars hold ~9.2e9 USD
_NANO_USD = Decimal("1e-9")


def body_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return body


def is_name(value: str, max_len: int = 256) -> bool:
    """Printable ASCII of 1 to ``max_len`` characters: what a model name or an id used as
    a filter can be (Firestore bounds ids and query values at 1500 bytes)."""
    return 0 < len(value) <= max_len and value.isascii() and value.isprintable()


def ident(body: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    """An id: 1-128 of letters, digits and . _ @ -, starting with a letter or digit."""
    v = body.get(name)
    if v is None and not required:
        return None
    if not isinstance(v, str) or not _ID.match(v):
        raise InvalidRequest(
            f"'{name}' must be 1-128 letters, digits, '.', '_', '@' or '-', "
            "starting with a letter or digit.",
            param=name,
        )
    return v


def path_id(value: str, name: str) -> str:
    return ident({name: value}, name) or ""


def text(
    body: dict[str, Any],
    name: str,
    *,
    required: bool = False,
    max_len: int = 200,
    default: str | None = None,
) -> str | None:
    v = body.get(name, default)
    if v is None:
        if required:
            raise InvalidRequest(f"Missing required field '{name}'.", param=name)
        return None
    if not isinstance(v, str) or len(v) > max_len:
        raise InvalidRequest(
            f"'{name}' must be a string of at most {max_len} characters.", param=name
        )
    return v


def email(body: dict[str, Any], name: str = "email") -> str | None:
    v = text(body, name, max_len=320)
    if v and not _EMAIL.match(v):
        raise InvalidRequest(f"'{name}' is not an e-mail address.", param=name)
    return v


def boolean(body: dict[str, Any], name: str) -> bool | None:
    v = body.get(name)
    if v is not None and not isinstance(v, bool):
        raise InvalidRequest(f"'{name}' must be true or false.", param=name)
    return v


def integer(body: dict[str, Any], name: str, *, lo: int = 0, hi: int = 2**31) -> int | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise InvalidRequest(f"'{name}' must be an integer between {lo} and {hi}.", param=name)
    return v


def usd_nano(body: dict[str, Any], name: str = "budget_usd") -> int | None:
    """A dollar amount (JSON string or number, at most 9 decimals) as nano-dollars."""
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        raise InvalidRequest(f"'{name}' must be a dollar amount like \"12.50\".", param=name)
    try:
        d = Decimal(repr(v) if isinstance(v, float) else str(v).strip())
    except InvalidOperation:
        raise InvalidRequest(
            f"'{name}' must be a dollar amount like \"12.50\".", param=name
        ) from None
    # The range before any arithmetic: scaling "1e999999" overflows (a 500), and a tiny
    # "1e-999999999" would round to 0 nano-dollars.
    if not d.is_finite() or d < 0 or d > MAX_USD or d != d.quantize(_NANO_USD):
        raise InvalidRequest(
            f"'{name}' must be between 0 and {MAX_USD} dollars with at most 9 decimals.", param=name
        )
    return int(d * 1_000_000_000)


def timestamp(value: Any, name: str) -> datetime:
    """ISO 8601 with a zone ("2026-11-23T10:00:00Z", "+01:00"); no zone is a 400, since a
    zone-less time means something different to every reader."""
    if not isinstance(value, str):
        raise InvalidRequest(f"'{name}' must be an ISO 8601 time with a zone.", param=name)
    try:
        dt = datetime.fromisoformat(value.strip().replace("z", "Z"))
    except ValueError:
        raise InvalidRequest(
            f"'{name}' is not an ISO 8601 time: {value[:40]!r}.", param=name
        ) from None
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise InvalidRequest(f"'{name}' needs a time zone, e.g. '{value[:25]}Z'.", param=name)
    if not 1970 <= dt.year <= 9000:
        raise InvalidRequest(f"'{name}' must be between the years 1970 and 9000.", param=name)
    return dt


def one_of(
    body: dict[str, Any], name: str, choices: tuple[str, ...], default: str | None = None
) -> str | None:
    v = body.get(name, default)
    if v is None:
        return None
    if v not in choices:
        raise InvalidRequest(f"'{name}' must be one of {', '.join(choices)}.", param=name)
    return str(v)


def string_list(body: dict[str, Any], name: str, max_items: int = 500) -> list[str] | None:
    v = body.get(name)
    if v is None:
        return None
    if (
        not isinstance(v, list)
        or len(v) > max_items
        or not all(isinstance(x, str) and 0 < len(x) <= 256 for x in v)
    ):
        raise InvalidRequest(f"'{name}' must be a list of strings.", param=name)
    return list(dict.fromkeys(v))


def usd_per_mtok(body: dict[str, Any], name: str, *, required: bool) -> int | None:
    from functions.core.pricing import usd_per_mtok_to_rate

    v = body.get(name)
    if v is None:
        if required:
            raise InvalidRequest(
                f"Missing required field '{name}' (USD per 1M tokens).", param=name
            )
        return None
    try:
        return usd_per_mtok_to_rate(v)
    except ValueError as e:
        raise InvalidRequest(f"'{name}': {e}", param=name) from None


def only_fields(body: dict[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(body) - allowed)
    if extra:
        raise InvalidRequest(f"Unknown field '{extra[0]}'.", param=extra[0])


def windows(
    body: dict[str, Any], main_period: str, periods: tuple[str, ...], name: str = "windows"
) -> list[dict[str, Any]] | None:
    """Extra budget windows of a scope, ``[{"period": "daily", "budget_usd": "5"}]``: at
    most one per period, none in the period of the scope's main budget (that is the
    main budget). Stored as ``[{"period", "budget_nano"}]``; ``[]`` removes them all."""
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, list):
        raise InvalidRequest(
            f'\'{name}\' must be a list of {{"period", "budget_usd"}}.', param=name
        )
    out: list[dict[str, Any]] = []
    for i, w in enumerate(value):
        where = f"{name}[{i}]"
        if not isinstance(w, dict) or set(w) != {"period", "budget_usd"}:
            raise InvalidRequest(f'\'{where}\' must be {{"period", "budget_usd"}}.', param=where)
        kind = w["period"]
        if kind not in periods or kind == main_period:
            raise InvalidRequest(
                f"'{where}.period' must be one of "
                f"{', '.join(p for p in periods if p != main_period)} (the "
                f"main budget is {main_period}).",
                param=f"{where}.period",
            )
        if any(o["period"] == kind for o in out):
            raise InvalidRequest(f"'{name}' has two {kind} budgets.", param=where)
        nano = usd_nano(w, "budget_usd")
        if nano is None:
            raise InvalidRequest(f"'{where}.budget_usd' is required.", param=where)
        out.append({"period": kind, "budget_nano": nano})
    return out
