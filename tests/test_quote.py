"""Dry-run quotes (``x-tollgate-dry-run: 1``): checked like a call, answered with the
estimate, the price in force and every budget's room; nothing forwarded, nothing booked."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from functions.core import pricing, quote
from functions.core.errors import InvalidRequest
from tests.conftest import bearer

CHAT = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "Say hi"}],
    "max_tokens": 50,
}
DRY = {"x-tollgate-dry-run": "1"}


def post(client, key, body, **headers):
    return client.post(
        "/v1/chat/completions",
        data=json.dumps(body),
        headers={**bearer(key), **headers},
        content_type="application/json",
    )


def nano(usd: str | None) -> int | None:
    if usd is None:
        return None
    whole, frac = usd.lstrip("-").split(".")
    value = int(whole) * 10**9 + int(frac)
    return -value if usd.startswith("-") else value


def test_a_quote_names_estimate_price_and_room_and_books_nothing(client, world):
    month = datetime.now(UTC).strftime("%Y-%m")
    assert post(client, world.keys["bob"], CHAT).status_code == 200  # some spend first
    [first] = world.usage()
    spent = first["cost_nano"]

    r = post(client, world.keys["bob"], CHAT, **DRY)
    assert r.status_code == 200 and r.headers["x-tollgate-dry-run"] == "1"
    q = r.get_json()
    assert q["object"] == "tollgate.quote" and q["would_be_admitted"] is True
    assert (q["model"], q["route"], q["project"], q["user"]) == (
        "gpt-4o-mini",
        "chat",
        "demo",
        "bob",
    )
    assert q["estimate"]["output_tokens_cap"] == 50 and q["estimate"]["choices"] == 1
    assert q["price"]["usd_per_1m_tokens"] == {
        "input": "0.15",
        "output": "0.6",
        "cached_input": "0.075",
    }
    project, member = q["budgets"]
    assert (project["scope"], project["period"]) == ("project", month)
    assert nano(project["budget_usd"]) == 10 * 10**9
    assert nano(project["spent_usd"]) == spent
    assert nano(project["remaining_usd"]) == 10 * 10**9 - spent
    assert member["scope"] == "member" and member["budget_usd"] is None
    assert r.headers["x-tollgate-budget-remaining-usd"] == project["remaining_usd"]
    # nothing went upstream, nothing was held or booked
    assert len(world.upstream.received) == 1
    assert len(world.usage()) == 1 and world.live_holds() == []
    assert world.counter("p", "demo", month)["spent"] == spent
    # the quote is what the real call then holds
    assert post(client, world.keys["bob"], CHAT).status_code == 200
    second = [u for u in world.usage() if u["call_id"] != first["call_id"]][0]
    assert nano(q["estimate"]["cost_usd"]) == second["estimate_nano"]


def test_a_quote_that_does_not_fit_says_why_and_the_call_is_then_refused(client, world):
    world.db.collection("members").document("demo|bob").update({"budget_nano": 1000})
    r = post(client, world.keys["bob"], CHAT, **DRY)
    assert r.status_code == 200
    q = r.get_json()
    assert q["would_be_admitted"] is False and "member 'bob'" in q["message"]
    member = next(b for b in q["budgets"] if b["scope"] == "member")
    assert member["fits"] is False and nano(member["remaining_usd"]) == 1000
    assert q["remaining_usd"] == pricing.format_usd(1000)  # the tightest budget
    assert post(client, world.keys["bob"], CHAT).status_code == 429
    assert world.upstream.received == []


def test_a_quote_runs_every_check_of_a_call(client, world):
    r = post(client, "tg_" + "0" * 40, CHAT, **DRY)
    assert r.status_code == 401
    r = post(client, world.keys["bob"], {**CHAT, "model": "gpt-4o"}, **DRY)
    assert r.status_code == 403 and r.get_json()["error"]["param"] == "model"
    r = post(client, world.keys["bob"], {**CHAT, "max_tokens": 0}, **DRY)
    assert r.status_code == 400 and r.get_json()["error"]["param"] == "max_tokens"
    r = post(client, world.keys["bob"], CHAT, **{"x-tollgate-dry-run": "maybe"})
    assert r.status_code == 400
    assert r.get_json()["error"]["param"] == "x-tollgate-dry-run"
    assert world.upstream.received == [] and world.usage() == []


@pytest.mark.parametrize(
    "value, dry",
    [(None, False), ("", False), ("0", False), ("false", False), ("1", True), ("TRUE", True)],
)
def test_the_header_reads_one_or_zero(value, dry):
    assert quote.wants_dry_run(value) is dry


def test_any_other_header_value_is_refused_by_name():
    with pytest.raises(InvalidRequest) as e:
        quote.wants_dry_run("yes please")
    assert e.value.param == "x-tollgate-dry-run"
