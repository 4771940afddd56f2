"""Routing: what is served, what is refused, what the proxy adds before forwarding
(``functions/core/routes.py``). What a body may hold: tests/test_bodies.py."""

import pytest

from functions.core import bodies, routes
from functions.core.errors import InvalidRequest, NotFound

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
    bodies.validate(routes.MODERATIONS, named)
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
