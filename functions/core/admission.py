"""Every check a proxied call must pass before anything is held, in one place and in
one order: the key and its owners → the browser origin → the tag → the body (its
shape, and the tools the project has prices for) → the model (allowed for the
project and the key, priced now). Pure: the caller has read the configuration.

The order is OpenAI's where it has one: a bad key is a 401 before a bad body is a
400, so a caller without a valid key learns nothing about what else it got wrong.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from functions.core import auth, bodies, cors, pricing, routes
from functions.core.errors import InvalidRequest, ModelNotAllowed, ModelNotPriced, PermissionDenied
from functions.core.records import CallContext, Caller, ModelRecord

TAG_HEADER = "x-tollgate-tag"
TAG_MAX = 64


@dataclass(frozen=True)
class Checked:
    """A call that passed every check: who calls, the price in force, its tag."""

    caller: Caller
    price: pricing.Price
    tag: str | None


def check(
    kind: str,
    ctx: CallContext | None,
    body: Any,
    now: datetime,
    *,
    origin: str | None,
    tag: str | None,
) -> Checked:
    """The call's configuration (``ctx``, as read for the body's model) against the
    request, or the OpenAI-shaped error of the first check it fails."""
    caller = auth.check_context(ctx, now)
    check_origin(caller, origin)
    tag = check_tag(tag)
    bodies.validate(kind, body, priced_tools=caller.project.priced_tools)
    price = pricing.FREE if kind in routes.FREE_ROUTES else check_model(caller, body["model"], now)
    return Checked(caller, price, tag)


def check_origin(caller: Caller, origin: str | None) -> None:
    """A call from a browser page goes through only if the key's project lists the
    page's origin (a request without ``Origin`` is not a browser's)."""
    if origin is not None and not cors.allowed(origin, caller.project.cors_origins):
        raise PermissionDenied(
            f"Calls from the origin '{origin[:100]}' are not allowed in "
            f"project '{caller.project.id}'."
        )


def check_tag(tag: str | None) -> str | None:
    """The ``x-tollgate-tag`` header: a label for reports, printable ASCII."""
    if tag is not None and (
        not 0 < len(tag) <= TAG_MAX or not tag.isascii() or not tag.isprintable()
    ):
        raise InvalidRequest(
            f"'{TAG_HEADER}' must be 1-{TAG_MAX} printable ASCII characters.", param=TAG_HEADER
        )
    return tag


def check_model(caller: Caller, model: str, now: datetime) -> pricing.Price:
    """The model is allowed for the project and the key, and has a price in force."""
    if not caller.project.allows(model):
        raise ModelNotAllowed(
            f"The model '{model}' is not allowed in project '{caller.project.id}'.", param="model"
        )
    if caller.key.allowed_models and model not in caller.key.allowed_models:
        raise ModelNotAllowed(
            f"The model '{model}' is not allowed for the key '{caller.key.name}'.", param="model"
        )
    price = pricing.price_in_force(caller.model.prices, now) if caller.model else None
    if price is None:
        raise ModelNotPriced(
            f"The model '{model}' has no price in force, so Tollgate will not send it upstream.",
            param="model",
        )
    return price


def usable_models(
    caller: Caller, models: Iterable[ModelRecord], now: datetime
) -> list[dict[str, Any]]:
    """The models this key may call now, as OpenAI lists models, by id: those its
    project allows, priced now, and (for a key limited to some) among the key's."""
    usable = [
        m
        for m in models
        if caller.project.allows(m.id)
        and pricing.price_in_force(m.prices, now)
        and (not caller.key.allowed_models or m.id in caller.key.allowed_models)
    ]
    return sorted(
        (
            {"id": m.id, "object": "model", "created": m.created, "owned_by": "openai"}
            for m in usable
        ),
        key=lambda o: str(o["id"]),
    )
