"""What a proxied request's body may hold, route by route: every field Tollgate reads
has the right type and range, tools are an allow-list (built-in tools billed per call
only when the project prices them), and nothing points at content stored elsewhere
whose size no hold could know (files by id, stored prompts, conversations, audio by
id). A refusal is a 400 naming the field. Pure.
"""

from __future__ import annotations

from typing import Any

from functions.core.errors import InvalidRequest, UnsupportedParameter
from functions.core.routes import (
    CAP_FIELDS,
    CHAT,
    COMPLETIONS,
    DEFAULT_MODERATION_MODEL,
    EMBEDDINGS,
    MAX_CAP,
    MAX_N,
    MODERATIONS,
    RESPONSES,
    is_moderation_model,
)
from functions.core.validate import is_name

CLIENT_TOOLS = ("function", "custom")


def _int_field(body: dict[str, Any], name: str, lo: int, hi: int | None = None) -> int | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
        raise InvalidRequest(f"'{name}' must be an integer {bound}.", param=name)
    return v


def _require_type(
    body: dict[str, Any], name: str, types: tuple[type, ...], what: str, required: bool = False
) -> None:
    v = body.get(name)
    if v is None:
        if required:
            raise InvalidRequest(f"Missing required parameter: '{name}'.", param=name)
        return
    if isinstance(v, bool) and bool not in types:
        raise InvalidRequest(f"'{name}' must be {what}.", param=name)
    if not isinstance(v, types):
        raise InvalidRequest(f"'{name}' must be {what}.", param=name)


def _check_tool(tool: Any, param: str, priced_tools: tuple[str, ...]) -> None:
    if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
        raise InvalidRequest(f"'{param}' must be an object with a 'type'.", param=param)
    if tool["type"] not in CLIENT_TOOLS and tool["type"] not in priced_tools:
        raise UnsupportedParameter(
            f"The tool type '{tool['type'][:64]}' is not a function or custom tool: OpenAI may "
            "bill it per call, and this project has no price for it, so its cost cannot be "
            "bounded.",
            param=param,
        )


def _check_tools(body: dict[str, Any], priced_tools: tuple[str, ...]) -> None:
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise InvalidRequest("'tools' must be an array.", param="tools")
        for i, tool in enumerate(tools):
            _check_tool(tool, f"tools[{i}]", priced_tools)
    # tool_choice may name a hosted tool by type, or list allowed tools (Responses:
    # {"type": "allowed_tools", "tools": [...]}, chat: {"type": "allowed_tools",
    # "allowed_tools": {"tools": [...]}}): the same allow-list applies.
    choice = body.get("tool_choice")
    if choice is None or isinstance(choice, str):
        return
    if not isinstance(choice, dict) or not isinstance(choice.get("type"), str):
        raise InvalidRequest(
            "'tool_choice' must be a string or an object with a 'type'.", param="tool_choice"
        )
    if choice["type"] != "allowed_tools":
        _check_tool(choice, "tool_choice", priced_tools)
        return
    inner = choice.get("allowed_tools")
    allowed = inner.get("tools") if isinstance(inner, dict) else choice.get("tools")
    for i, tool in enumerate(allowed if isinstance(allowed, list) else ()):
        _check_tool(tool, f"tool_choice.tools[{i}]", priced_tools)


# Content that lives at OpenAI and is pulled in by reference has a size Tollgate cannot
# see, so no hold can bound it; and since Tollgate proxies neither /v1/files nor
# /v1/conversations, such an object was never created through this project (it may be
# another project's, sharing the organisation's key). Files are refused even inline
# (``file_data``): OpenAI puts a PDF's extracted text plus an image of every page into the
# context, and a spreadsheet goes through its own augmentation, so neither the base64
# length nor tokens.FILE_TOKENS bounds what a file costs. Images stay allowed when sent
# as data or a URL: tokens.py holds each at its model's largest image.
_REF_KEYS = ("file_id", "file_url")
_FILE_PARTS = ("file", "input_file")  # a tuple: "type" may be unhashable


def _refuse_references(value: Any, param: str) -> None:
    """400 unsupported_parameter at a file, file id/URL or item reference in a message
    list or Responses ``input``, at any depth (tool outputs carry content parts too)."""
    # Each node is (value, parent node, key): the path is only spelled out for an error.
    stack: list[tuple[Any, Any, Any]] = [(value, None, param)]
    while stack:
        node = stack.pop()
        item = node[0]
        if isinstance(item, dict):
            kind = item.get("type")
            if kind == "item_reference":
                where = _path(node)
                raise UnsupportedParameter(
                    f"'{where}' is an item_reference: it pulls a stored item Tollgate cannot "
                    "see into the context, so its tokens cannot be held. Send the item "
                    "itself.",
                    param=where,
                )
            if kind in _FILE_PARTS:
                where = _path(node)
                raise UnsupportedParameter(
                    f"'{where}' is a file: what a file costs (its extracted text plus an "
                    "image of each page) cannot be bounded before the call. Send its text, "
                    "or its pages as images.",
                    param=where,
                )
            ref = next((k for k in _REF_KEYS if item.get(k) is not None), None)
            if ref is not None:
                where = _path(node)
                raise UnsupportedParameter(
                    f"'{where}' refers to content by '{ref}', which Tollgate cannot see or "
                    "bound (and files are not uploaded through Tollgate). Send the content "
                    "itself.",
                    param=where,
                )
            stack.extend((v, node, k) for k, v in item.items() if isinstance(v, dict | list))
        elif isinstance(item, list):
            stack.extend((v, node, i) for i, v in enumerate(item) if isinstance(v, dict | list))


def _path(node: tuple[Any, Any, Any]) -> str:
    parts: list[str] = []
    while node[1] is not None:
        key = node[2]
        parts.append(f"[{key}]" if isinstance(key, int) else f".{str(key)[:64]}")
        node = node[1]
    return str(node[2]) + "".join(reversed(parts))


def validate(kind: str, body: Any, *, priced_tools: tuple[str, ...] = ()) -> None:
    """Raise a 400 naming the first field that is missing or of the wrong type."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    model = body.get("model")
    if model is None:
        raise InvalidRequest("Missing required parameter: 'model'.", param="model")
    if not isinstance(model, str) or not model.strip() or not is_name(model):
        raise InvalidRequest(
            "'model' must be a model name (printable ASCII, at most 256 characters).", param="model"
        )
    _require_type(body, "stream", (bool,), "a boolean")
    _require_type(body, "service_tier", (str,), "a string")
    _require_type(body, "safety_identifier", (str,), "a string")
    _require_type(body, "stream_options", (dict,), "an object")
    for name in CAP_FIELDS[kind]:
        _int_field(body, name, 1, MAX_CAP)
    for name in ("n", "best_of"):
        _int_field(body, name, 1, MAX_N)
    if kind == CHAT:
        _require_type(body, "messages", (list,), "an array of messages", required=True)
        if not body["messages"]:
            raise InvalidRequest("'messages' must not be empty.", param="messages")
        for i, m in enumerate(body["messages"]):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise InvalidRequest(
                    f"'messages[{i}]' must be an object with a 'role'.", param=f"messages[{i}]"
                )
            if m.get("audio") is not None:
                # An assistant turn's audio by id: a stored answer of unknown length.
                raise UnsupportedParameter(
                    f"'messages[{i}].audio' refers to audio stored at OpenAI, whose tokens "
                    "Tollgate cannot see; send the transcript as content.",
                    param=f"messages[{i}].audio",
                )
        _refuse_references(body["messages"], "messages")
        if body.get("web_search_options") is not None and "web_search" not in priced_tools:
            raise UnsupportedParameter(
                "'web_search_options' is billed per call and this project has no price for it.",
                param="web_search_options",
            )
        _check_tools(body, priced_tools)
    elif kind == COMPLETIONS:
        _require_type(body, "prompt", (str, list), "a string or an array", required=True)
    elif kind == EMBEDDINGS:
        _require_type(body, "input", (str, list), "a string or an array", required=True)
        if not body["input"]:
            raise InvalidRequest("'input' must not be empty.", param="input")
    elif kind == MODERATIONS:
        # free at OpenAI, so only moderation models: any other model name here would
        # be a way around the project's allowed list and prices
        if not is_moderation_model(model):
            raise InvalidRequest(
                f"'{model}' is not a moderation model; use '{DEFAULT_MODERATION_MODEL}'.",
                param="model",
            )
        _require_type(body, "input", (str, list), "a string or an array", required=True)
        if not body["input"]:
            raise InvalidRequest("'input' must not be empty.", param="input")
        if body.get("stream"):
            raise InvalidRequest("Moderations are not streamed.", param="stream")
    elif kind == RESPONSES:
        _require_type(body, "input", (str, list), "a string or an array")
        _require_type(body, "instructions", (str,), "a string")
        _require_type(body, "previous_response_id", (str,), "a string")
        prev = body.get("previous_response_id")
        if isinstance(prev, str) and (len(prev) > 256 or not prev.isascii()):
            raise InvalidRequest(
                "'previous_response_id' is not a response id.", param="previous_response_id"
            )
        if body.get("background"):
            raise UnsupportedParameter(
                "'background' responses run after the call ends, so their cost cannot be "
                "held; call without background.",
                param="background",
            )
        if body.get("conversation") is not None:
            raise UnsupportedParameter(
                "'conversation' continues a conversation stored at OpenAI. Tollgate does not "
                "proxy /v1/conversations, so none belongs to this project and its tokens "
                "cannot be held; send the earlier turns in 'input' or use "
                "'previous_response_id'.",
                param="conversation",
            )
        if body.get("prompt") is not None:
            raise UnsupportedParameter(
                "'prompt' runs a prompt template stored at OpenAI, whose content Tollgate "
                "cannot see or hold budget for; send its text in 'instructions' and "
                "'input'.",
                param="prompt",
            )
        if isinstance(body.get("input"), list):
            _refuse_references(body["input"], "input")
        _check_tools(body, priced_tools)
