"""The ``openai`` function end to end: real emulator, real loopback upstream, the
functions-framework app. Each test reads as a user's call and what got booked."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from functions.core import pricing, tokens
from tests.conftest import MINI, UPSTREAM_SECRET, admin_auth, bearer, make_price
from tests.fake_upstream import Error, InvalidJSON, Stall

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hi"}]}
RATES = make_price("0.15", "0.075", "0.60").tiers["default"]


def post(client, key, body, path="/v1/chat/completions", **headers):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post(
        path, data=data, headers={**bearer(key), **headers}, content_type="application/json"
    )


def err(resp):
    assert resp.is_json, resp.data[:200]
    e = resp.get_json()["error"]
    assert set(e) == {"message", "type", "param", "code"}
    return e


# --- a normal call ---------------------------------------------------------------


def test_chat_call_is_forwarded_priced_and_booked(client, world):
    world.upstream.cached_tokens = 3
    world.upstream.reasoning_tokens = 2
    r = post(client, world.keys["bob"], CHAT, **{"x-tollgate-tag": "nightly-eval"})
    assert r.status_code == 200
    body = r.get_json()
    assert body["choices"][0]["message"]["content"]
    usage = pricing.usage_from_chat(body["usage"])
    assert usage.cached_tokens == 3 and usage.reasoning_tokens == 2

    # what upstream saw: the organisation's key, our cap, a hashed member id
    sent = world.upstream.received[-1]
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_SECRET}"
    assert world.keys["bob"] not in json.dumps(sent.headers)
    assert sent.json["max_completion_tokens"] == 256
    assert sent.json["safety_identifier"].startswith("tg-")
    assert sent.headers["accept-encoding"] == "gzip"  # answered gzipped, decoded for the client
    assert "content-encoding" not in r.headers
    assert "bob" not in sent.json["safety_identifier"]

    # what the client sees
    cost = pricing.cost_nano(RATES, usage)
    assert r.headers["x-tollgate-cost-usd"] == pricing.format_usd(cost)
    assert r.headers["x-request-id"].startswith("req_")
    call_id = r.headers["x-tollgate-call-id"]
    assert float(r.headers["x-tollgate-budget-remaining-usd"]) == pytest.approx(10 - cost / 1e9)
    for hidden in ("openai-organization", "openai-project", "set-cookie"):
        assert hidden not in r.headers

    # what was booked
    [rec] = world.usage()
    assert rec["call_id"] == call_id and rec["status"] == "ok"
    assert (rec["user"], rec["project"], rec["model"], rec["key_name"]) == (
        "bob",
        "demo",
        "gpt-4o-mini",
        "default",
    )
    assert rec["upstream_model"] == body["model"] != "gpt-4o-mini"
    assert rec["cost_nano"] == cost and rec["tag"] == "nightly-eval"
    assert (
        rec["input_tokens"],
        rec["cached_tokens"],
        rec["output_tokens"],
        rec["reasoning_tokens"],
    ) == (usage.input_tokens, 3, usage.output_tokens, 2)
    assert rec["estimated"] is False and rec["streamed"] is False
    assert "Say hi" not in json.dumps(rec, default=str)  # prompts are never stored
    month = datetime.now(UTC).strftime("%Y-%m")
    assert world.counter("p", "demo", month)["spent"] == cost
    assert world.counter("m", "demo", "bob", month)["spent"] == cost
    assert world.counter("p", "demo", month)["held"] == 0


@pytest.mark.parametrize("path", ["/", "/openai"])
def test_bare_seed_urls_are_chat(client, world, path):
    r = client.post(path, json=CHAT, headers={"Authorization": f"bob {world.keys['bob']}"})
    assert r.status_code == 200 and r.get_json()["object"] == "chat.completion"


def test_a_plain_answer_reaches_the_client_before_its_settlement_is_written(client, world):
    # The settlement commit is not between upstream and the client: the whole answer is
    # there while the call is still held, and the server's close() after the last byte
    # books it - even when the client never read the body (it hung up).
    def call() -> object:
        return client.post(
            "/v1/chat/completions",
            data=json.dumps(CHAT),
            buffered=False,
            headers=bearer(world.keys["bob"]),
            content_type="application/json",
        )

    r = call()
    answer = json.loads(r.get_data())
    assert answer["choices"][0]["message"]["content"]
    assert int(r.headers["content-length"]) == len(r.get_data())
    assert [h["call_id"] for h in world.live_holds()] == [r.headers["x-tollgate-call-id"]]
    assert world.usage() == []
    r.close()
    [rec] = world.usage()
    assert rec["call_id"] == r.headers["x-tollgate-call-id"] and rec["status"] == "ok"
    assert world.live_holds() == []
    # the budget header, written before the settlement, is what the settlement left
    cost = rec["cost_nano"]
    assert r.headers["x-tollgate-budget-remaining-usd"] == pricing.format_usd(10**10 - cost)

    hung_up = call()
    hung_up.close()  # no byte read
    assert len(world.usage()) == 2 and world.live_holds() == []
    month = datetime.now(UTC).strftime("%Y-%m")
    assert world.counter("p", "demo", month)["spent"] == 2 * cost


def test_client_cap_is_kept_and_estimate_times_n(client, world):
    r = post(client, world.keys["bob"], {**CHAT, "max_tokens": 40, "n": 3})
    assert r.status_code == 200
    sent = world.upstream.received[-1].json
    assert sent["max_tokens"] == 40 and "max_completion_tokens" not in sent
    [rec] = world.usage()
    prompt = tokens.estimate_input_tokens("chat", CHAT, "gpt-4o-mini")
    assert rec["estimate_nano"] == pricing.estimate_nano(RATES, prompt, 40, 3)


# --- authentication ------------------------------------------------------------


def test_missing_key_or_bare_name_is_401_key_needed(client, world):
    for headers in ({}, {"Authorization": "UserName alice"}):
        r = client.post("/v1/chat/completions", json=CHAT, headers=headers)
        assert r.status_code == 401
        e = err(r)
        assert e["code"] == "invalid_api_key" and "proxy key is needed" in e["message"]
    assert world.upstream.received == []


def test_unknown_revoked_expired_and_disabled_stop_the_next_call(client, world):
    bob = world.keys["bob"]
    assert post(client, bob, CHAT).status_code == 200
    assert err(post(client, "tg_" + "x" * 40, CHAT))["code"] == "invalid_api_key"

    world.members.revoke_by_key(bob)
    r = post(client, bob, CHAT)
    assert r.status_code == 401 and "revoked" in err(r)["message"]

    laptop = world.members.add_key(
        "demo", "alice", "laptop", expires_at=datetime.now(UTC) - timedelta(seconds=1)
    )
    assert "expired" in err(post(client, laptop, CHAT))["message"]

    alice = world.keys["alice"]
    assert post(client, alice, CHAT).status_code == 200
    world.prov.set_user_disabled("alice", True)
    assert post(client, alice, CHAT).status_code == 401
    assert len(world.upstream.received) == 2


# --- bad input -------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, status, code, param",
    [
        (b"{not json", 400, "invalid_request", None),
        (b"", 400, "invalid_request", None),
        (json.dumps({"messages": []}), 400, "invalid_request", "model"),
        (
            json.dumps({"model": "gpt-4o-mini", "messages": "hi"}),
            400,
            "invalid_request",
            "messages",
        ),
        (json.dumps({**CHAT, "max_tokens": "lots"}), 400, "invalid_request", "max_tokens"),
        (json.dumps({**CHAT, "stream": "yes"}), 400, "invalid_request", "stream"),
        (
            json.dumps({**CHAT, "stream": True, "stream_options": 1}),
            400,
            "invalid_request",
            "stream_options",
        ),
        (json.dumps({**CHAT, "model": "gpt-4o"}), 403, "model_not_allowed", "model"),
        (json.dumps({**CHAT, "service_tier": "flex"}), 403, "model_not_priced", "service_tier"),
    ],
)
def test_bad_requests_get_openai_errors_and_are_not_forwarded(
    client, world, data, status, code, param
):
    r = post(client, world.keys["bob"], data)
    assert r.status_code == status
    e = err(r)
    assert (e["code"], e["param"]) == (code, param)
    assert "Traceback" not in e["message"] and world.keys["bob"] not in r.get_data(True)
    assert world.upstream.received == [] and world.usage() == []


def test_oversized_body_is_413(client, world):
    os_env = {"TOLLGATE_MAX_BODY_BYTES": "2048"}
    import os

    os.environ.update(os_env)
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]}
    r = post(client, world.keys["bob"], big)
    assert r.status_code == 413 and err(r)["code"] == "request_too_large"


def test_allowed_but_unpriced_model_is_refused_not_billed_at_zero(client, world):
    world.prov.update_project("demo", allowed_models=["gpt-4o-mini", "gpt-5"])
    r = post(client, world.keys["bob"], {**CHAT, "model": "gpt-5"})
    assert r.status_code == 403 and err(r)["code"] == "model_not_priced"
    # a price that only starts tomorrow is not in force either
    world.prov.add_price(
        "gpt-5", make_price("1.25", "0.125", "10", since=datetime.now(UTC) + timedelta(days=1))
    )
    assert post(client, world.keys["bob"], {**CHAT, "model": "gpt-5"}).status_code == 403
    assert world.upstream.received == []


def test_unknown_routes_are_404_and_never_forwarded(client, world):
    for method, path in [
        ("POST", "/v1/files"),
        ("GET", "/v1/organization/users"),
        ("POST", "/v1/fine_tuning/jobs"),
    ]:
        r = client.open(path, method=method, headers=bearer(world.keys["bob"]))
        assert r.status_code == 404 and err(r)["type"] == "invalid_request_error"
    assert world.upstream.received == []


def test_bad_tag_is_400(client, world):
    r = post(client, world.keys["bob"], CHAT, **{"x-tollgate-tag": "x" * 65})
    assert r.status_code == 400 and err(r)["param"] == "x-tollgate-tag"


# --- budgets ---------------------------------------------------------------------


def test_project_budget_refuses_before_forwarding(client, world):
    world.prov.update_project("demo", budget_nano=1000)  # $0.000001
    r = post(client, world.keys["bob"], CHAT)
    assert r.status_code == 429
    e = err(r)
    assert (e["type"], e["code"]) == ("insufficient_quota", "budget_exceeded")
    assert r.headers["x-should-retry"] == "false"
    assert "project 'demo'" in e["message"] and "spent $0.000000000" in e["message"]
    assert "limit $0.000001000" in e["message"]
    assert world.upstream.received == [] and world.usage() == []


def test_member_and_model_limits_apply(client, world):
    db = world.db
    db.collection("members").document("demo|bob").update({"budget_nano": 1000})
    r = post(client, world.keys["bob"], CHAT)
    assert r.status_code == 429 and "member 'bob'" in err(r)["message"]
    assert post(client, world.keys["alice"], CHAT).status_code == 200

    world.prov.set_limit("demo", "gpt-4o-mini", budget_usd="0.000001")
    r = post(client, world.keys["alice"], CHAT)
    assert r.status_code == 429 and "model 'gpt-4o-mini'" in err(r)["message"]
    world.prov.set_limit("demo", "gpt-4o-mini")  # cleared
    world.prov.set_limit("demo", "gpt-4o-mini", "alice", budget_usd="0.000001")
    r = post(client, world.keys["alice"], CHAT)
    assert r.status_code == 429 and "member 'alice' on model" in err(r)["message"]


def test_daily_and_total_periods_key_their_counters(client, world):
    world.prov.update_project("demo", budget_period="daily")
    assert post(client, world.keys["bob"], CHAT).status_code == 200
    assert world.counter("p", "demo", datetime.now(UTC).strftime("%Y-%m-%d"))["spent"] > 0
    world.prov.update_project("demo", budget_period="total")
    assert post(client, world.keys["bob"], CHAT).status_code == 200
    assert world.counter("p", "demo", "total")["spent"] > 0
    world.prov.update_project("demo", budget_period="weekly")
    assert post(client, world.keys["bob"], CHAT).status_code == 200
    year, week, _ = datetime.now(UTC).isocalendar()
    assert world.counter("p", "demo", f"{year}-W{week:02d}")["spent"] > 0


def test_a_weekly_budget_is_set_through_the_admin_api_and_refuses_past_it(
    client, admin_client, world
):
    r = admin_client.patch(
        "/admin/projects/demo",
        headers=admin_auth(),
        json={"budget_period": "weekly", "budget_usd": "0.000001"},
    )
    assert r.status_code == 200, r.get_data(True)
    assert r.get_json()["budget_period"] == "weekly"
    r = post(client, world.keys["bob"], CHAT)
    assert r.status_code == 429 and "weekly budget, period 20" in err(r)["message"]
    bad = admin_client.patch(
        "/admin/projects/demo", headers=admin_auth(), json={"budget_period": "fortnightly"}
    )
    assert bad.status_code == 400 and "budget_period" in bad.get_json()["error"]["message"]


# --- degrade instead of refuse (a project's opt-in) --------------------------------------


def test_a_call_that_does_not_fit_is_sent_with_the_cap_the_budget_pays_for(client, world):
    body = {**CHAT, "max_tokens": 200}
    input_tokens = tokens.estimate_input_tokens("chat", body, "gpt-4o-mini")
    full = pricing.estimate_nano(RATES, input_tokens, 200)
    world.prov.update_project("demo", budget_nano=full // 3)
    assert post(client, world.keys["bob"], body).status_code == 429  # not opted in
    world.prov.update_project("demo", clamp_output=True)
    r = post(client, world.keys["bob"], body)
    assert r.status_code == 200, r.get_data(True)
    cap = int(r.headers["x-tollgate-max-tokens-clamped"])
    assert 16 <= cap < 200
    # the largest cap that fits: one token more would not
    assert pricing.estimate_nano(RATES, input_tokens, cap) <= full // 3
    assert pricing.estimate_nano(RATES, input_tokens, cap + 1) > full // 3
    assert world.upstream.received[-1].json["max_tokens"] == cap
    [rec] = world.usage()
    assert rec["estimate_nano"] <= full // 3 and rec["cost_nano"] <= rec["estimate_nano"]
    month = datetime.now(UTC).strftime("%Y-%m")
    assert world.counter("p", "demo", month)["spent"] <= full // 3


def test_clamping_stops_short_of_an_answer_too_small_to_use(client, world):
    body = {**CHAT, "max_tokens": 200}
    input_tokens = tokens.estimate_input_tokens("chat", body, "gpt-4o-mini")
    world.prov.update_project(
        "demo", clamp_output=True, budget_nano=pricing.estimate_nano(RATES, input_tokens, 15)
    )  # room for 15 output tokens: under the minimum of 16
    r = post(client, world.keys["bob"], body)
    assert r.status_code == 429 and err(r)["code"] == "budget_exceeded"
    assert "x-tollgate-max-tokens-clamped" not in r.headers
    assert world.upstream.received == [] and world.live_holds() == []


def test_a_clamped_stream_sends_the_lowered_cap_and_says_so(client, world):
    body = {**CHAT, "max_completion_tokens": 300, "stream": True}
    input_tokens = tokens.estimate_input_tokens("chat", body, "gpt-4o-mini")
    world.prov.update_project(
        "demo", clamp_output=True, budget_nano=pricing.estimate_nano(RATES, input_tokens, 100)
    )
    r = post(client, world.keys["bob"], body)
    assert r.status_code == 200 and r.headers["x-tollgate-max-tokens-clamped"] == "100"
    assert b"[DONE]" in r.get_data()
    assert world.upstream.received[-1].json["max_completion_tokens"] == 100


def test_clamping_is_switched_on_per_project_through_the_admin_api(admin_client, world):
    r = admin_client.patch(
        "/admin/projects/demo", headers=admin_auth(), json={"clamp_output": True}
    )
    assert r.status_code == 200 and r.get_json()["clamp_output"] is True
    bad = admin_client.patch(
        "/admin/projects/demo", headers=admin_auth(), json={"clamp_output": "sometimes"}
    )
    assert bad.status_code == 400 and bad.get_json()["error"]["param"] == "clamp_output"


# --- soft budgets: alert and mark, never refuse --------------------------------------------


def test_a_soft_project_budget_lets_calls_through_and_marks_them(client, admin_client, world):
    r = admin_client.patch(
        "/admin/projects/demo",
        headers=admin_auth(),
        json={"budget_usd": "0.000001", "budget_soft": True},
    )
    assert r.status_code == 200 and r.get_json()["budget_soft"] is True
    answers = [post(client, world.keys["bob"], CHAT) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert all(a.headers["x-tollgate-soft-limit-exceeded"] == "project 'demo'" for a in answers)
    recs = world.usage()
    assert all(u["soft_limits_exceeded"] == ["project 'demo'"] for u in recs)
    month = datetime.now(UTC).strftime("%Y-%m")
    assert world.counter("p", "demo", month)["spent"] == sum(u["cost_nano"] for u in recs)
    # made hard again, it refuses at once
    admin_client.patch("/admin/projects/demo", headers=admin_auth(), json={"budget_soft": False})
    assert post(client, world.keys["bob"], CHAT).status_code == 429


def test_soft_member_and_model_budgets_mark_only_past_the_line(client, admin_client, world):
    r = admin_client.patch(
        "/admin/projects/demo/members/bob",
        headers=admin_auth(),
        json={"budget_usd": "0.00001", "budget_soft": True},
    )
    assert r.status_code == 200, r.get_data(True)
    r = admin_client.put(
        "/admin/projects/demo/limits/gpt-4o-mini",
        headers=admin_auth(),
        json={"budget_usd": "1", "budget_soft": True},
    )
    assert r.status_code == 200
    first = post(client, world.keys["bob"], CHAT)  # ~$0.000005: under both lines
    assert first.status_code == 200 and "x-tollgate-soft-limit-exceeded" not in first.headers
    marks = [
        post(client, world.keys["bob"], CHAT).headers.get("x-tollgate-soft-limit-exceeded")
        for _ in range(3)
    ]
    assert "member 'bob'" in marks  # crossed on the way, never refused
    assert all(m is None or m == "member 'bob'" for m in marks)
    assert len(world.usage()) == 4


# --- moderations: forwarded, booked at $0 --------------------------------------------


def test_moderations_are_forwarded_and_booked_at_zero_in_any_project(client, world):
    # the project allows only gpt-4o-mini and no moderation model has a price: the route
    # is free at OpenAI, so neither is needed
    r = post(
        client,
        world.keys["bob"],
        {"input": ["I will kill the process", "hello"]},
        path="/v1/moderations",
    )
    assert r.status_code == 200, r.get_data(True)
    answer = r.get_json()
    assert [x["flagged"] for x in answer["results"]] == [True, False]
    assert r.headers["x-tollgate-cost-usd"] == pricing.format_usd(0)
    sent = world.upstream.received[-1]
    assert sent.path == "/v1/moderations" and "model" not in sent.json
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_SECRET}"
    assert "safety_identifier" not in sent.json and "service_tier" not in sent.json
    [rec] = world.usage()
    assert (rec["route"], rec["model"], rec["status"], rec["cost_nano"]) == (
        "moderations",
        "omni-moderation-latest",
        "ok",
        0,
    )
    assert rec["estimated"] is False and rec["input_tokens"] > 0
    month = datetime.now(UTC).strftime("%Y-%m")
    assert world.counter("p", "demo", month)["spent"] == 0
    assert world.live_holds() == []


def test_moderations_take_only_moderation_models(client, world):
    # anything else here would be a way around the allowed list and the prices
    for model in ("gpt-4o-mini", "gpt-4o"):
        r = post(client, world.keys["bob"], {"model": model, "input": "hi"}, path="/v1/moderations")
        assert r.status_code == 400 and err(r)["param"] == "model"
        assert "not a moderation model" in err(r)["message"]
    r = post(
        client,
        world.keys["bob"],
        {"model": "text-moderation-stable", "input": []},
        path="/v1/moderations",
    )
    assert r.status_code == 400 and err(r)["param"] == "input"
    assert world.upstream.received == [] and world.usage() == []
    ok = post(
        client,
        world.keys["bob"],
        {"model": "text-moderation-stable", "input": "hi"},
        path="/v1/moderations",
    )
    assert ok.status_code == 200 and world.usage()[0]["model"] == "text-moderation-stable"


def test_moderations_need_a_valid_key(client, world):
    r = post(client, "tg_" + "0" * 40, {"input": "hi"}, path="/v1/moderations")
    assert r.status_code == 401 and world.upstream.received == []


def test_windows_are_set_through_the_admin_api_and_each_refuses(client, admin_client, world):
    r = admin_client.patch(
        "/admin/projects/demo",
        headers=admin_auth(),
        json={"windows": [{"period": "monthly", "budget_usd": "1"}]},
    )
    assert r.status_code == 400 and r.get_json()["error"]["param"] == "windows[0].period"
    r = admin_client.patch(
        "/admin/projects/demo/members/bob",
        headers=admin_auth(),
        json={"windows": [{"period": "daily", "budget_usd": "0.000001"}]},
    )
    assert r.status_code == 200, r.get_data(True)
    assert r.get_json()["windows"] == [
        {"period": "daily", "budget_nano": 1000, "budget_usd": "0.000001000"}
    ]
    r = post(client, world.keys["bob"], CHAT)
    assert r.status_code == 429
    assert "member 'bob' (daily) (daily budget, period " in err(r)["message"]
    assert post(client, world.keys["alice"], CHAT).status_code == 200  # bob's window only
    r = admin_client.patch(
        "/admin/projects/demo/members/bob", headers=admin_auth(), json={"windows": []}
    )
    assert r.status_code == 200 and post(client, world.keys["bob"], CHAT).status_code == 200


# --- upstream faults ---------------------------------------------------------------


def test_upstream_error_passes_through_and_books_nothing(client, world):
    world.upstream.push(Error(500))
    r = post(client, world.keys["bob"], CHAT)
    assert r.status_code == 500 and r.get_json()["error"]["type"] == "server_error"
    world.upstream.push(Error(429))
    assert post(client, world.keys["bob"], CHAT).status_code == 429
    recs = world.usage()
    assert sorted(r["http_status"] for r in recs) == [429, 500]
    assert {r["status"] for r in recs} == {"upstream_error"} and all(
        r["cost_nano"] == 0 for r in recs
    )


def test_upstream_401_is_502_upstream_auth_error(client, world):
    world.upstream.push(Error(401))
    r = post(client, world.keys["bob"], CHAT)
    assert r.status_code == 502
    e = err(r)
    assert (e["type"], e["code"]) == ("api_error", "upstream_auth_error")
    [rec] = world.usage()
    assert rec["status"] == "upstream_auth_error" and rec["cost_nano"] == 0


def test_slow_upstream_is_504_and_books_the_hold(client, world):
    import os

    os.environ["TOLLGATE_UPSTREAM_TIMEOUT_S"] = "0.5"
    world.upstream.push(Stall(2))
    r = post(client, world.keys["bob"], CHAT)
    assert r.status_code == 504 and err(r)["code"] == "upstream_timeout"
    [rec] = world.usage()
    assert rec["status"] == "upstream_timeout" and rec["estimated"] is True
    assert rec["cost_nano"] == rec["estimate_nano"] > 0


def test_unreachable_upstream_is_502(client, world):
    import os

    from tests.emulator import free_port

    os.environ["OPENAI_BASE_URL"] = f"http://127.0.0.1:{free_port()}/v1"
    r = post(client, world.keys["bob"], CHAT)
    assert r.status_code == 502 and err(r)["code"] == "upstream_unavailable"
    [rec] = world.usage()
    assert rec["status"] == "upstream_unavailable" and rec["cost_nano"] == 0


def test_invalid_json_from_upstream_is_502_and_booked_at_the_hold(client, world):
    world.upstream.push(InvalidJSON())
    r = post(client, world.keys["bob"], CHAT)
    assert r.status_code == 502 and err(r)["code"] == "upstream_bad_response"
    [rec] = world.usage()
    assert rec["status"] == "upstream_bad_response" and rec["cost_nano"] == rec["estimate_nano"]


# --- other routes and features -------------------------------------------------------


def test_embeddings_body_is_passed_through_byte_for_byte(client, world):
    raw = b'{"model": "text-embedding-3-small", "input": ["a", "b"], "encoding_format": "base64"}'
    r = post(client, world.keys["bob"], raw, path="/v1/embeddings")
    assert r.status_code == 200 and len(r.get_json()["data"]) == 2
    assert world.upstream.received[-1].body == raw
    [rec] = world.usage()
    assert rec["route"] == "embeddings" and rec["output_tokens"] == 0 and rec["cost_nano"] > 0


def test_previous_response_id_adds_the_recorded_tokens_to_the_estimate(client, world):
    first = post(
        client, world.keys["bob"], {"model": "gpt-4o-mini", "input": "hello"}, path="/v1/responses"
    )
    assert first.status_code == 200
    rid = first.get_json()["id"]
    body = {"model": "gpt-4o-mini", "input": "and again", "previous_response_id": rid}
    second = post(client, world.keys["bob"], body, path="/v1/responses")
    assert second.status_code == 200
    recs = {r["call_id"]: r for r in world.usage()}
    a, b = recs[first.headers["x-tollgate-call-id"]], recs[second.headers["x-tollgate-call-id"]]
    assert a["response_id"] == rid
    alone = tokens.estimate_input_tokens(
        "responses", {"model": "gpt-4o-mini", "input": "and again"}, "gpt-4o-mini"
    )
    prev = a["input_tokens"] + a["output_tokens"]
    assert prev > 0
    assert b["estimate_nano"] == pricing.estimate_nano(RATES, alone + prev, 256)


def test_last_used_is_recorded_at_most_once_a_minute(client, world):
    from functions.core import auth

    ref = world.db.collection("keys").document(auth.key_hash(world.keys["bob"]))
    assert ref.get().get("last_used_at") is None
    assert post(client, world.keys["bob"], CHAT).status_code == 200
    first = ref.get().get("last_used_at")
    assert first is not None
    assert post(client, world.keys["bob"], CHAT).status_code == 200
    assert ref.get().get("last_used_at") == first  # within the minute: no extra write


# --- issue 14: every way to make upstream bill more than the hold ------------------------

_ROUTE_OF = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/responses": "responses",
    "/v1/embeddings": "embeddings",
}


def _exact_prompts(world):
    """Upstream reports the prompt tokens Tollgate estimates, so cost <= hold is exact."""
    world.upstream.prompt_tokens = lambda path, body: tokens.estimate_input_tokens(
        _ROUTE_OF[path], body, body["model"]
    )


def test_audit5_completions_list_prompt_cannot_overshoot_the_budget(client, world):
    # the audit's call: $0.0005 budget, 150 prompts of max_tokens 7 (4.8x the budget)
    world.prov.add_price("gpt-3.5-turbo-instruct", make_price("1.50", None, "2.00"))
    world.prov.update_project(
        "demo", budget_nano=500_000, allowed_models=["gpt-4o-mini", "gpt-3.5-turbo-instruct"]
    )
    world.upstream.bill_cap = True
    _exact_prompts(world)
    body = {"model": "gpt-3.5-turbo-instruct", "max_tokens": 7, "prompt": ["x"] * 150}
    r = post(client, world.keys["bob"], body, path="/v1/completions")
    assert r.status_code == 429 and err(r)["code"] == "budget_exceeded"
    assert world.upstream.received == [] and world.usage() == []

    # with room for it, the hold covers every prompt's output and the bill stays inside it
    world.prov.update_project("demo", budget_nano=10**8)
    for prompt, n in ((["x"] * 150, 1), ([[1, 2, 3], [4, 5]], 2), ([7, 8, 9], 3)):
        r = post(
            client, world.keys["bob"], {**body, "prompt": prompt, "n": n}, path="/v1/completions"
        )
        assert r.status_code == 200
    recs = sorted(world.usage(), key=lambda rec: rec["ts"])
    assert [rec["output_tokens"] for rec in recs] == [7 * 150, 7 * 2 * 2, 7 * 3]
    for rec in recs:
        assert 0 < rec["cost_nano"] <= rec["estimate_nano"], rec
    month = datetime.now(UTC).strftime("%Y-%m")
    assert world.counter("p", "demo", month)["spent"] == sum(rec["cost_nano"] for rec in recs)


def test_audit6_previous_response_id_this_project_did_not_create_is_refused(client, world):
    world.prov.create_project("other", external_key="main", allowed_models=["gpt-4o-mini"])
    world.prov.create_user("carol", "Carol", "carol@example.com")
    carol = world.members.add_member("other", "carol")
    theirs = post(
        client, carol, {"model": "gpt-4o-mini", "input": "a long secret chat"}, path="/v1/responses"
    )
    assert theirs.status_code == 200
    forwarded = len(world.upstream.received)
    for rid in (theirs.get_json()["id"], "resp_never_seen_by_tollgate"):
        r = post(
            client,
            world.keys["bob"],
            {"model": "gpt-4o-mini", "input": "go on", "previous_response_id": rid},
            path="/v1/responses",
        )
        assert r.status_code == 400
        e = err(r)
        assert (e["type"], e["code"], e["param"]) == (
            "invalid_request_error",
            "invalid_request",
            "previous_response_id",
        )
        assert "this project" in e["message"]
    assert len(world.upstream.received) == forwarded  # neither was forwarded
    assert {rec["project"] for rec in world.usage()} == {"other"}


@pytest.mark.parametrize(
    "body, param",
    [
        ({"conversation": "conv_123"}, "conversation"),
        ({"prompt": {"id": "pmpt_123", "version": "2"}}, "prompt"),
        ({"input": [{"type": "item_reference", "id": "msg_123"}]}, "input[0]"),
        (
            {
                "input": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "input_text", "text": "Summarise"},
                            {"type": "input_file", "file_url": "https://example.com/big.pdf"},
                        ],
                    }
                ]
            },
            "input[0].content[1]",
        ),
        (
            {
                "input": [
                    {"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}
                ]
            },
            "input[0].content[0]",
        ),
    ],
)
def test_audit6_content_stored_elsewhere_is_refused_on_responses(client, world, body, param):
    r = post(
        client,
        world.keys["bob"],
        {"model": "gpt-4o-mini", "input": "hi", **body},
        path="/v1/responses",
    )
    assert r.status_code == 400
    e = err(r)
    assert (e["code"], e["param"]) == ("unsupported_parameter", param)
    assert world.upstream.received == [] and world.usage() == []


def test_audit6_chat_file_by_id_is_refused(client, world):
    part = {"type": "file", "file": {"file_id": "file-abc"}}
    r = post(
        client,
        world.keys["bob"],
        {
            **CHAT,
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "read this"}, part]}
            ],
        },
    )
    assert r.status_code == 400
    assert (err(r)["code"], err(r)["param"]) == ("unsupported_parameter", "messages[0].content[1]")
    assert world.upstream.received == []


def test_audit7_a_tool_type_not_on_the_allow_list_is_refused(client, world):
    body = {
        "model": "gpt-4o-mini",
        "input": "news?",
        "tools": [
            {"type": "function", "name": "f", "parameters": {"type": "object"}},
            {"type": "web_search_2025_08_26"},
        ],
    }
    r = post(client, world.keys["bob"], body, path="/v1/responses")
    assert r.status_code == 400
    assert (err(r)["code"], err(r)["param"]) == ("unsupported_parameter", "tools[1]")
    assert world.upstream.received == []
    # a project that prices the tool may use it
    world.prov.update_project("demo", priced_tools=["web_search_2025_08_26"])
    r = post(client, world.keys["alice"], body, path="/v1/responses")
    assert r.status_code == 200 and len(world.upstream.received) == 1


def test_audit8_duplicate_keys_are_refused_not_forwarded(client, world):
    world.prov.update_project("demo", allowed_models=["*"])
    world.prov.add_price("gpt-4o", make_price("2.50", "1.25", "10.00"))
    for raw in (
        b'{"model": "gpt-4o", "model": "gpt-4o-mini", "messages": '
        b'[{"role": "user", "content": "hi"}]}',
        b'{"model": "gpt-4o-mini", "max_tokens": 5, "messages": '
        b'[{"role": "user", "content": "hi", "content": "bye"}], "max_tokens": 9}',
        b'{"model": "gpt-4o-mini", "temperature": NaN, "messages": '
        b'[{"role": "user", "content": "hi"}]}',
    ):
        r = post(client, world.keys["bob"], raw)
        assert r.status_code == 400
        assert err(r)["code"] == "invalid_request"
    assert (
        '"model"'
        in err(
            post(
                client,
                world.keys["bob"],
                (b'{"model": "gpt-4o", "model": "gpt-4o-mini", "messages": []}'),
            )
        )["message"]
    )
    assert world.upstream.received == [] and world.usage() == []


def _priority_priced(world):
    """gpt-4o-mini with a priority tier at twice the default rates."""
    rates = make_price("0.30", "0.15", "1.20").tiers["default"]
    world.prov.add_price(
        "gpt-4o-mini", make_price(*MINI, since=datetime(2021, 1, 1, tzinfo=UTC), priority=rates)
    )
    return rates


def test_audit9_no_tier_is_asked_as_default_so_a_priority_project_cannot_overshoot(client, world):
    priority = _priority_priced(world)
    world.upstream.project_tier = "priority"  # the OpenAI project's default tier
    world.upstream.bill_cap = True
    _exact_prompts(world)
    for path, body in (
        ("/v1/chat/completions", CHAT),
        ("/v1/responses", {"model": "gpt-4o-mini", "input": "Say hi"}),
    ):
        assert post(client, world.keys["bob"], body, path=path).status_code == 200
    for rec in world.usage():
        assert 0 < rec["cost_nano"] <= rec["estimate_nano"], rec
        assert rec["service_tier"] == "default"
    assert [r.json.get("service_tier") for r in world.upstream.received] == ["default"] * 2

    # "auto" may be served at priority: it is held at priority and billed within the hold
    r = post(client, world.keys["bob"], {**CHAT, "service_tier": "auto"})
    assert r.status_code == 200
    assert world.upstream.received[-1].json["service_tier"] == "auto"
    [rec] = [x for x in world.usage() if x["call_id"] == r.headers["x-tollgate-call-id"]]
    prompt = tokens.estimate_input_tokens("chat", CHAT, "gpt-4o-mini")
    assert rec["estimate_nano"] == pricing.estimate_nano(priority, prompt, 256)
    assert rec["service_tier"] == "priority" and rec["cost_nano"] == rec["estimate_nano"]


def test_audit9_auto_without_a_priority_price_is_asked_as_default(client, world):
    world.upstream.project_tier = "priority"
    r = post(client, world.keys["bob"], {**CHAT, "service_tier": "auto"})
    assert r.status_code == 200
    assert world.upstream.received[-1].json["service_tier"] == "default"
    [rec] = world.usage()
    assert rec["service_tier"] == "default" and rec["cost_nano"] <= rec["estimate_nano"]


# --- one round trip before upstream: the hold is placed while the configuration is read


@pytest.fixture
def timeline(monkeypatch):
    """(what, start, end) of every configuration read and hold of the test."""
    import threading
    import time as _time

    from functions.store.client import Store
    from functions.store.ledger import Ledger

    events: list[tuple[str, float, float]] = []
    lock = threading.Lock()

    def timed(name, real):
        def run(*a, **kw):
            t0 = _time.monotonic()
            try:
                return real(*a, **kw)
            finally:
                with lock:
                    events.append((name, t0, _time.monotonic()))

        return run

    monkeypatch.setattr(Store, "load_call_context", timed("read", Store.load_call_context))
    monkeypatch.setattr(Ledger, "reserve", timed("hold", Ledger.reserve))
    return events


def test_a_known_key_reads_and_holds_at_the_same_time(client, world, timeline):
    for _ in range(3):
        assert post(client, world.keys["bob"], CHAT).status_code == 200
    reads = [e for e in timeline if e[0] == "read"]
    holds = [e for e in timeline if e[0] == "hold"]
    assert len(reads) == len(holds) == 3
    # the first call of the key: read, then hold; later ones overlap the two
    assert holds[0][1] >= reads[0][2]
    for (_, r0, r1), (_, h0, h1) in zip(reads[1:], holds[1:], strict=True):
        assert h0 < r1 and r0 < h1, "the hold waited for the read"
    assert world.live_holds() == [] and len(world.usage()) == 3


@pytest.mark.parametrize("before", [1, 6], ids=["guessed hold", "escrow grant out"])
def test_a_revoked_key_is_refused_on_the_next_call_and_nothing_is_booked(client, world, before):
    """After one call the next one's hold is guessed while the key is read; after six,
    calls draw from an escrow grant. Either way a revoked key stops the very next call,
    its hold is taken back and the spend pages stay exact."""
    bob = world.keys["bob"]
    for _ in range(before):
        assert post(client, bob, CHAT).status_code == 200
    grants = [g.get("state") for g in world.db.collection("grants").stream()]
    assert grants == (["open"] if before > 1 else [])
    world.members.revoke_by_key(bob)
    r = post(client, bob, CHAT)
    assert r.status_code == 401 and err(r)["code"] == "invalid_api_key"
    assert len(world.upstream.received) == before and len(world.usage()) == before
    month = datetime.now(UTC).strftime("%Y-%m")
    c = world.counter("p", "demo", month)
    assert c["spent"] == sum(u["cost_nano"] for u in world.usage())
    assert (c["held"], c["inflight"]) == (0, 0)


def test_a_lowered_budget_is_seen_by_the_next_call_despite_the_guess(client, world):
    bob = world.keys["bob"]
    assert post(client, bob, CHAT).status_code == 200
    world.prov.update_project("demo", budget_nano=1)
    r = post(client, bob, CHAT)
    assert r.status_code == 429 and err(r)["code"] == "budget_exceeded"
    assert len(world.upstream.received) == 1 and world.live_holds() == []
