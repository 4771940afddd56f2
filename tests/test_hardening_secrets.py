"""Hardening, part 4: secrets (SPEC §2-§4, issue 10).

Proxy keys exist in plaintext only in the one answer that creates them; Firestore holds
their SHA-256 (as the ``keys`` document id) and last 4 characters. The organisation's
OpenAI keys live only in the secret store. No answer of the admin or log API, no error
and no log line carries a key, a hash or a secret.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import stat
from typing import Any

import pytest

from functions import httpio
from functions.core import auth, errors
from functions.core.errors import TollgateError, UpstreamAuthError
from tests.conftest import ADMIN_TOKEN, UPSTREAM_SECRET, admin_auth, bearer
from tests.fake_upstream import Error

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
SECOND_SECRET = "sk-second-org-key-for-tests-7777"
ROTATED_SECRET = "sk-rotated-org-key-for-tests-8888"
PLAIN_KEY = re.compile(r"tg_[A-Za-z0-9]{32,}")


def all_documents(db: Any) -> list[tuple[str, dict[str, Any]]]:
    """(path, fields) of every document of the test project, subcollections included."""
    out: list[tuple[str, dict[str, Any]]] = []
    todo = list(db.collections())
    while todo:
        coll = todo.pop()
        for snap in coll.stream():
            out.append((snap.reference.path, snap.to_dict() or {}))
            todo.extend(snap.reference.collections())
    return out


def scenario(world: Any, client: Any, admin_client: Any, log_client: Any) -> list[str]:
    """Use every feature that touches a key or a secret; return every proxy key created."""
    world.upstream.valid_keys |= {SECOND_SECRET, ROTATED_SECRET}
    base = world.upstream.base_url

    def admin(method: str, path: str, body: Any = None, status: int = 200) -> Any:
        r = admin_client.open(
            path,
            method=method,
            headers=admin_auth(),
            data=None if body is None else json.dumps(body),
            content_type="application/json",
        )
        assert r.status_code == status, r.get_data(True)
        return r.get_json()

    admin("POST", "/users", {"id": "carol", "name": "Carol"}, 201)
    carol = admin("POST", "/projects/demo/members", {"user": "carol"}, 201)["key"]
    ci = admin("POST", "/projects/demo/members/carol/keys", {"name": "ci"}, 201)["key"]
    ci2 = admin("POST", "/projects/demo/members/carol/keys/ci/rotate", {}, 200)["key"]
    laptop = admin("POST", "/projects/demo/members/bob/keys", {"name": "laptop"}, 201)["key"]
    admin("DELETE", "/projects/demo/members/bob/keys/laptop")
    admin(
        "POST", "/external-keys", {"id": "second", "secret": SECOND_SECRET, "base_url": base}, 201
    )
    admin("POST", "/external-keys/second/rotate", {"secret": ROTATED_SECRET})
    admin("PATCH", "/projects/demo", {"cache": {"enabled": True, "ttl_s": 60}})

    for key in (world.keys["bob"], world.keys["alice"], carol, ci2):
        for path, body in (
            ("/v1/chat/completions", CHAT),
            ("/v1/chat/completions", {**CHAT, "stream": True}),
            ("/v1/embeddings", {"model": "text-embedding-3-small", "input": "x"}),
            ("/v1/responses", {"model": "gpt-4o-mini", "input": "hi"}),
        ):
            r = client.post(path, json=body, headers=bearer(key))
            assert r.status_code == 200, r.get_data(True)
            r.get_data()
    world.upstream.push(
        Error(
            401,
            body={
                "error": {
                    "message": f"Incorrect API key provided: {UPSTREAM_SECRET}",
                    "type": "x",
                    "param": None,
                    "code": "invalid_api_key",
                }
            },
        )
    )
    r = client.post(
        "/v1/chat/completions", json={**CHAT, "n": 2}, headers=bearer(world.keys["bob"])
    )
    assert r.status_code == 502
    assert (
        client.post("/v1/chat/completions", json=CHAT, headers=bearer(ci)).status_code == 401
    )  # rotated away
    assert log_client.get("/log/api/me", headers=bearer(carol)).status_code == 200
    return [*world.keys.values(), carol, ci, ci2, laptop]


@pytest.fixture
def everything(
    world: Any, client: Any, admin_client: Any, log_client: Any, caplog: pytest.LogCaptureFixture
) -> list[str]:
    caplog.set_level(logging.DEBUG)
    keys = scenario(world, client, admin_client, log_client)
    world.extra["keys"] = keys
    return keys


def secrets_of(world: Any) -> list[str]:
    return [UPSTREAM_SECRET, SECOND_SECRET, ROTATED_SECRET, ADMIN_TOKEN]


def test_firestore_holds_key_hashes_only_and_no_org_secret(world, everything):
    docs = all_documents(world.db)
    assert len(docs) > 30
    hashes = {auth.key_hash(k) for k in everything}
    key_ids = {p.split("/", 1)[1] for p, _ in docs if p.startswith("keys/")}
    assert hashes == key_ids  # one document per key, named by its SHA-256
    for path, fields in docs:
        text = path + " " + json.dumps(fields, default=str, ensure_ascii=False)
        for k in everything:
            assert k not in text, f"a plaintext proxy key in {path}"
        assert not PLAIN_KEY.search(text), path
        for s in secrets_of(world):
            assert s not in text, f"a secret in {path}"
        if not path.startswith("keys/"):
            for h in hashes:  # the digest is the key document's id, and nothing else
                assert h not in text, f"a key hash in {path}"
        if path.startswith("keys/"):
            assert len(fields["last4"]) == 4
    # the organisation's keys are in the secret store, a 0600 file outside Firestore
    stored = json.loads(world.secrets_file.read_text())
    assert stored["tollgate-ext-main"]["versions"] == [UPSTREAM_SECRET]
    assert stored["tollgate-ext-second"]["versions"] == [SECOND_SECRET, ROTATED_SECRET]
    assert stat.S_IMODE(world.secrets_file.stat().st_mode) == 0o600
    ext = world.db.collection("external_keys").document("second").get().to_dict()
    assert ext["last4"] == ROTATED_SECRET[-4:] and ext["secret_name"] == "tollgate-ext-second"


def test_no_admin_or_log_answer_returns_a_key_after_creation(
    world, everything, admin_client, log_client, caplog
):
    bodies = []
    for path in (
        "/users",
        "/users/carol",
        "/external-keys",
        "/models",
        "/models/gpt-4o-mini",
        "/projects",
        "/projects/demo",
        "/projects/demo/members",
        "/projects/demo/members/bob/keys",
        "/projects/demo/members/carol/keys",
        "/projects/demo/limits",
        "/projects/demo/alerts",
        "/usage",
        "/usage?group_by=user",
        "/usage?group_by=day",
        "/usage?group_by=model",
        "/queries",
        "/queries?format=csv",
        "/ratelimits",
        "/audit?limit=1000",
    ):
        r = admin_client.get(path, headers=admin_auth())
        assert r.status_code == 200, (path, r.get_data(True))
        bodies.append((path, r.get_data(True)))
    alice, carol = world.keys["alice"], everything[2]
    for key, query in (
        (world.keys["bob"], ""),
        (alice, "?project=demo"),
        (carol, ""),
        (alice, "?project=demo&format=csv"),
    ):
        for name in ("me", "calls", "daily", "totals"):
            r = log_client.get(f"/log/api/{name}{query}", headers=bearer(key))
            assert r.status_code == 200, (name, r.get_data(True))
            bodies.append((name, r.get_data(True)))
    keys_listed = json.loads(dict(bodies)["/projects/demo/members/carol/keys"])["data"]
    assert {k["last4"] for k in keys_listed} == {
        everything[3][-4:],
        everything[4][-4:],
        everything[2][-4:],
    }
    hashes = [auth.key_hash(k) for k in everything]
    for where, text in bodies:
        for secret in [*everything, *hashes, *secrets_of(world)]:
            assert secret not in text, f"{where} shows a key, hash or secret"
        assert not PLAIN_KEY.search(text), where
    logs = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    for secret in [*everything, *hashes, *secrets_of(world)]:
        assert secret not in logs, "a key, hash or secret in a log line"


def test_upstream_refusing_the_org_key_never_shows_it(client, world):
    for status in (401, 403):
        world.upstream.push(
            Error(
                status,
                body={
                    "error": {
                        "message": f"Incorrect API key provided: {UPSTREAM_SECRET}",
                        "type": "x",
                        "param": None,
                        "code": "invalid_api_key",
                    }
                },
            )
        )
        r = client.post("/v1/chat/completions", json=CHAT, headers=bearer(world.keys["bob"]))
        assert r.status_code == 502
        assert r.get_json()["error"]["code"] == "upstream_auth_error"
        assert UPSTREAM_SECRET not in r.get_data(True) and "sk-" not in r.get_data(True)
        # the member is not told that *their* key is wrong
        assert (
            r.get_json()["error"]["message"]
            == UpstreamAuthError(
                "The upstream API rejected the organisation's key; ask an administrator."
            ).message
        )


# --- redaction ---------------------------------------------------------------------------

KEY = "tg_" + "a1B2c3D4" * 5


@pytest.mark.parametrize(
    "text, hidden",
    [
        (f"key {KEY} here", KEY),
        (f'{{"authorization": "Bearer {KEY}"}}', KEY),
        ("Authorization: Bearer sk-proj-AbCdEf0123456789_-xyz", "sk-proj-AbCdEf0123456789_-xyz"),
        ("org key sk-svcacct-0123456789abcdef", "sk-svcacct-0123456789abcdef"),
        ("Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig", "eyJhbGciOiJIUzI1NiJ9.payload.sig"),
        (f"UserName {KEY}", KEY),
        (f"{KEY}{KEY}", KEY),
    ],
)
def test_redact_hides_anything_that_looks_like_a_key(text, hidden):
    out = errors.redact(text)
    assert hidden not in out and "…redacted" in out
    assert TollgateError(text).message == out  # every error message goes through it


@pytest.mark.parametrize(
    "text",
    ["tg_short", "model gpt-4o-mini", "task-force sk-1", "budget of project 'demo' exceeded", ""],
)
def test_redact_leaves_ordinary_text_alone(text):
    assert errors.redact(text) == text


@pytest.mark.parametrize("secret", [ADMIN_TOKEN, "tga_" + "Zx-_9" * 7], ids=["test", "urlsafe"])
def test_redact_hides_admin_tokens(secret):
    assert secret not in errors.redact(f"token {secret} seen")


def test_an_unexpected_error_is_logged_redacted_and_answered_generically(caplog):
    caplog.set_level(logging.DEBUG)
    exc = RuntimeError(f"boom with {KEY} and Bearer {UPSTREAM_SECRET}")
    with httpio_app().test_request_context():
        resp = httpio.internal_error(exc, "openai")
    assert resp.status_code == 500
    body = json.loads(resp.get_data())
    assert body == TollgateError().body() and "boom" not in resp.get_data(True)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "RuntimeError" in logged and KEY not in logged and UPSTREAM_SECRET not in logged


def httpio_app() -> Any:
    import flask

    return flask.Flask("hardening")


# --- the admin token ---------------------------------------------------------------------


def test_admin_tokens_are_compared_in_constant_time_against_every_token(
    admin_client, world, monkeypatch
):
    from functions.admin import app as admin_mod
    from functions.store.secrets import LocalSecretStore

    others = {"ci": "tga_ci_token_0123456789abcdefghij", "ops": "tga_ops_token_0123456789abcdef"}
    LocalSecretStore(world.secrets_file).put(
        "tollgate-admin-tokens", json.dumps({"root": ADMIN_TOKEN, **others})
    )
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def compare(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(admin_mod.hmac, "compare_digest", compare)
    for token, status in (
        (ADMIN_TOKEN, 200),
        (others["ops"], 200),
        ("tga_wrong", 401),
        (ADMIN_TOKEN[:-1], 401),
        ("", 401),
    ):
        calls.clear()
        r = admin_client.get("/users", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == status
        if token:
            # every configured token is compared, whether or not one matched first
            assert len(calls) == 3 and {b for _a, b in calls} == {
                t.encode() for t in (ADMIN_TOKEN, *others.values())
            }
