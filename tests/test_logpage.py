"""The ``log`` function's JSON API on the emulator: per-day cost, totals, groups, CSV,
burn rates and the security headers. Who sees which calls and the spend shown per
project run over the in-memory store (tests/test_log_memory.py)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from functions.log.app import strip_log
from functions.store import burn
from tests.api_calls import log_api as api
from tests.conftest import bearer, seed_usage

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def chat(client, key, n=1, **headers):
    for _ in range(n):
        r = client.post("/v1/chat/completions", json=CHAT, headers={**bearer(key), **headers})
        assert r.status_code == 200


@pytest.fixture
def calls(client, world):
    """bob 2 calls, alice 1 in demo; carol 1 in another project 'other'."""
    chat(client, world.keys["bob"], 2)
    chat(client, world.keys["alice"], 1)
    world.prov.create_user("carol")
    world.prov.create_project("other", external_key="main", allowed_models=["gpt-4o-mini"])
    world.extra["carol"] = world.members.add_member("other", "carol", role="lead")
    chat(client, world.extra["carol"], 1)


@pytest.mark.parametrize(
    "path, want",
    [
        ("/", "/"),
        ("/log", "/"),
        ("/log/", "/"),
        ("/log/app.js", "/app.js"),
        ("/app.js", "/app.js"),
        ("/log/log/api/me", "/api/me"),
        ("/logs", "/logs"),
    ],
)
def test_leading_log_segments_are_stripped(path, want):
    assert strip_log(path) == want


def test_daily_totals_and_filters(log_client, world, calls):
    bob = world.keys["bob"]
    calls_ = api(log_client, bob, "calls")["data"]
    total = api(log_client, bob, "totals")
    assert total["calls"] == 2
    nano = sum(int(c["cost_usd"].replace(".", "")) for c in calls_)
    assert total["cost_usd"] == f"{nano // 10**9}.{nano % 10**9:09d}"
    days = api(log_client, bob, "daily")["data"]
    assert len(days) == 30  # the default window: every day of it, quiet ones included
    today = days[0]
    assert today["calls"] == 2 and today["day"] == calls_[0]["ts"][:10]
    assert {(d["calls"], d["cost_usd"]) for d in days[1:]} == {(0, "0.000000000")}
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
    r = log_client.get(
        "/log/api/calls", query_string={"format": "csv"}, headers=bearer(world.keys["bob"])
    )
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
        assert 'href="log/shared.css"' in html
        assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    for path in ("/log/app.js", "/app.js", "/log/app.css", "/log/shared.css"):
        r = log_client.get(path)
        assert r.status_code == 200 and r.headers["ETag"]
        assert log_client.get(path, headers={"If-None-Match": r.headers["ETag"]}).status_code == 304
    js = log_client.get("/log/app.js").get_data(True)
    assert "innerHTML" not in js  # data goes in as text, never as markup


def test_audit1_a_key_sees_its_own_project_only(log_client, admin_client, world, calls):
    """alice (lead of demo) adds carol, lead of 'other', to demo and receives carol's new
    key: that key sees demo as carol's, never 'other'."""
    import json

    r = admin_client.post(
        "/projects/demo/members",
        data=json.dumps({"user": "carol"}),
        content_type="application/json",
        headers=bearer(world.keys["alice"]),
    )
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
        "other"
    }


# --- tags, keys and group-by ---------------------------------------------------------


@pytest.fixture
def tagged(client, world):
    """bob: 2 calls tagged "nightly" with his key "ci", 1 untagged with his default key;
    alice: 1 call tagged "alice-only"."""
    ci = world.members.add_key("demo", "bob", "ci")
    chat(client, ci, 2, **{"x-tollgate-tag": "nightly"})
    chat(client, world.keys["bob"], 1)
    chat(client, world.keys["alice"], 1, **{"x-tollgate-tag": "alice-only"})


def groups(log_client, proxy_key, group_by, **args):
    rows = api(log_client, proxy_key, "usage", group_by=group_by, **args)["data"]
    return [(r["group"], r["calls"]) for r in rows]


def test_tag_and_key_filters_and_groups_follow_the_key(log_client, world, tagged):
    bob, alice = world.keys["bob"], world.keys["alice"]
    # a member's groups hold their own calls only
    assert groups(log_client, bob, "tag") == [("nightly", 2), (None, 1)]
    assert groups(log_client, bob, "key") == [("ci", 2), ("default", 1)]
    assert groups(log_client, bob, "member") == [("bob", 3)]
    assert groups(log_client, bob, "tag", tag="alice-only") == []
    # a lead's cover the project
    assert groups(log_client, alice, "tag") == [("alice-only", 1), ("nightly", 2), (None, 1)]
    assert groups(log_client, alice, "member") == [("alice", 1), ("bob", 3)]
    assert groups(log_client, alice, "key", member="bob") == [("ci", 2), ("default", 1)]
    assert groups(log_client, alice, "model", tag="nightly") == [("gpt-4o-mini", 2)]
    [day] = api(log_client, alice, "usage", group_by="day")["data"]
    assert day["calls"] == 4
    assert api(log_client, alice, "usage")["data"][0]["calls"] == 4  # no group: the total
    # the filters on every listing
    calls = api(log_client, bob, "calls", tag="nightly")["data"]
    assert [(c["key_name"], c["tag"]) for c in calls] == [("ci", "nightly")] * 2
    assert api(log_client, bob, "totals", key="default")["calls"] == 1
    assert api(log_client, bob, "totals", tag="alice-only")["calls"] == 0  # not bob's
    assert sum(d["calls"] for d in api(log_client, alice, "daily", key="ci")["data"]) == 2
    r = log_client.get(
        "/log/api/calls", query_string={"format": "csv", "key": "ci"}, headers=bearer(bob)
    )
    assert {row["key_name"] for row in csv.DictReader(io.StringIO(r.get_data(True)))} == {"ci"}
    # paging a group listing
    page = api(log_client, alice, "usage", group_by="tag", limit=1)
    assert page["data"][0]["group"] == "alice-only" and page["next_page_token"]
    rest = api(log_client, alice, "usage", group_by="tag", page_token=page["next_page_token"])
    assert [r["group"] for r in rest["data"]] == ["nightly", None]


@pytest.mark.parametrize(
    "args, param",
    [
        ({"group_by": "user"}, "group_by"),
        ({"group_by": "project"}, "group_by"),
        ({"tag": "x" * 65}, "tag"),
        ({"tag": "\x07"}, "tag"),
        ({"key": "k" * 300}, "key"),
        ({"limit": "201"}, "limit"),
        ({"group_by": "tag", "page_token": "nope"}, "page_token"),
    ],
)
def test_bad_group_by_and_filters_are_400_naming_the_param(log_client, world, args, param):
    e = api(log_client, world.keys["alice"], "usage", status=400, **args)["error"]
    assert e["param"] == param and e["type"] == "invalid_request_error"
    if param in ("tag", "key"):
        for path in ("calls", "daily", "totals"):
            assert (
                api(log_client, world.keys["bob"], path, status=400, **args)["error"]["param"]
                == param
            )


def test_daily_lists_every_day_of_the_range(log_client, world, client):
    chat(client, world.keys["bob"], 1)
    now = datetime.now(UTC)
    after = (now - timedelta(days=4)).replace(hour=0, minute=0, second=0, microsecond=0)
    days = api(log_client, world.keys["bob"], "daily", after=after.isoformat())["data"]
    want = [(now.date() - timedelta(days=i)).isoformat() for i in range(5)]
    assert [d["day"] for d in days] == want
    assert [d["calls"] for d in days] == [1, 0, 0, 0, 0]


# --- burn rate -------------------------------------------------------------------------

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)  # a Friday
USD = 10**9


def test_period_bounds_and_window_start():
    assert burn.period_bounds("daily", NOW) == (
        datetime(2026, 11, 20, tzinfo=UTC),
        datetime(2026, 11, 21, tzinfo=UTC),
    )
    assert burn.period_bounds("weekly", NOW) == (
        datetime(2026, 11, 16, tzinfo=UTC),
        datetime(2026, 11, 23, tzinfo=UTC),
    )
    assert burn.period_bounds("monthly", datetime(2026, 12, 31, 23, tzinfo=UTC)) == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    assert burn.period_bounds("total", NOW) == (None, None)
    # the last 7 days, never before the period began
    assert burn.window_start("monthly", NOW) == NOW - timedelta(days=7)
    assert burn.window_start("monthly", datetime(2026, 11, 3, 6, tzinfo=UTC)) == datetime(
        2026, 11, 1, tzinfo=UTC
    )
    assert burn.window_start("daily", NOW) == datetime(2026, 11, 20, tzinfo=UTC)
    assert burn.window_start("total", NOW) == NOW - timedelta(days=7)


def project(
    spent_week,
    budget,
    taken,
    period_end=datetime(2026, 12, 1, tzinfo=UTC),
    since=NOW - timedelta(days=7),
):
    return burn.burn(
        window_spent_nano=spent_week,
        since=since,
        now=NOW,
        budget_nano=budget,
        taken_nano=taken,
        period_end=period_end,
    )


def test_burn_rate_and_run_out_date():
    # $7 in 7 days is $1 a day; $3.5 left lasts 3.5 days: the 23rd at 24:00 -> the 24th
    b = project(7 * USD, 10 * USD, 6_500_000_000)
    assert b == burn.Burn(USD, 3_500_000_000, date(2026, 11, 24), burn.RUNS_OUT)
    # one nano-dollar short of that is still the 23rd: exact integers, no floats
    assert project(7 * USD, 10 * USD, 6_500_000_001).runs_out == date(2026, 11, 23)
    # runs out after the period ends: it lasts (the next period starts afresh)
    assert project(7 * USD, 100 * USD, 0).outlook == burn.LASTS
    assert project(7 * USD, 100 * USD, 0).runs_out is None
    # exactly at the period's end counts as lasting too
    assert project(7 * USD, 10 * USD + 11 * USD // 2, 0).outlook == burn.LASTS
    assert project(7 * USD, 10 * USD, 10 * USD) == burn.Burn(
        USD, 0, date(2026, 11, 20), burn.EXHAUSTED
    )
    assert project(7 * USD, 10 * USD, 11 * USD).remaining_nano == -USD
    assert project(0, 10 * USD, USD) == burn.Burn(0, 9 * USD, None, burn.IDLE)
    assert project(7 * USD, None, 3 * USD) == burn.Burn(USD, None, None, burn.NO_BUDGET)
    # rounding: the rate is floored, the date still exact
    third = project(1, 10, 9, since=NOW - timedelta(days=3))
    assert third == burn.Burn(0, 1, date(2026, 11, 23), burn.RUNS_OUT)
    # a total budget is projected up to a year ahead
    assert project(7 * USD, 300 * USD, 0, period_end=None).runs_out == date(2027, 9, 16)
    assert project(7 * USD, 400 * USD, 0, period_end=None).outlook == burn.LASTS
    # a window of minutes counts as an hour: $1 in 1 minute is $24 a day, not $1440
    assert project(USD, 1000 * USD, 0, since=NOW - timedelta(minutes=1)).per_day_nano == (24 * USD)
    assert burn.burn_json(project(7 * USD, 10 * USD, 6_500_000_000)) == {
        "per_day_usd": "1.000000000",
        "remaining_usd": "3.500000000",
        "runs_out": "2026-11-24",
        "outlook": "runs_out",
    }


def test_me_shows_burn_rate_and_run_out_per_member(log_client, world, monkeypatch):
    monkeypatch.setattr("functions.log.app.utcnow", lambda: NOW)
    for cid, days_ago, user, usd in (
        ("b1", 6, "bob", "2"),
        ("b2", 1, "bob", "1.5"),
        ("b0", 10, "bob", "5"),  # in the period, not the window
        ("a1", 2, "alice", "0.5"),
    ):
        seed_usage(
            world,
            cid,
            at=NOW - timedelta(days=days_ago),
            user=user,
            cost_nano=int(Decimal(usd) * USD),
        )
    world.members.update_member("demo", "bob", {"budget_nano": 12 * USD})

    lead = api(log_client, world.keys["alice"], "me")["projects"][0]["burn"]
    assert lead["since"] == "2026-11-13T12:00:00Z" and lead["period_ends"] == "2026-11-30"
    # project: $4 in the window is $0.571428571 a day; $1 of $10 left: 1.75 days
    assert lead["project"] == {
        "per_day_usd": "0.571428571",
        "remaining_usd": "1.000000000",
        "runs_out": "2026-11-22",
        "outlook": "runs_out",
    }
    assert lead["members"] == [
        {
            "user": "alice",
            "spent_usd": "0.500000000",
            "budget_usd": None,
            "window_spent_usd": "0.500000000",
            "per_day_usd": "0.071428571",
            "remaining_usd": None,
            "runs_out": None,
            "outlook": "no_budget",
        },
        # bob: $3.5 of his $12 left at $0.50 a day: 7 days
        {
            "user": "bob",
            "spent_usd": "8.500000000",
            "budget_usd": "12.000000000",
            "window_spent_usd": "3.500000000",
            "per_day_usd": "0.500000000",
            "remaining_usd": "3.500000000",
            "runs_out": "2026-11-27",
            "outlook": "runs_out",
        },
    ]
    # a member sees their own projection only
    mine = api(log_client, world.keys["bob"], "me")["projects"][0]["burn"]
    assert [m["user"] for m in mine["members"]] == ["bob"]
    assert mine["members"] == lead["members"][1:]
    # a budget that outlasts the period
    world.members.update_member("demo", "bob", {"budget_nano": 100 * USD})
    [bob] = api(log_client, world.keys["bob"], "me")["projects"][0]["burn"]["members"]
    assert (bob["outlook"], bob["runs_out"]) == ("lasts", None)
