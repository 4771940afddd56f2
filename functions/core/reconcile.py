"""Reconciliation rules: OpenAI's own counts for one UTC day against Tollgate's books,
per external key and model. Pure: plain dicts in, plain dicts out (no Firestore, no
HTTP), so every rule is tested without a database.

What is compared, and why:

* **Tokens and requests, per external key and model.** The Usage APIs group by
  ``project_id``, ``api_key_id`` and ``model``, so an external key mapped to its OpenAI
  project and key id (``openai_project_id``, ``openai_key_id``) gets OpenAI's exact
  counts for that key alone. OpenAI's ``input_tokens`` include the cached ones, like
  Tollgate's, so input, cached input and output compare field by field. A key mapped
  to a project only is compared with the whole project's usage (``scope: project``).
* **Models by snapshot.** OpenAI reports the dated snapshot that served a call
  (``gpt-4o-mini-2024-07-18``), not the alias a client asked for. A usage record keeps
  both: ``model`` (asked) and ``upstream_model`` (what upstream's answer named), so a
  record is matched on ``upstream_model``. A record without one (no answer came: an
  orphaned or timed-out call) goes to the one snapshot of its alias OpenAI reported
  (``alias-YYYY-MM-DD``), else under the alias itself.
* **Cost, per model, where it can be attributed.** The Costs API groups by project and
  ``line_item`` ("gpt-4o-mini-2024-07-18, input"), never by key. So cost is compared per
  OpenAI project: OpenAI's amount per model against the sum of Tollgate's cost over
  every external key mapped to that project (``cost.shared_with`` names the others). If
  other, non-Tollgate keys spend in the same project, OpenAI's cost is larger by theirs.
* **What Tollgate could not know exactly.** Records booked ``estimated`` (a timeout, a
  stream without usage) or ``orphaned`` (a hold the sweep booked at its estimate) carry
  no upstream token counts: they are counted apart (``estimated``) next to what OpenAI
  counted, and the requests OpenAI saw beyond Tollgate's exact and estimated calls are
  ``unbooked`` (upstream served them; Tollgate has no record at all).
* Answers from Tollgate's response cache never reached OpenAI: left out.

Drift is OpenAI minus Tollgate; relative drift is a percentage of OpenAI's figure, as
a decimal string with two places (``None`` when OpenAI counted nothing and Tollgate
did). Money is integer nano-dollars throughout.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

TOKENS = ("input_tokens", "cached_tokens", "output_tokens")
COUNTS = ("requests", *TOKENS)
_SNAPSHOT = re.compile(r"^(?P<alias>.+)-\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class KeyMap:
    """An external key and where OpenAI counts its usage."""

    external_key: str
    project_id: str
    key_id: str | None = None  # None: compare with the whole OpenAI project


def day_bounds(day: date) -> tuple[int, int]:
    """[start, end) of a UTC day in unix seconds, as the 1d buckets are cut."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return int(start.timestamp()), int((start + timedelta(days=1)).timestamp())


def usd_to_nano(value: Any) -> int:
    """The Costs API's ``amount.value`` is a JSON float in USD. Converted once, here,
    through its shortest decimal form (``repr``) and Decimal, rounded to the nano-dollar:
    no float is ever summed."""
    d = Decimal(repr(value) if isinstance(value, float) else str(value))
    return int((d * 10**9).to_integral_value(ROUND_HALF_UP))


def percent(drift: int, base: int) -> str | None:
    if base == 0:
        return "0.00" if drift == 0 else None
    return str((Decimal(drift) * 100 / Decimal(base)).quantize(Decimal("0.01"), ROUND_HALF_UP))


def line_item_model(line_item: Any) -> str | None:
    """'gpt-4o-mini-2024-07-18, input' -> 'gpt-4o-mini-2024-07-18'; None if not that form."""
    if not isinstance(line_item, str) or ", " not in line_item:
        return None
    return line_item.rsplit(", ", 1)[0].strip() or None


def _row_name(model: str | None, upstream: str | None, known: Iterable[str]) -> str:
    if upstream:
        return upstream
    alias = model or "(unknown)"
    snaps = [
        k for k in known if k == alias or ((m := _SNAPSHOT.match(k)) and m.group("alias") == alias)
    ]
    return snaps[0] if len(snaps) == 1 else alias


def _zero() -> dict[str, int]:
    return dict.fromkeys(COUNTS, 0)


def _zero_ours() -> dict[str, Any]:
    return {
        **_zero(),
        "cost_nano": 0,
        "estimated_calls": 0,
        "estimated_cost_nano": 0,
        "orphaned_calls": 0,
    }


def openai_usage(results: Iterable[Mapping[str, Any]], km: KeyMap) -> dict[str, dict[str, int]]:
    """Per model, OpenAI's counts for this key (results of the completions and
    embeddings usage APIs grouped by project_id, api_key_id, model)."""
    out: dict[str, dict[str, int]] = {}
    for r in results:
        if r.get("project_id") != km.project_id:
            continue
        if km.key_id is not None and r.get("api_key_id") != km.key_id:
            continue
        row = out.setdefault(str(r.get("model") or "(unknown)"), _zero())
        row["requests"] += int(r.get("num_model_requests") or 0)
        row["input_tokens"] += int(r.get("input_tokens") or 0)
        row["cached_tokens"] += int(r.get("input_cached_tokens") or 0)
        row["output_tokens"] += int(r.get("output_tokens") or 0)
    return out


def openai_costs(
    results: Iterable[Mapping[str, Any]], project_id: str
) -> tuple[dict[str, int], int]:
    """Per model, OpenAI's cost in nano-dollars for one project, and what no model
    could be read from (other line items)."""
    per: dict[str, int] = {}
    other = 0
    for r in results:
        if r.get("project_id") != project_id:
            continue
        nano = usd_to_nano((r.get("amount") or {}).get("value") or 0)
        model = line_item_model(r.get("line_item"))
        if model is None:
            other += nano
        else:
            per[model] = per.get(model, 0) + nano
    return per, other


def tollgate_usage(
    records: Iterable[Mapping[str, Any]], known: Iterable[str]
) -> dict[str, dict[str, Any]]:
    """Per model row, Tollgate's exact counts, its estimated calls and all its cost."""
    known = list(known)
    out: dict[str, dict[str, Any]] = {}
    for r in records:
        if r.get("cached"):
            continue
        name = _row_name(r.get("model"), r.get("upstream_model"), known)
        row = out.setdefault(name, _zero_ours())
        cost = int(r.get("cost_nano") or 0)
        row["cost_nano"] += cost
        if r.get("estimated") or r.get("status") == "orphaned":
            row["estimated_calls"] += 1
            row["estimated_cost_nano"] += cost
            row["orphaned_calls"] += r.get("status") == "orphaned"
            continue
        tokens = [int(r.get(f) or 0) for f in TOKENS]
        # a request OpenAI saw: one Tollgate booked from OpenAI's own usage
        if r.get("status") == "ok" or any(tokens):
            row["requests"] += 1
        for f, n in zip(TOKENS, tokens, strict=True):
            row[f] += n
    return out


def compare_key(
    day: date,
    km: KeyMap,
    usage_results: Sequence[Mapping[str, Any]],
    records: Sequence[Mapping[str, Any]],
    cost_per_model: Mapping[str, int],
    cost_other_nano: int,
    tollgate_project_cost: Mapping[str, tuple[int, int]],
    shared_with: Sequence[str],
    threshold_percent: float,
) -> dict[str, Any]:
    """The reconciliation of one external key for one day (see the module docstring).

    ``tollgate_project_cost``: Tollgate's (cost, calls) per model row over every key
    mapped to this key's OpenAI project (this one included)."""
    theirs = openai_usage(usage_results, km)
    ours = tollgate_usage(records, theirs)
    models = []
    for name in sorted(set(theirs) | set(ours)):
        o, t = theirs.get(name) or _zero(), ours.get(name) or _zero_ours()
        drift = {f: o[f] - t[f] for f in COUNTS}
        models.append(
            {
                "model": name,
                "openai": o,
                "tollgate": t,
                "drift": drift,
                "drift_percent": {f: percent(drift[f], o[f]) for f in COUNTS},
                "unbooked_requests": max(0, drift["requests"] - t["estimated_calls"]),
            }
        )
    cost_rows = []
    for name in sorted(set(cost_per_model) | set(tollgate_project_cost)):
        o_nano = cost_per_model.get(name, 0)
        t_nano, calls = tollgate_project_cost.get(name, (0, 0))
        cost_rows.append(
            {
                "model": name,
                "openai_nano": o_nano,
                "tollgate_nano": t_nano,
                "tollgate_calls": calls,
                "drift_nano": o_nano - t_nano,
                "drift_percent": percent(o_nano - t_nano, o_nano),
            }
        )
    doc: dict[str, Any] = {
        "day": day.isoformat(),
        "external_key": km.external_key,
        "openai_project_id": km.project_id,
        "openai_key_id": km.key_id,
        "scope": "key" if km.key_id else "project",
        "models": models,
        "cost": {
            "scope": "project",
            "shared_with": sorted(shared_with),
            "models": cost_rows,
            "other_line_items_nano": cost_other_nano,
        },
        "unbooked_requests": sum(m["unbooked_requests"] for m in models),
        "estimated_calls": sum(m["tollgate"]["estimated_calls"] for m in models),
    }
    doc["over_threshold"] = over_threshold(doc, threshold_percent)
    doc["max_drift_percent"] = max_drift(doc)
    doc["openai_digest"] = digest(theirs, cost_per_model, cost_other_nano)
    return doc


def _drifts(doc: Mapping[str, Any]) -> list[tuple[str, str | None]]:
    """(what, relative drift) of every figure compared. Tollgate rounds each call's cost
    up to the nano-dollar and the Costs API's float is rounded once, so a cost drift
    within a nano-dollar a call (plus one) is rounding: left out."""
    out = [(f"{m['model']} {f}", p) for m in doc["models"] for f, p in m["drift_percent"].items()]
    out += [
        (f"{c['model']} cost", c["drift_percent"])
        for c in doc["cost"]["models"]
        if abs(c["drift_nano"]) > c["tollgate_calls"] + 1
    ]
    return out


def over_threshold(doc: Mapping[str, Any], threshold_percent: float) -> list[str]:
    """What drifts past the threshold ("gpt-4o-mini-2024-07-18 output_tokens"), or
    OpenAI counted nothing where Tollgate booked something."""
    limit = Decimal(repr(threshold_percent))
    return [what for what, p in _drifts(doc) if p is None or abs(Decimal(p)) > limit]


def max_drift(doc: Mapping[str, Any]) -> str | None:
    """The largest relative drift as a string; None if one is unbounded."""
    pcts = [p for _, p in _drifts(doc)]
    if any(p is None for p in pcts):
        return None
    return str(max([abs(Decimal(p)) for p in pcts if p is not None], default=Decimal("0.00")))


def digest(usage: Mapping[str, Any], costs: Mapping[str, int], other: int) -> str:
    """A fingerprint of OpenAI's side: equal on two runs means OpenAI's data for the day
    stopped changing (it lags minutes to hours), so the day is stable."""
    blob = json.dumps({"u": usage, "c": costs, "o": other}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def cost_per_row(
    records: Iterable[Mapping[str, Any]], known: Iterable[str]
) -> dict[str, tuple[int, int]]:
    """Tollgate's cost and number of calls per model row (cache answers left out)."""
    return {
        name: (row["cost_nano"], row["requests"] + row["estimated_calls"])
        for name, row in tollgate_usage(records, known).items()
    }
