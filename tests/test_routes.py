"""Routing and body rules: what is served, what is refused, what the proxy adds."""

import pytest

from functions import routes
from functions.errors import InvalidRequest, NotFound, UnsupportedParameter

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("method, path, kind", [
    ("POST", "/v1/chat/completions", routes.CHAT), ("POST", "/", routes.CHAT),
    ("POST", "/openai", routes.CHAT), ("POST", "/v1/completions", routes.COMPLETIONS),
    ("POST", "/v1/embeddings", routes.EMBEDDINGS), ("POST", "/v1/responses", routes.RESPONSES),
    ("GET", "/v1/models", routes.MODELS_LIST),
])
def test_served_routes(method, path, kind):
    assert routes.match(method, path).kind == kind


def test_model_get_carries_the_id():
    assert routes.match("GET", "/v1/models/ft:gpt-4o:org:x").model_id == "ft:gpt-4o:org:x"


@pytest.mark.parametrize("method, path", [
    ("POST", "/v1/files"), ("GET", "/v1/fine_tuning/jobs"), ("GET", "/v1/organization/users"),
    ("GET", "/v1/chat/completions"), ("POST", "/v1/chat/completions/"), ("DELETE", "/v1/models/x"),
    ("POST", "/v1/models"), ("GET", "/v1/models/"),
])
def test_everything_else_is_404(method, path):
    with pytest.raises(NotFound) as e:
        routes.match(method, path)
    assert e.value.status == 404 and e.value.body()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("body, param", [
    ([1, 2], None), ({}, "model"), ({"model": 5}, "model"), ({"model": ""}, "model"),
    ({"model": "m"}, "messages"), ({"model": "m", "messages": "hi"}, "messages"),
    ({"model": "m", "messages": []}, "messages"),
    ({"model": "m", "messages": [{"content": "x"}]}, "messages[0]"),
    ({**CHAT, "max_tokens": "10"}, "max_tokens"), ({**CHAT, "max_tokens": 0}, "max_tokens"),
    ({**CHAT, "max_completion_tokens": True}, "max_completion_tokens"),
    ({**CHAT, "n": 1.5}, "n"), ({**CHAT, "stream": "yes"}, "stream"),
    ({**CHAT, "tools": {}}, "tools"), ({**CHAT, "service_tier": 3}, "service_tier"),
])
def test_chat_body_errors_name_the_field(body, param):
    with pytest.raises(InvalidRequest) as e:
        routes.validate(routes.CHAT, body)
    assert e.value.status == 400 and e.value.param == param


@pytest.mark.parametrize("kind, body, param", [
    (routes.COMPLETIONS, {"model": "m"}, "prompt"),
    (routes.COMPLETIONS, {"model": "m", "prompt": 3}, "prompt"),
    (routes.EMBEDDINGS, {"model": "m", "input": []}, "input"),
    (routes.EMBEDDINGS, {"model": "m", "input": {"a": 1}}, "input"),
    (routes.RESPONSES, {"model": "m", "input": 3}, "input"),
    (routes.RESPONSES, {"model": "m", "input": "x", "previous_response_id": 4},
     "previous_response_id"),
])
def test_other_routes_validate_their_input(kind, body, param):
    with pytest.raises(InvalidRequest) as e:
        routes.validate(kind, body)
    assert e.value.param == param


def test_background_and_unpriced_built_in_tools_are_refused_by_name():
    with pytest.raises(UnsupportedParameter) as e:
        routes.validate(routes.RESPONSES, {"model": "m", "input": "x", "background": True})
    assert e.value.param == "background" and e.value.code == "unsupported_parameter"
    body = {"model": "m", "input": "x", "tools": [{"type": "function", "name": "f"},
                                                   {"type": "web_search"}]}
    with pytest.raises(UnsupportedParameter) as e:
        routes.validate(routes.RESPONSES, body)
    assert e.value.param == "tools[1]"
    routes.validate(routes.RESPONSES, body, priced_tools=("web_search",))  # priced: fine


def test_default_cap_and_safety_identifier_are_added_without_touching_the_input():
    spec = routes.prepare(routes.CHAT, CHAT, default_cap=256, safety_id="tg-x")
    assert spec.body["max_completion_tokens"] == 256 and spec.output_cap == 256
    assert spec.body["safety_identifier"] == "tg-x" and spec.modified
    assert "max_completion_tokens" not in CHAT and "safety_identifier" not in CHAT


def test_client_cap_and_identifier_are_kept():
    body = {**CHAT, "max_tokens": 50, "safety_identifier": "mine", "n": 3}
    spec = routes.prepare(routes.CHAT, body, default_cap=256, safety_id="tg-x")
    assert spec.output_cap == 50 and spec.n == 3 and not spec.modified
    assert spec.body["safety_identifier"] == "mine"


def test_completions_bill_best_of_and_embeddings_have_no_cap():
    spec = routes.prepare(routes.COMPLETIONS, {"model": "m", "prompt": "x", "max_tokens": 5,
                                               "n": 2, "best_of": 4}, default_cap=9,
                          safety_id="s")
    assert (spec.output_cap, spec.n) == (5, 4) and "safety_identifier" not in spec.body
    spec = routes.prepare(routes.EMBEDDINGS, {"model": "m", "input": "x"}, default_cap=9,
                          safety_id="s")
    assert spec.output_cap == 0 and not spec.modified


def test_responses_cap_is_max_output_tokens():
    spec = routes.prepare(routes.RESPONSES, {"model": "m", "input": "x"}, default_cap=77,
                          safety_id="s")
    assert spec.body["max_output_tokens"] == 77


def test_safety_identifier_is_stable_per_member_and_hides_the_name():
    a = routes.safety_identifier("demo", "alice", "")
    assert a == routes.safety_identifier("demo", "alice", "")
    assert a != routes.safety_identifier("demo", "bob", "")
    assert a != routes.safety_identifier("other", "alice", "")
    assert "alice" not in a and len(a) <= 64
