"""Streams through the proxy over real HTTP: passthrough, exact billing from the usage
chunk or terminal event, and booking however a stream ends."""

from __future__ import annotations

import json
import os
import time

import openai as openai_sdk
import pytest
import requests

from functions.core import pricing, sse, tokens
from tests.conftest import MINI, make_price, wait_for_usage
from tests.fake_upstream import Error, Stream

RATES = make_price(*MINI).tiers["default"]
MESSAGES = [{"role": "user", "content": "Tell me a story"}]


@pytest.fixture
def sdk(proxy_url, world):
    return openai_sdk.OpenAI(base_url=proxy_url + "/v1", api_key=world.keys["bob"], max_retries=0)


def raw_stream(proxy_url, key, body, path="/v1/chat/completions"):
    return requests.post(
        proxy_url + path,
        json=body,
        stream=True,
        timeout=30,
        headers={"Authorization": f"Bearer {key}"},
    )


def events_of(resp) -> list[sse.Event]:
    buf = sse.EventBuffer()
    out = []
    for chunk in resp.iter_content(chunk_size=None):
        out += [sse.parse(raw) for raw in buf.feed(chunk)]
    return out


def test_chat_stream_with_usage_is_billed_exactly(sdk, world):
    chunks = list(
        sdk.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    usage = chunks[-1].usage
    assert usage is not None and chunks[-1].choices == []
    [rec] = wait_for_usage(world)
    assert rec["status"] == "ok" and rec["streamed"] is True and rec["estimated"] is False
    assert (rec["input_tokens"], rec["output_tokens"]) == (
        usage.prompt_tokens,
        usage.completion_tokens,
    )
    assert rec["cost_nano"] == pricing.cost_nano(RATES, pricing.usage_from_chat(usage.model_dump()))


def test_usage_chunk_is_hidden_from_a_client_that_did_not_ask(proxy_url, world):
    r = raw_stream(
        proxy_url, world.keys["bob"], {"model": "gpt-4o-mini", "stream": True, "messages": MESSAGES}
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["x-tollgate-call-id"].startswith("call_")
    events = events_of(r)
    assert events[-1].data == "[DONE]"
    for ev in events[:-1]:
        obj = ev.json()
        assert obj["choices"] != [] and obj.get("usage") is None
    sent = world.upstream.received[-1]
    assert sent.json["stream_options"] == {"include_usage": True}  # asked upstream anyway
    assert "gzip" not in sent.headers.get("accept-encoding", "")  # events pass as they come
    [rec] = wait_for_usage(world)
    assert rec["estimated"] is False and rec["output_tokens"] > 0  # billed from that chunk


def test_completions_stream(sdk, world):
    text = "".join(
        c.choices[0].text
        for c in sdk.completions.create(
            model="gpt-4o-mini", prompt="Once", max_tokens=20, stream=True
        )
        if c.choices
    )
    assert text
    [rec] = wait_for_usage(world)
    assert rec["route"] == "completions" and rec["estimated"] is False
    assert rec["cost_nano"] == pricing.cost_nano(
        RATES, pricing.Usage(input_tokens=rec["input_tokens"], output_tokens=rec["output_tokens"])
    )


def test_responses_stream_is_billed_from_response_completed(sdk, world):
    world.upstream.cached_tokens = 2
    events = list(
        sdk.responses.create(
            model="gpt-4o-mini", stream=True, input="hello there, how are you doing today?"
        )
    )
    done = events[-1]
    assert done.type == "response.completed"
    [rec] = wait_for_usage(world)
    assert rec["response_id"] == done.response.id and rec["cached_tokens"] == 2
    assert rec["output_tokens"] == done.response.usage.output_tokens
    assert rec["estimated"] is False


def test_chunks_arrive_spaced_as_upstream_sent_them(proxy_url, world):
    world.upstream.push(Stream(chunk_delay_s=0.2, chunks=4))
    r = raw_stream(
        proxy_url, world.keys["bob"], {"model": "gpt-4o-mini", "stream": True, "messages": MESSAGES}
    )
    arrivals = []
    buf = sse.EventBuffer()
    for chunk in r.iter_content(chunk_size=None):
        for _ in buf.feed(chunk):
            arrivals.append(time.monotonic())
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    assert len(gaps) >= 5
    assert sum(g >= 0.15 for g in gaps) >= 4, gaps  # spaced, not one burst at the end
    wait_for_usage(world)


def test_a_client_that_leaves_after_one_chunk_is_booked_estimated(proxy_url, world):
    world.upstream.push(Stream(chunk_delay_s=0.1, chunks=30))
    r = raw_stream(
        proxy_url,
        world.keys["bob"],
        {"model": "gpt-4o-mini", "stream": True, "messages": MESSAGES, "max_tokens": 500},
    )
    first = next(r.iter_content(chunk_size=None))
    assert first.startswith(b"data: ")
    r.close()
    [rec] = wait_for_usage(world)
    assert rec["status"] == "client_closed" and rec["estimated"] is True
    assert 0 < rec["cost_nano"] < rec["estimate_nano"]
    deadline = time.monotonic() + 5
    while not world.upstream.received[-1].client_closed and time.monotonic() < deadline:
        time.sleep(0.05)
    assert world.upstream.received[-1].client_closed  # upstream was closed too
    assert world.live_holds() == []


def test_a_cut_upstream_stream_ends_with_an_error_event_and_is_booked(sdk, proxy_url, world):
    world.upstream.push(Stream(cut_after=3, chunks=10))
    events = events_of(
        raw_stream(
            proxy_url,
            world.keys["bob"],
            {"model": "gpt-4o-mini", "stream": True, "messages": MESSAGES},
        )
    )
    assert events[-1].event == "error"
    assert events[-1].json()["error"]["code"] == "upstream_stream_error"
    [rec] = wait_for_usage(world)
    assert rec["status"] == "upstream_cut" and rec["estimated"] is True
    seen = "".join(
        e.json()["choices"][0]["delta"].get("content") or ""
        for e in events[:-1]
        if e.json() and e.json().get("choices")
    )
    prompt = tokens.estimate_input_tokens("chat", {"messages": MESSAGES}, "gpt-4o-mini")
    assert rec["cost_nano"] == pricing.cost_nano(
        RATES,
        pricing.Usage(
            input_tokens=prompt, output_tokens=tokens.count_output_tokens(seen, "gpt-4o-mini")
        ),
    )

    world.upstream.push(Stream(cut_after=3, chunks=10))
    with pytest.raises(openai_sdk.APIError):  # the SDK raises instead of ending silently
        list(sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    wait_for_usage(world, 2)


def test_a_stream_without_usage_is_booked_from_the_text_seen(sdk, world):
    world.upstream.push(Stream(no_usage=True, chunks=5))
    text = "".join(
        c.choices[0].delta.content or ""
        for c in sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
        if c.choices
    )
    [rec] = wait_for_usage(world)
    assert rec["status"] == "ok" and rec["estimated"] is True
    assert rec["output_tokens"] == tokens.count_output_tokens(text, "gpt-4o-mini")


def test_reasoning_models_cut_mid_stream_are_booked_at_the_hold(proxy_url, world):
    world.prov.add_price("o4-mini", make_price("1.10", "0.275", "4.40"))
    world.prov.update_project("demo", allowed_models=["gpt-4o-mini", "o4-mini"])
    world.upstream.push(Stream(cut_after=2, chunks=10))
    events_of(
        raw_stream(
            proxy_url, world.keys["bob"], {"model": "o4-mini", "stream": True, "messages": MESSAGES}
        )
    )
    [rec] = wait_for_usage(world)
    assert rec["estimated"] is True and rec["cost_nano"] == rec["estimate_nano"]


def test_near_the_streamed_size_cap_the_stream_is_ended_and_billed(proxy_url, world):
    os.environ["TOLLGATE_STREAM_CAP_BYTES"] = "1500"
    world.upstream.push(Stream(chunks=60))
    events = events_of(
        raw_stream(
            proxy_url,
            world.keys["bob"],
            {"model": "gpt-4o-mini", "stream": True, "messages": MESSAGES},
        )
    )
    assert events[-1].json()["error"]["code"] == "stream_too_large"
    [rec] = wait_for_usage(world)
    assert rec["status"] == "stream_too_large" and rec["estimated"] is True
    assert world.live_holds() == []


def test_an_upstream_error_before_the_stream_is_passed_through(proxy_url, world):
    world.upstream.push(Error(429))
    r = raw_stream(
        proxy_url, world.keys["bob"], {"model": "gpt-4o-mini", "stream": True, "messages": MESSAGES}
    )
    assert r.status_code == 429 and json.loads(r.content)["error"]["code"]
    [rec] = wait_for_usage(world)
    assert rec["status"] == "upstream_error" and rec["cost_nano"] == 0


def test_audit13_a_stream_is_sent_with_one_charset(proxy_url, world):
    r = raw_stream(
        proxy_url, world.keys["bob"], {"model": "gpt-4o-mini", "stream": True, "messages": MESSAGES}
    )
    events_of(r)
    # upstream sends "text/event-stream; charset=utf-8"; it is passed on as it is
    assert r.headers["Content-Type"] == "text/event-stream; charset=utf-8"
