"""The ``log`` function's JSON API over the in-memory store and ledger (tests/
memory_world.py; the stand-ins are held to the real ones by tests/test_admin_contract.py):
who sees which calls (a member their own, a lead their project, nobody another
project's) and the spend and budgets shown per project. In milliseconds; the pages,
CSV, groups and burn rates are tested on the emulator (tests/test_logpage.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.api_calls import log_api as api
from tests.conftest import bearer
from tests.memory_world import MemoryAdminWorld

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def world(memory_admin: MemoryAdminWorld) -> MemoryAdminWorld:
    return memory_admin


@pytest.fixture
def log_client(world: MemoryAdminWorld) -> Any:
    return world.log


@pytest.fixture
def client(world: MemoryAdminWorld) -> Any:
    return world.client


def chat(client, key, n=1):
    for _ in range(n):
        r = client.post(
            "/v1/chat/completions",
            data=json.dumps(CHAT),
            headers=bearer(key),
            content_type="application/json",
            buffered=True,  # read and closed, as a server does: a plain answer settles then
        )
        assert r.status_code == 200, r.get_data(True)


@pytest.fixture
def calls(client, world):
    """bob 2 calls, alice 1 in demo; carol 1 in another project 'other'."""
    chat(client, world.keys["bob"], 2)
    chat(client, world.keys["alice"], 1)
    world.prov.create_user("carol")
    world.prov.create_project("other", external_key="main", allowed_models=["gpt-4o-mini"])
    world.extra["carol"] = world.members.add_member("other", "carol", role="lead")
    chat(client, world.extra["carol"], 1)


def test_a_member_sees_only_their_own_calls(log_client, world, calls):
    bob = world.keys["bob"]
    mine = api(log_client, bob, "calls")["data"]
    assert [c["user"] for c in mine] == ["bob", "bob"]
    assert mine[0]["ts"] >= mine[1]["ts"]  # newest first
    assert set(mine[0]) >= {
        "model",
        "input_tokens",
        "cached_tokens",
        "output_tokens",
        "cost_usd",
        "status",
        "latency_ms",
        "streamed",
        "cached",
        "estimated",
    }
    # asking for the whole project, or smuggling a user filter, changes nothing
    assert [c["user"] for c in api(log_client, bob, "calls", project="demo")["data"]] == [
        "bob",
        "bob",
    ]
    assert [c["user"] for c in api(log_client, bob, "calls", user="alice")["data"]] == [
        "bob",
        "bob",
    ]
    e = api(log_client, bob, "calls", status=403, project="demo", member="alice")["error"]
    assert e["param"] == "member"
    assert api(log_client, bob, "calls", status=403, project="other")["error"]["type"] == (
        "permission_error"
    )


def test_a_lead_sees_their_project_and_nothing_else(log_client, world, calls):
    alice = world.keys["alice"]
    users = sorted(c["user"] for c in api(log_client, alice, "calls", project="demo")["data"])
    assert users == ["alice", "bob", "bob"]
    only_bob = api(log_client, alice, "calls", project="demo", member="bob")["data"]
    assert {c["user"] for c in only_bob} == {"bob"} and len(only_bob) == 2
    assert api(log_client, alice, "calls", status=403, project="other")
    # carol leads 'other' and sees nothing of demo
    carol = world.extra["carol"]
    assert {c["project"] for c in api(log_client, carol, "calls", project="other")["data"]} == {
        "other"
    }
    assert api(log_client, carol, "calls", status=403, project="demo", member="bob")


def test_me_shows_budgets_with_their_top_ups_in_force(log_client, world):
    now = datetime.now(UTC)
    world.prov.update_project(
        "demo",
        **{
            "topups": [
                {
                    "amount_nano": 2 * 10**9,
                    "until": now + timedelta(days=1),
                    "note": "<b>launch</b>",
                },
                {"amount_nano": 7 * 10**9, "until": now - timedelta(days=1), "note": "over"},
            ]
        },
    )
    world.members.update_member(
        "demo",
        "bob",
        {
            "budget_nano": 10**9,
            "topups": [
                {"amount_nano": 5 * 10**8, "until": now + timedelta(hours=5), "note": "deadline"}
            ],
        },
    )
    [demo] = api(log_client, world.keys["bob"], "me")["projects"]
    assert demo["budget_usd"] == "12.000000000"  # $10 + the top-up in force, not the old
    assert demo["member_budget_usd"] == "1.500000000"
    assert [(t["user"], t["amount_usd"], t["note"]) for t in demo["topups"]] == [
        (None, "2.000000000", "<b>launch</b>"),
        ("bob", "0.500000000", "deadline"),
    ]


def test_me_shows_spent_held_and_budget_per_project(log_client, world, calls):
    me = api(log_client, world.keys["bob"], "me")
    assert me["user"] == {"id": "bob", "name": "Bob"}
    [demo] = me["projects"]
    assert demo["id"] == "demo" and demo["role"] == "member" and "members" not in demo
    assert demo["budget_usd"] == "10.000000000" and demo["held_usd"] == "0.000000000"
    spent = sum(
        int(c["cost_usd"].replace(".", ""))
        for c in api(log_client, world.keys["alice"], "calls", project="demo")["data"]
    )
    assert int(demo["spent_usd"].replace(".", "")) == spent
    assert demo["member_budget_usd"] is None and demo["member_spent_usd"] != "0.000000000"
    lead = api(log_client, world.keys["alice"], "me")["projects"][0]
    assert lead["members"] == ["alice", "bob"]
