"""A call's hold plan, from the request as read (``Ask``) and its checked configuration:
the body to send (default output cap, safety identifier, service tier), the tier it is
held at, the estimate, the budget counters it is booked against and its rate windows.
Pure: the one thing it must look up (an earlier response's tokens, for
``previous_response_id``) is passed in.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from functions.core import admission, pricing, routes
from functions.core.billing import Admitted
from functions.core.budget import Limit, limits_for, period_key, rate_limits_for, topped_up
from functions.core.errors import InvalidRequest, ModelNotPriced
from functions.core.holds import HoldPlan
from functions.core.records import Caller, LimitRecord
from functions.core.settings import Settings

# "last used" is written at most this often per key (see _stale)
LAST_USED_EVERY = timedelta(seconds=60)


@dataclass(frozen=True)
class Ask:
    """One request as the proxy read it, before any check: what every step of a call
    (the quote, the guessed hold, the checks, the plan) needs to know of it."""

    kind: str
    khash: str
    body: Any  # as parsed: admission.check says whether it is a body of this route
    now: datetime
    origin: str | None
    tag: str | None  # the x-tollgate-tag header as sent
    cache_header: str | None
    count: Callable[[], int]  # the body's input tokens, counted on first use

    @property
    def model(self) -> str | None:
        return routes.model_of(self.body)


def plan(
    ask: Ask,
    ok: admission.Checked,
    settings: Settings,
    response_tokens: Callable[[str, str], int | None],
    body: dict[str, Any] | None = None,
) -> Admitted:
    """Everything about the call's hold, from its configuration; no write. ``body``:
    the body to send, when it is not the client's (a clamped output cap).
    ``response_tokens(project, response_id)``: the tokens of an earlier response this
    project received (what a ``previous_response_id`` continues), or None."""
    kind, ctx, tag, now, price = ask.kind, ok.caller, ok.tag, ask.now, ok.price
    body = ask.body if body is None else body
    project, user = ctx.project, ctx.user
    model = body["model"]
    default_cap = project.default_max_output_tokens or settings.default_max_output_tokens
    spec = routes.prepare(
        kind,
        body,
        default_cap=default_cap,
        safety_id=routes.safety_identifier(project.id, user.id, settings.safety_salt),
    )
    input_tokens = ask.count()
    if spec.previous_response_id is not None:
        earlier = response_tokens(project.id, spec.previous_response_id)
        if earlier is None:
            # Not answered through this project: its context is unknown (and may be
            # another project's conversation), so no hold could bound it.
            raise InvalidRequest(
                "'previous_response_id' is not a response this project received through "
                "Tollgate, so the context it continues cannot be held; send the earlier "
                "turns in 'input' instead.",
                param="previous_response_id",
            )
        input_tokens += earlier
    hold_tier = spec.service_tier
    if hold_tier == "auto":
        # "auto" is served at the OpenAI project's default tier, which may be priority:
        # hold at the dearer of default and priority. Without a priority price, ask for
        # "default" outright rather than risk a priority bill held at default rates.
        if pricing.rates_for(price, "priority", input_tokens) is None:
            hold_tier = "default"
            spec = dataclasses.replace(
                spec,
                service_tier=hold_tier,
                modified=True,
                body={**spec.body, "service_tier": hold_tier},
            )
        else:
            hold_tier = pricing.dearest_tier(
                price, ("default", "priority"), input_tokens, spec.output_cap, spec.n
            )
    rates = pricing.rates_for(price, hold_tier, input_tokens)
    if rates is None:
        raise ModelNotPriced(
            f"The model '{model}' has no price for service_tier '{spec.service_tier}'.",
            param="service_tier",
        )
    estimate = pricing.estimate_nano(rates, input_tokens, spec.output_cap, spec.n)
    limits = budget_limits(ctx, model, now)
    plan = HoldPlan(
        call_id="call_" + secrets.token_hex(12),
        project=project.id,
        user=user.id,
        key_name=ctx.key.name,
        model=model,
        route=kind,
        budget_period=project.budget_period,
        period_key=period_key(project.budget_period, now),
        limits=limits,
        estimate_nano=estimate,
        admitted_at=now,
        external_key=project.external_key,
        expires_at=now + timedelta(seconds=settings.hold_ttl_s),
        streamed=spec.stream,
        tag=tag,
        estimate_tokens=input_tokens + spec.output_cap * spec.n,
        touch_key=ctx.key.key_hash if _stale(ctx.key.last_used_at, now) else None,
        rate_limits=rate_limits_for(
            project=project.id,
            user=user.id,
            model=model,
            at=now,
            project_limits=(project.rpm, project.tpm),
            model_limits=_rpm_tpm(ctx.model_limit),
            member_model_limits=_rpm_tpm(ctx.member_model_limit),
            key_name=ctx.key.name,
            key_rpm=ctx.key.rpm,
        ),
    )
    return Admitted(ctx, spec, plan, price, rates, input_tokens)


def budget_limits(ctx: Caller, model: str, now: datetime) -> list[Limit]:
    """The budget counters a call of ``model`` by this key is booked against now."""
    return limits_for(
        project=ctx.project.id,
        user=ctx.member.user,
        model=model,
        period=period_key(ctx.project.budget_period, now),
        project_limit=topped_up(ctx.project.budget_nano, ctx.project.topups, now),
        member_limit=topped_up(ctx.member.budget_nano, ctx.member.topups, now),
        model_limit=ctx.model_limit.budget_nano if ctx.model_limit else None,
        member_model_limit=(ctx.member_model_limit.budget_nano if ctx.member_model_limit else None),
        key_name=ctx.key.name,
        key_limit=ctx.key.budget_nano,
        project_windows=[(k, period_key(k, now), n) for k, n in ctx.project.windows],
        member_windows=[(k, period_key(k, now), n) for k, n in ctx.member.windows],
        soft=frozenset(
            scope
            for scope, soft in (
                ("project", ctx.project.budget_soft),
                ("member", ctx.member.budget_soft),
                ("model", ctx.model_limit is not None and ctx.model_limit.budget_soft),
                (
                    "member_model",
                    (ctx.member_model_limit is not None and ctx.member_model_limit.budget_soft),
                ),
                ("key", ctx.key.budget_soft),
            )
            if soft
        ),
    )


def _rpm_tpm(limit: LimitRecord | None) -> tuple[int | None, int | None]:
    return (limit.rpm, limit.tpm) if limit else (None, None)


def _stale(last_used: datetime | None, now: datetime) -> bool:
    # "last used" is shown to people: minute precision is plenty, and skipping the
    # write on busy keys saves a document write per call.
    return last_used is None or now - last_used > LAST_USED_EVERY
