"""What a finished call costs: from upstream's usage when it has one, from tokens
counted by the proxy when it does not. Pure apart from tiktoken.

Prices are those in force at admission (``Admitted.price``); the tier is the one the
response reports, not the one requested (a priority request may be served at
default rates). A call is priced by the model string the client sent; the snapshot
name upstream answers with is stored, never re-priced.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from functions.core import pricing, routes, tokens
from functions.core.errors import (
    TollgateError,
    UpstreamAuthError,
    UpstreamBadResponse,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from functions.core.holds import HoldPlan, Outcome
from functions.core.records import Caller

# upstream's failures: (error, status booked, whether upstream may have billed the call)
_FAILURES: tuple[tuple[type[TollgateError], str, bool], ...] = (
    (UpstreamUnavailable, "upstream_unavailable", False),  # no connection was made
    (UpstreamAuthError, "upstream_auth_error", False),
    (UpstreamTimeout, "upstream_timeout", True),  # it may still finish, and bill
    (UpstreamBadResponse, "upstream_bad_response", True),
)
USAGE_OF = {
    routes.CHAT: pricing.usage_from_chat,
    routes.COMPLETIONS: pricing.usage_from_chat,
    routes.EMBEDDINGS: pricing.usage_from_embeddings,
    routes.RESPONSES: pricing.usage_from_responses,
}


@dataclass
class Admitted:
    """A call that passed every check and holds budget."""

    ctx: Caller
    spec: routes.CallSpec
    plan: HoldPlan
    price: pricing.Price
    rates: pricing.Rates  # the rates its estimate used
    input_tokens: int  # the estimate's prompt tokens
    cache_key: str | None = None  # set when the answer may be cached
    clamped_to: int | None = None  # the output cap was lowered to fit the budget
    # documents written together with the settlement (cache entry, rate-limit headers)
    extra: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    # work that waits until the client has the whole answer (alert posts): run by the
    # answer's close(), whichever answer it is (a plain one, a stream, an error)
    after_answer: list[Callable[[], None]] = field(default_factory=list)

    def answered(self) -> None:
        """The client has its answer: run what waited for it (once)."""
        while self.after_answer:
            self.after_answer.pop(0)()


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def from_usage(
    a: Admitted,
    usage_raw: Any,
    *,
    tier: Any,
    model: Any,
    request_id: str | None,
    response_id: Any,
    http_status: int = 200,
    status: str = "ok",
) -> Outcome:
    """Book from upstream's usage object. Without one, book the hold (estimated)."""
    if a.spec.route in routes.FREE_ROUTES:
        # OpenAI reports no usage for these and bills nothing: $0, exactly; the input
        # tokens are the proxy's own count, for the reports
        return Outcome(
            status=status,
            cost_nano=0,
            http_status=http_status,
            usage=pricing.Usage(input_tokens=a.input_tokens),
            upstream_model=_str(model),
            request_id=request_id,
        )
    if not isinstance(usage_raw, dict):
        return Outcome(
            status=status,
            cost_nano=a.plan.estimate_nano,
            http_status=http_status,
            estimated=True,
            upstream_model=_str(model),
            request_id=request_id,
            response_id=_str(response_id),
            service_tier=_str(tier),
        )
    usage = USAGE_OF[a.spec.route](usage_raw)
    rates = pricing.rates_for(a.price, _str(tier), usage.input_tokens)
    return Outcome(
        status=status,
        cost_nano=pricing.cost_nano(rates or a.rates, usage),
        http_status=http_status,
        usage=usage,
        # a tier reported without a price of its own is billed at the hold's rates
        estimated=rates is None,
        upstream_model=_str(model),
        request_id=request_id,
        response_id=_str(response_id),
        service_tier=_str(tier),
        usage_raw=usage_raw,
    )


def from_answer(a: Admitted, status: int, body: bytes, request_id: str | None) -> Outcome:
    """Book a whole (not streamed) answer of upstream: an error answer costs nothing,
    a success is priced from its usage. Raises for an answer no client should see: the
    organisation's key refused (never tell a member that *their* key is bad), or a
    body that is not a JSON object."""
    if status in (401, 403):
        raise UpstreamAuthError(
            "The upstream API rejected the organisation's key; ask an administrator."
        )
    if status >= 300:
        return Outcome(
            status="upstream_error", cost_nano=0, http_status=status, request_id=request_id
        )
    try:
        payload = json.loads(body)
        if not isinstance(payload, dict):
            raise ValueError
    except ValueError:
        raise UpstreamBadResponse(
            "The upstream API sent a response that is not valid JSON."
        ) from None
    return from_usage(
        a,
        payload.get("usage"),
        tier=payload.get("service_tier"),
        model=payload.get("model"),
        request_id=request_id,
        http_status=status,
        response_id=payload.get("id") if a.spec.route == routes.RESPONSES else None,
    )


def from_failure(err: BaseException, *, sent: bool, estimate_nano: int) -> Outcome:
    """Book a call that ended in ``err``. Once the request went out (``sent``) upstream
    may bill it whatever we saw - a timeout, a garbled answer, our own bug - so the hold
    is booked, marked estimated; before that, or when upstream provably did not take the
    call (no connection, the organisation's key refused), it costs nothing."""
    for kind, status, may_bill in _FAILURES:
        if isinstance(err, kind):
            billed = sent and may_bill
            return Outcome(
                status=status,
                cost_nano=estimate_nano if billed else 0,
                http_status=kind.status,
                estimated=billed,
            )
    return Outcome(
        status="proxy_error",
        cost_nano=estimate_nano if sent else 0,
        http_status=500,
        estimated=sent,
    )


def from_text_seen(
    a: Admitted,
    text: str,
    *,
    status: str,
    http_status: int = 200,
    model: Any = None,
    request_id: str | None = None,
    response_id: Any = None,
) -> Outcome:
    """A stream that ended without usage (cut, closed, never sent): bill the prompt
    estimate plus the tokens of the text seen. Reasoning models think in tokens the
    stream never shows, so they are booked at the hold, the conservative bound."""
    if tokens.hides_reasoning(a.plan.model):
        cost, usage = a.plan.estimate_nano, pricing.Usage(input_tokens=a.input_tokens)
    else:
        usage = pricing.Usage(
            input_tokens=a.input_tokens,
            output_tokens=tokens.count_output_tokens(text, a.plan.model),
        )
        cost = min(pricing.cost_nano(a.rates, usage), a.plan.estimate_nano)
    return Outcome(
        status=status,
        cost_nano=cost,
        http_status=http_status,
        usage=usage,
        estimated=True,
        upstream_model=_str(model),
        request_id=request_id,
        response_id=_str(response_id),
    )
