"""Which paths the proxy serves, and the rules each request body must follow.

Pure functions: they validate a parsed JSON body, find the output cap, and decide
what the proxy adds before forwarding (the default cap, ``safety_identifier``).
Anything not in ``POST_ROUTES``/models is a 404 and is never forwarded.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from functions.errors import InvalidRequest, NotFound, UnsupportedParameter
from functions.validate import is_name

CHAT, COMPLETIONS, EMBEDDINGS, RESPONSES = "chat", "completions", "embeddings", "responses"
MODELS_LIST, MODEL_GET = "models_list", "model_get"

POST_ROUTES = {
    "/v1/chat/completions": CHAT,
    "/": CHAT,  # the seed project's bare function URL
    "/openai": CHAT,  # the same, as seen at the root of a Cloud Run URL
    "/v1/completions": COMPLETIONS,
    "/v1/embeddings": EMBEDDINGS,
    "/v1/responses": RESPONSES,
}
UPSTREAM_PATH = {
    CHAT: "/chat/completions",
    COMPLETIONS: "/completions",
    EMBEDDINGS: "/embeddings",
    RESPONSES: "/responses",
}
# Output-cap parameter per route, in the order it is looked up; the first is the one
# the proxy sends when the client gave none.
CAP_FIELDS = {
    CHAT: ("max_completion_tokens", "max_tokens"),
    COMPLETIONS: ("max_tokens",),
    RESPONSES: ("max_output_tokens",),
    EMBEDDINGS: (),
}
# Responses/chat tools billed per call by OpenAI; refused unless the project prices them.
BUILT_IN_TOOLS = {
    "web_search", "web_search_preview", "web_search_preview_2025_03_11", "file_search",
    "code_interpreter", "image_generation", "computer_use_preview", "computer_use",
    "mcp", "local_shell", "shell",
}
_MAX_N = 128
_MAX_CAP = 10_000_000  # far above any model's output limit; keeps holds inside int64


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
        return Route(MODEL_GET, path[len("/v1/models/"):])
    raise NotFound(f"Invalid URL ({method} {path[:200]}): Tollgate serves /v1/chat/completions, "
                   "/v1/completions, /v1/embeddings, /v1/responses and /v1/models.")


@dataclass(frozen=True)
class CallSpec:
    route: str
    model: str
    stream: bool
    output_cap: int  # per choice; 0 for embeddings
    n: int  # choices billed (n, or best_of for completions)
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


def _require_type(body: dict[str, Any], name: str, types: tuple[type, ...], what: str,
                  required: bool = False) -> None:
    v = body.get(name)
    if v is None:
        if required:
            raise InvalidRequest(f"Missing required parameter: '{name}'.", param=name)
        return
    if isinstance(v, bool) and bool not in types:
        raise InvalidRequest(f"'{name}' must be {what}.", param=name)
    if not isinstance(v, types):
        raise InvalidRequest(f"'{name}' must be {what}.", param=name)


def _check_tools(body: dict[str, Any], priced_tools: tuple[str, ...]) -> None:
    tools = body.get("tools")
    if tools is None:
        return
    if not isinstance(tools, list):
        raise InvalidRequest("'tools' must be an array.", param="tools")
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
            raise InvalidRequest(f"'tools[{i}]' must be an object with a 'type'.",
                                 param=f"tools[{i}]")
        if tool["type"] in BUILT_IN_TOOLS and tool["type"] not in priced_tools:
            raise UnsupportedParameter(
                f"The built-in tool '{tool['type']}' is billed per call and this project "
                "has no price for it, so its cost cannot be bounded.", param=f"tools[{i}]")


def validate(kind: str, body: Any, *, priced_tools: tuple[str, ...] = ()) -> None:
    """Raise a 400 naming the first field that is missing or of the wrong type."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    model = body.get("model")
    if model is None:
        raise InvalidRequest("Missing required parameter: 'model'.", param="model")
    if not isinstance(model, str) or not model.strip() or not is_name(model):
        raise InvalidRequest("'model' must be a model name (printable ASCII, at most 256 "
                             "characters).", param="model")
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
                raise InvalidRequest(f"'messages[{i}]' must be an object with a 'role'.",
                                     param=f"messages[{i}]")
        if body.get("web_search_options") is not None and "web_search" not in priced_tools:
            raise UnsupportedParameter("'web_search_options' is billed per call and this "
                                       "project has no price for it.", param="web_search_options")
        _check_tools(body, priced_tools)
    elif kind == COMPLETIONS:
        _require_type(body, "prompt", (str, list), "a string or an array", required=True)
    elif kind == EMBEDDINGS:
        _require_type(body, "input", (str, list), "a string or an array", required=True)
        if not body["input"]:
            raise InvalidRequest("'input' must not be empty.", param="input")
    elif kind == RESPONSES:
        _require_type(body, "input", (str, list), "a string or an array")
        _require_type(body, "instructions", (str,), "a string")
        _require_type(body, "previous_response_id", (str,), "a string")
        prev = body.get("previous_response_id")
        if isinstance(prev, str) and (len(prev) > 256 or not prev.isascii()):
            raise InvalidRequest("'previous_response_id' is not a response id.",
                                 param="previous_response_id")
        if body.get("background"):
            raise UnsupportedParameter(
                "'background' responses run after the call ends, so their cost cannot be "
                "held; call without background.", param="background")
        _check_tools(body, priced_tools)


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
    n = 1
    if kind == CHAT:
        n = body.get("n") or 1
    elif kind == COMPLETIONS:
        n = max(body.get("n") or 1, body.get("best_of") or 1)
    return CallSpec(
        route=kind,
        model=body["model"],
        stream=bool(body.get("stream", False)),
        output_cap=cap,
        n=n,
        service_tier=body.get("service_tier"),
        previous_response_id=body.get("previous_response_id"),
        body=out,
        modified=modified,
        client_wants_usage=wants_usage,
    )
