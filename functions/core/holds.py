"""What a call books, as plain data: its hold plan, its outcome, the documents written
for it, and the answers of counter writes parsed. Pure (no Firestore import): the
pricing and streaming code use these without loading the database client.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from functions.core.budget import CounterState, Limit, RateLimit, WindowState
from functions.core.pricing import Usage

SETTLED_HOLD_TTL = timedelta(days=2)  # settled holds are only kept to debug; TTL purges them


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class HoldPlan:
    call_id: str
    project: str
    user: str
    key_name: str
    model: str
    route: str
    budget_period: str  # total | monthly | daily
    period_key: str  # total | 2026-11 | 2026-11-23
    limits: Sequence[Limit]
    estimate_nano: int
    admitted_at: datetime
    expires_at: datetime
    streamed: bool = False
    tag: str | None = None
    estimate_tokens: int = 0
    touch_key: str | None = None  # key hash whose last_used_at the settlement updates
    rate_limits: Sequence[RateLimit] = ()  # rpm/tpm windows of the admission minute
    external_key: str = ""  # the organisation key it is sent with (reconciliation)


@dataclass
class Outcome:
    """What to book for a call once it is over."""

    status: str  # ok | upstream_error | upstream_timeout | upstream_unavailable | cut ...
    cost_nano: int
    http_status: int = 200
    usage: Usage = field(default_factory=Usage)
    estimated: bool = False
    upstream_model: str | None = None
    request_id: str | None = None
    response_id: str | None = None
    service_tier: str | None = None
    latency_ms: int = 0
    cached: bool = False
    usage_raw: dict[str, Any] | None = None
    soft_exceeded: tuple[str, ...] | None = None  # soft budgets overspent (None: not known)


def counter_fields(limit: Limit, period_key: str) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "scope": limit.scope,
        "project": limit.project,
        "period": limit.period or period_key,
    }
    if limit.user:
        fields["user"] = limit.user
    if limit.model:
        fields["model"] = limit.model
    return fields


def states_of(results: Sequence[Any], n: int) -> list[CounterState]:
    # The client sorts field transforms by path, so each counter's results come back
    # as [escrow, held, inflight, spent] (see platform notes §2.4): every counter write
    # whose answer is read carries all four.
    out = []
    for wr in results[:n]:
        escrow, held, inflight, spent = (v.integer_value for v in wr.transform_results)
        out.append(CounterState(spent=spent, held=held, inflight=inflight, escrow=escrow))
    return out


def usage_record(plan: HoldPlan, outcome: Outcome, settled_at: datetime) -> dict[str, Any]:
    u = outcome.usage
    return {
        "call_id": plan.call_id,
        "ts": plan.admitted_at,
        "settled_at": settled_at,
        "period": plan.period_key,
        "project": plan.project,
        "user": plan.user,
        "key_name": plan.key_name,
        "model": plan.model,
        "route": plan.route,
        "upstream_model": outcome.upstream_model,
        "status": outcome.status,
        "http_status": outcome.http_status,
        "input_tokens": u.input_tokens,
        "cached_tokens": u.cached_tokens,
        "cache_write_tokens": u.cache_write_tokens,
        "output_tokens": u.output_tokens,
        "reasoning_tokens": u.reasoning_tokens,
        "cost_nano": outcome.cost_nano,
        "estimate_nano": plan.estimate_nano,
        "latency_ms": outcome.latency_ms,
        "streamed": plan.streamed,
        "cached": outcome.cached,
        "estimated": outcome.estimated,
        "tag": plan.tag,
        "request_id": outcome.request_id,
        "response_id": outcome.response_id,
        "service_tier": outcome.service_tier,
        "usage": outcome.usage_raw,
        "soft_limits_exceeded": list(outcome.soft_exceeded or ()),
        "external_key": plan.external_key or None,
    }


def key_of(plan: HoldPlan) -> tuple[str, ...]:
    return tuple(lim.counter_id for lim in plan.limits)


def limits_of(plan: HoldPlan) -> tuple[int | None, ...]:
    return tuple(lim.limit_nano for lim in plan.limits)


def hold_doc(plan: HoldPlan) -> dict[str, Any]:
    return {
        "call_id": plan.call_id,
        "project": plan.project,
        "user": plan.user,
        "key_name": plan.key_name,
        "model": plan.model,
        "route": plan.route,
        "period": plan.period_key,
        "counters": [lim.counter_id for lim in plan.limits],
        "estimate_nano": plan.estimate_nano,
        "estimate_tokens": plan.estimate_tokens,
        "created_at": plan.admitted_at,
        "expires_at": plan.expires_at,
        "state": "live",
        "streamed": plan.streamed,
        "tag": plan.tag,
        "grant": None,
        "external_key": plan.external_key,
    }


def windows_of(results: Sequence[Any]) -> list[WindowState]:
    # sorted field paths again: [requests, tokens]
    out = []
    for wr in results:
        requests, tokens = (v.integer_value for v in wr.transform_results)
        out.append(WindowState(requests=requests, tokens=tokens))
    return out


def first_of_period(project_counter: CounterState, estimate: int) -> bool:
    return (
        project_counter.spent == 0
        and project_counter.inflight == 1
        and project_counter.held == estimate
    )


def plan_from_hold(h: dict[str, Any]) -> HoldPlan:
    """Rebuild enough of a HoldPlan from a hold document to book it."""
    return HoldPlan(
        call_id=str(h.get("call_id")),
        project=str(h.get("project")),
        user=str(h.get("user")),
        key_name=str(h.get("key_name", "")),
        model=str(h.get("model")),
        route=str(h.get("route", "")),
        budget_period="",
        period_key=str(h.get("period", "")),
        limits=(),
        estimate_nano=int(h.get("estimate_nano", 0)),
        admitted_at=h.get("created_at") or utcnow(),
        expires_at=h.get("expires_at") or utcnow(),
        streamed=bool(h.get("streamed", False)),
        tag=h.get("tag"),
        estimate_tokens=int(h.get("estimate_tokens", 0)),
        external_key=str(h.get("external_key") or ""),
    )
