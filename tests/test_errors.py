"""functions/core/errors.py: every error Tollgate answers with has OpenAI's shape and its own
status, the tree in the module's docstring is the real class tree, and nothing that
looks like a key survives into a message."""

from __future__ import annotations

import importlib
import json
import re

import pytest

from functions.core import errors
from functions.core.errors import (
    BudgetExceeded,
    InvalidRequest,
    RateLimited,
    TollgateError,
    redact,
)

_NODE = re.compile(
    r"^(?P<lead>[ │├└─]*?)(?P<name>[A-Za-z_][\w.]*)\s+(?P<status>\d{3})\s+"
    r"(?P<type>\w+) / (?P<code>\w+)\s*$"
)


def drawn_tree() -> list[tuple[int, str, int, str, str]]:
    """(depth, dotted name, status, type, code) for each line of the docstring's tree."""
    nodes = []
    for line in (errors.__doc__ or "").splitlines():
        m = _NODE.match(line)
        if m:
            depth = (len(m["lead"]) - 4) // 4
            nodes.append((depth, m["name"], int(m["status"]), m["type"], m["code"]))
    return nodes


def resolve(name: str) -> type:
    module, _, cls = name.rpartition(".")
    return getattr(
        importlib.import_module(f"functions.{module}" if module else "functions.core.errors"), cls
    )


def all_subclasses(cls: type) -> set[type]:
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub, *all_subclasses(sub)}
    return out


def every_error_class() -> list[type[TollgateError]]:
    for _, name, *_ in drawn_tree():  # import the modules the tree names
        resolve(name)
    return sorted([TollgateError, *all_subclasses(TollgateError)], key=lambda c: c.__name__)


def make(
    cls: type[TollgateError], message: str = "Something about 'model'.", **kw: object
) -> TollgateError:
    if issubclass(cls, RateLimited):
        return cls(message, retry_after_s=5, **kw)
    return cls(message, **kw)


# --------------------------------------------------------------------------- the tree


def test_the_docstring_draws_a_tree():
    nodes = drawn_tree()
    assert nodes[0][:2] == (0, "TollgateError")
    assert len(nodes) >= 20
    assert all(d >= 1 for d, *_ in nodes[1:])


def test_the_drawn_tree_matches_the_real_class_hierarchy():
    parents: list[type] = []
    for depth, name, status, etype, code in drawn_tree():
        cls = resolve(name)
        del parents[depth:]
        assert len(parents) == depth, f"{name} is drawn below a missing parent"
        if parents:
            assert cls.__bases__ == (parents[-1],), (
                f"{name} is drawn under {parents[-1].__name__} but derives from "
                f"{[b.__name__ for b in cls.__bases__]}"
            )
        assert (cls.status, cls.type, cls.code) == (status, etype, code), name
        parents.append(cls)


def test_every_error_class_is_drawn_in_the_tree():
    drawn = {resolve(name) for _, name, *_ in drawn_tree()}
    missing = [f"{c.__module__}.{c.__name__}" for c in every_error_class() if c not in drawn]
    assert missing == []


def test_each_class_has_its_own_code():
    classes = every_error_class()
    codes = [c.code for c in classes]
    assert len(set(codes)) == len(codes), sorted(codes)


# --------------------------------------------------------------------------- the shape


@pytest.mark.parametrize("cls", every_error_class(), ids=lambda c: c.__name__)
def test_every_error_has_openais_shape_and_its_status(cls):
    err = make(cls, param="model")
    assert isinstance(err, TollgateError) and isinstance(err, Exception)
    assert 400 <= err.status <= 599
    body = json.loads(err.to_json())
    assert body == err.body()
    assert list(body) == ["error"]
    assert body["error"] == {
        "message": "Something about 'model'.",
        "type": cls.type,
        "param": "model",
        "code": cls.code,
    }


def test_param_defaults_to_null_and_the_default_message_says_nothing_of_the_cause():
    body = TollgateError().body()["error"]
    assert body["param"] is None
    assert body["message"] == "Internal error in the Tollgate proxy."
    assert (TollgateError.status, body["type"], body["code"]) == (
        500,
        "api_error",
        "internal_error",
    )


def test_statuses_callers_rely_on():
    assert (errors.InvalidApiKey.status, errors.InvalidApiKey.code) == (401, "invalid_api_key")
    assert BudgetExceeded.status == RateLimited.status == 429
    assert BudgetExceeded.type == "insufficient_quota"
    assert errors.UpstreamTimeout.status == 504
    assert errors.UpstreamUnavailable.status == 502


# --------------------------------------------------------------------------- headers


def test_rate_limited_says_when_to_retry_in_whole_seconds_at_least_one():
    assert RateLimited("slow down", retry_after_s=7).headers == {"retry-after": "7"}
    assert RateLimited("slow down", retry_after_s=2.9).headers["retry-after"] == "2"
    assert RateLimited("slow down", retry_after_s=0).headers["retry-after"] == "1"
    assert RateLimited("slow down", retry_after_s=-5).headers["retry-after"] == "1"


def test_budget_exceeded_tells_the_sdk_not_to_retry():
    assert BudgetExceeded("over").headers == {"x-should-retry": "false"}
    kept = BudgetExceeded("over", headers={"x-tollgate-scope": "project"}).headers
    assert kept == {"x-tollgate-scope": "project", "x-should-retry": "false"}
    # a caller's own choice wins
    assert BudgetExceeded("over", headers={"x-should-retry": "true"}).headers == {
        "x-should-retry": "true"
    }


def test_other_errors_carry_only_the_headers_given_and_a_copy_of_them():
    assert InvalidRequest("bad").headers == {}
    given = {"x-a": "1"}
    err = InvalidRequest("bad", headers=given)
    given["x-b"] = "2"
    assert err.headers == {"x-a": "1"}


# --------------------------------------------------------------------------- redact

PROXY_KEY = "tg_" + "Ab3" * 13 + "x"  # tg_ + 40 base62 characters
OPENAI_KEY = "sk-proj-Zz9_aB-cD1234567890abcdefgh"
ADMIN_TOKEN = "tga_test_admin_token_0123456789abcdef"


@pytest.mark.parametrize(
    "secret", [PROXY_KEY, OPENAI_KEY, ADMIN_TOKEN, "Bearer some.opaque-token_value"]
)
def test_redact_removes_every_key_like_string(secret):
    out = redact(f"key {secret} was refused; again: {secret} (twice)")
    assert secret not in out
    assert secret[6:] not in out  # not even the tail of it
    assert out.count("…redacted") == 2
    assert out.startswith("key ") and out.endswith(" (twice)")


def test_redact_keeps_ordinary_text():
    text = "Model gpt-4o-mini is not allowed; tg_ keys and sk- keys look like tg_…"
    assert redact(text) == text
    assert redact("task-1234 and disk-usage") == "task-1234 and disk-usage"


def test_an_error_message_never_carries_a_key():
    err = errors.InvalidApiKey(f"The key {PROXY_KEY} is unknown (upstream {OPENAI_KEY}).")
    raw = err.to_json().decode()
    assert PROXY_KEY not in raw and OPENAI_KEY not in raw
    assert PROXY_KEY[3:20] not in raw and OPENAI_KEY[3:20] not in raw
    assert "The key tg_…redacted is unknown" in err.message
