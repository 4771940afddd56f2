"""Rate limits (rpm, tpm), budget alerts, the response cache and the upstream rate-limit
headers, on the emulator with the loopback upstream."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from functions.core.budget import rate_limits_for, retry_after_s
from functions.core.errors import RateLimited
from functions.core.pricing import Usage
from functions.store.ledger import HoldPlan, Ledger, Outcome
from tests.conftest import admin_auth, bearer, burst, wait_for_usage
from tests.plans import hold_plan

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
T0 = datetime(2026, 11, 23, 12, 0, 10, tzinfo=UTC)


def post(client, key, body=CHAT, **headers):
    return client.post("/v1/chat/completions", json=body, headers={**bearer(key), **headers})


# --- rate limits ---------------------------------------------------------------------


def rl_plan(at: datetime, tokens: int, rpm=None, tpm=None) -> HoldPlan:
    return hold_plan(
        10,
        limit=None,
        at=at,
        ttl_s=20 * 60,
        estimate_tokens=tokens,
        rate_limits=rate_limits_for(
            project="demo",
            user="bob",
            model="m",
            at=at,
            project_limits=(rpm, tpm),
            model_limits=(None, None),
            member_model_limits=(None, None),
        ),
    )


def test_retry_after_counts_to_the_end_of_the_minute():
    assert retry_after_s(T0) == 50
    assert retry_after_s(T0.replace(second=59, microsecond=500_000)) == 1
    assert retry_after_s(T0.replace(second=0)) == 60


def test_rpm_window_refuses_then_passes_after_retry_after(db):
    ledger = Ledger(db, clock=lambda: T0)
    plans = [rl_plan(T0, 10, rpm=3) for _ in range(3)]
    for p in plans:
        ledger.reserve(p)
    with pytest.raises(RateLimited) as e:
        ledger.reserve(rl_plan(T0 + timedelta(seconds=5), 10, rpm=3))
    assert e.value.headers["retry-after"] == "45" and "3 requests per minute" in e.value.message
    later = T0 + timedelta(seconds=5 + 45)  # the next minute
    ledger.reserve(rl_plan(later, 10, rpm=3))  # passes again
    for p in plans:
        ledger.settle(p, Outcome(status="ok", cost_nano=1))


@pytest.mark.leaves_holds
def test_tpm_counts_the_estimate_then_the_actual(db):
    ledger = Ledger(db, clock=lambda: T0)
    a, b = rl_plan(T0, 600, tpm=1000), rl_plan(T0, 600, tpm=1000)
    ledger.reserve(a)
    with pytest.raises(RateLimited, match="1000 tokens"):
        ledger.reserve(b)  # 1200 estimated > 1000
    ledger.settle(
        a, Outcome(status="ok", cost_nano=1, usage=Usage(input_tokens=100, output_tokens=50))
    )
    ledger.reserve(b)  # a really used 150: 150 + 600 fits in the same minute
    window = db.collection("windows").document("rl|demo|202611231200").get().to_dict()
    assert (window["requests"], window["tokens"]) == (2, 750)


def inside_one_minute() -> None:
    """Wait, if need be, so that a burst started now stays inside one minute window."""
    while datetime.now(UTC).second > 45:
        time.sleep(1)


def test_rpm_from_many_threads_admits_exactly_the_limit(proxy_url, world):
    world.prov.update_project("demo", rpm=5)
    inside_one_minute()
    answers = burst(
        12,
        lambda: requests.post(
            proxy_url + "/v1/chat/completions",
            json=CHAT,
            timeout=30,
            headers=bearer(world.keys["bob"]),
        ),
        timeout_s=60,
    )
    assert Counter(r.status_code for r in answers) == {200: 5, 429: 7}
    refused = [r for r in answers if r.status_code == 429]
    assert all(r.json()["error"]["code"] == "rate_limit_exceeded" for r in refused)
    assert all(1 <= int(r.headers["retry-after"]) <= 60 for r in refused)
    assert len(world.usage()) == 5


def test_tpm_from_many_threads_admits_what_fits_and_books_within_it(proxy_url, world):
    from functions.core import tokens

    body = {**CHAT, "max_tokens": 40}
    estimate = tokens.estimate_input_tokens("chat", body, "gpt-4o-mini") + 40
    tpm = 3 * estimate + estimate // 2  # room for exactly three estimates
    world.prov.update_project("demo", tpm=tpm)
    # settlement corrects the window to the (smaller) actual tokens and so frees room:
    # a slow upstream keeps every admission before the first settlement
    world.upstream.latency_s = 1.0
    inside_one_minute()
    answers = burst(
        10,
        lambda: requests.post(
            proxy_url + "/v1/chat/completions",
            json=body,
            timeout=30,
            headers=bearer(world.keys["bob"]),
        ),
        timeout_s=60,
    )
    assert Counter(r.status_code for r in answers) == {200: 3, 429: 7}
    assert all(
        "tokens (estimated at admission) per minute" in r.json()["error"]["message"]
        for r in answers
        if r.status_code != 200
    )
    # settled: the window holds the actual tokens of the admitted calls, within tpm
    recs = wait_for_usage(world, 3)
    [window] = [s.to_dict() for s in world.db.collection("windows").stream()]
    booked = sum(r["input_tokens"] + r["output_tokens"] for r in recs)
    assert len(recs) == 3 and window["requests"] == 3
    assert window["tokens"] == booked <= tpm


# --- alerts -------------------------------------------------------------------------------


class Receiver:
    def __init__(self) -> None:
        self.posts: list[dict] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                n = int(self.headers["Content-Length"])
                outer.posts.append(json.loads(self.rfile.read(n)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *a) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"


def test_each_threshold_is_posted_once_per_period(client, admin_client, world):
    from functions.core import tokens

    hook = Receiver()
    world.upstream.bill_cap = True  # every call costs exactly its hold
    world.upstream.prompt_tokens = lambda path, body: tokens.estimate_input_tokens(
        "chat", body, body["model"]
    )
    world.prov.update_project("demo", default_max_output_tokens=10)
    post(client, world.keys["bob"])  # learn what one call costs
    cost = world.usage()[0]["cost_nano"]
    # a budget of exactly 10 such calls: 50 % is crossed by the 5th, 80 % by the 8th
    world.prov.update_project("demo", budget_nano=10 * cost)
    r = admin_client.put(
        "/projects/demo/alerts",
        headers=admin_auth(),
        json={"webhook_url": hook.url, "thresholds": [80, 50]},
    )
    assert r.status_code == 200 and r.get_json()["config"]["thresholds"] == [50, 80]
    for _ in range(3):
        post(client, world.keys["bob"])  # calls 2-4
    burst(3, lambda: post(client, world.keys["bob"]), timeout_s=30)  # 5-7: one crosses 50 %
    post(client, world.keys["bob"])  # call 8 crosses 80 %
    post(client, world.keys["bob"])  # call 9: nothing new
    got = sorted((p["threshold_percent"], p["limit"]) for p in hook.posts)
    assert got == [(50, "project 'demo'"), (80, "project 'demo'")]
    assert hook.posts[0]["budget_usd"] and hook.posts[0]["spent_usd"]
    sent = admin_client.get("/projects/demo/alerts", headers=admin_auth()).get_json()["sent"]
    assert [(s["threshold_percent"], s["delivered"]) for s in sent] == [(80, True), (50, True)]
    hook.server.shutdown()


def test_a_dead_webhook_never_fails_the_call(client, world):
    from tests.emulator import free_port

    world.prov.update_project(
        "demo",
        budget_nano=1_000_000,
        alerts={"webhook_url": f"http://127.0.0.1:{free_port()}/x", "thresholds": [1]},
    )
    assert post(client, world.keys["bob"]).status_code == 200


# --- response cache -----------------------------------------------------------------------


def test_cache_hit_miss_ttl_isolation_and_flush(client, admin_client, world):
    world.prov.update_project("demo", cache={"enabled": True, "ttl_s": 2})
    first = post(client, world.keys["bob"])
    assert first.headers["x-tollgate-cache"] == "miss"
    # same request written differently (key order) by another member: a hit, free
    reordered = {"messages": CHAT["messages"], "model": "gpt-4o-mini"}
    hit = post(client, world.keys["alice"], reordered)
    assert hit.headers["x-tollgate-cache"] == "hit" and hit.get_json() == first.get_json()
    assert hit.headers["x-tollgate-cost-usd"] == "0.000000000"
    assert len(world.upstream.received) == 1
    cached = [u for u in world.usage() if u["cached"]]
    assert len(cached) == 1 and cached[0]["cost_nano"] == 0 and cached[0]["user"] == "alice"

    assert post(client, world.keys["bob"], {**CHAT, "n": 2}).headers["x-tollgate-cache"] == "miss"

    # another project never sees demo's entries
    world.prov.create_project(
        "other",
        external_key="main",
        allowed_models=["gpt-4o-mini"],
        cache={"enabled": True, "ttl_s": 60},
    )
    carol = (world.prov.create_user("carol"), world.members.add_member("other", "carol"))[1]
    assert post(client, carol).headers["x-tollgate-cache"] == "miss"

    time.sleep(2.1)  # TTL passed: Firestore's TTL may delete late, expiry is checked anyway
    assert post(client, world.keys["bob"]).headers["x-tollgate-cache"] == "miss"
    assert post(client, world.keys["bob"]).headers["x-tollgate-cache"] == "hit"
    r = admin_client.post("/projects/demo/cache/flush", headers=admin_auth())
    assert r.get_json()["flushed"] >= 1
    assert post(client, world.keys["bob"]).headers["x-tollgate-cache"] == "miss"


def test_cache_per_request_and_never_for_streams_or_errors(client, world):
    from tests.fake_upstream import Error

    assert "x-tollgate-cache" not in post(client, world.keys["bob"]).headers  # project: off
    use = {"x-tollgate-cache": "use"}
    assert post(client, world.keys["bob"], **use).headers["x-tollgate-cache"] == "miss"
    assert post(client, world.keys["bob"], **use).headers["x-tollgate-cache"] == "hit"
    world.upstream.push(Error(500))
    body = {**CHAT, "temperature": 0.5}
    assert post(client, world.keys["bob"], body, **use).status_code == 500
    assert post(client, world.keys["bob"], body, **use).headers["x-tollgate-cache"] == "miss"
    s = post(client, world.keys["bob"], {**CHAT, "stream": True}, **use)
    assert "x-tollgate-cache" not in s.headers
    s.get_data()


def test_too_big_answers_are_not_cached():
    from functions.core import cache

    now = datetime.now(UTC)
    assert cache.entry("p", "chat", "m", b"x" * (cache.MAX_BODY_BYTES + 1), "a/b", 60, now) is None
    assert cache.entry("p", "chat", "m", b"x" * 10, "a/b", 60, now)["expires_at"] > now


# --- upstream rate-limit headers ------------------------------------------------------------


def test_last_ratelimit_headers_per_external_key_in_admin(client, admin_client, world):
    assert post(client, world.keys["bob"]).status_code == 200
    data = admin_client.get("/ratelimits", headers=admin_auth()).get_json()["data"]
    [entry] = data
    assert entry["external_key"] == "main" and entry["seen_at"].endswith("Z")
    assert entry["headers"]["x-ratelimit-limit-requests"] == "10000"
    assert entry["headers"]["x-ratelimit-remaining-tokens"] == "29999000"


def test_audit20_a_cache_hit_has_the_budget_header_and_a_record_of_what_it_saved(client, world):
    world.prov.update_project("demo", cache={"enabled": True, "ttl_s": 60})
    miss = post(client, world.keys["bob"])
    hit = post(client, world.keys["bob"])
    assert hit.headers["x-tollgate-cache"] == "hit"
    # a hit spends nothing, so the budget left is what the miss left
    assert (
        hit.headers["x-tollgate-budget-remaining-usd"]
        == miss.headers["x-tollgate-budget-remaining-usd"]
    )
    [rec] = [u for u in world.usage() if u["cached"]]
    [paid] = [u for u in world.usage() if not u["cached"]]
    assert rec["period"] == paid["period"] != ""
    saved = miss.get_json()["usage"]
    assert (rec["input_tokens"], rec["output_tokens"], rec["cost_nano"]) == (
        saved["prompt_tokens"],
        saved["completion_tokens"],
        0,
    )
    assert rec["call_id"] == hit.headers["x-tollgate-call-id"]
