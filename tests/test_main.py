"""The entry points as clients use them: the official ``openai`` SDK over real HTTP,
and a budget hammered by 100 concurrent callers."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import openai as openai_sdk
import pytest
import requests

from functions.core import pricing, tokens
from tests.conftest import MINI, burst, make_price, wait_for_usage

RATES = make_price(*MINI).tiers["default"]
ROUTE_OF = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
    "/v1/responses": "responses",
}


@pytest.fixture
def sdk(proxy_url, world):
    return openai_sdk.OpenAI(base_url=proxy_url + "/v1", api_key=world.keys["bob"], max_retries=0)


def test_sdk_chat(sdk, world):
    raw = sdk.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}]
    )
    chat = raw.parse()
    assert chat.choices[0].message.content and chat.usage.prompt_tokens > 0
    [rec] = wait_for_usage(world)  # settled just after the answer's last byte
    assert raw.headers["x-tollgate-call-id"] == rec["call_id"]
    assert raw.headers["x-tollgate-cost-usd"] == pricing.format_usd(rec["cost_nano"])


def test_sdk_completions(sdk, world):
    out = sdk.completions.create(model="gpt-4o-mini", prompt="Once upon", max_tokens=5)
    assert out.choices[0].text and wait_for_usage(world)[0]["route"] == "completions"


def test_sdk_embeddings_base64_roundtrip(sdk, world):
    out = sdk.embeddings.create(model="text-embedding-3-small", input=["a", "b", "c"])
    assert len(out.data) == 3 and len(out.data[0].embedding) == 8
    assert world.upstream.received[-1].json["encoding_format"] == "base64"
    [rec] = wait_for_usage(world)
    assert rec["cost_nano"] == pricing.cost_nano(
        make_price("0.02", None, "0").tiers["default"],
        pricing.Usage(input_tokens=out.usage.prompt_tokens),
    )


def test_sdk_moderations_are_free(sdk, world):
    out = sdk.moderations.create(input=["kill it", "fine"])
    assert [r.flagged for r in out.results] == [True, False]
    [rec] = wait_for_usage(world)
    assert rec["route"] == "moderations" and rec["cost_nano"] == 0 and rec["status"] == "ok"


def test_sdk_responses(sdk, world):
    out = sdk.responses.create(model="gpt-4o-mini", input="hi", instructions="be brief")
    assert out.output_text and wait_for_usage(world)[0]["response_id"] == out.id


def test_sdk_models_list_and_get_show_only_allowed_priced_models(sdk, world):
    world.prov.update_project(
        "demo", allowed_models=["gpt-4o-mini", "text-embedding-3-small", "gpt-unpriced"]
    )
    assert [m.id for m in sdk.models.list()] == ["gpt-4o-mini", "text-embedding-3-small"]
    assert sdk.models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"
    with pytest.raises(openai_sdk.NotFoundError):
        sdk.models.retrieve("gpt-unpriced")
    assert world.upstream.received == []  # the list is Tollgate's, not upstream's


def test_sdk_sees_typed_errors(sdk, world, proxy_url):
    with pytest.raises(openai_sdk.PermissionDeniedError) as e:
        sdk.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert e.value.code == "model_not_allowed"
    bad = openai_sdk.OpenAI(base_url=proxy_url + "/v1", api_key="tg_" + "0" * 40, max_retries=0)
    with pytest.raises(openai_sdk.AuthenticationError):
        bad.models.list()
    world.prov.update_project("demo", budget_nano=1)
    with pytest.raises(openai_sdk.RateLimitError) as e:
        sdk.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
        )
    assert e.value.code == "budget_exceeded"
    assert e.value.response.headers["x-should-retry"] == "false"


def billed_at_the_estimate(world) -> tuple[dict, int]:
    """A chat body whose every call upstream bills exactly its hold, and that hold."""
    world.upstream.bill_cap = True
    world.upstream.prompt_tokens = lambda path, body: tokens.estimate_input_tokens(
        ROUTE_OF[path], body, body["model"]
    )
    body = {
        "model": "gpt-4o-mini",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "count to ten"}],
    }
    return body, pricing.estimate_nano(
        RATES, tokens.estimate_input_tokens("chat", body, "gpt-4o-mini"), 100
    )


def hundred_callers(proxy_url, world, body) -> list:
    return burst(
        100,
        lambda: requests.post(
            proxy_url + "/v1/chat/completions",
            json=body,
            timeout=60,
            headers={"Authorization": f"Bearer {world.keys['bob']}"},
        ),
    )


@pytest.mark.parametrize("daily_calls, fitting", [(7, 7), (20, 10)])
def test_hundred_callers_against_two_windows_daily_and_monthly(
    proxy_url, world, daily_calls, fitting
):
    """A monthly budget of 10 calls and a daily window of 7 (the daily binds) or 20 (the
    monthly binds): exactly the tighter number succeed, neither counter passes its
    limit by a nano-dollar, both equal the sum of the records."""
    body, per_call = billed_at_the_estimate(world)
    world.prov.update_project(
        "demo",
        budget_nano=10 * per_call,
        budget_period="monthly",
        windows=[{"period": "daily", "budget_nano": daily_calls * per_call}],
    )
    answers = hundred_callers(proxy_url, world, body)
    assert Counter(r.status_code for r in answers) == {200: fitting, 429: 100 - fitting}
    recs = world.usage()
    booked = sum(r["cost_nano"] for r in recs)
    now = datetime.now(UTC)
    monthly = world.counter("p", "demo", now.strftime("%Y-%m"))
    daily = world.counter("p", "demo", now.strftime("%Y-%m-%d"))
    assert monthly["spent"] == daily["spent"] == booked == fitting * per_call
    assert booked <= min(10, daily_calls) * per_call  # zero overshoot on both windows
    assert (daily["held"], daily["inflight"], monthly["held"]) == (0, 0, 0)
    assert world.live_holds() == []


def test_hundred_callers_against_a_budget_of_exactly_ten_calls(proxy_url, world):
    """Upstream bills exactly the estimate; the budget fits 10 calls: exactly 10 succeed,
    spend equals the limit, the counter equals the sum of records, no hold is left."""
    body, per_call = billed_at_the_estimate(world)
    world.prov.update_project("demo", budget_nano=10 * per_call)

    answers = hundred_callers(proxy_url, world, body)
    assert Counter(r.status_code for r in answers) == {200: 10, 429: 90}
    recs = world.usage()
    assert len(recs) == 10 and all(r["cost_nano"] == per_call for r in recs)
    counter = world.counter("p", "demo", datetime.now(UTC).strftime("%Y-%m"))
    assert counter["spent"] == sum(r["cost_nano"] for r in recs) == 10 * per_call
    assert (counter["held"], counter["inflight"]) == (0, 0)
    assert world.live_holds() == []
