"""functions/core/sse.py: splitting a byte stream into SSE events, reading them, the error
event a broken stream ends with, and what a stream's meter takes from it for billing.
Pure: no network, no Firestore."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from functions.core import sse

CHAT_ID = "chatcmpl-abc"


def chat_chunk(
    content: str | None = None,
    *,
    usage: object = None,
    choices: object = ...,
    model: str = "gpt-4o-mini-2024-07-18",
    tier: str = "default",
) -> bytes:
    obj: dict[str, object] = {
        "id": CHAT_ID,
        "object": "chat.completion.chunk",
        "model": model,
        "service_tier": tier,
    }
    obj["choices"] = (
        [{"index": 0, "delta": {"content": content}, "finish_reason": None}]
        if choices is ...
        else choices
    )
    if usage is not None:
        obj["usage"] = usage
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def responses_event(kind: str, **fields: object) -> bytes:
    payload = json.dumps({"type": kind, **fields})
    return f"event: {kind}\ndata: {payload}\n\n".encode()


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(max(c, 0), len(data)) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:], strict=False)]


def feed_all(chunks: list[bytes]) -> tuple[list[bytes], bytes]:
    buf = sse.EventBuffer()
    events: list[bytes] = []
    for chunk in chunks:
        events += buf.feed(chunk)
    return events, buf.pending


USAGE = {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}
CHAT_STREAM = (
    chat_chunk("Hel")
    + chat_chunk("lo, wörld")
    + b": keepalive\n\n"
    + chat_chunk(choices=[], usage=USAGE)
    + b"data: [DONE]\n\n"
)


# --------------------------------------------------------------------------- EventBuffer


def test_one_chunk_with_several_events_yields_each_with_its_blank_line():
    events, pending = feed_all([b"data: 1\n\ndata: 2\n\nevent: x\ndata: 3\n\n"])
    assert events == [b"data: 1\n\n", b"data: 2\n\n", b"event: x\ndata: 3\n\n"]
    assert pending == b""


def test_an_event_split_across_reads_is_held_until_its_blank_line():
    buf = sse.EventBuffer()
    assert buf.feed(b'data: {"a":') == []
    assert buf.pending == b'data: {"a":'
    assert buf.feed(b" 1}\n") == []
    assert buf.feed(b"\n") == [b'data: {"a": 1}\n\n']
    assert buf.pending == b""


def test_pending_keeps_the_start_of_the_next_event():
    buf = sse.EventBuffer()
    assert buf.feed(b"data: 1\n\ndata: 2") == [b"data: 1\n\n"]
    assert buf.pending == b"data: 2"


@pytest.mark.parametrize("end", [b"\r\n\r\n", b"\n\n", b"\r\r"])
def test_every_line_ending_ends_an_event_and_is_kept_byte_for_byte(end):
    sep = end[: len(end) // 2]
    raw = b"event: e" + sep + b"data: {}" + end
    events, pending = feed_all([raw + b"data: next" + end])
    assert events == [raw, b"data: next" + end] and pending == b""
    assert sse.parse(raw) == sse.Event("e", "{}")


def test_a_crlf_blank_line_split_between_reads_still_ends_the_event():
    events, pending = feed_all([b"data: 1\r\n", b"\r", b"\ndata: 2\r\n\r\n"])
    assert events == [b"data: 1\r\n\r\n", b"data: 2\r\n\r\n"] and pending == b""


def test_a_comment_keepalive_is_passed_on_as_its_own_event_with_no_data():
    events, _ = feed_all([b": keepalive\n\ndata: 1\n\n"])
    assert events == [b": keepalive\n\n", b"data: 1\n\n"]
    assert sse.parse(events[0]) == sse.Event(None, "")


def test_a_multibyte_character_split_between_reads_arrives_whole():
    raw = 'data: {"t": "héllo 日本"}\n\n'.encode()
    cut = raw.index("é".encode()) + 1  # inside the two bytes of é
    events, _ = feed_all([raw[:cut], raw[cut:]])
    assert events == [raw]
    assert sse.parse(events[0]).json() == {"t": "héllo 日本"}


def test_a_realistic_stream_fed_one_byte_at_a_time():
    events, pending = feed_all([CHAT_STREAM[i : i + 1] for i in range(len(CHAT_STREAM))])
    assert len(events) == 5 and pending == b""
    assert b"".join(events) == CHAT_STREAM
    assert sse.parse(events[-1]).data == "[DONE]"


_STREAM_BYTES = st.lists(
    st.sampled_from(
        [b"data: ", b"event: x", b'{"k": 1}', b"\r", b"\n", b":", b" ", "é".encode(), b"[DONE]"]
    ),
    max_size=40,
).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(data=_STREAM_BYTES, cuts=st.lists(st.integers(0, 400), max_size=12))
def test_any_split_of_a_byte_stream_into_chunks_yields_the_same_events(data, cuts):
    whole_events, whole_pending = feed_all([data])
    events, pending = feed_all(split_at(data, cuts))
    assert events == whole_events
    assert pending == whole_pending
    # nothing added, nothing lost: the client gets upstream's bytes unchanged
    assert b"".join(events) + pending == data


# --------------------------------------------------------------------------- parse


def test_parse_reads_the_event_name_and_data():
    ev = sse.parse(b'event: response.completed\ndata: {"type": "x"}\n\n')
    assert ev.event == "response.completed"
    assert ev.json() == {"type": "x"}


def test_parse_joins_several_data_lines_with_newlines():
    assert sse.parse(b"data: a\ndata: b\r\ndata: c\n\n").data == "a\nb\nc"


def test_parse_strips_one_space_after_the_colon_only():
    assert sse.parse(b"data:x\n\n").data == "x"
    assert sse.parse(b"data:  x\n\n").data == " x"


def test_parse_ignores_comments_ids_and_retry_fields():
    ev = sse.parse(b": hi\nid: 7\nretry: 100\ndata: 1\n\n")
    assert ev == sse.Event(None, "1")


def test_parse_survives_bytes_that_are_not_utf8():
    ev = sse.parse(b"data: \xff\xfe\n\n")
    assert ev.event is None and ev.json() is None


@pytest.mark.parametrize("sep", ["\u2028", "\u2029", "\x85"])
def test_unicode_line_separators_inside_json_data_do_not_split_the_line(sep):
    # JSON strings may hold U+2028/U+2029/U+0085 unescaped; SSE ends lines only at CR/LF.
    # Splitting there lost the rest of the event (a Responses stream's final event
    # carries the output text: its usage would be missed and the stream called cut).
    payload = json.dumps(
        {"type": "response.completed", "response": {"output_text": f"a{sep}b", "usage": {"x": 1}}},
        ensure_ascii=False,
    )
    ev = sse.parse(f"event: response.completed\ndata: {payload}\n\n".encode())
    assert ev.json() == json.loads(payload)


def test_event_json_is_none_for_data_that_is_not_json():
    assert sse.Event(None, "[DONE]").json() is None
    assert sse.Event(None, "").json() is None


# --------------------------------------------------------------------------- error_event


def test_error_event_is_one_event_the_sdk_reads_as_an_api_error():
    raw = sse.error_event('upstream said "no"\n\nthen left', "upstream_cut")
    events, pending = feed_all([raw])
    assert events == [raw] and pending == b""
    ev = sse.parse(raw)
    assert ev.event == "error"
    assert ev.json() == {
        "error": {
            "message": 'upstream said "no"\n\nthen left',
            "type": "api_error",
            "param": None,
            "code": "upstream_cut",
        }
    }


def test_error_event_after_a_complete_stream_is_still_a_separate_event():
    events, _ = feed_all(
        [CHAT_STREAM[: -len(b"data: [DONE]\n\n")], sse.error_event("cut", "upstream_cut")]
    )
    assert sse.parse(events[-1]).json()["error"]["code"] == "upstream_cut"


# --------------------------------------------------------------------------- StreamMeter


def meter_over(route: str, stream: bytes) -> tuple[sse.StreamMeter, list[bool]]:
    meter = sse.StreamMeter(route)
    events, _ = feed_all([stream])
    return meter, [meter.observe(sse.parse(raw)) for raw in events]


def test_chat_meter_reads_text_usage_model_and_tier_and_flags_only_the_usage_chunk():
    meter, flags = meter_over("chat", CHAT_STREAM)
    assert flags == [False, False, False, True, False]
    assert meter.seen_text == "Hello, wörld"
    assert meter.usage == USAGE
    assert meter.model == "gpt-4o-mini-2024-07-18" and meter.service_tier == "default"
    assert meter.finished


def test_chat_meter_ignores_the_explicit_null_usage_of_ordinary_chunks():
    meter, flags = meter_over(
        "chat", chat_chunk("a", usage=None) + b'data: {"usage": null, "choices": []}\n\n'
    )
    assert flags == [False, False] and meter.usage is None


def test_a_chunk_with_usage_and_content_is_not_flagged_for_hiding():
    # some compatible upstreams put usage on the last content chunk: hiding it would
    # lose text the client needs
    meter, flags = meter_over("chat", chat_chunk("end", usage=USAGE))
    assert flags == [False]
    assert meter.usage == USAGE and meter.seen_text == "end"


def test_a_stream_cut_before_usage_leaves_usage_unknown_and_unfinished():
    meter, _ = meter_over("chat", chat_chunk("par") + chat_chunk("tial"))
    assert meter.usage is None and not meter.finished
    assert meter.seen_text == "partial"


def test_done_with_surrounding_whitespace_finishes_the_stream():
    meter, _ = meter_over("chat", b"data:  [DONE] \n\n")
    assert meter.finished


def test_completions_meter_reads_choice_text_not_deltas():
    body = {
        "id": "cmpl-1",
        "model": "gpt-3.5-turbo-instruct",
        "choices": [{"text": "Once", "index": 0}, {"text": " upon", "index": 1}],
    }
    chat_like = {"choices": [{"delta": {"content": "ignored"}}]}
    meter, _ = meter_over(
        "completions",
        b"data: "
        + json.dumps(body).encode()
        + b"\n\n"
        + b"data: "
        + json.dumps(chat_like).encode()
        + b"\n\n",
    )
    assert meter.seen_text == "Once upon"
    assert meter.model == "gpt-3.5-turbo-instruct"


def test_chat_meter_ignores_choices_and_deltas_of_the_wrong_shape():
    odd = {"choices": ["x", {"delta": None}, {"delta": {"content": 5}}, {"text": "no"}]}
    meter, flags = meter_over(
        "chat",
        b"data: " + json.dumps(odd).encode() + b"\n\n" + b"data: [1, 2]\n\ndata: not json\n\n",
    )
    assert flags == [False, False, False]
    assert meter.seen_text == "" and meter.usage is None


RESP_USAGE = {"input_tokens": 9, "output_tokens": 4, "total_tokens": 13}


def responses_stream(terminal: str = "response.completed") -> bytes:
    started = {"id": "resp_1", "model": "gpt-4o-mini-2099", "service_tier": "auto", "usage": None}
    final = {**started, "service_tier": "default", "usage": RESP_USAGE}
    return (
        responses_event("response.created", response=started)
        + responses_event("response.in_progress", response=started)
        + responses_event("response.reasoning_summary_text.delta", delta="think ")
        + responses_event("response.output_text.delta", delta="Hi")
        + responses_event("response.output_text.delta", delta=" there")
        + responses_event("response.output_text.done", text="Hi there")
        + responses_event(terminal, response=final)
    )


@pytest.mark.parametrize("terminal", sse.RESPONSES_TERMINAL)
def test_responses_meter_bills_from_the_terminal_event(terminal):
    meter, flags = meter_over("responses", responses_stream(terminal))
    assert not any(flags)  # nothing in a Responses stream is hidden
    assert meter.usage == RESP_USAGE and meter.finished
    assert meter.response_id == "resp_1"
    assert meter.model == "gpt-4o-mini-2099" and meter.service_tier == "default"
    assert meter.seen_text == "think Hi there"  # .done repeats the text: not counted twice


def test_responses_meter_before_the_terminal_event_has_id_and_text_but_no_usage():
    stream = responses_stream()
    cut = stream.index(b"event: response.completed")
    meter, _ = meter_over("responses", stream[:cut])
    assert meter.response_id == "resp_1" and meter.seen_text == "think Hi there"
    assert meter.usage is None and not meter.finished


def test_responses_meter_takes_usage_only_from_a_terminal_event():
    early = {"id": "resp_2", "usage": RESP_USAGE}
    meter, _ = meter_over("responses", responses_event("response.in_progress", response=early))
    assert meter.usage is None and not meter.finished and meter.response_id == "resp_2"


def test_a_chat_shaped_usage_chunk_on_the_responses_route_is_not_usage():
    meter, flags = meter_over("responses", chat_chunk(choices=[], usage=USAGE))
    assert flags == [False] and meter.usage is None


def test_a_responses_answer_holding_a_line_separator_is_still_billed_and_finished():
    final = {
        "id": "resp_3",
        "output": [{"content": [{"text": "line\u2028next"}]}],
        "usage": RESP_USAGE,
    }
    payload = json.dumps({"type": "response.completed", "response": final}, ensure_ascii=False)
    raw = f"event: response.completed\ndata: {payload}\n\n".encode()
    meter, _ = meter_over("responses", raw)
    assert meter.finished and meter.usage == RESP_USAGE
