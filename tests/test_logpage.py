"""The ``log`` function's JSON API on the emulator: who sees which calls, spend per
project, per-day cost, totals, CSV, and the security headers."""

from __future__ import annotations

import csv
import io

import pytest

from functions.logpage import strip_log
from tests.conftest import bearer

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def chat(client, key, n=1, **headers):
    for _ in range(n):
        r = client.post("/v1/chat/completions", json=CHAT, headers={**bearer(key), **headers})
        assert r.status_code == 200


def api(log_client, key, path, status=200, **args):
    r = log_client.get("/log/api/" + path, query_string=args, headers=bearer(key))
    assert r.status_code == status, r.get_data(True)
    assert r.headers["Cache-Control"] == "no-store"
    return r.get_json()


@pytest.fixture
def calls(client, world):
    """bob 2 calls, alice 1 in demo; carol 1 in another project 'other'."""
    chat(client, world.keys["bob"], 2)
    chat(client, world.keys["alice"], 1)
    world.prov.create_user("carol")
    world.prov.create_project("other", external_key="main", allowed_models=["gpt-4o-mini"])
    world.extra["carol"] = world.members.add_member("other", "carol", role="lead")
    chat(client, world.extra["carol"], 1)


@pytest.mark.parametrize("path, want", [("/", "/"), ("/log", "/"), ("/log/", "/"),
                                        ("/log/app.js", "/app.js"), ("/app.js", "/app.js"),
                                        ("/log/log/api/me", "/api/me"), ("/logs", "/logs")])
def test_leading_log_segments_are_stripped(path, want):
    assert strip_log(path) == want


def test_a_member_sees_only_their_own_calls(log_client, world, calls):
    bob = world.keys["bob"]
    mine = api(log_client, bob, "calls")["data"]
    assert [c["user"] for c in mine] == ["bob", "bob"]
    assert mine[0]["ts"] >= mine[1]["ts"]  # newest first
    assert set(mine[0]) >= {"model", "input_tokens", "cached_tokens", "output_tokens",
                            "cost_usd", "status", "latency_ms", "streamed", "cached", "estimated"}
    # asking for the whole project, or smuggling a user filter, changes nothing
    assert [c["user"] for c in api(log_client, bob, "calls", project="demo")["data"]] == [
        "bob", "bob"]
    assert [c["user"] for c in api(log_client, bob, "calls", user="alice")["data"]] == [
        "bob", "bob"]
    e = api(log_client, bob, "calls", status=403, project="demo", member="alice")["error"]
    assert e["param"] == "member"
    assert api(log_client, bob, "calls", status=403, project="other")["error"]["type"] == (
        "permission_error")


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
        "other"}
    assert api(log_client, carol, "calls", status=403, project="demo", member="bob")


def test_me_shows_spent_held_and_budget_per_project(log_client, world, calls):
    me = api(log_client, world.keys["bob"], "me")
    assert me["user"] == {"id": "bob", "name": "Bob"}
    [demo] = me["projects"]
    assert demo["id"] == "demo" and demo["role"] == "member" and "members" not in demo
    assert demo["budget_usd"] == "10.000000000" and demo["held_usd"] == "0.000000000"
    spent = sum(int(c["cost_usd"].replace(".", "")) for c in api(
        log_client, world.keys["alice"], "calls", project="demo")["data"])
    assert int(demo["spent_usd"].replace(".", "")) == spent
    assert demo["member_budget_usd"] is None and demo["member_spent_usd"] != "0.000000000"
    lead = api(log_client, world.keys["alice"], "me")["projects"][0]
    assert lead["members"] == ["alice", "bob"]


def test_daily_totals_and_filters(log_client, world, calls):
    bob = world.keys["bob"]
    calls_ = api(log_client, bob, "calls")["data"]
    total = api(log_client, bob, "totals")
    assert total["calls"] == 2
    nano = sum(int(c["cost_usd"].replace(".", "")) for c in calls_)
    assert total["cost_usd"] == f"{nano // 10**9}.{nano % 10**9:09d}"
    [today] = api(log_client, bob, "daily")["data"]
    assert today["calls"] == 2 and today["day"] == calls_[0]["ts"][:10]
    assert api(log_client, bob, "totals", model="text-embedding-3-small")["calls"] == 0
    later = calls_[0]["ts"].replace("Z", "+00:00")
    assert api(log_client, bob, "totals", after=later)["calls"] == 1  # after is inclusive
    e = api(log_client, bob, "calls", status=400, after="2026-11-01T00:00:00")["error"]
    assert e["param"] == "after" and "zone" in e["message"]
    page = api(log_client, bob, "calls", limit=1)
    assert len(page["data"]) == 1 and page["next_page_token"]
    rest = api(log_client, bob, "calls", limit=1, page_token=page["next_page_token"])
    assert rest["data"][0]["call_id"] != page["data"][0]["call_id"]


def test_csv_of_the_filtered_calls(log_client, world, client):
    chat(client, world.keys["bob"], 2, **{"x-tollgate-tag": "=HYPERLINK(1)"})
    r = log_client.get("/log/api/calls", query_string={"format": "csv"},
                       headers=bearer(world.keys["bob"]))
    assert r.status_code == 200 and r.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(r.get_data(True))))
    assert len(rows) == 2 and {row["user"] for row in rows} == {"bob"}
    assert rows[0]["tag"] == "'=HYPERLINK(1)"  # no formula for a spreadsheet to run


def test_bad_key_is_401_and_every_answer_carries_the_csp(log_client, world):
    r = log_client.get("/log/api/me", headers=bearer("tg_" + "z" * 40))
    assert r.status_code == 401 and r.get_json()["error"]["code"] == "invalid_api_key"
    assert "script-src 'self'" in r.headers["Content-Security-Policy"]
    r = log_client.get("/log/api/me")
    assert r.status_code == 401 and "proxy key is needed" in r.get_json()["error"]["message"]
    for path in ("/log/api/nope", "/favicon.png", "/log/api/"):
        assert log_client.get(path, headers=bearer(world.keys["bob"])).status_code == 404
    r = log_client.post("/log/api/me", headers=bearer(world.keys["bob"]))
    assert r.status_code == 404 and r.headers["X-Content-Type-Options"] == "nosniff"


def test_page_and_assets_are_served_with_relative_urls(log_client, world):
    for path in ("/", "/log", "/log/"):
        page = log_client.get(path)
        assert page.status_code == 200 and page.mimetype == "text/html"
        html = page.get_data(True)
        assert 'src="log/app.js"' in html and 'href="log/app.css"' in html
        assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    for path in ("/log/app.js", "/app.js", "/log/app.css"):
        r = log_client.get(path)
        assert r.status_code == 200 and r.headers["ETag"]
        assert log_client.get(path, headers={"If-None-Match": r.headers["ETag"]}).status_code == 304
    js = log_client.get("/log/app.js").get_data(True)
    assert "innerHTML" not in js  # data goes in as text, never as markup


def test_audit1_a_key_sees_its_own_project_only(log_client, admin_client, world, calls):
    """alice (lead of demo) adds carol, lead of 'other', to demo and receives carol's new
    key: that key sees demo as carol's, never 'other'."""
    import json

    r = admin_client.post("/projects/demo/members", data=json.dumps({"user": "carol"}),
                          content_type="application/json", headers=bearer(world.keys["alice"]))
    assert r.status_code == 201, r.get_data(True)
    carol_in_demo = r.get_json()["key"]
    me = api(log_client, carol_in_demo, "me")
    assert [p["id"] for p in me["projects"]] == ["demo"]
    assert "members" not in me["projects"][0]  # a member there, not a lead
    e = api(log_client, carol_in_demo, "calls", status=403, project="other")["error"]
    assert e["param"] == "project" and e["type"] == "permission_error"
    for path in ("calls", "daily", "totals"):
        api(log_client, carol_in_demo, path, status=403, project="other")
    assert api(log_client, carol_in_demo, "calls")["data"] == []  # carol has no demo calls
    assert api(log_client, carol_in_demo, "totals")["calls"] == 0
    # and carol's own key of 'other' sees 'other' only, as its lead
    other = api(log_client, world.extra["carol"], "me")["projects"]
    assert [(p["id"], p["role"]) for p in other] == [("other", "lead")]
    assert {c["project"] for c in api(log_client, world.extra["carol"], "calls")["data"]} == {
        "other"}

