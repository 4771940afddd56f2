"""Token counting for budget holds: how many input tokens a request body holds, and
how many output tokens a text is, per model. The encodings come from ``encodings``
(staged offline, loaded lazily); everything else here is arithmetic over the body.
"""

from __future__ import annotations

import json
from typing import Any

import tiktoken

from functions.core.encodings import CL100K, O200K, OFFLINE, get_encoding

# Our own table, used when tiktoken does not know a model. Longest prefix wins, so
# "gpt-4o" never falls into "gpt-4-"; anything unmatched is o200k_base (every model
# since gpt-4o uses it).
_PREFIXES: tuple[tuple[str, str], ...] = tuple(
    sorted(
        {
            "gpt-6": O200K,
            "gpt-5": O200K,
            "gpt-4.5-": O200K,
            "gpt-4.1": O200K,
            "gpt-4o": O200K,
            "chatgpt-4o-": O200K,
            "o1": O200K,
            "o3": O200K,
            "o4-mini": O200K,
            "codex": O200K,
            "ft:gpt-4o": O200K,
            "gpt-4-": CL100K,
            "gpt-3.5-turbo": CL100K,
            "ft:gpt-3.5-turbo": CL100K,
            "text-embedding-ada-002": CL100K,
            "text-embedding-3-": CL100K,
            "davinci-002": CL100K,
            "babbage-002": CL100K,
        }.items(),
        key=lambda kv: -len(kv[0]),
    )
)

# Chat framing, from the OpenAI cookbook "How to count tokens with tiktoken".
TOKENS_PER_MESSAGE, TOKENS_PER_NAME, REPLY_PRIMING = 3, 1, 3
# A hold cannot see pixels, so take the largest image at detail=high. Tile models
# (gpt-4o, gpt-4.1, gpt-5, o1, o3): 85 + 170 * 8 tiles = 1_445, rounded up.
IMAGE_TOKENS = 1_600
# Patch models: 1_536 patches * up to 2.46; gpt-4o-mini: 2_833 + 5_667 * 8 tiles (its token
# price is ~1/16 of gpt-4o's, so 1_600 would hold a sixteenth of the real cost).
_IMAGE_PREFIXES = (
    ("gpt-4o-mini", 48_200),
    ("ft:gpt-4o-mini", 48_200),
    ("gpt-4.1-mini", 3_800),
    ("gpt-4.1-nano", 3_800),
    ("gpt-5-mini", 3_800),
    ("gpt-5-nano", 3_800),
    ("o4-mini", 3_800),
)
AUDIO_TOKENS = 1_000  # ~100 s at ~10 tokens/s: the length is in the base64, not worth decoding
FILE_TOKENS = 8_000  # a PDF of a few pages (text plus a page image each)
SCALAR_TOKENS = 2  # a number, bool or other non-text leaf where text was expected
_TEXT_PARTS = ("text", "input_text", "output_text", "refusal")  # a tuple: "type" may be unhashable
_BLOB_MIN_CHARS = 1_000  # a "data:" URL this long in an unknown field is a media blob, not text
_SEP = "<|endofprompt|>"  # special token in both encodings; splits one encode() into segments
_CHUNK_CHARS = 50_000


def encoding_name_for_model(model: str) -> str:
    """tiktoken's answer when it has one we can load, else our prefix table, else o200k_base."""
    model = model.strip().lower()
    try:
        name = tiktoken.encoding_name_for_model(model)
    except KeyError:
        name = next((enc for prefix, enc in _PREFIXES if model.startswith(prefix)), O200K)
    # gpt-oss (o200k_harmony) and legacy r50k/p50k/gpt2 models: nearest we can load offline.
    return name if name in OFFLINE else O200K


def image_tokens_for_model(model: str) -> int:
    """Input tokens one image is held at for this model (see IMAGE_TOKENS)."""
    model = model.strip().lower()
    return next((n for prefix, n in _IMAGE_PREFIXES if model.startswith(prefix)), IMAGE_TOKENS)


def _pieces(text: str, size: int) -> list[str]:
    r"""``text`` cut into pieces of about ``size`` characters, only at a single space
    between two non-space characters. tiktoken's pre-tokenizer (cl100k and o200k) never
    lets a piece cross such a point: the space always starts the next piece (" word",
    " 123", " !"), the piece before ends at a non-space, and the one lookahead, in
    ``\s+(?!\S)``, only applies to runs of whitespace. So the counts of the pieces add up
    to the count of the whole, exactly; tests/test_tokens.py checks it on mixed text."""
    out, start, n = [], 0, len(text)
    while n - start > size:
        cut = text.find(" ", start + size)
        while 0 < cut < n - 1 and (text[cut - 1].isspace() or text[cut + 1].isspace()):
            cut = text.find(" ", cut + 1)
        if cut <= 0 or cut >= n - 1:
            break
        out.append(text[start:cut])
        start = cut
    out.append(text[start:])
    return out


def _encode_len(enc: tiktoken.Encoding, text: str) -> int:
    # encode(), not encode_ordinary(): on pathological input the latter panics (a
    # BaseException) where encode() raises ValueError.
    try:
        return len(enc.encode(text, disallowed_special=()))
    except ValueError:
        # tiktoken's regex gives up ("Max stack size exceeded for backtracking") on runs of
        # ~500k+ whitespace. Chunking moves the count by about a token per cut.
        if len(text) <= _CHUNK_CHARS:
            return len(text.encode("utf-8", "surrogatepass"))  # a token is at least a byte
        return sum(
            _encode_len(enc, text[i : i + _CHUNK_CHARS]) for i in range(0, len(text), _CHUNK_CHARS)
        )


def _count_one(enc: tiktoken.Encoding, text: str) -> int:
    # A long text is encoded piece by piece: encode() builds a list of Python ints, ~45
    # bytes a token, so a 7 MiB prompt would cost ~80 MB at once, per concurrent call.
    if len(text) <= _CHUNK_CHARS:
        return _encode_len(enc, text)
    return sum(_encode_len(enc, piece) for piece in _pieces(text, _CHUNK_CHARS))


def _count_many(enc: tiktoken.Encoding, texts: list[str]) -> int:
    """Exactly sum(tokens(t)), in one encode() call where possible (the hot path)."""
    if (
        len(texts) > 1
        and sum(map(len, texts)) <= _CHUNK_CHARS
        and not any(_SEP in t for t in texts)
    ):
        # tiktoken encodes the text between allowed special tokens independently, so each
        # separator adds exactly one token and nothing merges across it.
        try:
            joined = enc.encode(_SEP.join(texts), allowed_special={_SEP}, disallowed_special=())
            return len(joined) - (len(texts) - 1)
        except ValueError:
            pass  # pathological whitespace: _count_one chunks it
    return sum(_count_one(enc, t) for t in texts)


def count_text(text: str, model: str) -> int:
    """Tokens of plain text; special-token strings in it count as ordinary text."""
    return _count_one(get_encoding(encoding_name_for_model(model)), text) if text else 0


# Models that think in tokens the stream never shows: a cut stream's visible text says
# little about what they cost, so such calls are booked at their hold instead.
_HIDDEN_REASONING = ("o1", "o3", "o4", "gpt-5", "gpt-6", "codex")


def hides_reasoning(model: str) -> bool:
    m = model.lower().removeprefix("ft:")
    return m.startswith(_HIDDEN_REASONING) and not m.startswith(("gpt-5-chat", "gpt-5.1-chat"))


def count_output_tokens(text: str, model: str) -> int:
    """Tokens of the output seen so far (to bill a stream that was cut)."""
    return count_text(text, model)


class _Tally:
    """Strings to encode (all at once at the end) plus fixed token amounts."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.texts: list[str] = []
        self.fixed = 0

    def text(self, value: Any) -> None:
        """A field that should hold text: a str counts verbatim, anything else is walked."""
        if isinstance(value, str):
            self.texts.append(value)
        else:
            self.walk(value)

    def walk(self, value: Any) -> None:
        """Any structure: its keys and strings as text; a media blob as one image."""
        stack = [value]  # iterative: parsed JSON can nest deeper than our recursion limit
        while stack:
            item = stack.pop()
            if isinstance(item, str) and len(item) > _BLOB_MIN_CHARS and item.startswith("data:"):
                self.fixed += image_tokens_for_model(self.model)  # base64 text would be ~100x
            elif isinstance(item, str):
                self.texts.append(item)
            elif isinstance(item, dict):
                stack.extend(item.items())
            elif isinstance(item, list | tuple):
                stack.extend(item)
            elif item is not None:
                self.fixed += SCALAR_TOKENS

    def json(self, value: Any) -> None:
        if value is None:
            return
        try:
            self.texts.append(json.dumps(value, ensure_ascii=False, separators=(",", ":")))
        except (ValueError, TypeError, RecursionError):
            self.walk(value)

    def content(self, value: Any) -> None:
        """A message's content: a str, or a list of typed parts (chat and responses kinds)."""
        for part in value if isinstance(value, list) else [value]:
            kind = part.get("type") if isinstance(part, dict) else None
            if not isinstance(part, dict):
                self.text(part)
            elif kind in _TEXT_PARTS:
                self.text(part.get("text", part.get("refusal")))
            elif kind in ("image_url", "input_image", "computer_screenshot"):
                self.fixed += image_tokens_for_model(self.model)
            elif kind == "input_audio":
                self.fixed += AUDIO_TOKENS
            elif kind in ("file", "input_file"):
                self.fixed += FILE_TOKENS
            else:
                self.walk(part)

    def prompt(self, value: Any) -> None:
        """str | list[str] | list[int] | list[list[int]]: token ids count one each."""
        for item in value if isinstance(value, list) else [value]:
            for leaf in item if isinstance(item, list) else [item]:
                if isinstance(leaf, int) and not isinstance(leaf, bool):
                    self.fixed += 1
                else:
                    self.text(leaf)

    def total(self) -> int:
        return self.fixed + _count_many(
            get_encoding(encoding_name_for_model(self.model)), self.texts
        )


def _chat(t: _Tally, body: dict[str, Any]) -> None:
    messages = body.get("messages")
    for msg in messages if isinstance(messages, list) else []:
        t.fixed += TOKENS_PER_MESSAGE
        for key, value in msg.items() if isinstance(msg, dict) else [("", msg)]:
            if key == "content":
                t.content(value)
            elif key == "tool_calls" and isinstance(value, list):
                for call in value:  # name + arguments, not the call id
                    t.json(call.get("function", call) if isinstance(call, dict) else call)
            else:
                t.text(value)
            t.fixed += TOKENS_PER_NAME if key == "name" else 0
    if not isinstance(messages, list):
        t.walk(messages)
    # Tool and schema definitions reach the model in an internal format; their compact
    # JSON is a close, slightly high approximation.
    t.json(body.get("tools"))
    t.json(body.get("functions"))
    t.json(body.get("response_format"))
    t.fixed += REPLY_PRIMING


def _response_item(t: _Tally, item: Any) -> None:
    kind = item.get("type") if isinstance(item, dict) else None
    if not isinstance(item, dict):
        t.walk(item)
    elif "role" in item or kind == "message":
        t.text(item.get("role"))
        t.content(item.get("content"))
    elif kind == "function_call":
        t.text(item.get("name"))
        t.text(item.get("arguments"))
    elif kind in ("function_call_output", "computer_call_output"):
        t.content(item.get("output"))
    elif kind == "reasoning" and isinstance(item.get("summary"), list):
        t.walk([s.get("text") for s in item["summary"] if isinstance(s, dict)])
    else:
        t.walk(item)  # keys and values: close to its JSON without the punctuation


def _responses(t: _Tally, body: dict[str, Any]) -> None:
    if body.get("instructions") is not None:
        t.fixed += TOKENS_PER_MESSAGE + 1  # + its implied system/developer role
        t.text(body["instructions"])
    items = body.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    for item in items if isinstance(items, list) else []:
        t.fixed += TOKENS_PER_MESSAGE
        _response_item(t, item)
    if not isinstance(items, list):
        t.walk(items)
    t.json(body.get("tools"))
    text = body.get("text")
    t.json(text.get("format") if isinstance(text, dict) else None)
    t.fixed += REPLY_PRIMING


def estimate_input_tokens(route: str, body: dict[str, Any], model: str) -> int:
    """Input tokens a request will be billed for, erring slightly high (it sizes a hold)."""
    t = _Tally(model)
    if route == "chat":
        _chat(t, body)
    elif route == "completions":
        t.prompt(body.get("prompt"))
        t.text(body.get("suffix"))
    elif route == "embeddings":
        t.prompt(body.get("input"))
    elif route == "responses":
        _responses(t, body)
    elif route == "moderations":
        inp = body.get("input")
        if isinstance(inp, list) and any(isinstance(x, dict) for x in inp):
            t.content(inp)  # text and image parts
        else:
            t.prompt(inp)
    else:
        raise ValueError(f"unknown route {route!r}")
    return t.total()
