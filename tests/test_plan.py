"""A call's hold plan (``functions/core/plan.py``): pure, from a checked request to the
body sent upstream, the tier and estimate it is held at, the budget counters it is
booked against and its rate windows. No emulator, no upstream."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from functions.core import admission, pricing, routes
from functions.core.budget import Topup
from functions.core.errors import InvalidRequest, ModelNotPriced
from functions.core.plan import Ask, budget_limits, plan
from functions.core.records import (
    CallContext,
    KeyRecord,
    LimitRecord,
    MemberRecord,
    ModelRecord,
    ProjectRecord,
    UserRecord,
)
from functions.core.settings import Settings

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
DEFAULT = pricing.Rates(input=150_000, output=600_000)
PRIORITY = pricing.Rates(input=300_000, output=1_200_000)
SETTINGS = Settings(gcp_project="p", default_max_output_tokens=1000)


def price(**tiers: pricing.Rates) -> pricing.Price:
    return pricing.Price(valid_from=NOW - timedelta(days=1), valid_to=None, tiers=tiers)


def checked(
    body: dict[str, Any],
    *,
    project: dict[str, Any] | None = None,
    member: dict[str, Any] | None = None,
    key: dict[str, Any] | None = None,
    p: pricing.Price | None = None,
    model_limit: LimitRecord | None = None,
    kind: str = routes.CHAT,
) -> tuple[Ask, admission.Checked]:
    ctx = CallContext(
        key=KeyRecord("h", "lab", "bob", "laptop", **(key or {})),
        user=UserRecord("bob"),
        member=MemberRecord("lab", "bob", **(member or {})),
        project=ProjectRecord(
            "lab", **{"allowed_models": ("gpt-4o-mini",), "external_key": "main", **(project or {})}
        ),
        model=ModelRecord("gpt-4o-mini", (p or price(default=DEFAULT),)),
        model_limit=model_limit,
    )
    ok = admission.check(kind, ctx, body, NOW, origin=None, tag=None)
    ask = Ask(kind, "h", body, NOW, None, None, None, count=lambda: 100)
    return ask, ok


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], **extra}


def no_earlier(project: str, response_id: str) -> int | None:
    return None


def test_the_estimate_is_the_input_and_the_whole_output_cap_at_the_price():
    ask, ok = checked(chat(max_tokens=50, n=2))
    a = plan(ask, ok, SETTINGS, no_earlier)
    assert a.plan.estimate_nano == pricing.estimate_nano(DEFAULT, 100, 50, 2)
    assert a.plan.estimate_tokens == 100 + 50 * 2
    assert (a.plan.project, a.plan.user, a.plan.key_name, a.plan.external_key) == (
        "lab",
        "bob",
        "laptop",
        "main",
    )
    assert a.plan.expires_at == NOW + timedelta(seconds=SETTINGS.hold_ttl_s)
    assert a.plan.call_id.startswith("call_") and a.plan.period_key == "2026-12"


def test_without_a_cap_the_projects_default_then_the_settings_is_held():
    ask, ok = checked(chat())
    assert plan(ask, ok, SETTINGS, no_earlier).spec.output_cap == 1000
    ask, ok = checked(chat(), project={"default_max_output_tokens": 64})
    assert plan(ask, ok, SETTINGS, no_earlier).spec.output_cap == 64


def test_auto_tier_is_held_at_the_dearer_tier_or_sent_as_default():
    # a priority price: "auto" may be served at priority, so it is held there
    ask, ok = checked(chat(service_tier="auto"), p=price(default=DEFAULT, priority=PRIORITY))
    a = plan(ask, ok, SETTINGS, no_earlier)
    assert a.rates == PRIORITY and a.spec.body["service_tier"] == "auto"
    # none: "auto" is sent as "default", which is what is held
    ask, ok = checked(chat(service_tier="auto"))
    a = plan(ask, ok, SETTINGS, no_earlier)
    assert a.rates == DEFAULT and a.spec.modified and a.spec.body["service_tier"] == "default"


def test_a_tier_without_a_price_is_refused():
    ask, ok = checked(chat(service_tier="flex"))
    with pytest.raises(ModelNotPriced) as e:
        plan(ask, ok, SETTINGS, no_earlier)
    assert e.value.param == "service_tier"


def test_an_earlier_response_is_held_only_if_this_project_received_it():
    body = {"model": "gpt-4o-mini", "input": "more", "previous_response_id": "resp_1"}
    ask, ok = checked(body, kind=routes.RESPONSES)
    asked: list[tuple[str, str]] = []

    def earlier(project: str, response_id: str) -> int | None:
        asked.append((project, response_id))
        return 4000 if response_id == "resp_1" else None

    a = plan(ask, ok, SETTINGS, earlier)
    assert asked == [("lab", "resp_1")] and a.input_tokens == 100 + 4000
    with pytest.raises(InvalidRequest) as e:
        plan(ask, ok, SETTINGS, no_earlier)
    assert e.value.param == "previous_response_id"


def test_last_used_is_touched_at_most_once_a_minute():
    ask, ok = checked(chat(), key={"last_used_at": NOW - timedelta(seconds=30)})
    assert plan(ask, ok, SETTINGS, no_earlier).plan.touch_key is None
    ask, ok = checked(chat(), key={"last_used_at": NOW - timedelta(minutes=2)})
    assert plan(ask, ok, SETTINGS, no_earlier).plan.touch_key == "h"


def test_budgets_include_top_ups_in_force_and_soft_ones_only_track():
    ask, ok = checked(
        chat(),
        project={
            "budget_nano": 1000,
            "topups": (Topup(500, NOW + timedelta(hours=1)), Topup(9, NOW)),  # one ended
        },
        member={"budget_nano": 300, "budget_soft": True},
        model_limit=LimitRecord(budget_nano=70),
    )
    by_scope = {lim.scope: lim for lim in budget_limits(ok.caller, "gpt-4o-mini", NOW)}
    assert by_scope["project"].limit_nano == 1500
    assert by_scope["member"].limit_nano is None and by_scope["member"].soft_nano == 300
    assert by_scope["model"].limit_nano == 70
