"""Which paths the proxy serves, and the rules each request body must follow.

Pure functions: they validate a parsed JSON body, find the output cap, and decide
what the proxy adds before forwarding (the default cap, ``safety_identifier``).
Anything not in ``POST_ROUTES``/models is a 404 and is never forwarded.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from functions.core.errors import InvalidRequest, NotFound, UnsupportedParameter
from functions.core.validate import is_name

CHAT, COMPLETIONS, EMBEDDINGS, RESPONSES = "chat", "completions", "embeddings", "responses"
MODERATIONS = "moderations"
MODELS_LIST, MODEL_GET = "models_list", "model_get"
# Routes OpenAI does not bill: forwarded for any project (no allowed-models entry, no
# price needed) and booked at $0, so a team needs no organisation key for them.
FREE_ROUTES = (MODERATIONS,)
DEFAULT_MODERATION_MODEL = "omni-moderation-latest"
_MODERATION_MODELS = ("omni-moderation-", "text-moderation-")

POST_ROUTES = {
    "/v1/chat/completions": CHAT,
    "/": CHAT,  # the seed project's bare function URL
    "/openai": CHAT,  # the same, as seen at the root of a Cloud Run URL
    "/v1/completions": COMPLETIONS,
    "/v1/embeddings": EMBEDDINGS,
    "/v1/responses": RESPONSES,
    "/v1/moderations": MODERATIONS,
}
UPSTREAM_PATH = {
    CHAT: "/chat/completions",
    COMPLETIONS: "/completions",
    EMBEDDINGS: "/embeddings",
    RESPONSES: "/responses",
    MODERATIONS: "/moderations",
}
# Output-cap parameter per route, in the order it is looked up; the first is the one
# the proxy sends when the client gave none.
CAP_FIELDS = {
    CHAT: ("max_completion_tokens", "max_tokens"),
    COMPLETIONS: ("max_tokens",),
    RESPONSES: ("max_output_tokens",),
    EMBEDDINGS: (),
    MODERATIONS: (),
}
# Tool types that cost only tokens: the model writes the call, the client runs it. Every
# other type (web search in any version, file search, code interpreter, image generation,
# computer use, MCP, shells, and whatever OpenAI adds next) may be billed per call outside
# `usage`, so it is an allow-list: anything else is refused unless the project prices it
# (``priced_tools`` lists the type).
CLIENT_TOOLS = ("function", "custom")
_MAX_N = 128
_MAX_CAP = 10_000_000  # far above any model's output limit; keeps holds inside int64
_MAX_OUTPUT = _MAX_CAP * _MAX_N  # cap x choices of one call (choices: prompts x n/best_of)


@dataclass(frozen=True)
class Route:
    kind: str
    model_id: str | None = None


def match(method: str, path: str) -> Route:
    if method == "POST" and path in POST_ROUTES:
        return Route(POST_ROUTES[path])
    if method == "GET" and path == "/v1/models":
        return Route(MODELS_LIST)
    if method == "GET" and path.startswith("/v1/models/") and len(path) > len("/v1/models/"):
        return Route(MODEL_GET, path[len("/v1/models/") :])
    raise NotFound(
        f"Invalid URL ({method} {path[:200]}): Tollgate serves /v1/chat/completions, "
        "/v1/completions, /v1/embeddings, /v1/responses, /v1/moderations and "
        "/v1/models."
    )


@dataclass(frozen=True)
class CallSpec:
    route: str
    model: str
    stream: bool
    output_cap: int  # per choice; 0 for embeddings
    n: int  # choices billed (n; for completions prompts x max(n, best_of))
    service_tier: str | None
    previous_response_id: str | None
    body: dict[str, Any]  # what is forwarded
    modified: bool  # body differs from what the client sent
    client_wants_usage: bool = True  # streams: did the client ask for the usage chunk?


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


def with_default_model(kind: str, body: Any) -> Any:
    """Moderations may leave out ``model`` (OpenAI then uses its latest moderation
    model): name it, so the call is booked to the model that answers it."""
    if kind == MODERATIONS and isinstance(body, dict) and body.get("model") is None:
        return {**body, "model": DEFAULT_MODERATION_MODEL}
    return body


def model_of(body: Any) -> str | None:
    """The body's model, if it names one (whether that name is valid is ``validate``'s)."""
    model = body.get("model") if isinstance(body, dict) else None
    return model if isinstance(model, str) else None


def is_moderation_model(model: str) -> bool:
    return model.startswith(_MODERATION_MODELS)


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
        _int_field(body, name, 1, _MAX_CAP)
    for name in ("n", "best_of"):
        _int_field(body, name, 1, _MAX_N)
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


def with_cap(kind: str, body: dict[str, Any], cap: int) -> dict[str, Any]:
    """``body`` asking for at most ``cap`` output tokens per choice: every cap field the
    client sent is lowered (OpenAI takes the smaller of two), or the route's own is added."""
    fields = [f for f in CAP_FIELDS[kind] if body.get(f) is not None] or list(CAP_FIELDS[kind][:1])
    return {**body, **{f: cap for f in fields}}


def prompt_count(prompt: Any) -> int:
    """Prompts in a completions ``prompt``: a string or one token array is one; any other
    list is one prompt per element (strings or token arrays). OpenAI answers every prompt
    with n choices and bills best_of candidates for each."""
    if (
        isinstance(prompt, list)
        and prompt
        and not all(isinstance(x, int) and not isinstance(x, bool) for x in prompt)
    ):
        return len(prompt)
    return 1


def safety_identifier(project: str, user: str, salt: str) -> str:
    """A stable per-member id OpenAI can act on, that does not reveal the name."""
    digest = hashlib.sha256(f"tollgate\0{salt}\0{project}\0{user}".encode()).hexdigest()
    return "tg-" + digest[:32]


def prepare(kind: str, body: dict[str, Any], *, default_cap: int, safety_id: str) -> CallSpec:
    """Find the output cap (adding the project's default when the client gave none, so
    the estimate is a real bound) and add ``safety_identifier``. ``body`` must have
    passed ``validate``; it is not mutated."""
    out = dict(body)
    modified = False
    cap = 0
    fields = CAP_FIELDS[kind]
    if fields:
        given = [body[f] for f in fields if body.get(f) is not None]
        if given:
            cap = max(given)
        else:
            cap = default_cap
            out[fields[0]] = default_cap
            modified = True
    if kind in (CHAT, RESPONSES) and body.get("safety_identifier") is None:
        out["safety_identifier"] = safety_id
        modified = True
    wants_usage = True
    if body.get("stream") and kind in (CHAT, COMPLETIONS):
        # Billing needs the usage chunk; ask for it, and hide it later from a client
        # that did not.
        options = body.get("stream_options") or {}
        wants_usage = options.get("include_usage") is True
        if not wants_usage:
            out["stream_options"] = {**options, "include_usage": True}
            modified = True
    if kind in (CHAT, RESPONSES) and body.get("service_tier") is None:
        # No tier means "the tier set in the OpenAI project", which may be priority,
        # billed above the default rates the hold would use. Ask for standard processing
        # outright. ("auto" is held at the dearest tier it may get: proxy._plan.)
        out["service_tier"] = "default"
        modified = True
    n = 1
    if kind == CHAT:
        n = body.get("n") or 1
    elif kind == COMPLETIONS:
        # Every prompt of a list gets its own n choices (best_of candidates billed).
        prompts = prompt_count(body.get("prompt"))
        n = prompts * max(body.get("n") or 1, body.get("best_of") or 1)
        if cap * n > _MAX_OUTPUT:
            raise InvalidRequest(
                f"'prompt' holds {prompts} prompts: with "
                f"'max_tokens', 'n' and 'best_of' that asks for {cap * n} output tokens, "
                f"more than {_MAX_OUTPUT}.",
                param="prompt",
            )
    return CallSpec(
        route=kind,
        model=body["model"],
        stream=bool(body.get("stream", False)),
        output_cap=cap,
        n=n,
        service_tier=out.get("service_tier"),
        previous_response_id=body.get("previous_response_id"),
        body=out,
        modified=modified,
        client_wants_usage=wants_usage,
    )
