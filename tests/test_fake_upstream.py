"""The fake upstream behaves like the OpenAI API, over real loopback HTTP.

Clients are `requests` (to see the raw wire) and the official `openai` SDK
(to prove the bodies parse the way real clients expect).
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import requests
from openai.types.responses import ResponseCompletedEvent, ResponseCreatedEvent

from tests.fake_upstream import (
    Error,
    FakeUpstream,
    InvalidJSON,
    Received,
    Stall,
    Stream,
)

KEY = "sk-test-fake-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hi"}]}
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def server() -> Iterator[FakeUpstream]:
    with FakeUpstream(valid_keys=[KEY]) as fake:
        yield fake


@pytest.fixture
def fake(server: FakeUpstream) -> FakeUpstream:
    server.reset()
    return server


@pytest.fixture
def sdk(fake: FakeUpstream) -> openai.OpenAI:
    # No retries: every test asserts on exactly what one call produced.
    return openai.OpenAI(base_url=fake.base_url, api_key=KEY, max_retries=0, timeout=5)


def post(fake: FakeUpstream, path: str, body: Any, **kwargs: Any) -> requests.Response:
    kwargs.setdefault("headers", AUTH)
    timeout = kwargs.pop("timeout", 5)
    return requests.post(fake.base_url + path, json=body, timeout=timeout, **kwargs)


def sse_data(response: requests.Response) -> list[str]:
    """The `data:` payloads of an SSE response, in order."""
    return [
        line.removeprefix("data: ")
        for line in response.iter_lines(decode_unicode=True)
        if line.startswith("data: ")
    ]


def wait_until(predicate: Any, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


# --------------------------------------------------------------------------- chat


def test_chat_completion_shape_usage_and_record(fake: FakeUpstream) -> None:
    fake.cached_tokens = 3
    fake.reasoning_tokens = 2

    response = post(fake, "/chat/completions", CHAT)

    assert response.status_code == 200
    body = response.json()
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert body["model"] == "gpt-4o-mini-2099-01-01"
    assert body["service_tier"] == "default"
    assert body["system_fingerprint"]
    [choice] = body["choices"]
    assert choice["index"] == 0
    assert choice["finish_reason"] == "stop"
    assert choice["logprobs"] is None
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["refusal"] is None
    assert choice["message"]["content"]

    usage = body["usage"]
    prompt = max(1, len(json.dumps(CHAT["messages"])) // 4)
    assert usage["prompt_tokens"] == prompt
    assert usage["completion_tokens"] == 7
    assert usage["total_tokens"] == prompt + 7
    assert usage["prompt_tokens_details"] == {"cached_tokens": 3, "audio_tokens": 0}
    assert usage["completion_tokens_details"] == {
        "reasoning_tokens": 2,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    }

    [record] = fake.received
    assert record.method == "POST"
    assert record.path == "/v1/chat/completions"
    assert record.headers["authorization"] == f"Bearer {KEY}"
    assert record.headers["content-type"] == "application/json"
    assert record.json == CHAT
    assert json.loads(record.body) == CHAT
    assert record.client_closed is False


def test_chat_n2_bill_cap_bills_worst_case(fake: FakeUpstream) -> None:
    fake.bill_cap = True
    body = post(fake, "/chat/completions", {**CHAT, "n": 2, "max_completion_tokens": 50}).json()

    assert [c["index"] for c in body["choices"]] == [0, 1]
    assert {c["finish_reason"] for c in body["choices"]} == {"length"}
    assert body["usage"]["completion_tokens"] == 100

    # max_tokens is the older spelling of the same cap.
    body = post(fake, "/chat/completions", {**CHAT, "max_tokens": 12}).json()
    assert body["usage"]["completion_tokens"] == 12


def test_chat_knobs_cap_and_clamp(fake: FakeUpstream) -> None:
    fake.completion_tokens = 40
    fake.reasoning_tokens = 1000  # more than the output: reported as all of it
    fake.cached_tokens = 1000  # more than the prompt: reported as all of it
    fake.prompt_tokens = lambda route, body: 11
    fake.service_tier = None
    fake.snapshot_suffix = ""

    body = post(fake, "/chat/completions", {**CHAT, "max_tokens": 9, "n": 2}).json()

    assert body["model"] == "gpt-4o-mini"
    assert "service_tier" not in body
    assert body["choices"][0]["finish_reason"] == "length"
    usage = body["usage"]
    assert usage["prompt_tokens"] == 11
    assert usage["completion_tokens"] == 18  # min(40, 9) per choice, two choices
    assert usage["prompt_tokens_details"]["cached_tokens"] == 11
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 18


def test_prompt_tokens_callable_gets_route_and_body(fake: FakeUpstream) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []

    def count(route: str, body: dict[str, Any]) -> int:
        seen.append((route, body))
        return 123

    fake.prompt_tokens = count
    usage = post(fake, "/chat/completions", CHAT).json()["usage"]

    assert usage["prompt_tokens"] == 123
    assert seen == [("/v1/chat/completions", CHAT)]


def test_chat_via_sdk(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], n=2
    )

    assert completion.model == "gpt-4o-mini-2099-01-01"
    assert len(completion.choices) == 2
    assert completion.choices[1].message.content
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 14


def test_chat_missing_messages_is_400(fake: FakeUpstream) -> None:
    response = post(fake, "/chat/completions", {"model": "gpt-4o-mini"})

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "messages"

    response = post(fake, "/chat/completions", None, data=b"{nope")
    assert response.status_code == 400


# --------------------------------------------------------------------------- chat streaming


def test_chat_stream_without_include_usage(fake: FakeUpstream) -> None:
    with post(fake, "/chat/completions", {**CHAT, "stream": True}, stream=True) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["transfer-encoding"] == "chunked"
        data = sse_data(response)

    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert len(chunks) == 1 + 3 + 1  # role, content deltas, finish
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert all("usage" not in c for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert [c["choices"][0]["delta"].get("content") for c in chunks[1:4]] == ["word "] * 3
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_chat_stream_with_include_usage(fake: FakeUpstream) -> None:
    fake.reasoning_tokens = 4
    request = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    with post(fake, "/chat/completions", request, stream=True) as response:
        data = sse_data(response)

    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    *deltas, usage_chunk = chunks
    assert all(c["usage"] is None for c in deltas)  # explicit null, as OpenAI sends
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] == 7
    assert usage_chunk["usage"]["completion_tokens_details"]["reasoning_tokens"] == 4


def test_chat_stream_via_sdk_and_no_usage(fake: FakeUpstream, sdk: openai.OpenAI) -> None:
    def stream_once() -> list[Any]:
        return list(
            sdk.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "hi"}],
                stream=True,
                stream_options={"include_usage": True},
            )
        )

    chunks = stream_once()
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "word " * 3
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens > 0

    fake.push(Stream(no_usage=True, chunks=5))
    chunks = stream_once()
    assert all(c.usage is None for c in chunks)
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) == 5


# --------------------------------------------------------------------------- completions


def test_completions_prompt_forms_and_bill_cap(fake: FakeUpstream) -> None:
    body = post(fake, "/completions", {"model": "gpt-3.5-turbo-instruct", "prompt": "Hi"}).json()
    assert body["object"] == "text_completion"
    assert body["model"] == "gpt-3.5-turbo-instruct-2099-01-01"
    [choice] = body["choices"]
    assert set(choice) == {"text", "index", "logprobs", "finish_reason"}
    assert body["usage"]["completion_tokens"] == 7
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + 7

    fake.bill_cap = True
    request = {"model": "m", "prompt": [1, 2, 3], "max_tokens": 10, "n": 2, "best_of": 3}
    body = post(fake, "/completions", request).json()
    assert len(body["choices"]) == 2  # a list of token ids is one prompt
    assert body["usage"]["completion_tokens"] == 30  # cap x max(n, best_of)

    request = {"model": "m", "prompt": ["a", "b"], "max_tokens": 10}
    body = post(fake, "/completions", request).json()
    assert len(body["choices"]) == 2  # one per prompt
    assert body["usage"]["completion_tokens"] == 20

    request = {"model": "m", "prompt": [[1, 2], [3]]}
    body = post(fake, "/completions", request).json()
    assert body["usage"]["completion_tokens"] == 32  # OpenAI's default max_tokens is 16


def test_completions_stream(fake: FakeUpstream) -> None:
    request = {"model": "m", "prompt": "Hi", "stream": True}
    with post(fake, "/completions", request, stream=True) as response:
        plain = sse_data(response)
    request["stream_options"] = {"include_usage": True}
    with post(fake, "/completions", request, stream=True) as response:
        with_usage = sse_data(response)

    assert plain[-1] == with_usage[-1] == "[DONE]"
    plain_chunks = [json.loads(d) for d in plain[:-1]]
    assert all(c["object"] == "text_completion" for c in plain_chunks)
    assert "".join(c["choices"][0]["text"] for c in plain_chunks) == "word " * 3
    assert all("usage" not in c for c in plain_chunks)
    last = json.loads(with_usage[-2])
    assert last["choices"] == []
    assert last["usage"]["completion_tokens"] == 7


# --------------------------------------------------------------------------- embeddings


def test_embeddings_base64_via_sdk(fake: FakeUpstream, sdk: openai.OpenAI) -> None:
    result = sdk.embeddings.create(model="text-embedding-3-small", input=["one", "two"])

    request = fake.received[-1].json
    assert request is not None
    assert request["encoding_format"] == "base64"  # the SDK's default
    assert [d.index for d in result.data] == [0, 1]
    assert all(len(d.embedding) == 8 for d in result.data)
    assert all(isinstance(x, float) for x in result.data[0].embedding)
    assert result.model == "text-embedding-3-small"
    assert result.usage.prompt_tokens == result.usage.total_tokens > 0


def test_embeddings_inputs_and_floats(fake: FakeUpstream) -> None:
    fake.prompt_tokens = lambda route, body: 5
    counts = {}
    for label, value in {
        "string": "hello",
        "strings": ["a", "b", "c"],
        "token ids": [1, 2, 3],
        "lists of token ids": [[1], [2, 3]],
    }.items():
        body = post(fake, "/embeddings", {"model": "e", "input": value}).json()
        counts[label] = len(body["data"])
        assert body["usage"] == {"prompt_tokens": 5, "total_tokens": 5}
        assert all(len(d["embedding"]) == 8 for d in body["data"])

    assert counts == {"string": 1, "strings": 3, "token ids": 1, "lists of token ids": 2}

    raw = post(fake, "/embeddings", {"model": "e", "input": "x", "encoding_format": "base64"})
    floats = post(fake, "/embeddings", {"model": "e", "input": "x"})
    decoded = struct.unpack("<8f", base64.b64decode(raw.json()["data"][0]["embedding"]))
    assert list(decoded) == floats.json()["data"][0]["embedding"]


# --------------------------------------------------------------------------- responses


def test_responses_via_sdk(fake: FakeUpstream, sdk: openai.OpenAI) -> None:
    fake.cached_tokens = 1
    fake.reasoning_tokens = 3
    fake.bill_cap = True

    response = sdk.responses.create(model="gpt-4o-mini", input="hi", max_output_tokens=20)

    assert response.id.startswith("resp_")
    assert response.status == "completed"
    assert response.model == "gpt-4o-mini-2099-01-01"
    assert response.output_text
    assert response.service_tier == "default"
    assert response.usage is not None
    assert response.usage.output_tokens == 20
    assert response.usage.input_tokens_details.cached_tokens == 1
    assert response.usage.output_tokens_details.reasoning_tokens == 3
    assert response.usage.total_tokens == response.usage.input_tokens + 20


def test_responses_stream_via_sdk(fake: FakeUpstream, sdk: openai.OpenAI) -> None:
    events = list(sdk.responses.create(model="gpt-4o-mini", input="hi", stream=True))

    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 3,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    created, completed = events[0], events[-1]
    assert isinstance(created, ResponseCreatedEvent)
    assert created.response.usage is None
    assert isinstance(completed, ResponseCompletedEvent)
    final = completed.response
    assert final.output_text == "word " * 3
    assert final.usage is not None
    assert final.usage.output_tokens == 7

    fake.push(Stream(no_usage=True))
    events = list(sdk.responses.create(model="gpt-4o-mini", input="hi", stream=True))
    assert isinstance(events[-1], ResponseCompletedEvent)
    assert events[-1].response.usage is None


def test_responses_stream_wire_format(fake: FakeUpstream) -> None:
    request = {"model": "m", "input": "hi", "stream": True}
    with post(fake, "/responses", request, stream=True) as response:
        lines = [line for line in response.iter_lines(decode_unicode=True) if line]

    assert "data: [DONE]" not in lines
    for event_line, data_line in zip(lines[::2], lines[1::2], strict=True):
        kind = event_line.removeprefix("event: ")
        assert json.loads(data_line.removeprefix("data: "))["type"] == kind


# --------------------------------------------------------------------------- errors and auth


@pytest.mark.parametrize(
    ("status", "type_", "code"),
    [(500, "server_error", "server_error"), (429, "requests", "rate_limit_exceeded")],
)
def test_error_behaviour(fake: FakeUpstream, status: int, type_: str, code: str) -> None:
    fake.push(Error(status))

    response = post(fake, "/chat/completions", CHAT)

    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"], error["param"]) == (type_, code, None)
    assert response.headers["x-request-id"].startswith("req_")
    # One-shot: the next request is answered normally.
    assert post(fake, "/chat/completions", CHAT).status_code == 200


def test_error_custom_body_headers_and_sdk_mapping(fake: FakeUpstream, sdk: openai.OpenAI) -> None:
    fake.push(Error(429, body={"error": {"message": "slow down"}}, headers={"Retry-After": "7"}))
    response = post(fake, "/chat/completions", CHAT)
    assert response.json() == {"error": {"message": "slow down"}}
    assert response.headers["retry-after"] == "7"

    fake.push(Error(500))
    with pytest.raises(openai.InternalServerError):
        sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])


def test_bad_or_missing_key_is_401(fake: FakeUpstream) -> None:
    response = post(
        fake, "/chat/completions", CHAT, headers={"Authorization": "Bearer sk-nope-1234"}
    )
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "invalid_api_key"
    assert error["type"] == "invalid_request_error"
    assert error["message"] == "Incorrect API key provided: sk-...1234."
    assert "x-ratelimit-limit-requests" in response.headers

    assert post(fake, "/models", None, headers={}).status_code == 401

    fake.valid_keys.add("sk-nope-1234")
    assert post(
        fake, "/chat/completions", CHAT, headers={"Authorization": "Bearer sk-nope-1234"}
    ).ok


def test_invalid_json_behaviour(fake: FakeUpstream) -> None:
    fake.push(InvalidJSON())

    response = post(fake, "/chat/completions", CHAT)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.content == b"{not json"


def test_unknown_path_is_404_and_models(fake: FakeUpstream) -> None:
    response = post(fake, "/nope", {})
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "invalid_request_error"

    models = requests.get(fake.base_url + "/models", headers=AUTH, timeout=5).json()
    assert models["object"] == "list"
    assert {m["object"] for m in models["data"]} == {"model"}
    one = requests.get(fake.base_url + "/models/gpt-4o-mini", headers=AUTH, timeout=5).json()
    assert one["id"] == "gpt-4o-mini"


def test_standard_headers_on_every_answer(fake: FakeUpstream) -> None:
    fake.push(Error(500))
    answers = [
        post(fake, "/chat/completions", CHAT),
        post(fake, "/chat/completions", CHAT),
        post(fake, "/chat/completions", CHAT, headers={}),
        post(fake, "/nope", {}),
    ]
    with post(fake, "/chat/completions", {**CHAT, "stream": True}, stream=True) as streamed:
        answers.append(streamed)

    expected = {
        "openai-organization": "org-fake",
        "openai-project": "proj_fake",
        "openai-processing-ms": "1",
        "set-cookie": "__cf_bm=fake; path=/",
        "x-ratelimit-limit-requests": "10000",
        "x-ratelimit-remaining-requests": "9999",
        "x-ratelimit-reset-requests": "6ms",
        "x-ratelimit-limit-tokens": "30000000",
        "x-ratelimit-remaining-tokens": "29999000",
        "x-ratelimit-reset-tokens": "2ms",
    }
    for answer in answers:
        assert {k: answer.headers.get(k) for k in expected} == expected
        assert answer.headers["x-request-id"].startswith("req_")
    assert len({a.headers["x-request-id"] for a in answers}) == len(answers)


# --------------------------------------------------------------------------- timing behaviours


def test_stall_times_out_a_short_read_timeout(fake: FakeUpstream) -> None:
    fake.push(Stall(1.0))

    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        post(fake, "/chat/completions", CHAT, timeout=(2, 0.3))
    assert time.monotonic() - started < 0.9

    # The fake wakes up, finds the client gone and gives up quietly.
    assert wait_until(lambda: fake.received[0].client_closed, timeout=3)


def test_stall_then_normal_answer(fake: FakeUpstream) -> None:
    fake.push(Stall(0.3))

    started = time.monotonic()
    response = post(fake, "/chat/completions", CHAT)

    assert time.monotonic() - started >= 0.3
    assert response.status_code == 200
    assert response.json()["object"] == "chat.completion"


def test_latency_applies_to_every_request(fake: FakeUpstream) -> None:
    fake.latency_s = 0.15
    started = time.monotonic()
    post(fake, "/chat/completions", CHAT)
    post(fake, "/models", None)
    assert time.monotonic() - started >= 0.3


def test_stream_chunk_delay_spaces_events(fake: FakeUpstream) -> None:
    fake.push(Stream(chunk_delay_s=0.2, chunks=2))

    arrivals: list[float] = []
    with post(fake, "/chat/completions", {**CHAT, "stream": True}, stream=True) as response:
        for line in response.iter_lines():
            if line.startswith(b"data: "):
                arrivals.append(time.monotonic())

    assert len(arrivals) == 1 + 2 + 1 + 1  # role, 2 deltas, finish, [DONE]
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    assert min(gaps) >= 0.15, gaps


def test_stream_cut_after_ends_early_without_done(fake: FakeUpstream) -> None:
    fake.push(Stream(cut_after=2))

    seen: list[bytes] = []
    request = {**CHAT, "stream": True}
    with (
        pytest.raises(requests.exceptions.ChunkedEncodingError),
        post(fake, "/chat/completions", request, stream=True) as response,
    ):
        seen.extend(line for line in response.iter_lines() if line)

    assert len(seen) == 2
    assert b"data: [DONE]" not in seen


def test_stream_cut_after_via_sdk(fake: FakeUpstream, sdk: openai.OpenAI) -> None:
    fake.push(Stream(cut_after=3))

    events: list[Any] = []
    with pytest.raises(openai.APIConnectionError):
        events.extend(sdk.responses.create(model="m", input="hi", stream=True))

    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
    ]


def test_client_closing_mid_stream_is_recorded(fake: FakeUpstream) -> None:
    fake.push(Stream(chunk_delay_s=0.1, chunks=50))

    response = post(fake, "/chat/completions", {**CHAT, "stream": True}, stream=True)
    first = next(response.iter_lines())
    response.close()

    assert first.startswith(b"data: ")
    assert wait_until(lambda: fake.received[0].client_closed, timeout=2)


# --------------------------------------------------------------------------- plumbing


def test_push_queue_is_consumed_in_order(fake: FakeUpstream) -> None:
    fake.push(Error(503), InvalidJSON())

    statuses = [post(fake, "/chat/completions", CHAT) for _ in range(3)]

    assert [r.status_code for r in statuses] == [503, 200, 200]
    assert statuses[1].content == b"{not json"
    assert statuses[2].json()["object"] == "chat.completion"

    fake.push(Error(500))
    fake.reset()
    assert post(fake, "/chat/completions", CHAT).status_code == 200
    with pytest.raises(TypeError):
        fake.push("not a behaviour")  # type: ignore[arg-type]


def test_chunked_request_body_is_accepted(fake: FakeUpstream) -> None:
    payload = json.dumps(CHAT).encode()
    parts = iter([payload[:10], payload[10:]])  # a generator body makes requests use chunked

    response = requests.post(
        fake.base_url + "/chat/completions",
        data=parts,
        headers={**AUTH, "Content-Type": "application/json"},
        timeout=5,
    )

    assert response.status_code == 200
    assert fake.received[0].headers["transfer-encoding"] == "chunked"
    assert fake.received[0].json == CHAT


def test_many_concurrent_clients(fake: FakeUpstream) -> None:
    statuses: list[int] = []
    lock = threading.Lock()

    def call() -> None:
        status = post(fake, "/chat/completions", CHAT, timeout=10).status_code
        with lock:
            statuses.append(status)

    fake.latency_s = 0.05  # keep every connection open at the same time
    threads = [threading.Thread(target=call) for _ in range(100)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=15)

    assert statuses == [200] * 100
    received = fake.wait_for_requests(100, timeout=1)
    assert all(isinstance(r, Received) for r in received)
    with pytest.raises(TimeoutError):
        fake.wait_for_requests(101, timeout=0.05)


def test_keep_alive_connection_serves_several_requests(fake: FakeUpstream) -> None:
    with requests.Session() as session:
        session.headers.update(AUTH)
        for _ in range(3):
            response = session.post(fake.base_url + "/chat/completions", json=CHAT, timeout=5)
            assert response.status_code == 200
        with session.post(
            fake.base_url + "/chat/completions", json={**CHAT, "stream": True}, stream=True
        ) as streamed:
            assert sse_data(streamed)[-1] == "[DONE]"
        assert session.post(fake.base_url + "/embeddings", json={"model": "e", "input": "x"}).ok
    assert len(fake.received) == 5


def test_command_line_serves_until_sigterm() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_upstream", "--port", "0", "--key", "sk-fake-local"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        headers = {"Authorization": "Bearer sk-fake-local"}
        assert requests.get(url + "/models", headers=headers, timeout=5).status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
