"""functions/proxy/upstream.py: which headers go to OpenAI and which come back, and the HTTP
client against the loopback fake upstream: answers and upstream errors are returned,
network failures become Tollgate errors, streams are read as they arrive."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest

from functions.core import sse
from functions.core.errors import UpstreamTimeout, UpstreamUnavailable
from functions.proxy.upstream import (
    StreamBroken,
    Upstream,
    UpstreamResponse,
    forward_headers,
    response_headers,
)
from tests.conftest import UPSTREAM_SECRET
from tests.fake_upstream import Error, InvalidJSON, Stall, Stream

CLIENT_KEY = "tg_" + "K3y" * 13 + "z"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


# --------------------------------------------------------------------------- forward_headers

CLIENT_HEADERS = {
    "Authorization": f"Bearer {CLIENT_KEY}",
    "Cookie": f"session={CLIENT_KEY}",
    "OpenAI-Organization": "org-client",
    "OpenAI-Project": "proj_client",
    "Connection": "keep-alive, x-secret",
    "Keep-Alive": "timeout=5",
    "TE": "trailers",
    "Upgrade": "h2c",
    "Transfer-Encoding": "chunked",
    "Proxy-Authorization": f"Basic {CLIENT_KEY}",
    "Host": "tollgate.example.com",
    "Content-Length": "123",
    "Content-Type": "text/plain",
    "X-Forwarded-For": "10.0.0.1",
    "Api-Key": CLIENT_KEY,
    "X-Api-Key": CLIENT_KEY,
    "Accept": "text/event-stream",
    "Idempotency-Key": "idem-1",
    "OpenAI-Beta": "assistants=v2",
    "User-Agent": "OpenAI/Python 1.99.0",
    "X-Stainless-Lang": "python",
    "x-stainless-retry-count": "0",
}


def test_the_clients_key_is_replaced_by_the_organisations_secret():
    out = forward_headers(CLIENT_HEADERS, UPSTREAM_SECRET)
    assert out["authorization"] == f"Bearer {UPSTREAM_SECRET}"
    assert not any(CLIENT_KEY in v or CLIENT_KEY[3:20] in v for v in out.values())
    assert not any(CLIENT_KEY in k for k in out)


def test_only_the_sdk_headers_worth_passing_on_are_forwarded():
    out = forward_headers(CLIENT_HEADERS, UPSTREAM_SECRET)
    assert out == {
        "authorization": f"Bearer {UPSTREAM_SECRET}",
        "content-type": "application/json",  # the body is always JSON, whatever was sent
        "accept": "text/event-stream",
        "idempotency-key": "idem-1",
        "openai-beta": "assistants=v2",
        "user-agent": "OpenAI/Python 1.99.0",
        "x-stainless-lang": "python",
        "x-stainless-retry-count": "0",
    }


@pytest.mark.parametrize("name", ["authorization", "AUTHORIZATION", "Authorization"])
def test_a_client_authorization_in_any_case_never_overrides_the_secret(name):
    out = forward_headers({name: f"Bearer {CLIENT_KEY}"}, "sk-org")
    assert out == {"authorization": "Bearer sk-org", "content-type": "application/json"}


def test_forwarded_names_are_lower_case_whatever_the_client_sent():
    out = forward_headers({"IDEMPOTENCY-KEY": "k", "X-STAINLESS-OS": "Linux"}, "s")
    assert out["idempotency-key"] == "k" and out["x-stainless-os"] == "Linux"


# --------------------------------------------------------------------------- response_headers


def test_response_headers_drop_what_names_the_organisation_or_the_connection():
    upstream = {
        "Content-Type": "application/json",
        "X-Request-Id": "req_1",
        "OpenAI-Processing-Ms": "12",
        "OpenAI-Version": "2020-10-01",
        "x-ratelimit-remaining-requests": "9",
        "x-ratelimit-reset-tokens": "6ms",
        "Retry-After": "3",
        "OpenAI-Organization": "org-secret",
        "openai-project": "proj_secret",
        "Set-Cookie": "__cf_bm=x",
        "Connection": "keep-alive",
        "Keep-Alive": "timeout=5",
        "Transfer-Encoding": "chunked",
        "Content-Length": "10",
        "Content-Encoding": "gzip",
        "Alt-Svc": "h3",
        "CF-RAY": "abc",
        "Server": "cloudflare",
        "Date": "today",
        "Strict-Transport-Security": "max-age=1",
        "Trailer": "x",
        "Upgrade": "h2",
        "Proxy-Authenticate": "Basic",
    }
    assert response_headers(upstream) == {
        "content-type": "application/json",
        "x-request-id": "req_1",
        "openai-processing-ms": "12",
        "openai-version": "2020-10-01",
        "x-ratelimit-remaining-requests": "9",
        "x-ratelimit-reset-tokens": "6ms",
        "retry-after": "3",
    }


# --------------------------------------------------------------------------- Upstream.post


@pytest.fixture
def client() -> Iterator[Upstream]:
    up = Upstream(connect_timeout_s=1.0, read_timeout_s=2.0, pool_size=4)
    yield up
    up.pool.clear()


def post(
    up: Upstream, base: str, body: dict, *, stream: bool = False, path: str = "/chat/completions"
) -> UpstreamResponse:
    headers = forward_headers({"User-Agent": "tests"}, UPSTREAM_SECRET)
    return up.post(base + path, json.dumps(body).encode(), headers, stream=stream)


def test_a_200_answer_is_returned_decoded_and_the_secret_was_sent(client, upstream):
    r = post(client, upstream.base_url, CHAT)
    assert r.status == 200 and r.raw is None
    assert json.loads(r.body)["object"] == "chat.completion"  # gzip undone
    assert r.headers["content-type"] == "application/json"
    assert all(k == k.lower() for k in r.headers)
    [got] = upstream.received
    assert got.headers["authorization"] == f"Bearer {UPSTREAM_SECRET}"
    assert "gzip" in got.headers["accept-encoding"]
    assert got.json == CHAT


@pytest.mark.parametrize("status", [400, 401, 429, 500, 503])
def test_upstreams_own_error_status_is_passed_through_not_raised(client, upstream, status):
    upstream.push(Error(status, headers={"retry-after": "3"}))
    r = post(client, upstream.base_url, CHAT)
    assert r.status == status
    assert "error" in json.loads(r.body)
    assert r.headers["retry-after"] == "3"


def test_an_error_before_a_stream_is_returned_whole(client, upstream):
    upstream.push(Error(429))
    r = post(client, upstream.base_url, {**CHAT, "stream": True}, stream=True)
    assert r.status == 429 and r.raw is None
    assert json.loads(r.body)["error"]


def test_a_200_that_is_not_json_is_returned_as_received(client, upstream):
    upstream.push(InvalidJSON())
    r = post(client, upstream.base_url, CHAT)
    assert (r.status, r.body) == (200, b"{not json")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_refused_connection_is_upstream_unavailable(client):
    start = time.monotonic()
    with pytest.raises(UpstreamUnavailable) as info:
        post(client, f"http://127.0.0.1:{free_port()}/v1", CHAT)
    assert time.monotonic() - start < 1.0
    assert info.value.status == 502 and "127.0.0.1" not in info.value.message


@pytest.mark.parametrize(
    "url", ["http://[::1/v1/chat/completions", "not a url", "ftp://127.0.0.1/v1"]
)
def test_a_url_that_cannot_be_used_is_upstream_unavailable(client, url):
    with pytest.raises(UpstreamUnavailable):
        client.post(url, b"{}", {})


def test_a_stall_past_the_read_timeout_is_upstream_timeout(upstream):
    upstream.push(Stall(1.5))
    up = Upstream(connect_timeout_s=1.0, read_timeout_s=0.2)
    start = time.monotonic()
    with pytest.raises(UpstreamTimeout) as info:
        post(up, upstream.base_url, CHAT)
    assert time.monotonic() - start < 1.0
    assert info.value.status == 504
    up.pool.clear()


def test_a_stall_shorter_than_the_read_timeout_is_waited_for(client, upstream):
    upstream.push(Stall(0.2))
    assert post(client, upstream.base_url, CHAT).status == 200


# --------------------------------------------------------------------------- streams


def read_stream(r: UpstreamResponse) -> tuple[list[sse.Event], list[float]]:
    buf, events, arrivals = sse.EventBuffer(), [], []
    for chunk in r.iter_chunks():
        got = buf.feed(chunk)
        events += [sse.parse(raw) for raw in got]
        arrivals += [time.monotonic()] * len(got)
    return events, arrivals


def test_a_stream_is_read_chunk_by_chunk_as_it_arrives(client, upstream):
    upstream.push(Stream(chunk_delay_s=0.05, chunks=4))
    r = post(client, upstream.base_url, {**CHAT, "stream": True}, stream=True)
    assert r.status == 200 and r.body == b"" and r.raw is not None
    assert r.headers["content-type"].startswith("text/event-stream")
    events, arrivals = read_stream(r)
    r.close()
    assert events[-1].data == "[DONE]"
    assert (
        "".join(e.json()["choices"][0]["delta"].get("content") or "" for e in events[:-1])
        == "word " * 4
    )
    # not buffered until the end: the events came spread over the stream's life
    assert arrivals[-1] - arrivals[0] >= 0.2
    [got] = upstream.received
    assert "gzip" not in got.headers.get("accept-encoding", "")  # a stream stays identity


def test_a_cut_stream_raises_stream_broken_after_what_arrived(client, upstream):
    upstream.push(Stream(cut_after=2, chunks=5))
    r = post(client, upstream.base_url, {**CHAT, "stream": True}, stream=True)
    buf, events = sse.EventBuffer(), []
    with pytest.raises(StreamBroken):
        for chunk in r.iter_chunks():
            events += buf.feed(chunk)
    r.close()
    assert len(events) == 2


def test_closing_a_stream_early_tells_upstream_to_stop(client, upstream):
    upstream.push(Stream(chunk_delay_s=0.05, chunks=40))
    r = post(client, upstream.base_url, {**CHAT, "stream": True}, stream=True)
    first = next(r.iter_chunks())
    assert first.startswith(b"data: ")
    r.close()
    deadline = time.monotonic() + 2
    while not upstream.received[-1].client_closed and time.monotonic() < deadline:
        time.sleep(0.02)
    assert upstream.received[-1].client_closed
