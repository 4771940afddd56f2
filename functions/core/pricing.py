"""Prices, usage and cost arithmetic: pure functions over plain data, no I/O.

Money is integers. A rate is pico-USD per token, which is numerically micro-USD per
1M tokens ($0.15/1M -> 150_000). A call's cost is computed exactly in pico-USD and
rounded UP once to nano-USD, the unit of every budget and usage record.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal, Inexact, InvalidOperation, localcontext
from typing import Any

PICO_PER_NANO = 1_000
MAX_USD_PER_MTOK = 1_000_000
_RATE_FIELDS = ("input", "output", "cached_input", "cache_write")


@dataclass(frozen=True)
class Rates:
    """Pico-USD per token. None: no discount/surcharge, the plain ``input`` rate applies."""

    input: int
    output: int
    cached_input: int | None = None
    cache_write: int | None = None


@dataclass(frozen=True)
class Price:
    """A model's rates in force on [valid_from, valid_to) (valid_to None = open-ended)."""

    valid_from: datetime
    valid_to: datetime | None
    tiers: Mapping[str, Rates]
    long_context_threshold: int | None = None
    long_context_tiers: Mapping[str, Rates] = field(default_factory=dict)
    source: str = ""


# What a route OpenAI does not bill (moderations) costs: nothing, at any time.
FREE = Price(
    valid_from=datetime(2000, 1, 1, tzinfo=UTC),
    valid_to=None,
    tiers={"default": Rates(input=0, output=0)},
    source="free route",
)


@dataclass(frozen=True)
class Usage:
    """Token counts. cached/cache_write are subsets of input, reasoning a subset of output."""

    input_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0


def usd_per_mtok_to_rate(value: str | int | Decimal) -> int:
    """USD per 1M tokens -> pico-USD per token, exactly ("0.0375" -> 37_500).

    Accepts str, int, Decimal and float; a float goes through ``repr`` (shortest
    round-trip form: 0.15 -> "0.15"), so float noise such as 0.1 + 0.2 is rejected as
    too precise rather than silently rounded. Rejects bools, negatives, NaN/inf, more
    than 6 decimals (finer than 1 pico-USD/token) and anything above $1,000,000 per 1M.
    """
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal | float):
        raise ValueError(f"price must be a decimal number of USD per 1M tokens, got {value!r}")
    try:
        d = Decimal(repr(value) if isinstance(value, float) else value)
    except (InvalidOperation, ValueError):
        raise ValueError(f"price {value!r} is not a decimal number of USD per 1M tokens") from None
    if not d.is_finite() or d < 0:
        raise ValueError(f"price {value!r} must be a finite, non-negative number")
    if d > MAX_USD_PER_MTOK:
        raise ValueError(f"price {value!r} exceeds {MAX_USD_PER_MTOK} USD per 1M tokens")
    with localcontext() as ctx:  # trap Inexact: a 40+ digit string must not round to integral
        ctx.prec, ctx.traps[Inexact] = 40, True
        try:
            scaled = d.scaleb(6)
            if scaled == scaled.to_integral_value():
                return int(scaled)
        except Inexact:
            pass
    raise ValueError(f"price {value!r} has more than 6 decimals (finer than 1 pico-USD/token)")


def rate_to_usd_per_mtok(rate: int) -> str:
    """Pico-USD per token -> USD per 1M tokens for display (37_500 -> "0.0375", 0 -> "0")."""
    if not _is_count(rate):
        raise ValueError(f"rate must be a non-negative int, got {rate!r}")
    whole, frac = divmod(rate, 1_000_000)
    return f"{whole}.{frac:06d}".rstrip("0") if frac else str(whole)


def _require_aware(dt: object, what: str) -> datetime:
    if not isinstance(dt, datetime):
        raise ValueError(f"{what} must be a datetime, got {type(dt).__name__}")
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (UTC), got naive {dt.isoformat()}")
    return dt


def _is_count(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _check_price(p: Price) -> None:
    _require_aware(p.valid_from, "valid_from")
    if p.valid_to is not None and _require_aware(p.valid_to, "valid_to") <= p.valid_from:
        raise ValueError("valid_to must be after valid_from")
    if "default" not in p.tiers:
        raise ValueError("a price must have a 'default' tier")
    if p.long_context_threshold is not None and not _is_count(p.long_context_threshold):
        raise ValueError("long_context_threshold must be a non-negative int or None")
    for name, r in [*p.tiers.items(), *p.long_context_tiers.items()]:
        for f in _RATE_FIELDS:
            v = getattr(r, f)
            if not _is_count(v) and (v is not None or f in ("input", "output")):
                raise ValueError(f"tier {name!r}: {f} must be a non-negative int, got {v!r}")


def price_in_force(history: Sequence[Price], at: datetime) -> Price | None:
    """The price whose [valid_from, valid_to) contains ``at`` (aware), or None."""
    _require_aware(at, "at")
    hits = [p for p in history if p.valid_from <= at and (p.valid_to is None or at < p.valid_to)]
    return max(hits, key=lambda p: p.valid_from, default=None)


def add_price(history: Sequence[Price], new: Price) -> list[Price]:
    """History (sorted by valid_from) with ``new`` spliced in, without gaps or overlaps.

    The entry before ``new`` now ends at new.valid_from; ``new`` ends where the next one
    starts, or is open-ended (its own valid_to is ignored). Other entries are untouched.
    Same valid_from as an existing entry -> ValueError (conflict); naive datetimes too.
    """
    new = replace(new, valid_to=None)  # derived below; a stale value must not fail checks
    _check_price(new)
    for p in history:
        _require_aware(p.valid_from, "valid_from")
        if p.valid_from == new.valid_from:
            raise ValueError(f"a price already starts at {new.valid_from.isoformat()}")
    ordered = sorted(history, key=lambda p: p.valid_from)
    before = [p for p in ordered if p.valid_from < new.valid_from]
    after = [p for p in ordered if p.valid_from > new.valid_from]
    if before:
        before[-1] = replace(before[-1], valid_to=new.valid_from)
    return [*before, replace(new, valid_to=after[0].valid_from if after else None), *after]


def rates_for(price: Price, tier: str | None, input_tokens: int) -> Rates | None:
    """Rates for the tier the response reports (None/"auto" -> "default").

    Above long_context_threshold the whole request uses long_context_tiers. None means
    "not priced" (unknown tier, or no long-context rates for it): refuse, don't guess.
    """
    name = "default" if tier is None or tier in ("auto", "default") else tier
    lc = price.long_context_threshold
    tiers = price.long_context_tiers if lc is not None and input_tokens > lc else price.tiers
    return tiers.get(name)


def cost_pico(rates: Rates, usage: Usage) -> int:
    """Exact cost in pico-USD. Reasoning tokens are already inside output: not added.

    Inconsistent counts are clamped (negatives -> 0, cached/cache_write never exceed
    input); if cached + cache_write overflow input, the dearer kind keeps its tokens.
    """
    inp, out = max(usage.input_tokens, 0), max(usage.output_tokens, 0)
    cached = min(max(usage.cached_tokens, 0), inp)
    written = min(max(usage.cache_write_tokens, 0), inp)
    r_cached = rates.input if rates.cached_input is None else rates.cached_input
    r_write = rates.input if rates.cache_write is None else rates.cache_write
    if cached + written > inp:  # upstream inconsistency: bill conservatively
        if r_write >= r_cached:
            cached = inp - written
        else:
            written = inp - cached
    uncached = inp - cached - written
    return uncached * rates.input + cached * r_cached + written * r_write + out * rates.output


def pico_to_nano(pico: int) -> int:
    """Ceil division: any fraction of a nano-USD is billed as a whole one."""
    return -(-pico // PICO_PER_NANO)


def cost_nano(rates: Rates, usage: Usage) -> int:
    return pico_to_nano(cost_pico(rates, usage))


def estimate_nano(rates: Rates, input_tokens: int, output_cap: int, n: int = 1) -> int:
    """Upper bound of cost_nano for any usage with input <= input_tokens and output <=
    output_cap * n: every input token at the dearest input-side rate (cache writes may
    cost more than input). Input is billed once for n choices; n < 1 counts as 1."""
    per_input = max(rates.input, rates.cached_input or 0, rates.cache_write or 0)
    outputs = max(output_cap, 0) * max(n, 1)
    return pico_to_nano(max(input_tokens, 0) * per_input + outputs * rates.output)


def dearest_tier(
    price: Price, tiers: Sequence[str], input_tokens: int, output_cap: int, n: int = 1
) -> str | None:
    """Of ``tiers``, the priced one with the highest worst case (``estimate_nano``): the
    tier to hold at when upstream chooses the tier. None if none is priced."""
    priced = [
        (estimate_nano(r, input_tokens, output_cap, n), t)
        for t in tiers
        if (r := rates_for(price, t, input_tokens)) is not None
    ]
    return max(priced, key=lambda et: et[0])[1] if priced else None


def _count(v: object) -> int:
    """Best effort for a main count: never crash, never negative, round floats UP."""
    if isinstance(v, int) and not isinstance(v, bool):
        return max(v, 0)
    if isinstance(v, float) and math.isfinite(v):
        return max(math.ceil(v), 0)
    try:
        return max(int(v), 0) if isinstance(v, str) else 0
    except ValueError:  # not an integer, or past int()'s digit limit
        return 0


def _detail(u: Mapping[str, Any], section: str, key: str) -> int:
    """A detail count: anything but a non-negative int (missing, null, garbage) -> 0."""
    d = u.get(section)
    v = d.get(key) if isinstance(d, Mapping) else None
    return v if isinstance(v, int) and _is_count(v) else 0


def _usage(u: object, inp: str, out: str) -> Usage:
    if not isinstance(u, Mapping):
        return Usage()
    return Usage(
        input_tokens=_count(u.get(inp)),
        cached_tokens=_detail(u, f"{inp}_details", "cached_tokens"),
        cache_write_tokens=_detail(u, f"{inp}_details", "cache_write_tokens"),
        output_tokens=_count(u.get(out)),
        reasoning_tokens=_detail(u, f"{out}_details", "reasoning_tokens"),
    )


def usage_from_chat(u: Mapping[str, Any] | None) -> Usage:
    """Chat Completions / legacy Completions ``usage`` (prompt_tokens, completion_tokens)."""
    return _usage(u, "prompt_tokens", "completion_tokens")


def usage_from_responses(u: Mapping[str, Any] | None) -> Usage:
    """Responses API ``usage`` (input_tokens, output_tokens and their *_details)."""
    return _usage(u, "input_tokens", "output_tokens")


def usage_from_embeddings(u: Mapping[str, Any] | None) -> Usage:
    """Embeddings ``usage``: prompt_tokens only, no output, no cache fields."""
    return Usage(input_tokens=_count(u.get("prompt_tokens"))) if isinstance(u, Mapping) else Usage()


def largest_cap(rates: Rates, input_tokens: int, n: int, room_nano: int, upto: int) -> int:
    """The largest output cap (at most ``upto``) whose estimate fits in ``room_nano``,
    or 0 when not even the prompt fits. The estimate grows with the cap, so a binary
    search over it is exact whatever the rounding."""
    if estimate_nano(rates, input_tokens, 0, n) > room_nano:
        return 0
    lo, hi = 0, upto  # estimate(lo) fits; find the last cap that does
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if estimate_nano(rates, input_tokens, mid, n) <= room_nano:
            lo = mid
        else:
            hi = mid - 1
    return lo


def format_usd(nano: int) -> str:
    """Exact USD with 9 decimals for headers: 123_450 -> "0.000123450", -1 -> "-0.000000001"."""
    sign, a = ("-" if nano < 0 else ""), abs(nano)
    return f"{sign}{a // 10**9}.{a % 10**9:09d}"


def _tiers_to_doc(tiers: Mapping[str, Rates]) -> dict[str, dict[str, int]]:
    return {
        name: {f: getattr(r, f) for f in _RATE_FIELDS if getattr(r, f) is not None}
        for name, r in tiers.items()
    }


def _tiers_from_doc(d: object) -> dict[str, Rates]:
    if d is None:
        return {}
    if not isinstance(d, Mapping):
        raise ValueError("tiers must be a mapping of tier name -> rates")
    return {str(k): Rates(**{f: v.get(f) for f in _RATE_FIELDS}) for k, v in d.items()}


def price_to_doc(p: Price) -> dict[str, Any]:
    """Plain dict for Firestore: datetimes stay datetimes, rates ints, None rate fields
    omitted; top-level valid_to/long_context_threshold stay as null (queryable)."""
    return {
        "valid_from": p.valid_from,
        "valid_to": p.valid_to,
        "tiers": _tiers_to_doc(p.tiers),
        "long_context_threshold": p.long_context_threshold,
        "long_context_tiers": _tiers_to_doc(p.long_context_tiers),
        "source": p.source,
    }


def _plain_dt(dt: object, what: str) -> datetime:
    # Firestore returns DatetimeWithNanoseconds; rebuild a plain datetime so Price
    # values compare and serialise like the ones we wrote.
    a = _require_aware(dt, what)
    return datetime(a.year, a.month, a.day, a.hour, a.minute, a.second, a.microsecond, a.tzinfo)


def price_from_doc(d: Mapping[str, Any]) -> Price:
    """Inverse of price_to_doc; validates (aware datetimes, 'default' tier, int rates)."""
    try:
        p = Price(
            valid_from=_plain_dt(d.get("valid_from"), "valid_from"),
            valid_to=None if d.get("valid_to") is None else _plain_dt(d["valid_to"], "valid_to"),
            tiers=_tiers_from_doc(d.get("tiers")),
            long_context_threshold=d.get("long_context_threshold"),
            long_context_tiers=_tiers_from_doc(d.get("long_context_tiers")),
            source=str(d.get("source") or ""),
        )
    except (AttributeError, TypeError) as e:
        raise ValueError(f"malformed price document: {e}") from None
    _check_price(p)
    return p
