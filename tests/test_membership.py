"""Named keys with limits of their own: a laptop key and a CI key of one member, each
with its budget, rpm and models inside the member's and the project's."""

from __future__ import annotations

import json
from collections import Counter

from tests.conftest import admin_auth, bearer

CHAT = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "Say hi"}],
    "max_tokens": 20,
}
KEYS = "/admin/projects/demo/members/bob/keys"


def call(client, key, body=CHAT):
    return client.post(
        "/v1/chat/completions",
        data=json.dumps(body),
        headers=bearer(key),
        content_type="application/json",
    )


def add_key(admin_client, name, **limits):
    r = admin_client.post(KEYS, headers=admin_auth(), json={"name": name, **limits})
    assert r.status_code == 201, r.get_data(True)
    return r.get_json()["key"]


def test_a_key_budget_stops_that_key_only(client, admin_client, world):
    ci = add_key(admin_client, "ci", budget_usd="0.00002")  # room for a call or two
    answers = [call(client, ci) for _ in range(6)]
    codes = Counter(r.status_code for r in answers)
    assert codes[200] >= 1 and codes[429] >= 1
    refused = next(r for r in answers if r.status_code == 429)
    assert "key 'ci' of member 'bob'" in refused.get_json()["error"]["message"]
    ci_cost = sum(u["cost_nano"] for u in world.usage() if u["key_name"] == "ci")
    assert ci_cost <= 20_000  # zero overshoot: the estimate bounds each call
    # the member's default key is not touched by the CI key's budget
    assert call(client, world.keys["bob"]).status_code == 200
    [listed] = [
        k
        for k in admin_client.get(KEYS, headers=admin_auth()).get_json()["data"]
        if k["name"] == "ci"
    ]
    assert listed["budget_usd"] == "0.000020000" and listed["spent_usd"] is not None
    assert int(listed["spent_nano"]) == ci_cost


def test_a_key_calls_only_its_models_and_lists_only_them(client, admin_client, world):
    world.prov.update_project("demo", allowed_models=["gpt-4o-mini", "text-embedding-3-small"])
    key = add_key(admin_client, "embed-only", allowed_models=["text-embedding-3-small"])
    r = call(client, key)
    assert r.status_code == 403 and "key 'embed-only'" in r.get_json()["error"]["message"]
    r = client.post(
        "/v1/embeddings",
        headers=bearer(key),
        content_type="application/json",
        data=json.dumps({"model": "text-embedding-3-small", "input": "x"}),
    )
    assert r.status_code == 200
    listed = client.get("/v1/models", headers=bearer(key)).get_json()["data"]
    assert [m["id"] for m in listed] == ["text-embedding-3-small"]
    # a key's models must be the project's
    r = admin_client.post(
        KEYS, headers=admin_auth(), json={"name": "wide", "allowed_models": ["gpt-4o"]}
    )
    assert r.status_code == 400 and r.get_json()["error"]["param"] == "allowed_models"


def test_a_key_rpm_limits_that_key(client, admin_client, world):
    key = add_key(admin_client, "slow", rpm=2)
    codes = [call(client, key).status_code for _ in range(4)]
    assert codes[:2] == [200, 200] and 429 in codes[2:]
    assert call(client, world.keys["bob"]).status_code == 200


def test_limits_survive_rotation_and_can_be_changed_or_removed(client, admin_client, world):
    add_key(admin_client, "ci", budget_usd="0.00000001")
    r = admin_client.post(KEYS + "/ci/rotate", headers=admin_auth(), json={})
    assert r.status_code == 200
    new = r.get_json()["key"]
    assert call(client, new).status_code == 429  # the rotated key kept its budget
    r = admin_client.patch(KEYS + "/ci", headers=admin_auth(), json={"budget_usd": None})
    assert r.status_code == 200 and r.get_json()["budget_nano"] is None
    assert call(client, new).status_code == 200
    bad = admin_client.patch(KEYS + "/ci", headers=admin_auth(), json={"rpm": 0})
    assert bad.status_code == 400 and bad.get_json()["error"]["param"] == "rpm"


def test_a_lead_sets_limits_on_members_keys_never_on_their_own(admin_client, world):
    lead = {"Authorization": f"Bearer {world.keys['alice']}"}
    r = admin_client.patch(KEYS + "/default", headers=lead, json={"rpm": 5})
    assert r.status_code == 200 and r.get_json()["rpm"] == 5
    own = admin_client.patch(
        "/admin/projects/demo/members/alice/keys/default", headers=lead, json={"rpm": 500}
    )
    assert own.status_code == 403
    audit = admin_client.get("/admin/audit", headers=admin_auth()).get_json()["data"]
    assert any(a["action"] == "key.limits" for a in audit)
