"""Which paths the proxy serves, and what it makes of a checked body (``CallSpec``):
the output cap it holds, and what it adds before forwarding (the default cap,
``safety_identifier``, the service tier). Pure. What a body may hold is ``bodies``'s.
Anything not in ``POST_ROUTES``/models is a 404 and is never forwarded.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from functions.core.errors import InvalidRequest, NotFound

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
MAX_N = 128
MAX_CAP = 10_000_000  # far above any model's output limit; keeps holds inside int64
MAX_OUTPUT = MAX_CAP * MAX_N  # cap x choices of one call (choices: prompts x n/best_of)


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
        if cap * n > MAX_OUTPUT:
            raise InvalidRequest(
                f"'prompt' holds {prompts} prompts: with "
                f"'max_tokens', 'n' and 'best_of' that asks for {cap * n} output tokens, "
                f"more than {MAX_OUTPUT}.",
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
