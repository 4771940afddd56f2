"""Every check a call passes before anything is held (``functions/core/admission.py``), and
their order: pure, no emulator, no upstream."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from functions.core import admission, auth, pricing, routes
from functions.core.errors import (
    InvalidApiKey,
    InvalidRequest,
    ModelNotAllowed,
    ModelNotPriced,
    PermissionDenied,
    UnsupportedParameter,
)
from functions.core.records import (
    CallContext,
    KeyRecord,
    MemberRecord,
    ModelRecord,
    ProjectRecord,
    UserRecord,
)

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
PRICE = pricing.Price(
    valid_from=NOW - timedelta(days=1),
    valid_to=None,
    tiers={"default": pricing.Rates(input=150_000, output=600_000)},
)
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}


def ctx(
    *,
    key: dict[str, Any] | None = None,
    project: dict[str, Any] | None = None,
    user: bool = True,
    prices: tuple[pricing.Price, ...] = (PRICE,),
) -> CallContext:
    return CallContext(
        key=KeyRecord("h", "lab", "bob", "laptop", **(key or {})),
        user=UserRecord("bob") if user else None,
        member=MemberRecord("lab", "bob"),
        project=ProjectRecord("lab", **{"allowed_models": ("gpt-4o-mini",), **(project or {})}),
        model=ModelRecord("gpt-4o-mini", prices),
    )


def check(
    c: CallContext | None,
    body: Any = CHAT,
    kind: str = routes.CHAT,
    *,
    origin: str | None = None,
    tag: str | None = None,
) -> admission.Checked:
    return admission.check(kind, c, body, NOW, origin=origin, tag=tag)


def test_a_good_call_passes_with_its_price_and_tag():
    ok = check(ctx(), tag="nightly-eval")
    assert (ok.caller.user.id, ok.price, ok.tag) == ("bob", PRICE, "nightly-eval")


def test_a_bad_key_is_a_401_before_a_bad_body_or_tag():
    with pytest.raises(InvalidApiKey):
        check(None, body={"messages": "nope"}, tag="\x00")
    with pytest.raises(InvalidApiKey):
        check(ctx(user=False), body=[])


@pytest.mark.parametrize("body", [[], {"messages": []}, {"model": 5, "messages": []}])
def test_a_body_without_a_model_is_a_400_naming_it(body):
    with pytest.raises(InvalidRequest) as err:
        check(ctx(), body=body)
    assert err.value.param in (None, "model")


@pytest.mark.parametrize("tag", ["", "x" * 65, "naïve", "tab\there"])
def test_a_tag_must_be_short_printable_ascii(tag):
    with pytest.raises(InvalidRequest, match="x-tollgate-tag"):
        check(ctx(), tag=tag)


def test_an_origin_the_project_does_not_list_is_refused():
    with pytest.raises(PermissionDenied, match="origin"):
        check(ctx(), origin="https://evil.example.com")
    allowed = ctx(project={"cors_origins": ("https://app.example.com",)})
    assert check(allowed, origin="https://app.example.com").caller.project.id == "lab"


def test_the_model_must_be_allowed_for_the_project_and_the_key():
    with pytest.raises(ModelNotAllowed, match="project 'lab'"):
        check(ctx(), body={**CHAT, "model": "gpt-4o"})
    with pytest.raises(ModelNotAllowed, match="key 'laptop'"):
        check(ctx(key={"allowed_models": ("gpt-4.1-nano",)}))


def test_a_model_without_a_price_in_force_is_not_sent():
    later = pricing.Price(valid_from=NOW + timedelta(days=1), valid_to=None, tiers=PRICE.tiers)
    with pytest.raises(ModelNotPriced):
        check(ctx(prices=(later,)))


def test_a_hosted_tool_needs_a_price_in_the_project():
    body = {**CHAT, "tools": [{"type": "web_search"}]}
    with pytest.raises(UnsupportedParameter):
        check(ctx(), body=body)
    assert check(ctx(project={"priced_tools": ("web_search",)}), body=body).price == PRICE


def test_moderations_are_free_in_any_project():
    body = {"model": "omni-moderation-latest", "input": "text"}
    assert check(ctx(), body=body, kind=routes.MODERATIONS).price == pricing.FREE


def test_a_key_lists_the_models_its_project_allows_priced_now_and_its_own_subset():
    later = pricing.Price(valid_from=NOW + timedelta(days=1), valid_to=None, tiers=PRICE.tiers)
    models = [
        ModelRecord("o4-mini", (PRICE,), created=7),
        ModelRecord("gpt-4o-mini", (PRICE,), created=3),
        ModelRecord("gpt-4.1-nano", (later,)),  # not priced yet
        ModelRecord("gpt-5", (PRICE,)),  # not the project's
    ]
    project = {"allowed_models": ("gpt-4o-mini", "o4-mini", "gpt-4.1-nano")}
    listed = admission.usable_models(auth.check_context(ctx(project=project), NOW), models, NOW)
    assert [m["id"] for m in listed] == ["gpt-4o-mini", "o4-mini"]  # sorted by id
    assert listed[1] == {"id": "o4-mini", "object": "model", "created": 7, "owned_by": "openai"}
    limited = auth.check_context(ctx(project=project, key={"allowed_models": ("o4-mini",)}), NOW)
    assert [m["id"] for m in admission.usable_models(limited, models, NOW)] == ["o4-mini"]
    everything = auth.check_context(ctx(project={"allowed_models": ("*",)}), NOW)
    assert len(admission.usable_models(everything, models, NOW)) == 3
