"""A dry-run quote: a request sent with ``x-tollgate-dry-run: 1`` is checked like any
call (key, model, body, price) and answered with what it would hold, the price in force
and what every budget it would be booked against has left, without calling upstream and
without booking anything. Pure: built from the call's plan and the counters as read.

The figures are a snapshot: another call may take the room a moment later, so a quote
that fits is not a reservation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from functions.core import pricing
from functions.core.billing import Admitted
from functions.core.budget import CounterState, first_breach, refusal_message, remaining_nano
from functions.core.errors import InvalidRequest

HEADER = "x-tollgate-dry-run"
_YES, _NO = ("1", "true"), ("", "0", "false")


def wants_dry_run(value: str | None) -> bool:
    v = (value or "").strip().lower()
    if v in _YES:
        return True
    if v in _NO:
        return False
    raise InvalidRequest(
        f"The header '{HEADER}' must be 1 (quote, do not call) or 0.", param=HEADER
    )


def _rates(r: pricing.Rates) -> dict[str, str]:
    out = {
        "input": pricing.rate_to_usd_per_mtok(r.input),
        "output": pricing.rate_to_usd_per_mtok(r.output),
    }
    if r.cached_input is not None:
        out["cached_input"] = pricing.rate_to_usd_per_mtok(r.cached_input)
    if r.cache_write is not None:
        out["cache_write"] = pricing.rate_to_usd_per_mtok(r.cache_write)
    return out


def _usd(nano: int | None) -> str | None:
    return None if nano is None else pricing.format_usd(nano)


def build(a: Admitted, now: Sequence[CounterState]) -> dict[str, Any]:
    """The quote's JSON: ``now`` is the state of each of the plan's counters, in the
    order of its limits (spent, held by calls in flight, reserved by instances' grants)."""
    plan, spec = a.plan, a.spec
    limits = list(plan.limits)
    budgets = []
    for lim, st in zip(limits, now, strict=True):
        room = None if lim.limit_nano is None else lim.limit_nano - st.taken
        budgets.append(
            {
                "scope": lim.scope,
                "label": lim.label,
                "period": lim.period or plan.period_key,
                "budget_period": lim.period_kind or plan.budget_period,
                "budget_usd": _usd(lim.limit_nano if lim.limit_nano is not None else lim.soft_nano),
                "soft": lim.soft_nano is not None,
                "spent_usd": _usd(st.spent),
                "held_usd": _usd(st.held),
                "reserved_usd": _usd(st.escrow),
                "remaining_usd": _usd(room),
                "fits": room is None or room >= plan.estimate_nano,
            }
        )
    breach = first_breach(limits, [st.with_call(plan.estimate_nano) for st in now])
    return {
        "object": "tollgate.quote",
        "dry_run": True,
        "route": spec.route,
        "model": plan.model,
        "project": plan.project,
        "user": plan.user,
        "estimate": {
            "input_tokens": a.input_tokens,
            "output_tokens_cap": spec.output_cap,
            "choices": spec.n,
            "cost_usd": pricing.format_usd(plan.estimate_nano),
        },
        "price": {
            "valid_from": a.price.valid_from.isoformat(),
            "service_tier": spec.service_tier or "default",
            "usd_per_1m_tokens": _rates(a.rates),
        },
        "budgets": budgets,
        "remaining_usd": _usd(remaining_nano(limits, now)),  # the tightest budget
        "would_be_admitted": breach is None,
        "message": None
        if breach is None
        else refusal_message(*breach, plan.estimate_nano, plan.budget_period, plan.period_key),
    }
