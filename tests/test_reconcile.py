"""Reconciliation with OpenAI's Usage and Costs APIs: the rules (pure), the HTTP client
against a loopback fake of the APIs, and the admin routes against the emulator."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from typing import Any

import pytest

from functions.admin.reconciliation import parse_day
from functions.admin.usage_api import COMPLETIONS, COSTS, AdminKeyRefused, UsageApi
from functions.core import reconcile
from functions.core.errors import InvalidRequest
from functions.core.reconcile import KeyMap
from tests.conftest import ADMIN_TOKEN, UPSTREAM_SECRET, admin_auth
from tests.fake_usage_api import ADMIN_KEY, FakeUsageApi
from tests.test_alerts import Hook

MINI = "gpt-4o-mini"
SNAP = "gpt-4o-mini-2024-07-18"
PRICES = ("0.15", "0.075", "0.60")
DAY = date(2026, 12, 1)
NOON = int(datetime(2026, 12, 1, 12, tzinfo=UTC).timestamp())


def nano(prices: tuple[str, str | None, str], inp: int, cached: int, out: int) -> int:
    """A call's cost as the ledger books it: exact, rounded up to the nano-dollar."""
    i, c, o = (Decimal(p or prices[0]) for p in prices)
    usd = (i * (inp - cached) + c * cached + o * out) / 1_000_000
    return int((usd * 10**9).to_integral_value(ROUND_CEILING))


# --- the rules ------------------------------------------------------------------------------


def test_the_costs_apis_float_becomes_exact_nano_dollars():
    assert reconcile.usd_to_nano(0.1 + 0.2) == 300_000_000
    assert reconcile.usd_to_nano(8.25e-07) == 825
    assert reconcile.usd_to_nano("12.5") == 12_500_000_000
    assert reconcile.percent(1, 3) == "33.33" and reconcile.percent(0, 0) == "0.00"
    assert reconcile.percent(-5, 0) is None
    assert reconcile.line_item_model(f"{SNAP}, cached input") == SNAP
    assert reconcile.line_item_model("Image models") is None


def test_a_record_without_an_answer_goes_to_its_aliass_only_snapshot():
    recs = [
        {
            "model": MINI,
            "upstream_model": None,
            "status": "orphaned",
            "estimated": True,
            "cost_nano": 500,
        },
        {
            "model": "gpt-4o",
            "upstream_model": None,
            "status": "upstream_timeout",
            "estimated": True,
            "cost_nano": 7,
        },
    ]
    rows = reconcile.tollgate_usage(recs, [SNAP, "gpt-4o-2024-08-06", "gpt-4o-mini-x"])
    assert rows[SNAP]["orphaned_calls"] == 1 and rows[SNAP]["requests"] == 0
    assert rows["gpt-4o-2024-08-06"]["estimated_cost_nano"] == 7


def test_answers_from_tollgates_own_cache_are_left_out():
    recs = [
        {"model": MINI, "upstream_model": SNAP, "status": "ok", "cached": True, "input_tokens": 10}
    ]
    assert reconcile.tollgate_usage(recs, []) == {}


# --- the client against the fake --------------------------------------------------------------


@pytest.fixture(scope="module")
def fake_api() -> Iterator[FakeUsageApi]:
    with FakeUsageApi() as fake:
        yield fake


@pytest.fixture
def usage_api(fake_api: FakeUsageApi) -> Iterator[FakeUsageApi]:
    fake_api.reset()
    yield fake_api
    fake_api.reset()


def test_paging_follows_next_page_over_several_pages(usage_api):
    usage_api.max_page = 2
    for d in range(7):
        usage_api.add_call(NOON + d * 86400, "proj_1", "key_a", SNAP, input_tokens=1000)
    start, _ = reconcile.day_bounds(DAY)
    buckets = list(
        UsageApi(ADMIN_KEY, usage_api.base_url).buckets(
            COMPLETIONS, start, start + 7 * 86400, ("project_id", "api_key_id", "model")
        )
    )
    assert [b.start_time for b in buckets] == [start + d * 86400 for d in range(7)]
    assert all(
        b.results[0]["api_key_id"] == "key_a" and b.results[0]["model"] == SNAP for b in buckets
    )
    pages = [q for path, q in usage_api.requests_seen if path.endswith("completions")]
    assert len(pages) == 4 and "page" not in pages[0] and all("page" in q for q in pages[1:])
    assert pages[0]["group_by"] == ["project_id", "api_key_id", "model"]


def test_group_by_is_honoured_and_costs_come_as_floats(usage_api):
    usage_api.add_call(NOON, "proj_1", "key_a", SNAP, input_tokens=1000, output_tokens=1000)
    usage_api.add_call(NOON, "proj_1", "key_b", SNAP, input_tokens=1000, output_tokens=1000)
    start, end = reconcile.day_bounds(DAY)
    api = UsageApi(ADMIN_KEY, usage_api.base_url)
    (b,) = api.buckets(COMPLETIONS, start, end, ("model",))
    assert [(r["model"], r["api_key_id"], r["num_model_requests"]) for r in b.results] == [
        (SNAP, None, 2)
    ]
    (c,) = api.buckets(COSTS, start, end, ("project_id", "line_item"))
    amounts = {r["line_item"]: r["amount"]["value"] for r in c.results}
    assert amounts == {f"{SNAP}, input": 0.0003, f"{SNAP}, output": 0.0012}


def test_a_refused_admin_key_is_a_clear_error_without_the_key(usage_api):
    with pytest.raises(AdminKeyRefused) as e:
        UsageApi("sk-admin-wrong-key-123456789", usage_api.base_url).check()
    assert e.value.status == 400 and "refused the admin key" in e.value.message
    assert "sk-admin-wrong" not in e.value.message


# --- the routes against the emulator ------------------------------------------------------------


@pytest.fixture
def stack(world, usage_api, admin_client) -> Iterator[Any]:
    """The demo world with external key 'main' mapped to proj_1/key_a, the admin key
    stored (validated against the fake), and the admin function pointed at the fake."""
    os.environ["TOLLGATE_USAGE_API_BASE_URL"] = usage_api.base_url
    call(admin_client, "PUT", "/openai-admin-key", {"secret": ADMIN_KEY}, 200)
    call(
        admin_client,
        "PATCH",
        "/external-keys/main",
        {"openai_project_id": "proj_1", "openai_key_id": "key_a"},
        200,
    )
    yield world


def call(c: Any, method: str, path: str, body: Any = None, status: int | None = None) -> Any:
    r = c.open(
        path,
        method=method,
        headers=admin_auth(ADMIN_TOKEN),
        data=None if body is None else json.dumps(body),
        content_type="application/json",
    )
    if status is not None:
        assert r.status_code == status, r.get_data(True)
    return r.get_json()


def book(
    world: Any,
    project: str,
    ts: int,
    inp: int,
    cached: int = 0,
    out: int = 0,
    prices: tuple[str, str | None, str] = PRICES,
    **extra: Any,
) -> None:
    """A usage record as the ledger writes it (the fields reconciliation reads)."""
    ref = world.db.collection("usage").document()
    ref.set(
        {
            "call_id": ref.id,
            "ts": datetime.fromtimestamp(ts, UTC),
            "project": project,
            "user": "bob",
            "model": MINI,
            "upstream_model": SNAP,
            "status": "ok",
            "input_tokens": inp,
            "cached_tokens": cached,
            "output_tokens": out,
            "cost_nano": nano(prices, inp, cached, out),
            "estimated": False,
            "cached": False,
            **extra,
        }
    )


def only(out: dict[str, Any], key: str = "main") -> dict[str, Any]:
    (doc,) = [d for d in out["data"] if d["external_key"] == key]
    return doc


def test_an_exact_day_has_no_drift(admin_client, stack, usage_api):
    for _ in range(3):
        usage_api.add_call(NOON, "proj_1", "key_a", SNAP, input_tokens=2000, output_tokens=1000)
        book(stack, "demo", NOON, 2000, out=1000)
    doc = only(call(admin_client, "POST", "/reconcile", {"day": "2026-12-01"}, 200))
    (m,) = doc["models"]
    assert m["model"] == SNAP and m["openai"]["requests"] == 3 == m["tollgate"]["requests"]
    assert set(m["drift"].values()) == {0} and m["unbooked_requests"] == 0
    (c,) = doc["cost"]["models"]
    assert c["drift_nano"] == 0 and c["openai_nano"] == 3 * nano(PRICES, 2000, 0, 1000)
    assert doc["over_threshold"] == [] and doc["max_drift_percent"] == "0.00"
    assert doc["runs"] == 1 and doc["stable"] is False
    listed = call(
        admin_client, "GET", "/reconciliations?day=2026-12-01&external_key=main", status=200
    )["data"]
    assert [d["external_key"] for d in listed] == ["main"]


def test_a_call_upstream_saw_and_tollgate_did_not_book_alerts(
    admin_client, stack, usage_api, hooks_
):
    hook = hooks_()
    call(admin_client, "PUT", "/projects/demo/alerts", {"webhook_url": hook.url}, 200)
    usage_api.add_call(
        NOON, "proj_1", "key_a", SNAP, input_tokens=1000, output_tokens=1000, times=2
    )
    book(stack, "demo", NOON, 1000, out=1000)
    doc = only(call(admin_client, "POST", "/reconcile", {"day": "2026-12-01"}, 200))
    (m,) = doc["models"]
    assert m["unbooked_requests"] == 1 and m["drift"]["output_tokens"] == 1000
    assert m["drift_percent"]["input_tokens"] == "50.00"
    assert f"{SNAP} input_tokens" in doc["over_threshold"] and doc["alerted"] is True
    (post,) = hook.posts
    assert post["type"] == "reconciliation_drift" and "did not book" in post["text"]
    # the same figures on the next run: not posted again
    call(admin_client, "POST", "/reconcile", {"day": "2026-12-01"}, 200)
    assert len(hook.posts) == 1


def test_a_price_changed_mid_day(admin_client, stack, usage_api):
    new = ("0.30", "0.15", "1.20")
    usage_api.add_call(NOON - 3600, "proj_1", "key_a", SNAP, input_tokens=1000, output_tokens=1000)
    usage_api.add_call(
        NOON + 3600, "proj_1", "key_a", SNAP, input_tokens=1000, output_tokens=1000, prices=new
    )
    book(stack, "demo", NOON - 3600, 1000, out=1000)
    book(stack, "demo", NOON + 3600, 1000, out=1000, prices=new)  # the price table knew
    doc = only(call(admin_client, "POST", "/reconcile", {"day": "2026-12-01"}, 200))
    assert doc["cost"]["models"][0]["drift_nano"] == 0 and doc["over_threshold"] == []
    # had Tollgate kept the old price, tokens agree and the cost tells
    stack.db.collection("usage").document("late").set(
        {
            "ts": datetime.fromtimestamp(NOON + 7200, UTC),
            "project": "demo",
            "model": MINI,
            "upstream_model": SNAP,
            "status": "ok",
            "input_tokens": 1000,
            "output_tokens": 1000,
            "cost_nano": nano(PRICES, 1000, 0, 1000),
        }
    )
    usage_api.add_call(
        NOON + 7200, "proj_1", "key_a", SNAP, input_tokens=1000, output_tokens=1000, prices=new
    )
    doc = only(call(admin_client, "POST", "/reconcile", {"day": "2026-12-01"}, 200))
    assert set(doc["models"][0]["drift"].values()) == {0}
    assert doc["cost"]["models"][0]["drift_nano"] == nano(new, 1000, 0, 1000) - nano(
        PRICES, 1000, 0, 1000
    )
    assert doc["over_threshold"] == [f"{SNAP} cost"]


def test_cached_tokens_compare_and_cost_at_the_cached_rate(admin_client, stack, usage_api):
    usage_api.add_call(
        NOON, "proj_1", "key_a", SNAP, input_tokens=4000, cached_tokens=3000, output_tokens=1000
    )
    book(stack, "demo", NOON, 4000, cached=3000, out=1000)
    doc = only(call(admin_client, "POST", "/reconcile", {"day": "2026-12-01"}, 200))
    (m,) = doc["models"]
    assert m["openai"]["cached_tokens"] == 3000 == m["tollgate"]["cached_tokens"]
    assert doc["cost"]["models"][0]["openai_nano"] == nano(PRICES, 4000, 3000, 1000)
    assert doc["over_threshold"] == []


def test_a_project_with_two_external_keys(admin_client, stack, usage_api):
    stack.prov.put_external_key(
        "second", UPSTREAM_SECRET, openai={"openai_project_id": "proj_1", "openai_key_id": "key_b"}
    )
    stack.prov.create_project("lab", external_key="second", allowed_models=[MINI])
    usage_api.add_call(NOON, "proj_1", "key_a", SNAP, input_tokens=1000, output_tokens=1000)
    usage_api.add_call(
        NOON, "proj_1", "key_b", SNAP, input_tokens=3000, output_tokens=1000, times=2
    )
    book(stack, "demo", NOON, 1000, out=1000)
    for _ in range(2):
        book(stack, "lab", NOON, 3000, out=1000)
    out = call(admin_client, "POST", "/reconcile", {"day": "2026-12-01"}, 200)
    main, second = only(out, "main"), only(out, "second")
    assert main["models"][0]["openai"]["requests"] == 1 and main["over_threshold"] == []
    assert second["models"][0]["openai"]["input_tokens"] == 6000
    assert second["models"][0]["drift"]["input_tokens"] == 0
    # cost is the project's: both keys on both sides
    assert main["cost"]["shared_with"] == ["second"] and second["cost"]["shared_with"] == ["main"]
    assert (
        main["cost"]["models"][0]["openai_nano"]
        == nano(PRICES, 1000, 0, 1000) + 2 * nano(PRICES, 3000, 0, 1000)
        == main["cost"]["models"][0]["tollgate_nano"]
    )


def test_a_record_counts_for_the_key_it_was_sent_with(admin_client, stack, usage_api):
    """A project moved to another external key in the afternoon: its morning calls stay
    with the key they were sent with (records name it); a record from before records
    named it goes to the key the project uses now."""
    stack.prov.put_external_key(
        "second", UPSTREAM_SECRET, openai={"openai_project_id": "proj_2", "openai_key_id": "key_b"}
    )
    usage_api.add_call(NOON, "proj_1", "key_a", SNAP, input_tokens=1000, output_tokens=10)
    usage_api.add_call(
        NOON + 3600, "proj_2", "key_b", SNAP, input_tokens=500, output_tokens=5, times=2
    )
    book(stack, "demo", NOON, 1000, out=10, external_key="main")
    stack.prov.update_project("demo", external_key="second")
    book(stack, "demo", NOON + 3600, 500, out=5, external_key="second")
    book(stack, "demo", NOON + 3600, 500, out=5)  # booked before records named their key
    out = call(admin_client, "POST", "/reconcile", {"day": "2026-12-01"}, 200)
    main, second = only(out, "main"), only(out, "second")
    assert main["models"][0]["tollgate"]["requests"] == 1 == main["models"][0]["openai"]["requests"]
    assert second["models"][0]["tollgate"]["input_tokens"] == 1000
    assert (
        set(main["models"][0]["drift"].values())
        == set(second["models"][0]["drift"].values())
        == {0}
    )


def test_orphaned_records_stand_next_to_what_openai_counted(admin_client, stack, usage_api):
    usage_api.add_call(NOON, "proj_1", "key_a", SNAP, input_tokens=1000, output_tokens=1000)
    book(
        stack,
        "demo",
        NOON,
        0,
        upstream_model=None,
        status="orphaned",
        estimated=True,
        cost_nano=5000,
    )
    doc = only(call(admin_client, "POST", "/reconcile", {"day": "2026-12-01"}, 200))
    (m,) = doc["models"]
    assert m["model"] == SNAP and m["tollgate"]["orphaned_calls"] == 1
    assert m["unbooked_requests"] == 0 and doc["estimated_calls"] == 1


def test_default_days_page_and_a_day_becomes_stable(admin_client, stack, usage_api):
    usage_api.max_page = 2  # seven days, four pages per endpoint
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    ts = int(datetime(yesterday.year, yesterday.month, yesterday.day, 9, tzinfo=UTC).timestamp())
    usage_api.add_call(ts, "proj_1", "key_a", SNAP, input_tokens=1000)
    book(stack, "demo", ts, 1000)
    out = call(admin_client, "POST", "/reconcile", {}, 200)
    assert len(out["days"]) == 7 and out["days"][-1] == yesterday.isoformat()
    assert (
        only({"data": [d for d in out["data"] if d["day"] == yesterday.isoformat()]})["models"][0][
            "drift"
        ]["input_tokens"]
        == 0
    )
    out = call(admin_client, "POST", "/reconcile", {}, 200)
    assert all(d["stable"] and d["runs"] == 2 for d in out["data"])
    assert call(admin_client, "POST", "/reconcile", {}, 200)["days"] == []  # all stable


def test_a_refused_admin_key_writes_nothing(admin_client, stack, usage_api):
    r = admin_client.put(
        "/openai-admin-key", headers=admin_auth(), json={"secret": "sk-admin-bad-1234"}
    )
    e = r.get_json()["error"]
    assert r.status_code == 400 and e["code"] == "admin_key_refused" and "bad" not in e["message"]
    assert call(admin_client, "GET", "/openai-admin-key", status=200)["last4"] == ADMIN_KEY[-4:]
    usage_api.admin_keys = set()  # the stored key is revoked at OpenAI
    usage_api.add_call(NOON, "proj_1", "key_a", SNAP, input_tokens=1000)
    r = admin_client.post("/reconcile", headers=admin_auth(), json={"day": "2026-12-01"})
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "admin_key_refused"
    assert list(stack.db.collection("reconciliations").stream()) == []


def test_admin_key_and_openai_ids_are_validated_and_shown_by_last4(admin_client, stack):
    shown = call(admin_client, "GET", "/openai-admin-key", status=200)
    assert shown["set"] and shown["last4"] == ADMIN_KEY[-4:] and ADMIN_KEY not in json.dumps(shown)
    r = admin_client.patch(
        "/external-keys/main", headers=admin_auth(), json={"openai_key_id": "key a"}
    )
    assert r.status_code == 400 and r.get_json()["error"]["param"] == "openai_key_id"
    keys = call(admin_client, "GET", "/external-keys", status=200)["data"]
    assert keys[0]["openai_project_id"] == "proj_1" and keys[0]["openai_key_id"] == "key_a"
    for bad in ({"day": "2026-13-01"}, {"day": "tomorrow"}, {"since": "x"}):
        r = admin_client.post("/reconcile", headers=admin_auth(), json=bad)
        assert r.status_code == 400, bad
    call(admin_client, "DELETE", "/openai-admin-key", status=200)
    r = admin_client.post("/reconcile", headers=admin_auth(), json={"day": "2026-12-01"})
    assert r.status_code == 400 and "admin key" in r.get_json()["error"]["message"]


def test_parse_day_refuses_what_is_not_a_day():
    for bad in ("2026-02-30", "2026-1-01", "yesterday", 20261201):
        with pytest.raises(InvalidRequest):
            parse_day(bad)
    assert parse_day("2026-12-01") == DAY


@pytest.fixture
def hooks_() -> Iterator[Any]:
    made: list[Hook] = []
    yield lambda **kw: made.append(Hook(**kw)) or made[-1]
    for h in made:
        h.server.shutdown()


def test_keymap_without_a_key_id_compares_the_whole_project():
    results = [
        {
            "project_id": "proj_1",
            "api_key_id": k,
            "model": SNAP,
            "input_tokens": 10,
            "num_model_requests": 1,
        }
        for k in ("key_a", "key_b")
    ]
    assert reconcile.openai_usage(results, KeyMap("main", "proj_1"))[SNAP]["requests"] == 2
    assert (
        reconcile.openai_usage(results, KeyMap("main", "proj_1", "key_b"))[SNAP]["input_tokens"]
        == 10
    )


# --- the CLI against the admin function over loopback ------------------------------------------


def test_the_cli_sets_the_keys_runs_and_lists(admin_url, stack, usage_api, capsys, monkeypatch):
    from tollgate_cli import cli

    monkeypatch.setenv("TOLLGATE_ADMIN_URL", admin_url)
    monkeypatch.setenv("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN)

    def run(*argv: str, code: int = 0) -> str:
        capsys.readouterr()
        assert cli.main(list(argv)) == code
        out, err = capsys.readouterr()
        return out if code == 0 else err

    usage_api.add_call(
        NOON,
        "proj_1",
        "key_a",
        SNAP,
        input_tokens=2000,
        cached_tokens=1000,
        output_tokens=1000,
        times=2,
    )
    usage_api.add_call(
        NOON,
        "proj_1",
        "key_a",
        "text-embedding-3-small",
        input_tokens=1000,
        prices=("0.02", None, "0"),
        endpoint="embeddings",
    )
    book(stack, "demo", NOON, 2000, cached=1000, out=1000)
    book(stack, "demo", NOON, 2000, cached=1000, out=1000)
    book(
        stack,
        "demo",
        NOON,
        1000,
        model="text-embedding-3-small",
        upstream_model="text-embedding-3-small",
        prices=("0.02", None, "0"),
    )
    assert "...0001" in run("openai-admin-key", "show")
    assert "openai_key_id: key_a" in run("key", "openai-ids", "main", "--key-id", "key_a")
    out = run("reconcile", "--day", "2026-12-01")
    assert "2026-12-01  external key main (OpenAI proj_1 / key_a): run 1" in out
    assert f"{SNAP}  2/2" in out and "within 2.0 %" in out
    assert "text-embedding-3-small" in out
    assert run("reconciliations", "--key", "main").startswith("2026-12-01  external key main")
    data = json.loads(run("reconcile", "--show", "--day", "2026-12-01", "--json"))
    assert data["data"][0]["cost"]["models"][0]["drift_usd"] == "0.000000000"
    assert "admin key" in run("openai-admin-key", "set", "--secret", "sk-admin-nope-0000", code=1)


def test_calls_through_the_proxy_reconcile_to_zero(client, admin_client, stack, usage_api):
    """Real usage records, written by the proxy for calls to the fake upstream (which
    answers with a dated snapshot), against what that upstream said it counted."""
    from tests.conftest import bearer, wait_for_usage

    stack.upstream.cached_tokens = 3
    chat = {"model": MINI, "messages": [{"role": "user", "content": "hi"}]}
    emb = {"model": "text-embedding-3-small", "input": "hello there"}
    answers = []
    for path, body in (
        ("/v1/chat/completions", chat),
        ("/v1/chat/completions", chat),
        ("/v1/embeddings", emb),
    ):
        r = client.post(path, json=body, headers=bearer(stack.keys["bob"]))
        assert r.status_code == 200, r.get_data(True)
        answers.append((path, r.get_json()))
    wait_for_usage(stack, 3)
    now = int(datetime.now(UTC).timestamp())
    for path, a in answers:
        u = a["usage"]
        if path.endswith("embeddings"):
            usage_api.add_call(
                now,
                "proj_1",
                "key_a",
                a["model"],
                endpoint="embeddings",
                input_tokens=u["prompt_tokens"],
                prices=("0.02", None, "0"),
            )
        else:
            usage_api.add_call(
                now,
                "proj_1",
                "key_a",
                a["model"],
                input_tokens=u["prompt_tokens"],
                cached_tokens=u["prompt_tokens_details"]["cached_tokens"],
                output_tokens=u["completion_tokens"],
            )
    today = datetime.now(UTC).date().isoformat()
    doc = only(call(admin_client, "POST", "/reconcile", {"day": today}, 200))
    assert {m["model"] for m in doc["models"]} == {answers[0][1]["model"], "text-embedding-3-small"}
    assert answers[0][1]["model"] != MINI  # a snapshot: matched on upstream_model
    assert all(set(m["drift"].values()) == {0} for m in doc["models"]), doc["models"]
    assert doc["over_threshold"] == [] and doc["complete"] is False and not doc["stable"]
    # tiny calls: each cost rounded up to the nano-dollar is rounding, not drift
    assert all(abs(c["drift_nano"]) <= c["tollgate_calls"] + 1 for c in doc["cost"]["models"])


def test_a_cost_drift_within_a_nano_dollar_a_call_is_rounding():
    def doc(drift: int, calls: int) -> dict[str, Any]:
        return {
            "models": [],
            "cost": {
                "models": [
                    {
                        "model": SNAP,
                        "drift_nano": drift,
                        "tollgate_calls": calls,
                        "drift_percent": reconcile.percent(drift, 10),
                    }
                ]
            },
        }

    assert reconcile.over_threshold(doc(-3, 2), 2.0) == []
    assert reconcile.over_threshold(doc(-4, 2), 2.0) == [f"{SNAP} cost"]
    assert reconcile.max_drift(doc(-3, 2)) == "0.00" and reconcile.max_drift(doc(-4, 2)) == "40.00"
