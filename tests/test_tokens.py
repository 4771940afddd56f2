"""Token estimation for budget holds (``functions/core/tokens.py``), with tiktoken kept
offline (the encodings themselves: tests/test_encodings.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import tiktoken

from functions.core import tokens
from tests.tiktoken_offline import offline, seeded_dir

__all__ = ["offline", "seeded_dir"]  # fixtures, used by name


# -- model -> encoding -------------------------------------------------------------------


@pytest.mark.parametrize(
    "model",
    [
        "gpt-4o-mini",
        "gpt-4o",
        "gpt-4o-2024-08-06",
        "chatgpt-4o-latest",
        "gpt-4.1-nano",
        "gpt-4.1",
        "gpt-4.5-preview",
        "gpt-5",
        "gpt-5-mini",
        "gpt-5.1-codex",
        "gpt-6-preview",
        "o1",
        "o1-pro",
        "o3-mini",
        "o3",
        "o4-mini",
        "o4-mini-deep-research",
        "codex-mini-latest",
        "ft:gpt-4o-mini-2024-07-18:acme::abc123",
        "gpt-oss-120b",
        "some-new-model",
        "GPT-4o",
    ],
)
def test_o200k_models(model: str) -> None:
    assert tokens.encoding_name_for_model(model) == "o200k_base"


@pytest.mark.parametrize(
    "model",
    [
        "gpt-4",
        "gpt-4-turbo",
        "gpt-4-0613",
        "gpt-4-32k",
        "gpt-3.5-turbo",
        "gpt-3.5-turbo-0125",
        "text-embedding-ada-002",
        "text-embedding-3-small",
        "text-embedding-3-large",
        "davinci-002",
        "babbage-002",
        "ft:gpt-3.5-turbo-0125:acme::xyz",
    ],
)
def test_cl100k_models(model: str) -> None:
    assert tokens.encoding_name_for_model(model) == "cl100k_base"


def test_legacy_encodings_we_cannot_load_map_to_o200k() -> None:
    assert tokens.encoding_name_for_model("text-davinci-003") == "o200k_base"  # p50k upstream
    with pytest.raises(ValueError, match="unsupported encoding"):
        tokens.get_encoding("p50k_base")


# -- counting ----------------------------------------------------------------------------

COOKBOOK = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that "
        "translates corporate jargon into plain English.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "New synergies will help drive top-line growth.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have "
        "more bandwidth to touch base on opportunities for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean "
        "for the client deliverable.",
    },
]


def cookbook_count(messages: list[dict[str, str]], encoding: str) -> int:
    """num_tokens_from_messages() from the OpenAI cookbook, verbatim in substance."""
    enc = tiktoken.get_encoding(encoding)
    total = 3
    for message in messages:
        total += 3
        for key, value in message.items():
            total += len(enc.encode(value)) + (1 if key == "name" else 0)
    return total


def chat(model: str, messages: Any, **extra: Any) -> int:
    return tokens.estimate_input_tokens(
        "chat", {"model": model, "messages": messages, **extra}, model
    )


@pytest.mark.parametrize("model", ["gpt-4", "gpt-4-0613", "gpt-3.5-turbo"])
def test_cookbook_example_cl100k(model: str) -> None:
    assert chat(model, COOKBOOK) == 129  # the cookbook's (and the API's) figure


@pytest.mark.parametrize("model", ["gpt-4o-mini", "gpt-4o", "gpt-5-mini"])
def test_cookbook_example_o200k(model: str) -> None:
    assert chat(model, COOKBOOK) == cookbook_count(COOKBOOK, "o200k_base") == 124


def test_special_token_text_counts_as_text() -> None:
    text = "before <|endoftext|> after <|endofprompt|>"
    assert chat("gpt-4o", [{"role": "user", "content": text}]) > 10
    enc = tokens.get_encoding("o200k_base")
    assert tokens.count_text(text, "gpt-4o") == len(enc.encode_ordinary(text))
    assert tokens.count_output_tokens(text, "gpt-4o") == tokens.count_text(text, "gpt-4o")
    assert tokens.count_text("", "gpt-4o") == 0


def test_batched_count_equals_separate_counts() -> None:
    texts = [
        "hello",
        " world ",
        "a.\n",
        "",
        "  ",
        "12",
        "34",
        "<|endoftext|>",
        "😀",
        "x\ud800y",
        "end with space ",
        "\n\nnew",
        "<|endofprompt|> inside",
    ]
    for name in ("o200k_base", "cl100k_base"):
        enc = tokens.get_encoding(name)
        separate = sum(len(enc.encode_ordinary(t)) for t in texts)
        assert tokens._count_many(enc, texts) == separate
        assert tokens._count_many(enc, texts[:-1]) == separate - len(enc.encode_ordinary(texts[-1]))


def mixed_text(n: int, seed: int = 7) -> str:
    """Text with what tiktoken's pre-tokenizer treats specially around spaces."""
    import random

    rnd = random.Random(seed)
    atoms = [
        "word",
        "Word",
        "WORD",
        "it's",
        "THEY'LL",
        "12345",
        "3.14",
        "a1b2",
        "!!",
        "...",
        "(x)",
        "é",
        "naïve",
        "日本語",
        "😀",
        "<|endoftext|>",
        "/path/to",
        "\n",
        "-",
        "—",
        "\u00a0",
        "x\u3000y",
        "tab\tbed",
        "'quoted'",
        "$100",
        "#tag",
        "@user",
    ]
    seps = [" ", " ", " ", " ", "  ", "\n", " \n ", "\t", "", ", ", ". "]
    return "".join(rnd.choice(atoms) + rnd.choice(seps) for _ in range(n))


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
def test_long_texts_are_counted_in_pieces_exactly(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    enc = tokens.get_encoding(name)
    text = mixed_text(40_000)
    whole = len(enc.encode(text, disallowed_special=()))
    for size in (200, 1_000, 50_000):
        monkeypatch.setattr(tokens, "_CHUNK_CHARS", size)
        pieces = tokens._pieces(text, size)
        assert "".join(pieces) == text
        if size < len(text):
            assert len(pieces) > len(text) // (size * 4)  # it really cut, many times
        assert tokens._count_one(enc, text) == whole
        assert tokens._count_many(enc, [text, text[:5000]]) == whole + len(
            enc.encode(text[:5000], disallowed_special=())
        )


def test_huge_whitespace_run_does_not_raise() -> None:
    text = " \t" * 500_000
    with pytest.raises(ValueError, match="backtracking"):  # why _count_one chunks
        tokens.get_encoding("o200k_base").encode(text, disallowed_special=())
    assert tokens.count_text(text, "gpt-4o") >= 499_000  # ~one token per " \t"
    two = [{"role": "user", "content": text}, {"role": "user", "content": "x"}]
    assert chat("gpt-4o", two) >= 499_000


def test_images_add_a_constant() -> None:
    text = [{"type": "text", "text": "What is in this picture?"}]
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    base = chat("gpt-4o", [{"role": "user", "content": text}])
    assert chat("gpt-4o", [{"role": "user", "content": text + [image, image]}]) == (
        base + 2 * tokens.IMAGE_TOKENS
    )
    mini = chat("gpt-4o-mini", [{"role": "user", "content": text + [image]}])
    assert mini - chat("gpt-4o-mini", [{"role": "user", "content": text}]) > 40_000
    audio = {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}
    assert chat("gpt-4o", [{"role": "user", "content": text + [audio]}]) == (
        base + tokens.AUDIO_TOKENS
    )


def test_parts_text_matches_plain_text() -> None:
    plain = chat("gpt-4o", [{"role": "user", "content": "Describe the ocean."}])
    parts = [{"type": "text", "text": "Describe the ocean."}]
    assert chat("gpt-4o", [{"role": "user", "content": parts}]) == plain


def test_tools_tool_calls_and_schema_count() -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    msgs = [{"role": "user", "content": "Weather in Paris?"}]
    base = chat("gpt-4o", msgs)
    assert chat("gpt-4o", msgs, tools=tools) == base + tokens.count_text(
        json.dumps(tools, separators=(",", ":")), "gpt-4o"
    )
    call = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    }
    assert chat("gpt-4o", msgs + [call]) > base + 3 + 8
    schema = {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}}
    assert chat("gpt-4o", msgs, response_format=schema) > base + 10


@pytest.mark.parametrize("route", ["completions", "embeddings"])
def test_prompt_forms(route: str) -> None:
    field = "prompt" if route == "completions" else "input"

    def est(value: Any) -> int:
        return tokens.estimate_input_tokens(route, {"model": "gpt-4o", field: value}, "gpt-4o")

    assert est("hello world") == 2
    assert est(["hello world", "hello", ""]) == 3
    assert est([9906, 1917, 13]) == 3
    assert est([[9906, 1917], [13], []]) == 3
    assert est([]) == 0


def test_completions_suffix_counts() -> None:
    body = {"model": "gpt-3.5-turbo-instruct", "prompt": "def f():", "suffix": "return 1"}
    assert tokens.estimate_input_tokens("completions", body, body["model"]) == (
        tokens.count_text("def f():", "gpt-3.5-turbo")
        + tokens.count_text("return 1", "gpt-3.5-turbo")
    )


def responses(model: str, **body: Any) -> int:
    return tokens.estimate_input_tokens("responses", {"model": model, **body}, model)


def test_responses_string_input_counts_like_one_chat_message() -> None:
    text = "Tell me a three sentence bedtime story about a unicorn."
    assert responses("gpt-4o", input=text) == chat("gpt-4o", [{"role": "user", "content": text}])
    instr = "You are terse."
    assert responses("gpt-4o", input=text, instructions=instr) == chat(
        "gpt-4o", [{"role": "system", "content": instr}, {"role": "user", "content": text}]
    )


def test_responses_item_list() -> None:
    msg = {"role": "user", "content": [{"type": "input_text", "text": "What is this?"}]}
    base = responses("gpt-4.1", input=[msg])
    assert base == chat("gpt-4.1", [{"role": "user", "content": "What is this?"}])
    image = {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}
    with_image = {"role": "user", "content": [*msg["content"], image]}
    assert responses("gpt-4.1", input=[with_image]) == base + tokens.IMAGE_TOKENS
    pdf = {"type": "input_file", "file_id": "file-123"}
    assert responses("gpt-4.1", input=[{"role": "user", "content": [pdf]}]) >= tokens.FILE_TOKENS
    items = [
        msg,
        {
            "type": "reasoning",
            "id": "rs_1",
            "summary": [{"type": "summary_text", "text": "Thinking about the image."}],
        },
        {"type": "function_call", "call_id": "c1", "name": "lookup", "arguments": '{"q": "cats"}'},
        {"type": "function_call_output", "call_id": "c1", "output": "Cats are mammals."},
        {"type": "web_search_call", "id": "ws_1", "status": "completed"},
        {"role": "assistant", "content": [{"type": "output_text", "text": "A cat."}]},
    ]
    total = responses("gpt-4.1", input=items)
    assert total > base + 5 * tokens.TOKENS_PER_MESSAGE + 20
    tools = [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}]
    assert responses("gpt-4.1", input=items, tools=tools) > total


@pytest.mark.parametrize(
    "body",
    [
        {"messages": [{"role": "user", "content": 5}]},
        {"messages": "x"},
        {},
        {"messages": None},
        {"messages": [None, 5, "s", True, {"content": {"weird": [1, None, 2.5]}}]},
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        None,
                        3,
                        "raw",
                        {"type": "text", "text": 7},
                        {"type": "mystery", "x": [1]},
                        {},
                    ],
                }
            ]
        },
        {
            "messages": [{"role": "assistant", "tool_calls": [None, "x", {"function": 3}]}],
            "tools": "x",
            "functions": {"a": 1},
            "response_format": 3,
        },
        {"messages": [{"role": "user", "content": "x\ud800"}]},
        {"messages": [{"role": "user", "content": [{"type": ["text"]}, {"type": {"a": 1}}]}]},
    ],
)
def test_odd_chat_shapes_do_not_raise(body: dict[str, Any]) -> None:
    assert (
        chat("gpt-4o", body.get("messages"), **{k: v for k, v in body.items() if k != "messages"})
        >= 3
    )


@pytest.mark.parametrize(
    "route,body",
    [
        ("responses", {"input": 42}),
        (
            "responses",
            {
                "input": [None, 1, "s", {"type": "reasoning", "summary": "x"}],
                "instructions": 3,
                "text": "x",
            },
        ),
        ("responses", {"input": [{"role": "user", "content": {"a": "b"}}], "text": {"format": 1}}),
        ("completions", {"prompt": None}),
        ("completions", {"prompt": [True, None, {"a": 1}, [1, "x", [2]]], "suffix": 4}),
        ("embeddings", {"input": {"text": "x"}}),
    ],
)
def test_odd_shapes_do_not_raise(route: str, body: dict[str, Any]) -> None:
    assert tokens.estimate_input_tokens(route, {"model": "gpt-4o", **body}, "gpt-4o") >= 0


def test_base64_blob_in_an_unknown_part_counts_as_an_image_not_as_text() -> None:
    blob = "data:video/mp4;base64," + "QUFB" * 50_000
    part = {"type": "input_video", "video": {"url": blob}}
    hi = {"type": "text", "text": "hi"}
    base = chat("gpt-4o", [{"role": "user", "content": [hi]}])
    with_blob = chat("gpt-4o", [{"role": "user", "content": [hi, part]}])
    assert base + tokens.IMAGE_TOKENS < with_blob < base + tokens.IMAGE_TOKENS + 20
    # ...but text a caller sends as text is text, whatever it looks like.
    assert chat("gpt-4o", [{"role": "user", "content": blob}]) > 10_000
    shot = {
        "type": "computer_call_output",
        "call_id": "c1",
        "output": {"type": "computer_screenshot", "image_url": blob},
    }
    assert responses("computer-use-preview", input=[shot]) < tokens.IMAGE_TOKENS + 20


def test_deep_nesting_does_not_raise() -> None:
    deep: Any = "leaf"
    for _ in range(5_000):
        deep = [deep]
    assert chat("gpt-4o", [{"role": "user", "content": [{"type": "x", "v": deep}]}]) > 0
    assert chat("gpt-4o", [{"role": "user", "content": "a", "extra": deep}], tools=deep) > 0


def test_unknown_route_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown route"):
        tokens.estimate_input_tokens("images", {"model": "gpt-4o"}, "gpt-4o")


def test_audit5_every_prompt_and_token_array_is_counted() -> None:
    def completions(prompt: Any) -> int:
        return tokens.estimate_input_tokens("completions", {"prompt": prompt}, "gpt-4o")

    one = completions("Say this is a test")
    assert completions(["Say this is a test"] * 150) == 150 * one
    assert completions([1, 2, 3, 4, 5]) == 5  # token ids count one each, by length
    assert completions([[1, 2, 3], [4, 5]]) == 5
    assert completions([[7] * 1000] * 3) == 3000
    embed = tokens.estimate_input_tokens("embeddings", {"input": ["a cat"] * 40}, "gpt-4o")
    assert embed == 40 * tokens.estimate_input_tokens("embeddings", {"input": "a cat"}, "gpt-4o")
    assert (
        tokens.estimate_input_tokens(
            "embeddings", {"input": [[1, 2], [3, 4, 5]]}, "text-embedding-3-small"
        )
        == 5
    )
