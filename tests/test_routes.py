"""Routing and body rules: what is served, what is refused, what the proxy adds."""

import pytest

from functions.core import routes
from functions.core.errors import InvalidRequest, NotFound, UnsupportedParameter

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    "method, path, kind",
    [
        ("POST", "/v1/chat/completions", routes.CHAT),
        ("POST", "/", routes.CHAT),
        ("POST", "/openai", routes.CHAT),
        ("POST", "/v1/completions", routes.COMPLETIONS),
        ("POST", "/v1/embeddings", routes.EMBEDDINGS),
        ("POST", "/v1/responses", routes.RESPONSES),
        ("POST", "/v1/moderations", routes.MODERATIONS),
        ("GET", "/v1/models", routes.MODELS_LIST),
    ],
)
def test_served_routes(method, path, kind):
    assert routes.match(method, path).kind == kind


def test_model_get_carries_the_id():
    assert routes.match("GET", "/v1/models/ft:gpt-4o:org:x").model_id == "ft:gpt-4o:org:x"


@pytest.mark.parametrize(
    "method, path",
    [
        ("POST", "/v1/files"),
        ("GET", "/v1/fine_tuning/jobs"),
        ("GET", "/v1/organization/users"),
        ("GET", "/v1/chat/completions"),
        ("POST", "/v1/chat/completions/"),
        ("DELETE", "/v1/models/x"),
        ("POST", "/v1/models"),
        ("GET", "/v1/models/"),
    ],
)
def test_everything_else_is_404(method, path):
    with pytest.raises(NotFound) as e:
        routes.match(method, path)
    assert e.value.status == 404 and e.value.body()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    "body, param",
    [
        ([1, 2], None),
        ({}, "model"),
        ({"model": 5}, "model"),
        ({"model": ""}, "model"),
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": "hi"}, "messages"),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": [{"content": "x"}]}, "messages[0]"),
        ({**CHAT, "max_tokens": "10"}, "max_tokens"),
        ({**CHAT, "max_tokens": 0}, "max_tokens"),
        ({**CHAT, "max_completion_tokens": True}, "max_completion_tokens"),
        ({**CHAT, "n": 1.5}, "n"),
        ({**CHAT, "stream": "yes"}, "stream"),
        ({**CHAT, "tools": {}}, "tools"),
        ({**CHAT, "service_tier": 3}, "service_tier"),
    ],
)
def test_chat_body_errors_name_the_field(body, param):
    with pytest.raises(InvalidRequest) as e:
        routes.validate(routes.CHAT, body)
    assert e.value.status == 400 and e.value.param == param


@pytest.mark.parametrize(
    "kind, body, param",
    [
        (routes.COMPLETIONS, {"model": "m"}, "prompt"),
        (routes.COMPLETIONS, {"model": "m", "prompt": 3}, "prompt"),
        (routes.EMBEDDINGS, {"model": "m", "input": []}, "input"),
        (routes.EMBEDDINGS, {"model": "m", "input": {"a": 1}}, "input"),
        (routes.RESPONSES, {"model": "m", "input": 3}, "input"),
        (
            routes.RESPONSES,
            {"model": "m", "input": "x", "previous_response_id": 4},
            "previous_response_id",
        ),
        (routes.MODERATIONS, {"model": "gpt-4o-mini", "input": "x"}, "model"),
        (routes.MODERATIONS, {"model": "omni-moderation-latest"}, "input"),
        (routes.MODERATIONS, {"model": "omni-moderation-latest", "input": 3}, "input"),
        (
            routes.MODERATIONS,
            {"model": "omni-moderation-latest", "input": "x", "stream": True},
            "stream",
        ),
    ],
)
def test_other_routes_validate_their_input(kind, body, param):
    with pytest.raises(InvalidRequest) as e:
        routes.validate(kind, body)
    assert e.value.param == param


def test_background_and_unpriced_built_in_tools_are_refused_by_name():
    with pytest.raises(UnsupportedParameter) as e:
        routes.validate(routes.RESPONSES, {"model": "m", "input": "x", "background": True})
    assert e.value.param == "background" and e.value.code == "unsupported_parameter"
    body = {
        "model": "m",
        "input": "x",
        "tools": [{"type": "function", "name": "f"}, {"type": "web_search"}],
    }
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
    body = {
        **CHAT,
        "max_tokens": 50,
        "safety_identifier": "mine",
        "n": 3,
        "service_tier": "default",
    }
    spec = routes.prepare(routes.CHAT, body, default_cap=256, safety_id="tg-x")
    assert spec.output_cap == 50 and spec.n == 3 and not spec.modified
    assert spec.body["safety_identifier"] == "mine"


def test_completions_bill_best_of_and_embeddings_have_no_cap():
    spec = routes.prepare(
        routes.COMPLETIONS,
        {"model": "m", "prompt": "x", "max_tokens": 5, "n": 2, "best_of": 4},
        default_cap=9,
        safety_id="s",
    )
    assert (spec.output_cap, spec.n) == (5, 4) and "safety_identifier" not in spec.body
    spec = routes.prepare(
        routes.EMBEDDINGS, {"model": "m", "input": "x"}, default_cap=9, safety_id="s"
    )
    assert spec.output_cap == 0 and not spec.modified


def test_responses_cap_is_max_output_tokens():
    spec = routes.prepare(
        routes.RESPONSES, {"model": "m", "input": "x"}, default_cap=77, safety_id="s"
    )
    assert spec.body["max_output_tokens"] == 77


def test_safety_identifier_is_stable_per_member_and_hides_the_name():
    a = routes.safety_identifier("demo", "alice", "")
    assert a == routes.safety_identifier("demo", "alice", "")
    assert a != routes.safety_identifier("demo", "bob", "")
    assert a != routes.safety_identifier("other", "alice", "")
    assert "alice" not in a and len(a) <= 64


# --- issue 14: every way to make upstream bill more than the hold ------------------------


def _completions(**body):
    return routes.prepare(
        routes.COMPLETIONS, {"model": "m", "max_tokens": 7, **body}, default_cap=9, safety_id="s"
    )


def test_audit5_completions_list_prompt_holds_every_prompt():
    assert _completions(prompt=["x"] * 150).n == 150
    assert _completions(prompt=[[1, 2], [3]], n=2, best_of=3).n == 2 * 3
    assert _completions(prompt=[[1, 2]], n=2).n == 2
    assert _completions(prompt=[1, 2, 3], n=2).n == 2  # one token array is one prompt
    assert _completions(prompt="x", best_of=4).n == 4
    with pytest.raises(InvalidRequest) as e:  # a hold too large for a budget counter
        _completions(prompt=["x"] * 1000, max_tokens=10_000_000, n=128)
    assert e.value.param == "prompt"


@pytest.mark.parametrize(
    "kind, body, param",
    [
        (routes.RESPONSES, {"conversation": "conv_1"}, "conversation"),
        (routes.RESPONSES, {"conversation": {"id": "conv_1"}}, "conversation"),
        (routes.RESPONSES, {"prompt": {"id": "pmpt_1"}}, "prompt"),
        (routes.RESPONSES, {"input": ["x", {"type": "item_reference", "id": "msg_1"}]}, "input[1]"),
        (
            routes.RESPONSES,
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}]},
            "input[0].content[0]",
        ),
        (
            routes.RESPONSES,
            {
                "input": [
                    {
                        "role": "user",
                        "content": [{"type": "input_file", "file_url": "https://x.test/a.pdf"}],
                    }
                ]
            },
            "input[0].content[0]",
        ),
        (
            routes.RESPONSES,
            {
                "input": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "input_file",
                                "filename": "a.pdf",
                                "file_data": "data:application/pdf;base64,JVBERi0=",
                            }
                        ],
                    }
                ]
            },
            "input[0].content[0]",
        ),
        (
            routes.RESPONSES,
            {
                "input": [
                    {"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}
                ]
            },
            "input[0].content[0]",
        ),
        (
            routes.RESPONSES,
            {
                "input": [
                    {
                        "type": "function_call_output",
                        "call_id": "c",
                        "output": [{"type": "input_file", "file_id": "file-1"}],
                    }
                ]
            },
            "input[0].output[0]",
        ),
        (
            routes.CHAT,
            {
                "messages": [
                    {"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]}
                ]
            },
            "messages[0].content[0]",
        ),
        (
            routes.CHAT,
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "file", "file": {"filename": "a.pdf", "file_data": "JVBERi0="}}
                        ],
                    }
                ]
            },
            "messages[0].content[0]",
        ),
        (
            routes.CHAT,
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "audio": {"id": "audio_1"}},
                    {"role": "user", "content": "again"},
                ]
            },
            "messages[1].audio",
        ),
    ],
)
def test_audit6_content_stored_at_openai_is_refused_by_name(kind, body, param):
    base = {"model": "m", "input": "x"} if kind == routes.RESPONSES else dict(CHAT)
    with pytest.raises(UnsupportedParameter) as e:
        routes.validate(kind, {**base, **body})
    assert e.value.param == param and e.value.code == "unsupported_parameter"
    assert param.split("[")[0].split(".")[0] in e.value.message


def test_audit6_images_sent_inline_or_by_url_still_pass():
    image = "data:image/png;base64,AAAA"
    routes.validate(
        routes.RESPONSES,
        {
            "model": "m",
            "input": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "what is this?"},
                        {"type": "input_image", "image_url": image},
                        {"type": "input_image", "image_url": "https://x.test/cat.png"},
                    ],
                }
            ],
        },
    )
    routes.validate(
        routes.CHAT,
        {
            **CHAT,
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": image}}]}
            ],
        },
    )
    # reasoning and function-call items carry ids of their own, not references
    routes.validate(
        routes.RESPONSES,
        {
            "model": "m",
            "input": [
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {
                    "type": "function_call",
                    "id": "fc_1",
                    "call_id": "c",
                    "name": "f",
                    "arguments": "{}",
                },
                {"type": "function_call_output", "call_id": "c", "output": "42"},
            ],
        },
    )


@pytest.mark.parametrize("kind", [routes.CHAT, routes.RESPONSES])
def test_audit7_tools_are_an_allow_list_of_function_and_custom(kind):
    base = {"model": "m", "input": "x"} if kind == routes.RESPONSES else dict(CHAT)
    fn = {"type": "function", "name": "f"}
    routes.validate(
        kind,
        {
            **base,
            "tools": [fn, {"type": "custom", "name": "g"}],
            "tool_choice": {"type": "function", "name": "f"},
        },
    )
    routes.validate(kind, {**base, "tools": [fn], "tool_choice": "required"})
    for hosted in (
        "web_search_2025_08_26",
        "web_search",
        "apply_patch",
        "file_search",
        "image_generation",
        "some_future_tool",
    ):
        with pytest.raises(UnsupportedParameter) as e:
            routes.validate(kind, {**base, "tools": [fn, {"type": hosted}]})
        assert e.value.param == "tools[1]"
        routes.validate(
            kind, {**base, "tools": [fn, {"type": hosted}]}, priced_tools=(hosted,)
        )  # priced by the project: allowed
    for choice, param in (
        ({"type": "web_search_preview"}, "tool_choice"),
        (
            {"type": "allowed_tools", "mode": "auto", "tools": [fn, {"type": "mcp"}]},
            "tool_choice.tools[1]",
        ),
        (
            {
                "type": "allowed_tools",
                "allowed_tools": {"mode": "auto", "tools": [{"type": "code_interpreter"}]},
            },
            "tool_choice.tools[0]",
        ),
    ):
        with pytest.raises(UnsupportedParameter) as e:
            routes.validate(kind, {**base, "tools": [fn], "tool_choice": choice})
        assert e.value.param == param
    with pytest.raises(InvalidRequest) as e:
        routes.validate(kind, {**base, "tool_choice": 3})
    assert e.value.param == "tool_choice"


def test_audit7_web_search_options_still_need_a_web_search_price():
    with pytest.raises(UnsupportedParameter) as e:
        routes.validate(routes.CHAT, {**CHAT, "web_search_options": {}})
    assert e.value.param == "web_search_options"
    routes.validate(routes.CHAT, {**CHAT, "web_search_options": {}}, priced_tools=("web_search",))


def test_audit9_a_request_without_a_tier_is_sent_as_default():
    for kind, body in ((routes.CHAT, CHAT), (routes.RESPONSES, {"model": "m", "input": "x"})):
        spec = routes.prepare(kind, body, default_cap=9, safety_id="s")
        assert spec.body["service_tier"] == spec.service_tier == "default" and spec.modified
        assert "service_tier" not in body
        for tier in ("auto", "flex", "priority", "default"):
            spec = routes.prepare(
                kind, {**body, "service_tier": tier}, default_cap=9, safety_id="s"
            )
            assert spec.body["service_tier"] == spec.service_tier == tier
    # legacy completions and embeddings take no service_tier
    assert "service_tier" not in _completions(prompt="x").body
    spec = routes.prepare(
        routes.EMBEDDINGS, {"model": "m", "input": "x"}, default_cap=9, safety_id="s"
    )
    assert "service_tier" not in spec.body and not spec.modified


def test_a_moderation_without_a_model_is_booked_to_openais_default():
    named = routes.with_default_model(routes.MODERATIONS, {"input": "x"})
    assert named == {"input": "x", "model": routes.DEFAULT_MODERATION_MODEL}
    routes.validate(routes.MODERATIONS, named)
    # other routes still need their model
    assert routes.with_default_model(routes.EMBEDDINGS, {"input": "x"}) == {"input": "x"}


def test_a_clamped_cap_lowers_every_cap_field_sent_or_adds_the_routes_own():
    both = {**CHAT, "max_tokens": 500, "max_completion_tokens": 400}
    assert routes.with_cap(routes.CHAT, both, 64) == {
        **CHAT,
        "max_tokens": 64,
        "max_completion_tokens": 64,
    }
    assert routes.with_cap(routes.CHAT, CHAT, 64) == {**CHAT, "max_completion_tokens": 64}
    resp = {"model": "m", "input": "x"}
    assert routes.with_cap(routes.RESPONSES, resp, 9) == {**resp, "max_output_tokens": 9}
