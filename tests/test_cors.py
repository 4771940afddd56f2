"""CORS per project: browser pages of listed origins may call with that project's keys;
every other origin is refused before anything is forwarded."""

from __future__ import annotations

import json

import pytest

from functions.core import cors
from functions.core.errors import InvalidRequest
from tests.conftest import admin_auth, bearer

APP = "https://app.example.com"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def call(client, key, origin=None):
    headers = {**bearer(key), **({"Origin": origin} if origin else {})}
    return client.post(
        "/v1/chat/completions",
        data=json.dumps(CHAT),
        headers=headers,
        content_type="application/json",
    )


def preflight(client, origin, path="/v1/chat/completions"):
    return client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os",
        },
    )


def test_no_origin_is_allowed_by_default(client, world):
    r = preflight(client, APP)
    assert r.status_code == 403 and "access-control-allow-origin" not in r.headers
    r = call(client, world.keys["bob"], origin=APP)
    assert r.status_code == 403 and "origin" in r.get_json()["error"]["message"]
    assert world.upstream.received == [] and world.usage() == []
    # a server (no Origin header) is not a browser: unaffected
    assert call(client, world.keys["bob"]).status_code == 200


def test_a_listed_origin_gets_preflight_and_readable_answers(client, admin_client, world):
    r = admin_client.patch(
        "/admin/projects/demo", headers=admin_auth(), json={"cors_origins": [APP]}
    )
    assert r.status_code == 200 and r.get_json()["cors_origins"] == [APP]
    pre = preflight(client, APP)
    assert pre.status_code == 204
    assert pre.headers["access-control-allow-origin"] == APP
    assert "POST" in pre.headers["access-control-allow-methods"]
    assert "x-stainless-os" in pre.headers["access-control-allow-headers"]
    r = call(client, world.keys["bob"], origin=APP)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == APP
    assert "x-tollgate-cost-usd" in r.headers["access-control-expose-headers"]
    assert r.headers["vary"] == "Origin"
    # errors are readable by the page too (it can show why)
    bad = call(client, "tg_" + "0" * 40, origin=APP)
    assert bad.status_code == 401 and bad.headers["access-control-allow-origin"] == APP
    # another site is still refused, and never sees an allow header
    evil = call(client, world.keys["bob"], origin="https://evil.example")
    assert evil.status_code == 403 and "access-control-allow-origin" not in evil.headers
    assert preflight(client, "https://evil.example").status_code == 403


def test_an_origin_listed_by_another_project_does_not_open_this_one(client, world):
    world.prov.create_project("other", external_key="main", budget_usd="1", cors_origins=[APP])
    assert preflight(client, APP).status_code == 204  # some project lists it
    r = call(client, world.keys["bob"], origin=APP)  # bob's key is of project demo
    assert r.status_code == 403 and world.upstream.received == []


@pytest.mark.parametrize(
    "bad",
    [
        ["*"],
        ["https://app.example.com/path"],
        ["app.example.com"],
        ["HTTPS://APP.EXAMPLE.COM"],
        "https://a.example",
        [3],
    ],
)
def test_origins_are_exact_scheme_host_and_port(bad):
    with pytest.raises(InvalidRequest) as e:
        cors.check_origins(bad)
    assert e.value.param == "cors_origins"


def test_origins_are_kept_sorted_and_unique():
    assert cors.check_origins([APP, "http://localhost:5173", APP]) == ["http://localhost:5173", APP]
