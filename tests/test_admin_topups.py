"""Top-ups: +$X on a project's or a member's budget until a date, audited, ending by
themselves; a lead tops up members of their project, within its budget."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from tests.conftest import admin_auth, bearer

CHAT = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "Say hi"}],
    "max_tokens": 20,
}
TOPUPS = "/admin/projects/demo/topups"


def call(client, key):
    return client.post(
        "/v1/chat/completions",
        data=json.dumps(CHAT),
        headers=bearer(key),
        content_type="application/json",
    )


def soon(**delta) -> str:
    return (datetime.now(UTC) + timedelta(**delta)).isoformat()


def test_a_project_top_up_lets_calls_through_until_it_ends(client, admin_client, world):
    world.prov.update_project("demo", budget_nano=1000)  # less than one call
    assert call(client, world.keys["bob"]).status_code == 429
    r = admin_client.post(
        TOPUPS,
        headers=admin_auth(),
        json={"amount_usd": "0.5", "until": soon(days=2), "note": "demo day"},
    )
    assert r.status_code == 201, r.get_data(True)
    assert r.get_json()["amount_usd"] == "0.500000000" and r.get_json()["user"] is None
    assert call(client, world.keys["bob"]).status_code == 200
    listed = admin_client.get(TOPUPS, headers=admin_auth()).get_json()["data"]
    assert [(t["note"], t["active"]) for t in listed] == [("demo day", True)]
    audit = admin_client.get("/admin/audit", headers=admin_auth()).get_json()["data"]
    assert any(a["action"] == "topup.add" for a in audit)
    # once its date has passed it counts no more (nothing removes it)
    doc = world.db.collection("projects").document("demo")
    [t] = doc.get().to_dict()["topups"]
    doc.update({"topups": [{**t, "until": datetime.now(UTC) - timedelta(seconds=1)}]})
    assert call(client, world.keys["bob"]).status_code == 429
    listed = admin_client.get(TOPUPS, headers=admin_auth()).get_json()["data"]
    assert [t["active"] for t in listed] == [False]


def test_top_ups_are_checked(admin_client, world):
    for body, param in [
        ({"amount_usd": "0", "until": soon(days=1)}, "amount_usd"),
        ({"amount_usd": "1", "until": soon(days=-1)}, "until"),
        ({"amount_usd": "1", "until": soon(days=400)}, "until"),
        ({"amount_usd": "1"}, "until"),
        ({"user": "bob", "amount_usd": "1", "until": soon(days=1)}, "user"),
    ]:
        r = admin_client.post(TOPUPS, headers=admin_auth(), json=body)
        assert r.status_code == 400 and r.get_json()["error"]["param"] == param, (body, r.json)
