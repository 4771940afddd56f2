"""Tollgate's shipped OpenAI price table, converted from the genai-prices package.

The rates come from a maintained price database rather than being typed by hand. Only
the data bundled in the installed wheel is read (``genai_prices.data``): the package's
update/fetch machinery is never used, so the table is reproducible and offline.

Conversion is exact or refused. A model whose prices Tollgate's ``pricing.Price`` cannot
express exactly is returned as ``Skipped`` with the reason, never approximated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from typing import Any

from genai_prices import types as gp
from genai_prices.data import providers

from functions.core import pricing

# Prices without a start date have been in force "forever"; history needs a concrete start.
EARLIEST = datetime(2020, 1, 1, tzinfo=UTC)
# genai-prices price key -> pricing.Rates field. Every other key is a charge Tollgate's
# per-token Rates cannot carry.
_TOKEN_KEYS = {
    "input_mtok": "input",
    "cache_read_mtok": "cached_input",
    "cache_write_mtok": "cache_write",
    "output_mtok": "output",
}
# Per-call tool fees (web search, file search). They are not token charges and never show
# up in `usage`; Tollgate refuses built-in tools a project has no price for (bodies.py).
_TOOL_FEES = frozenset({"web_searches_kcount", "storage_searches_kcount"})
# Charges Tollgate's per-token Rates do not model are never shipped as plain text rates,
# which would under-bill every call: a model whose data has any audio price or any fee per
# request/call (a `*_kcount` key other than the tool fees above) is skipped by key
# (_check_model); and since genai-prices lists text rates only for some models that OpenAI
# also bills audio, image output or a per-search fee (gpt-4o-audio-preview,
# gpt-4o-mini-tts, the search-preview models, even as an alias of gpt-4o-mini), an id
# naming such a modality as a whole word ("search", not "research") is skipped too.
_UNMODELLED = {
    "audio": "audio input and output tokens",
    "realtime": "audio tokens of realtime sessions",
    "transcribe": "audio input tokens",
    "tts": "audio output tokens",
    "search": "a web search fee on every call",
    "image": "image output tokens",
}
# Service tiers mapped from genai-prices' price variants (when={"service_tier": ...}). "fast"
# is an alias with identical data; responses report "priority". "processing": "batch"
# variants belong to the Batch API, which Tollgate does not proxy.
_SERVICE_TIERS = ("flex", "priority")
_VARIANT_KEYS = frozenset({"service_tier", "processing"})
# The data has no model-kind field: the kind is inferred from the id (best effort).
_NOT_CHAT = ("ada", "babbage", "curie", "davinci", "text-davinci", "computer-use", "moderation")
_NOT_CHAT_PARTS = ("instruct", "tts", "transcribe", "realtime", "image", "whisper", "gpt-live")


@dataclass(frozen=True)
class TableEntry:
    model: str  # exact OpenAI model id as callers send it, e.g. "gpt-4o-mini"
    prices: tuple[pricing.Price, ...]  # dated, gap-free history, oldest first
    kind: str  # "chat" | "embedding" | "other"


@dataclass(frozen=True)
class Skipped:
    model: str  # genai-prices' canonical id, or an exact alias skipped on its own
    reason: str


class _Unpriceable(Exception):
    """The model's prices cannot be expressed exactly; the message is the reason."""


def source() -> str:
    return f"genai-prices {version('genai-prices')}"


def openai_price_table(now: datetime | None = None) -> tuple[list[TableEntry], list[Skipped]]:
    """Every OpenAI model of the bundled genai-prices data, as entries or skips, by id.

    ``now`` (aware; default: the current time) is only used to check that each history
    has a price in force; dated changes after ``now`` are kept, they are known facts.
    """
    at = datetime.now(UTC) if now is None else now
    src = source()
    provider = next(p for p in providers if p.id == "openai")
    entries: list[TableEntry] = []
    skipped: list[Skipped] = []
    for model in provider.models:
        ids, kind = _exact_ids(provider, model), _kind(model.id)
        try:
            if not ids:
                raise _Unpriceable(
                    f"no exact model id: genai-prices matches it only by pattern {model.match!r}"
                )
            history = _history(model, kind, src)
            if pricing.price_in_force(history, at) is None:
                raise _Unpriceable(f"no price in force at {at.isoformat()}")
            _check_modality(model.id)
        except _Unpriceable as e:
            skipped.append(Skipped(model.id, str(e)))
            continue
        for i in ids:
            try:
                _check_modality(i)  # an alias may name another modality than its model
            except _Unpriceable as e:
                skipped.append(Skipped(i, str(e)))
                continue
            entries.append(TableEntry(model=i, prices=tuple(history), kind=kind))
    return sorted(entries, key=lambda e: e.model), sorted(skipped, key=lambda s: s.model)


def _equals(clause: Any) -> list[str]:
    """The plain-string ids of a match clause. Regex/prefix/contains clauses are patterns,
    not ids, and are never expanded."""
    if isinstance(clause, gp.ClauseEquals):
        return [clause.equals]
    if isinstance(clause, gp.ClauseOr):
        return [name for c in clause.or_ for name in _equals(c)]
    return []


def _exact_ids(provider: gp.Provider, model: gp.ModelInfo) -> list[str]:
    # Keep an id only if genai-prices itself resolves it to this model (it takes the first
    # match): an alias claimed by an earlier model, or a canonical id that merely names a
    # prefix family (e.g. "ft:gpt-4o"), is not a price callers would get for that id.
    names = {model.id, *_equals(model.match)}
    return sorted(n for n in names if provider.find_model(n) is model)


def _check_modality(model_id: str) -> None:
    for word in re.split(r"[^a-z0-9]+", model_id.lower()):
        if word in _UNMODELLED:
            raise _Unpriceable(
                f"the id names '{word}': OpenAI bills {_UNMODELLED[word]}, which "
                "genai-prices does not price for it (text rates only) and Tollgate does not "
                "model, so text rates would under-bill"
            )


def _kind(model_id: str) -> str:
    if "embedding" in model_id:
        return "embedding"
    if model_id.startswith(_NOT_CHAT) or any(p in model_id for p in _NOT_CHAT_PARTS):
        return "other"
    return "chat"


def _keys(mp: gp.ModelPrice) -> dict[str, Any]:
    return {k: v for k, v in vars(mp).items() if v is not None and not k.startswith("_")}


def _check_model(model: gp.ModelInfo) -> None:
    """Refuse models whose data Tollgate cannot carry, before converting anything."""
    sets = (
        [model.prices]
        if isinstance(model.prices, gp.ModelPrice)
        else [c.prices for c in model.prices]
    )
    keys = {k for mp in [*sets, *(v.prices for v in model.price_variants or ())] for k in _keys(mp)}
    if not keys:
        raise _Unpriceable("no prices in genai-prices")
    audio = sorted(k for k in keys if "audio" in k)
    if audio:
        raise _Unpriceable(
            "audio is priced apart from text ("
            + ", ".join(audio)
            + "); Tollgate does not model it, so it would under-bill"
        )
    fees = sorted(k for k in keys if k.endswith("_kcount") and k not in _TOOL_FEES)
    if fees:
        raise _Unpriceable(
            "a fee per request or call (" + ", ".join(fees) + "); Tollgate "
            "does not model it, so it would under-bill"
        )
    if "input_mtok" not in keys:
        raise _Unpriceable(f"no per-token input price (priced by {', '.join(sorted(keys))})")
    odd = sorted(keys - _TOKEN_KEYS.keys() - _TOOL_FEES)
    if odd:
        raise _Unpriceable(
            "separate per-modality or non-token prices Tollgate cannot express: " + ", ".join(odd)
        )
    for v in model.price_variants or ():
        if not set(v.when) <= _VARIANT_KEYS:
            raise _Unpriceable(f"price variants selected by unknown request context {v.when}")


def _starts(model: gp.ModelInfo) -> list[datetime]:
    """Every instant a price may change: conditional-price and variant start dates."""
    constraints = (
        [] if isinstance(model.prices, gp.ModelPrice) else [c.constraint for c in model.prices]
    )
    constraints += [v.constraint for v in model.price_variants or ()]
    starts = {EARLIEST}
    for c in constraints:
        if isinstance(c, gp.StartDateConstraint):
            # StartDateConstraint compares the request's UTC date: a price starts at 00:00 UTC.
            d = c.start_date
            starts.add(max(EARLIEST, datetime(d.year, d.month, d.day, tzinfo=UTC)))
        elif c is not None:
            raise _Unpriceable(f"time-of-day pricing Tollgate cannot express: {c!r}")
    return sorted(starts)


def _history(model: gp.ModelInfo, kind: str, src: str) -> list[pricing.Price]:
    _check_model(model)
    history: list[pricing.Price] = []
    for at in _starts(model):
        price = _price_at(model, at, kind, src)
        if history and _same_rates(history[-1], price):
            continue  # e.g. a Batch-only change: nothing Tollgate bills changed
        history = pricing.add_price(history, price)  # validates and keeps it gap-free
    return history


def _same_rates(a: pricing.Price, b: pricing.Price) -> bool:
    return (a.tiers, a.long_context_threshold, a.long_context_tiers) == (
        b.tiers,
        b.long_context_threshold,
        b.long_context_tiers,
    )


def _tier_offered(model: gp.ModelInfo, tier: str, at: datetime) -> bool:
    # Before its variant starts, genai-prices falls back to standard rates for a tier
    # ("tier history ... is not modeled"). Tollgate leaves the tier out instead, so it
    # refuses rather than bills a guess.
    return any(
        v.when == {"service_tier": tier} and (v.constraint is None or v.constraint.active(at))
        for v in model.price_variants or ()
    )


def _price_at(model: gp.ModelInfo, at: datetime, kind: str, src: str) -> pricing.Price:
    tiers: dict[str, pricing.Rates] = {}
    long_tiers: dict[str, pricing.Rates] = {}
    thresholds: set[int] = set()
    for tier in ("default", *_SERVICE_TIERS):
        if tier != "default" and not _tier_offered(model, tier, at):
            continue
        # genai-prices' own resolution (conditional price in force + matching variants).
        short, long, threshold = _rates(model.get_prices(at, {"service_tier": tier}), kind)
        tiers[tier] = short
        if threshold is not None:
            # A tier without tiered keys (Fast on gpt-5.4/5.5, Flex on gpt-5.5-pro) has no
            # published long-context rate: genai-prices' flat rate there is a fallback ("no
            # long-context Flex surcharge is modeled"), so it stays out and Tollgate refuses.
            long_tiers[tier] = long
            thresholds.add(threshold)
    if len(thresholds) > 1:
        raise _Unpriceable(f"service tiers use different long-context thresholds {thresholds}")
    return pricing.Price(
        valid_from=at,
        valid_to=None,
        tiers=tiers,
        long_context_threshold=min(thresholds) if thresholds else None,
        long_context_tiers=long_tiers,
        source=src,
    )


def _rates(mp: gp.ModelPrice, kind: str) -> tuple[pricing.Rates, pricing.Rates, int | None]:
    """(short-context rates, long-context rates, threshold or None).

    genai-prices applies a tier to ALL tokens of a kind once the request's input tokens
    (cached included) exceed ``tier.start`` (types.calc_unit_price), which is exactly
    pricing.rates_for's rule (notes/prices.md §3.5). With several thresholds it would bill
    the highest one exceeded: a bracket table Tollgate's single threshold cannot express.
    A key without tiers costs the same on both sides, as genai-prices computes it.
    """
    short: dict[str, int] = {}
    long: dict[str, int] = {}
    thresholds: set[int] = set()
    values = _keys(mp)
    for key, name in _TOKEN_KEYS.items():
        v = values.get(key)
        if isinstance(v, gp.TieredPrices):
            if len(v.tiers) != 1:
                raise _Unpriceable(
                    "price tiers by input size that Tollgate cannot express: "
                    f"{key} has {len(v.tiers)} thresholds {[t.start for t in v.tiers]}"
                )
            thresholds.add(v.tiers[0].start)
            short[name], long[name] = _rate(v.base), _rate(v.tiers[0].price)
        elif v is not None:
            short[name] = long[name] = _rate(v)
    if len(thresholds) > 1:
        raise _Unpriceable(f"price tiers by input size at different thresholds {thresholds}")
    if "input" not in short:
        raise _Unpriceable("no per-token input price")
    if "output" not in short:
        if kind != "embedding":
            raise _Unpriceable("no output token price")
        short["output"] = long["output"] = 0  # embeddings produce no output tokens: exact
    return pricing.Rates(**short), pricing.Rates(**long), min(thresholds) if thresholds else None


def _rate(value: object) -> int:
    # str() keeps a Decimal's exact digits; usd_per_mtok_to_rate refuses anything finer
    # than 1 pico-USD per token instead of rounding it.
    try:
        return pricing.usd_per_mtok_to_rate(str(value))
    except ValueError as e:
        raise _Unpriceable(f"price not expressible in pico-USD per token: {e}") from None
