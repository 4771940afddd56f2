"""functions/core/cache.py: when the response cache is used, its key (the same request written
differently hits, nothing is shared across projects or routes), and which stored
entries may answer a call."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from functions.core import cache

NOW = datetime(2026, 12, 3, 7, 0, tzinfo=UTC)
BODY = {
    "model": "gpt-4o-mini",
    "temperature": 0,
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Größe?"}],
}
ANSWER = json.dumps({"id": "chatcmpl-1", "choices": []}).encode()


# --------------------------------------------------------------------------- wanted


@pytest.mark.parametrize(
    ("enabled", "header", "expected"),
    [
        (True, None, True),
        (False, None, False),
        (False, "use", True),
        (False, " USE ", True),
        (False, "", False),
        (False, "bypass", False),
        (False, "yes", False),
        (True, "use", True),
    ],
)
def test_wanted_by_the_project_or_by_the_callers_header(enabled, header, expected):
    assert cache.wanted(enabled, header) is expected


# --------------------------------------------------------------------------- key


def test_key_is_a_sha256_hex_digest_that_reveals_nothing():
    k = cache.key("demo", "chat", BODY)
    assert re.fullmatch(r"[0-9a-f]{64}", k)
    assert "demo" not in k


def test_key_ignores_the_order_of_keys_at_every_level():
    reordered = {
        "messages": [
            {"content": "Be brief.", "role": "system"},
            {"content": "Größe?", "role": "user"},
        ],
        "temperature": 0,
        "model": "gpt-4o-mini",
    }
    assert cache.key("demo", "chat", reordered) == cache.key("demo", "chat", BODY)


def test_key_is_stable_across_calls_and_serialisations():
    again = json.loads(json.dumps(BODY, ensure_ascii=True, indent=2))
    assert cache.key("demo", "chat", again) == cache.key("demo", "chat", BODY)


def test_key_differs_per_project_route_and_content():
    base = cache.key("demo", "chat", BODY)
    others = {
        cache.key("other", "chat", BODY),
        cache.key("demo", "responses", BODY),
        cache.key("demo", "chat", {**BODY, "temperature": 1}),
        cache.key("demo", "chat", {**BODY, "messages": BODY["messages"][::-1]}),
        cache.key("demo", "chat", {**BODY, "user": "alice"}),
    }
    assert base not in others and len(others) == 5


def test_project_and_route_cannot_be_shifted_into_each_other():
    assert cache.key("ab", "c", {}) != cache.key("a", "bc", {})


# --------------------------------------------------------------------------- entry / usable


def test_an_entry_is_usable_by_its_project_until_it_expires():
    doc = cache.entry("demo", "chat", "gpt-4o-mini", ANSWER, "application/json", 60, NOW)
    assert doc is not None
    assert doc["body"] == ANSWER and doc["content_type"] == "application/json"
    assert (doc["project"], doc["route"], doc["model"]) == ("demo", "chat", "gpt-4o-mini")
    assert doc["created_at"] == NOW and doc["expires_at"] == NOW + timedelta(seconds=60)
    assert cache.usable(doc, "demo", NOW)
    assert cache.usable(doc, "demo", NOW + timedelta(seconds=59, microseconds=999_999))
    assert not cache.usable(doc, "demo", NOW + timedelta(seconds=60))
    assert not cache.usable(doc, "demo", NOW + timedelta(days=1))


def test_another_projects_entry_is_refused():
    doc = cache.entry("demo", "chat", "gpt-4o-mini", ANSWER, "application/json", 60, NOW)
    assert not cache.usable(doc, "other", NOW)
    assert not cache.usable(doc, "", NOW)


def test_a_body_too_big_for_a_firestore_document_is_not_cached():
    assert cache.entry("demo", "chat", "m", b"x" * cache.MAX_BODY_BYTES, "a/b", 60, NOW) is not None
    assert (
        cache.entry("demo", "chat", "m", b"x" * (cache.MAX_BODY_BYTES + 1), "a/b", 60, NOW) is None
    )
    assert cache.MAX_BODY_BYTES < 1024 * 1024


@pytest.mark.parametrize(
    "doc",
    [
        None,
        {},
        {"project": "demo", "body": ANSWER},  # no expiry
        {"project": "demo", "body": ANSWER, "expires_at": None},
        {"project": "demo", "body": ANSWER.decode(), "expires_at": NOW + timedelta(hours=1)},
        {"body": ANSWER, "expires_at": NOW + timedelta(hours=1)},
    ],
)
def test_incomplete_or_odd_documents_are_not_usable(doc):
    assert not cache.usable(doc, "demo", NOW)
