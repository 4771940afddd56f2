"""Hardening, part 2: upstream faults and client disconnects (SPEC §2, §6; issue 10).

Every fault, streamed or not, must leave exactly one usage record with the right status
and cost, no live hold, nothing held or in flight, and counters equal to the records.
tests/test_proxy.py and tests/test_streaming.py already prove the non-streamed basics;
this file adds the streamed variants, upstream 403, an unreadable organisation key, a
stream that stalls mid-way, Responses streams, and disconnects of reasoning models.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import requests

from functions.core import pricing, sse, tokens
from tests.conftest import UPSTREAM_SECRET, bearer, make_price, wait_for_usage
from tests.emulator import free_port
from tests.fake_upstream import Error, InvalidJSON, Stall, Stream

MESSAGES = [{"role": "user", "content": "Tell me a story"}]
CHAT = {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 300}
RESPONSES = {"model": "gpt-4o-mini", "input": "Tell me a story", "max_output_tokens": 300}
RATES = make_price("0.15", "0.075", "0.60").tiers["default"]
# what upstream says when it refuses the organisation's key: it names the key
ECHO = {
    "error": {
        "message": f"Incorrect API key provided: {UPSTREAM_SECRET}.",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }
}


def balanced(world: Any) -> list[dict[str, Any]]:
    """No live hold; nothing held or in flight; each counter's spend = its records'."""
    assert world.live_holds() == []
    recs = world.usage()
    for cid, c in world.counters().items():
        assert (c.get("held", 0), c.get("inflight", 0)) == (0, 0), (cid, c)
        mine = [
            r
            for r in recs
            if r["period"] == c["period"]
            and r["project"] == c["project"]
            and (c.get("user") is None or r["user"] == c["user"])
        ]
        assert c.get("spent", 0) == sum(r["cost_nano"] for r in mine), (cid, c)
    return recs


def events(data: bytes) -> list[sse.Event]:
    return [sse.parse(raw) for raw in sse.EventBuffer().feed(data)]


def error_of(body: bytes) -> dict[str, Any]:
    doc = json.loads(body)
    assert set(doc) == {"error"}
    assert set(doc["error"]) == {"message", "type", "param", "code"}
    return dict(doc["error"])


# --- the fault matrix: each fault, streamed and not ------------------------------------


def _refused(world: Any, mp: pytest.MonkeyPatch) -> None:
    mp.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{free_port()}/v1")


def _stall(world: Any, mp: pytest.MonkeyPatch) -> None:
    mp.setenv("TOLLGATE_UPSTREAM_TIMEOUT_S", "0.5")
    world.upstream.push(Stall(2))


def _no_secret(world: Any, mp: pytest.MonkeyPatch) -> None:
    world.secrets_file.write_text("{}")  # the organisation's key is gone from the store


FAULTS: dict[str, tuple[Any, int, str | None, str, str]] = {
    # name: (set-up, client status, Tollgate's error code or None if passed through,
    #        record status, cost booked: "zero" | "hold")
    "connection refused": (_refused, 502, "upstream_unavailable", "upstream_unavailable", "zero"),
    "500": (lambda w, mp: w.upstream.push(Error(500)), 500, None, "upstream_error", "zero"),
    "429": (
        lambda w, mp: w.upstream.push(Error(429, headers={"retry-after": "7"})),
        429,
        None,
        "upstream_error",
        "zero",
    ),
    "401": (
        lambda w, mp: w.upstream.push(Error(401, body=ECHO)),
        502,
        "upstream_auth_error",
        "upstream_auth_error",
        "zero",
    ),
    "403": (
        lambda w, mp: w.upstream.push(Error(403, body=ECHO)),
        502,
        "upstream_auth_error",
        "upstream_auth_error",
        "zero",
    ),
    "slow first byte": (_stall, 504, "upstream_timeout", "upstream_timeout", "hold"),
    "org key unreadable": (_no_secret, 502, "upstream_auth_error", "upstream_auth_error", "zero"),
    "invalid JSON": (
        lambda w, mp: w.upstream.push(InvalidJSON()),
        502,
        "upstream_bad_response",
        "upstream_bad_response",
        "hold",
    ),
}


# a streamed request answered with an invalid body has a test of its own (below)
CASES = [(f, s) for f in FAULTS for s in (False, True) if not (f == "invalid JSON" and s)]


@pytest.mark.parametrize(
    ("fault", "stream"), CASES, ids=[f"{f}-{'stream' if s else 'plain'}" for f, s in CASES]
)
def test_upstream_fault_is_answered_booked_and_released(
    client: Any, world: Any, monkeypatch: pytest.MonkeyPatch, fault: str, stream: bool
) -> None:
    setup, status, code, rec_status, cost = FAULTS[fault]
    setup(world, monkeypatch)
    r = client.post(
        "/v1/chat/completions", json={**CHAT, "stream": stream}, headers=bearer(world.keys["bob"])
    )
    body = r.get_data()
    assert r.status_code == status, body[:300]
    assert UPSTREAM_SECRET not in body.decode("utf-8", "replace")
    e = error_of(body)
    if code is None:  # upstream's own error, passed through with its status and body
        assert e["code"] and e["type"] != "api_error" or status == 500
    else:
        assert (e["type"], e["code"]) == ("api_error", code)
        assert "Traceback" not in e["message"]
    if fault == "429":
        assert r.headers["retry-after"] == "7"
    [rec] = balanced(world)
    assert (rec["status"], rec["http_status"], rec["streamed"]) == (rec_status, status, stream)
    # audit 19: every answer of a call that got a hold names its record, errors included
    assert r.headers["x-tollgate-call-id"] == rec["call_id"]
    if cost == "zero":
        assert rec["cost_nano"] == 0 and rec["estimated"] is False
    else:  # upstream may have billed it: the hold is booked, marked estimated
        assert rec["cost_nano"] == rec["estimate_nano"] > 0 and rec["estimated"] is True
    if fault == "org key unreadable":
        assert world.upstream.received == []  # nothing was sent without the key


def test_a_streamed_request_answered_with_broken_json_is_ended_and_billed(client, world):
    world.upstream.push(InvalidJSON())  # 200, but "{not json" instead of an event stream
    r = client.post(
        "/v1/chat/completions", json={**CHAT, "stream": True}, headers=bearer(world.keys["bob"])
    )
    evs = events(r.get_data())
    assert evs[-1].json()["error"]["code"] == "upstream_stream_error"
    [rec] = balanced(world)
    assert rec["status"] == "upstream_cut" and rec["estimated"] is True
    assert 0 < rec["cost_nano"] <= rec["estimate_nano"]


def test_the_final_error_event_stays_an_event_after_a_partial_upstream_line(client, world):
    world.upstream.push(InvalidJSON())
    r = client.post(
        "/v1/chat/completions", json={**CHAT, "stream": True}, headers=bearer(world.keys["bob"])
    )
    evs = events(r.get_data())
    assert evs[-1].event == "error"


# --- streams that break after their first byte -----------------------------------------


def test_a_stream_that_stalls_midway_is_ended_billed_and_upstream_closed(
    client, world, monkeypatch
):
    monkeypatch.setenv("TOLLGATE_UPSTREAM_TIMEOUT_S", "0.5")
    world.upstream.push(Stream(chunk_delay_s=1.5, chunks=4))
    r = client.post(
        "/v1/chat/completions", json={**CHAT, "stream": True}, headers=bearer(world.keys["bob"])
    )
    assert r.status_code == 200
    evs = events(r.get_data())
    assert evs[-1].event == "error"
    assert evs[-1].json()["error"]["code"] == "upstream_stream_error"
    [rec] = balanced(world)
    assert rec["status"] == "upstream_cut" and rec["estimated"] is True
    prompt = tokens.estimate_input_tokens("chat", CHAT, "gpt-4o-mini")
    seen = "".join(
        (e.json()["choices"][0]["delta"].get("content") or "")
        for e in evs[:-1]
        if e.json() and e.json().get("choices")
    )
    assert rec["cost_nano"] == pricing.cost_nano(
        RATES,
        pricing.Usage(
            input_tokens=prompt, output_tokens=tokens.count_output_tokens(seen, "gpt-4o-mini")
        ),
    )
    deadline = time.monotonic() + 5
    while not world.upstream.received[-1].client_closed and time.monotonic() < deadline:
        time.sleep(0.05)
    assert world.upstream.received[-1].client_closed  # upstream stopped generating for us


@pytest.mark.parametrize(
    "spec, status",
    [(Stream(cut_after=7, chunks=10), "upstream_cut"), (Stream(no_usage=True, chunks=5), "ok")],
    ids=["cut", "no-usage"],
)
def test_a_responses_stream_without_its_usage_is_billed_from_the_text_seen(
    client, world, spec, status
):
    world.upstream.push(spec)
    r = client.post(
        "/v1/responses", json={**RESPONSES, "stream": True}, headers=bearer(world.keys["bob"])
    )
    evs = events(r.get_data())
    text = "".join(
        e.json().get("delta", "") for e in evs if e.event == "response.output_text.delta"
    )
    [rec] = balanced(world)
    assert rec["status"] == status and rec["estimated"] is True and rec["route"] == "responses"
    prompt = tokens.estimate_input_tokens("responses", RESPONSES, "gpt-4o-mini")
    assert rec["output_tokens"] == tokens.count_output_tokens(text, "gpt-4o-mini") > 0
    assert (
        rec["cost_nano"]
        == pricing.cost_nano(
            RATES, pricing.Usage(input_tokens=prompt, output_tokens=rec["output_tokens"])
        )
        < rec["estimate_nano"]
    )
    if status == "upstream_cut":
        assert evs[-1].event == "error"


# --- the client goes away mid-stream --------------------------------------------------------


@pytest.mark.parametrize(
    "model, path",
    [
        ("o4-mini", "/v1/chat/completions"),
        ("o4-mini", "/v1/responses"),
        ("gpt-4o-mini", "/v1/responses"),
        ("gpt-4o-mini", "/v1/completions"),
    ],
)
def test_a_client_that_leaves_midstream_closes_upstream_and_is_booked(
    proxy_url, world, model, path
):
    world.prov.add_price("o4-mini", make_price("1.10", "0.275", "4.40"))
    world.prov.update_project("demo", allowed_models=["gpt-4o-mini", "o4-mini"])
    body: dict[str, Any] = {"model": model, "stream": True}
    if path.endswith("responses"):
        body |= {"input": "Tell me a story", "max_output_tokens": 500}
    elif path.endswith("chat/completions"):
        body |= {"messages": MESSAGES, "max_completion_tokens": 500}
    else:
        body |= {"prompt": "Once upon a time", "max_tokens": 500}
    world.upstream.push(Stream(chunk_delay_s=0.1, chunks=40))
    r = requests.post(
        proxy_url + path,
        json=body,
        stream=True,
        timeout=30,
        headers={"Authorization": f"Bearer {world.keys['bob']}"},
    )
    assert r.status_code == 200
    chunks = r.iter_content(chunk_size=None)
    seen = next(chunks) + next(chunks)
    assert seen.startswith((b"data: ", b"event: "))
    r.close()  # the client goes away
    [rec] = wait_for_usage(world)
    assert rec["status"] == "client_closed" and rec["estimated"] is True
    if tokens.hides_reasoning(model):
        # hidden reasoning tokens cannot be counted from the text: the hold is booked
        assert rec["cost_nano"] == rec["estimate_nano"] > 0
    else:
        assert 0 < rec["cost_nano"] < rec["estimate_nano"]
    deadline = time.monotonic() + 5
    while not world.upstream.received[-1].client_closed and time.monotonic() < deadline:
        time.sleep(0.05)
    assert world.upstream.received[-1].client_closed  # closed at its next chunk
    assert len(world.upstream.received) == 1
    balanced(world)
