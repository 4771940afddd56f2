"""What a project lead may do to whom, through the real ``Admin`` (routing, a lead's
key checked against the members and keys) over in-memory store classes
(tests/memory_admin.py, held to the real ones by tests/test_admin_contract.py) and
the in-memory proxy: a lead manages the members of their own project, never
themselves, never another lead, and tops up within the project's budget. These ran
on the emulator in tests/test_admin.py; here they take milliseconds."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.api_calls import admin_audit as audit
from tests.api_calls import admin_call as call
from tests.api_calls import admin_err as err
from tests.conftest import ADMIN_TOKEN, bearer
from tests.memory_world import MemoryAdminWorld

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
TOPUPS = "/admin/projects/demo/topups"


@pytest.fixture
def world(memory_admin: MemoryAdminWorld) -> MemoryAdminWorld:
    return memory_admin


@pytest.fixture
def admin_client(world: MemoryAdminWorld) -> Any:
    return world.admin


@pytest.fixture
def client(world: MemoryAdminWorld) -> Any:
    return world.client


def soon(**delta) -> str:
    return (datetime.now(UTC) + timedelta(**delta)).isoformat()


def chat(client, key):
    return client.post(
        "/v1/chat/completions",
        data=json.dumps({**CHAT, "max_tokens": 20}),
        headers=bearer(key),
        content_type="application/json",
        buffered=True,  # read and closed, as a server does: a plain answer settles then
    )


def test_a_members_proxy_key_is_refused_and_a_lead_is_confined(admin_client, world):
    bob, alice = world.keys["bob"], world.keys["alice"]
    assert err(admin_client, "GET", "/projects/demo/members", token=bob)[0] == 403
    assert call(admin_client, "GET", "/projects/demo/members", token=alice, status=200)
    for method, path in [
        ("GET", "/users"),
        ("POST", "/sweep"),
        ("GET", "/projects/demo"),
        ("GET", "/projects/other/members"),
        ("GET", "/queries"),
        ("PUT", "/projects/demo/limits/gpt-4o-mini"),
    ]:
        assert err(admin_client, method, path, {}, token=alice)[0] == 403, path


def test_lead_adds_rebudgets_rotates_and_removes_members(admin_client, world):
    alice = world.keys["alice"]
    world.prov.create_user("carol")
    out = call(
        admin_client,
        "POST",
        "/projects/demo/members",
        {"user": "carol", "budget_usd": "1.5"},
        token=alice,
        status=201,
    )
    assert out["key"].startswith("tg_") and out["member"]["budget_usd"] == "1.500000000"
    status, e = err(
        admin_client, "POST", "/projects/demo/members", {"user": "bob", "role": "lead"}, token=alice
    )
    assert status == 403 and e["param"] == "role"
    assert (
        call(
            admin_client,
            "PATCH",
            "/projects/demo/members/carol",
            {"budget_usd": 3},
            token=alice,
            status=200,
        )["budget_usd"]
        == "3.000000000"
    )
    assert (
        err(admin_client, "PATCH", "/projects/demo/members/carol", {"role": "lead"}, token=alice)[0]
        == 403
    )
    new = call(
        admin_client,
        "POST",
        "/projects/demo/members/carol/keys/default/rotate",
        {},
        token=alice,
        status=200,
    )["key"]
    assert new != out["key"]
    assert call(
        admin_client, "DELETE", "/projects/demo/members/carol", token=alice, status=200
    ) == {"deleted": True, "keys_revoked": 1}
    actors = {a["actor"] for a in audit(admin_client) if a["target"].startswith("demo|carol")}
    assert actors == {"lead:alice@demo"}


def test_an_admin_makes_a_member_lead_and_back(admin_client, world):
    bob = world.keys["bob"]
    world.prov.create_user("carol")
    assert err(admin_client, "GET", "/projects/demo/members", token=bob)[0] == 403
    assert (
        call(admin_client, "PATCH", "/projects/demo/members/bob", {"role": "lead"}, status=200)[
            "role"
        ]
        == "lead"
    )
    # bob's own key now manages demo's members, and only that
    call(admin_client, "POST", "/projects/demo/members", {"user": "carol"}, token=bob, status=201)
    assert err(admin_client, "GET", "/users", token=bob)[0] == 403
    assert (
        call(admin_client, "PATCH", "/projects/demo/members/bob", {"role": "member"}, status=200)[
            "role"
        ]
        == "member"
    )
    assert err(admin_client, "GET", "/projects/demo/members", token=bob)[0] == 403
    assert (
        err(admin_client, "PATCH", "/projects/demo/members/bob", {"role": "owner"})[1]["param"]
        == "role"
    )


def test_audit2_a_lead_cannot_change_their_own_membership(admin_client, world):
    alice = world.keys["alice"]
    for method, path, body in [
        ("PATCH", "/projects/demo/members/alice", {"budget_usd": "999999"}),
        ("PATCH", "/projects/demo/members/alice", {"role": "member"}),
        ("POST", "/projects/demo/members/alice/keys/default/rotate", {}),
        ("DELETE", "/projects/demo/members/alice", None),
    ]:
        status, e = err(admin_client, method, path, body, token=alice)
        assert (status, e["type"]) == (403, "permission_error"), (method, path, e)
    member = world.prov.get("members", "demo|alice", "member")
    assert member["budget_nano"] is None and member["role"] == "lead"
    # an administrator still can
    assert (
        call(
            admin_client, "PATCH", "/projects/demo/members/alice", {"budget_usd": "2"}, status=200
        )["budget_usd"]
        == "2.000000000"
    )


def test_audit2_member_budgets_must_fit_inside_the_project_budget(admin_client, world):
    alice = world.keys["alice"]  # demo's budget is $10
    for token in (alice, ADMIN_TOKEN):
        status, e = err(
            admin_client,
            "PATCH",
            "/projects/demo/members/bob",
            {"budget_usd": "10.000000001"},
            token=token,
        )
        assert (status, e["param"]) == (400, "budget_usd") and "$10.000000000" in e["message"]
    world.prov.create_user("carol")
    status, e = err(
        admin_client,
        "POST",
        "/projects/demo/members",
        {"user": "carol", "budget_usd": "11"},
        token=alice,
    )
    assert (status, e["param"]) == (400, "budget_usd")
    assert world.members.list_keys("demo", "carol") == []  # nothing half-written
    assert (
        call(
            admin_client,
            "PATCH",
            "/projects/demo/members/bob",
            {"budget_usd": "10"},
            token=alice,
            status=200,
        )["budget_usd"]
        == "10.000000000"
    )


def test_audit3_a_lead_cannot_act_on_a_co_lead(admin_client, client, world):
    alice = world.keys["alice"]
    call(admin_client, "PATCH", "/projects/demo/members/bob", {"role": "lead"}, status=200)
    for method, path, body in [
        ("POST", "/projects/demo/members/bob/keys/default/rotate", {}),
        ("PATCH", "/projects/demo/members/bob", {"budget_usd": "1"}),
        ("DELETE", "/projects/demo/members/bob", None),
    ]:
        status, e = err(admin_client, method, path, body, token=alice)
        assert status == 403 and "administrator" in e["message"], (method, path)
    # bob's key still works, and nothing names bob as an actor
    assert chat(client, world.keys["bob"]).status_code == 200
    assert not any(a["actor"].startswith("lead:bob") for a in audit(admin_client))
    # an administrator manages leads
    assert call(
        admin_client, "POST", "/projects/demo/members/bob/keys/default/rotate", {}, status=200
    )["key"].startswith("tg_")


def test_a_lead_tops_up_members_within_the_project_budget(client, admin_client, world):
    world.prov.update_project("demo", budget_nano=10**9)  # $1
    world.members.update_member("demo", "bob", {"budget_nano": 1000})
    lead = {"Authorization": f"Bearer {world.keys['alice']}"}
    assert chat(client, world.keys["bob"]).status_code == 429
    r = admin_client.post(
        TOPUPS, headers=lead, json={"user": "bob", "amount_usd": "0.1", "until": soon(hours=3)}
    )
    assert r.status_code == 201, r.get_data(True)
    assert chat(client, world.keys["bob"]).status_code == 200
    # past the project's own budget, a lead is refused (an administrator is not)
    r = admin_client.post(
        TOPUPS, headers=lead, json={"user": "bob", "amount_usd": "0.95", "until": soon(hours=3)}
    )
    assert r.status_code == 403 and r.get_json()["error"]["param"] == "amount_usd"
    # never themselves, never the project
    for body in (
        {"user": "alice", "amount_usd": "0.1", "until": soon(hours=1)},
        {"amount_usd": "0.1", "until": soon(hours=1)},
    ):
        assert admin_client.post(TOPUPS, headers=lead, json=body).status_code == 403
