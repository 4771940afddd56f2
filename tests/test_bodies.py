"""What a proxied request's body may hold (``functions/core/bodies.py``): every field
Tollgate reads, the tool allow-list, and content stored elsewhere refused by name."""

import pytest

from functions.core import bodies, routes
from functions.core.errors import InvalidRequest, UnsupportedParameter

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


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
        bodies.validate(routes.CHAT, body)
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
        bodies.validate(kind, body)
    assert e.value.param == param


def test_background_and_unpriced_built_in_tools_are_refused_by_name():
    with pytest.raises(UnsupportedParameter) as e:
        bodies.validate(routes.RESPONSES, {"model": "m", "input": "x", "background": True})
    assert e.value.param == "background" and e.value.code == "unsupported_parameter"
    body = {
        "model": "m",
        "input": "x",
        "tools": [{"type": "function", "name": "f"}, {"type": "web_search"}],
    }
    with pytest.raises(UnsupportedParameter) as e:
        bodies.validate(routes.RESPONSES, body)
    assert e.value.param == "tools[1]"
    bodies.validate(routes.RESPONSES, body, priced_tools=("web_search",))  # priced: fine


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
        bodies.validate(kind, {**base, **body})
    assert e.value.param == param and e.value.code == "unsupported_parameter"
    assert param.split("[")[0].split(".")[0] in e.value.message


def test_audit6_images_sent_inline_or_by_url_still_pass():
    image = "data:image/png;base64,AAAA"
    bodies.validate(
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
    bodies.validate(
        routes.CHAT,
        {
            **CHAT,
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": image}}]}
            ],
        },
    )
    # reasoning and function-call items carry ids of their own, not references
    bodies.validate(
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
    bodies.validate(
        kind,
        {
            **base,
            "tools": [fn, {"type": "custom", "name": "g"}],
            "tool_choice": {"type": "function", "name": "f"},
        },
    )
    bodies.validate(kind, {**base, "tools": [fn], "tool_choice": "required"})
    for hosted in (
        "web_search_2025_08_26",
        "web_search",
        "apply_patch",
        "file_search",
        "image_generation",
        "some_future_tool",
    ):
        with pytest.raises(UnsupportedParameter) as e:
            bodies.validate(kind, {**base, "tools": [fn, {"type": hosted}]})
        assert e.value.param == "tools[1]"
        bodies.validate(
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
            bodies.validate(kind, {**base, "tools": [fn], "tool_choice": choice})
        assert e.value.param == param
    with pytest.raises(InvalidRequest) as e:
        bodies.validate(kind, {**base, "tool_choice": 3})
    assert e.value.param == "tool_choice"


def test_audit7_web_search_options_still_need_a_web_search_price():
    with pytest.raises(UnsupportedParameter) as e:
        bodies.validate(routes.CHAT, {**CHAT, "web_search_options": {}})
    assert e.value.param == "web_search_options"
    bodies.validate(routes.CHAT, {**CHAT, "web_search_options": {}}, priced_tools=("web_search",))
