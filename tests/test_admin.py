"""The admin API against the emulator: every operation, audit records, validation
errors, and that secrets and keys never come back. What a lead may do to whom is
tested over the in-memory store (tests/test_admin_memory.py)."""

from __future__ import annotations

import json

import pytest

from functions.core import auth
from tests.api_calls import admin_audit as audit
from tests.api_calls import admin_call as call
from tests.api_calls import admin_err as err
from tests.conftest import ADMIN_TOKEN, UPSTREAM_SECRET, admin_auth, bearer

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


# --- authorisation -----------------------------------------------------------------


def test_admin_token_is_required_and_compared(admin_client, world):
    for headers in ({}, bearer("wrong"), bearer(ADMIN_TOKEN + "x"), {"Authorization": ADMIN_TOKEN}):
        r = admin_client.get("/users", headers=headers)
        assert r.status_code == 401 and r.get_json()["error"]["code"] == "invalid_api_key"
    assert admin_client.get("/admin/users", headers=admin_auth()).status_code == 200


# --- users ----------------------------------------------------------------------------


def test_users_crud_and_disable_stops_keys_at_once(admin_client, client, world):
    u = call(
        admin_client,
        "POST",
        "/users",
        {"id": "dave", "name": "Dave", "email": "d@example.com"},
        status=201,
    )
    assert u["id"] == "dave" and u["disabled"] is False
    assert err(admin_client, "POST", "/users", {"id": "dave"})[0] == 409
    assert err(admin_client, "POST", "/users", {"id": "bad id!"})[1]["param"] == "id"
    assert err(admin_client, "POST", "/users", {"id": "x", "email": "nope"})[1]["param"] == "email"
    assert err(admin_client, "POST", "/users", {"id": "x", "admin": True})[1]["param"] == "admin"
    assert err(admin_client, "GET", "/users/nobody")[0] == 404
    assert call(admin_client, "PATCH", "/users/dave", {"name": "D."}, status=200)["name"] == "D."
    got = call(admin_client, "GET", "/users/dave", status=200)
    assert (got["id"], got["name"], got["email"], got["disabled"]) == (
        "dave",
        "D.",
        "d@example.com",
        False,
    )
    ids = [x["id"] for x in call(admin_client, "GET", "/users", status=200)["data"]]
    assert ids == ["alice", "bob", "dave"]

    assert (
        client.post(
            "/v1/chat/completions", json=CHAT, headers=bearer(world.keys["bob"])
        ).status_code
        == 200
    )
    assert call(admin_client, "POST", "/users/bob/disable", status=200)["disabled"] is True
    assert (
        client.post(
            "/v1/chat/completions", json=CHAT, headers=bearer(world.keys["bob"])
        ).status_code
        == 401
    )


# --- external keys ---------------------------------------------------------------------


def test_external_key_is_validated_stored_as_secret_and_shown_by_last4(admin_client, world):
    base = world.upstream.base_url
    status, e = err(
        admin_client,
        "POST",
        "/external-keys",
        {"id": "bad", "secret": "sk-wrong-key-123456", "base_url": base},
    )
    assert status == 400 and "401" in e["message"] and "invalid_api_key" in e["message"]
    assert "sk-wrong-key-123456" not in e["message"]
    assert world.db.collection("external_keys").document("bad").get().exists is False
    sent = world.upstream.received[-1]
    assert sent.path == "/v1/embeddings" and sent.json["input"] == "test"

    out = call(
        admin_client,
        "POST",
        "/external-keys",
        {"id": "second", "secret": UPSTREAM_SECRET, "base_url": base},
        status=201,
    )
    assert out["last4"] == UPSTREAM_SECRET[-4:] and UPSTREAM_SECRET not in json.dumps(out)
    stored = json.loads(world.secrets_file.read_text())["tollgate-ext-second"]["versions"]
    assert stored == [UPSTREAM_SECRET]
    assert UPSTREAM_SECRET not in json.dumps(
        world.db.collection("external_keys").document("second").get().to_dict(), default=str
    )

    listed = call(admin_client, "GET", "/external-keys", status=200)["data"]
    assert {k["id"]: k["projects"] for k in listed} == {"main": ["demo"], "second": []}
    assert UPSTREAM_SECRET not in json.dumps(listed)

    world.upstream.valid_keys.add("sk-rotated-secret-9999")
    rot = call(
        admin_client,
        "POST",
        "/external-keys/second/rotate",
        {"secret": "sk-rotated-secret-9999"},
        status=200,
    )
    assert rot["last4"] == "9999" and rot["rotated_at"]
    assert err(admin_client, "DELETE", "/external-keys/main")[0] == 409  # demo uses it
    assert call(admin_client, "DELETE", "/external-keys/second", status=200)["deleted"]
    assert err(admin_client, "DELETE", "/external-keys/second")[0] == 404


def test_unreachable_base_url_is_a_clear_400(admin_client, world):
    from tests.emulator import free_port

    status, e = err(
        admin_client,
        "POST",
        "/external-keys",
        {"id": "far", "secret": "sk-x-1234567890", "base_url": f"http://127.0.0.1:{free_port()}"},
    )
    assert status == 400 and "could not be reached" in e["message"]


# --- models and prices ----------------------------------------------------------------------


def test_dated_costs_end_the_previous_one(admin_client, client, world):
    call(admin_client, "POST", "/models", {"id": "gpt-x"}, status=201)
    assert err(admin_client, "POST", "/models", {"id": "gpt-x"})[0] == 409
    call(
        admin_client,
        "POST",
        "/models/gpt-x/costs",
        {"valid_from": "2026-01-01T00:00:00Z", "input": "1", "cached_input": "0.1", "output": "4"},
        status=201,
    )
    m = call(
        admin_client,
        "POST",
        "/models/gpt-x/costs",
        {
            "valid_from": "2026-06-01T00:00:00+02:00",
            "input": "0.5",
            "output": "2",
            "tiers": {"flex": {"input": "0.25", "output": "1"}},
        },
        status=201,
    )
    first, second = m["prices"]
    assert first["valid_to"] == second["valid_from"] == "2026-05-31T22:00:00Z"
    assert second["valid_to"] is None and m["price"]["tiers"]["default"]["input"] == "0.5"
    assert second["tiers"]["flex"]["output"] == "1"
    status, e = err(
        admin_client,
        "POST",
        "/models/gpt-x/costs",
        {"valid_from": "2026-07-01T00:00:00", "input": "1", "output": "1"},
    )
    assert status == 400 and e["param"] == "valid_from" and "zone" in e["message"]
    assert (
        err(
            admin_client,
            "POST",
            "/models/gpt-x/costs",
            {"valid_from": "2026-07-01T00:00:00Z", "input": "-1", "output": "1"},
        )[1]["param"]
        == "input"
    )
    assert (
        err(
            admin_client,
            "POST",
            "/models/nope/costs",
            {"valid_from": "2026-07-01T00:00:00Z", "input": "1", "output": "1"},
        )[0]
        == 404
    )
    assert "gpt-x" in [x["id"] for x in call(admin_client, "GET", "/models", status=200)["data"]]


def test_price_table_loads_from_genai_prices_in_one_call_idempotently(admin_client, world):
    out = call(admin_client, "POST", "/models/load-prices", {}, status=200)
    assert out["source"].startswith("genai-prices ") and out["loaded"] > 50
    assert any("image" in s["reason"] or "audio" in s["reason"] for s in out["skipped"])
    mini = call(admin_client, "GET", "/models/gpt-4o", status=200)["price"]
    assert mini["tiers"]["default"] == {"input": "2.5", "cached_input": "1.25", "output": "10"}
    assert mini["source"] == out["source"]
    again = call(admin_client, "POST", "/models/load-prices", {}, status=200)
    assert again["loaded"] == 0 and again["unchanged"] == out["loaded"] + out["unchanged"]
    seeded = {"gpt-4o-mini", "text-embedding-3-small"}  # priced by the test world itself
    assert {c["model"] for c in out["conflicts"]} <= seeded
    assert {c["model"] for c in again["conflicts"]} <= seeded


# --- projects, members, keys, limits ----------------------------------------------------------


def test_project_lifecycle_with_spend(admin_client, client, world):
    p = call(
        admin_client,
        "POST",
        "/projects",
        {
            "id": "research",
            "name": "Research",
            "external_key": "main",
            "budget_usd": "25",
            "budget_period": "daily",
            "allowed_models": ["gpt-4o-mini"],
            "default_max_output_tokens": 100,
            "cache": {"enabled": True, "ttl_s": 60},
        },
        status=201,
    )
    assert p["budget_usd"] == "25.000000000" and p["cache"] == {"enabled": True, "ttl_s": 60}
    assert (
        err(admin_client, "POST", "/projects", {"id": "research", "external_key": "main"})[0] == 409
    )
    status, e = err(admin_client, "POST", "/projects", {"id": "x", "external_key": "none"})
    assert status == 400 and e["param"] == "external_key"
    for bad, param in [
        ({"budget_period": "fortnightly"}, "budget_period"),
        ({"budget_usd": "1.0000000001"}, "budget_usd"),
        ({"allowed_models": "gpt-4o"}, "allowed_models"),
        ({"default_max_output_tokens": 0}, "default_max_output_tokens"),
    ]:
        assert err(admin_client, "PATCH", "/projects/research", bad)[1]["param"] == param

    key = call(admin_client, "POST", "/projects/research/members", {"user": "bob"}, status=201)[
        "key"
    ]
    assert client.post("/v1/chat/completions", json=CHAT, headers=bearer(key)).status_code == 200
    spend = call(admin_client, "GET", "/projects/research", status=200)["spend"]
    assert int(spend["spent_nano"]) > 0 and spend["held_nano"] == 0 and spend["in_flight"] == 0
    assert spend["remaining_nano"] == 25_000_000_000 - spend["spent_nano"]

    assert (
        call(admin_client, "PATCH", "/projects/research", {"budget_usd": None}, status=200)[
            "budget_nano"
        ]
        is None
    )
    call(admin_client, "POST", "/projects/research/archive", status=200)
    assert client.post("/v1/chat/completions", json=CHAT, headers=bearer(key)).status_code == 401
    assert {p["id"] for p in call(admin_client, "GET", "/projects", status=200)["data"]} == {
        "demo",
        "research",
    }


def test_member_keys_named_expiring_rotated_revoked(admin_client, client, world):
    out = call(
        admin_client,
        "POST",
        "/projects/demo/members/bob/keys",
        {"name": "ci", "expires_at": "2099-01-01T00:00:00Z"},
        status=201,
    )
    ci = out["key"]
    assert err(admin_client, "POST", "/projects/demo/members/bob/keys", {"name": "ci"})[0] == 409
    assert client.post("/v1/chat/completions", json=CHAT, headers=bearer(ci)).status_code == 200
    keys = call(admin_client, "GET", "/projects/demo/members/bob/keys", status=200)["data"]
    by_name = {k["name"]: k for k in keys}
    assert by_name["ci"]["last4"] == ci[-4:] and by_name["ci"]["expires_at"].startswith("2099")
    assert by_name["ci"]["last_used_at"] is not None and by_name["default"]["created_at"]
    assert "key" not in by_name["ci"] and ci not in json.dumps(keys)

    new = call(admin_client, "POST", "/projects/demo/members/bob/keys/ci/rotate", status=200)["key"]
    assert client.post("/v1/chat/completions", json=CHAT, headers=bearer(ci)).status_code == 401
    assert client.post("/v1/chat/completions", json=CHAT, headers=bearer(new)).status_code == 200
    call(admin_client, "DELETE", "/projects/demo/members/bob/keys/ci", status=200)
    assert client.post("/v1/chat/completions", json=CHAT, headers=bearer(new)).status_code == 401
    assert err(admin_client, "DELETE", "/projects/demo/members/bob/keys/ci")[0] == 404

    members = call(admin_client, "GET", "/projects/demo/members", status=200)["data"]
    bob = next(m for m in members if m["user"] == "bob")
    assert int(bob["spent_nano"]) > 0 and len(bob["keys"]) == 3  # default + two revoked ci
    assert err(admin_client, "POST", "/projects/demo/members", {"user": "bob"})[0] == 409
    assert err(admin_client, "POST", "/projects/demo/members", {"user": "ghost"})[0] == 404
    assert (
        err(admin_client, "POST", "/projects/demo/members", {"user": "alice", "role": "owner"})[1][
            "param"
        ]
        == "role"
    )


def test_limits_set_list_and_clear(admin_client, client, world):
    call(
        admin_client,
        "PUT",
        "/projects/demo/limits/gpt-4o-mini",
        {"budget_usd": "0.000001", "rpm": 10},
        status=200,
    )
    call(
        admin_client,
        "PUT",
        "/projects/demo/limits/gpt-4o-mini/users/bob",
        {"tpm": 1000},
        status=200,
    )
    limits = call(admin_client, "GET", "/projects/demo/limits", status=200)["data"]
    assert [(x["model"], x["user"], x["budget_usd"], x["rpm"], x["tpm"]) for x in limits] == [
        ("gpt-4o-mini", None, "0.000001000", 10, None),
        ("gpt-4o-mini", "bob", None, None, 1000),
    ]
    r = client.post("/v1/chat/completions", json=CHAT, headers=bearer(world.keys["bob"]))
    assert r.status_code == 429
    call(admin_client, "DELETE", "/projects/demo/limits/gpt-4o-mini", status=200)
    r = client.post("/v1/chat/completions", json=CHAT, headers=bearer(world.keys["bob"]))
    assert r.status_code == 200
    assert err(admin_client, "DELETE", "/projects/demo/limits/gpt-4o-mini")[0] == 404
    call(admin_client, "DELETE", "/projects/demo/limits/gpt-4o-mini/users/bob", status=200)
    assert call(admin_client, "GET", "/projects/demo/limits", status=200)["data"] == []
    assert err(admin_client, "PUT", "/projects/demo/limits/m/users/ghost", {})[0] == 404
    assert err(admin_client, "PUT", "/projects/demo/limits/m", {"rpm": -1})[1]["param"] == "rpm"


# --- sweep, cache, ratelimits, audit ------------------------------------------------------------


@pytest.mark.leaves_holds
def test_sweep_books_expired_holds(admin_client, world):
    from datetime import UTC, datetime, timedelta

    from functions.store.ledger import Ledger
    from tests.plans import hold_plan

    past = datetime.now(UTC) - timedelta(hours=2)
    plan = hold_plan(
        777,
        limit=None,
        at=past,
        ttl_s=5 * 60,
        period=past.strftime("%Y-%m"),
        call_id="call_dead",
        model="gpt-4o-mini",
    )
    Ledger(world.db, clock=lambda: past).reserve(plan)  # placed two hours ago
    assert call(admin_client, "POST", "/sweep", status=200) == {
        "swept": 1,
        "grants_closed": 0,
        "alerts_resent": 0,
    }
    rec = world.db.collection("usage").document("call_dead").get().to_dict()
    assert rec["status"] == "orphaned" and rec["cost_nano"] == 777
    assert call(admin_client, "POST", "/sweep", status=200) == {
        "swept": 0,
        "grants_closed": 0,
        "alerts_resent": 0,
    }


def test_cache_flush_of_more_entries_than_one_commit_takes(admin_client, world, monkeypatch):
    # Production Firestore refuses a commit of over 500 writes; the emulator does not
    # check, so every commit's size is checked here.
    from google.cloud.firestore_v1.batch import WriteBatch

    sizes: list[int] = []
    real_commit = WriteBatch.commit

    def commit(self, *a, **kw):
        sizes.append(len(self._write_pbs))
        assert sizes[-1] <= 500, "a commit of more than 500 writes"
        return real_commit(self, *a, **kw)

    monkeypatch.setattr(WriteBatch, "commit", commit)
    for lo in range(0, 1100, 400):  # seeded in batches under the 500-write limit
        batch = world.db.batch()
        for i in range(lo, min(lo + 400, 1100)):
            batch.set(world.db.collection("cache_entries").document(f"e{i}"), {"project": "demo"})
        batch.commit()
    assert call(admin_client, "POST", "/projects/demo/cache/flush", status=200) == {"flushed": 1100}
    assert list(world.db.collection("cache_entries").limit(1).stream()) == []
    [rec] = [a for a in audit(admin_client) if a["action"] == "cache.flush"]
    assert rec["details"] == {"entries": 1100}
    assert max(sizes) <= 401 and sum(sizes) >= 1100 + 1100 + 1  # seeds, deletes, audit


def test_cache_flush_and_ratelimits_answer(admin_client, world):
    world.db.collection("cache_entries").document("x").set({"project": "demo"})
    world.db.collection("cache_entries").document("y").set({"project": "other"})
    assert call(admin_client, "POST", "/projects/demo/cache/flush", status=200) == {"flushed": 1}
    assert call(admin_client, "GET", "/ratelimits", status=200) == {"data": []}


def test_every_mutation_is_audited_without_secrets(admin_client, world):
    call(admin_client, "POST", "/users", {"id": "erin"}, status=201)
    key = call(admin_client, "POST", "/projects/demo/members", {"user": "erin"}, status=201)["key"]
    call(admin_client, "PATCH", "/users/erin", {"name": "Erin"}, status=200)
    records = audit(admin_client)
    mine = [(a["actor"], a["action"], a["target"]) for a in records if "erin" in a["target"]]
    assert mine == [
        ("root", "user.update", "erin"),
        ("root", "member.add", "demo|erin"),
        ("root", "user.create", "erin"),
    ]  # newest first
    assert all(a["ts"].endswith("Z") for a in records)
    assert key not in json.dumps(records) and auth.key_hash(key) not in json.dumps(records)
    assert UPSTREAM_SECRET not in json.dumps(records)


def test_unknown_paths_and_methods(admin_client, world):
    assert err(admin_client, "GET", "/nothing")[0] == 404
    status, e = err(admin_client, "DELETE", "/users")
    assert status == 405 and "GET or POST" in e["message"]
    r = admin_client.post(
        "/users", data="{nope", headers=admin_auth(), content_type="application/json"
    )
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "invalid_request"


# --- admin tokens (a lead's rules: tests/test_admin_memory.py) ----------------------------


def test_audit4_a_removed_admin_token_stops_within_seconds(world):
    from functions.admin.app import TOKENS_TTL_S, AdminTokens
    from functions.store.secrets import CachedSecrets, LocalSecretStore

    store = LocalSecretStore(world.secrets_file)
    now = [1000.0]
    tokens = AdminTokens(CachedSecrets(store), clock=lambda: now[0])
    assert tokens.name_of(ADMIN_TOKEN) == "root"
    store.put("tollgate-admin-tokens", json.dumps({"other": "tga_another_token_000000000000"}))
    now[0] += TOKENS_TTL_S
    assert tokens.name_of(ADMIN_TOKEN) is None
    assert TOKENS_TTL_S <= 5


def test_audit11_a_project_is_created_with_rpm_and_tpm(admin_client, client, world):
    p = call(
        admin_client,
        "POST",
        "/projects",
        {
            "id": "fast",
            "external_key": "main",
            "allowed_models": ["gpt-4o-mini"],
            "rpm": 1,
            "tpm": 100000,
        },
        status=201,
    )
    assert (p["rpm"], p["tpm"]) == (1, 100000)
    world.prov.create_user("dave")
    key = world.members.add_member("fast", "dave")
    assert client.post("/v1/chat/completions", json=CHAT, headers=bearer(key)).status_code == 200
    # rpm 1: of the next two calls one shares the first one's minute, or each other's
    codes = [
        client.post("/v1/chat/completions", json=CHAT, headers=bearer(key))
        .get_json()
        .get("error", {})
        .get("code")
        for _ in range(2)
    ]
    assert "rate_limit_exceeded" in codes
