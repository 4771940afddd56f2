"""The proxy's reads give the same answers from Firestore (``functions.store.Store`` on
the emulator) and from memory (``tests/memory_store.py``), for the same documents:
the documents the in-memory world seeds, and those the admin API really writes."""

from __future__ import annotations

from typing import Any

import pytest
from google.cloud import firestore

from functions.core import auth
from functions.store.client import Store
from tests.memory_store import Docs, MemoryStore
from tests.memory_world import seed_docs

COLLECTIONS = ("keys", "users", "members", "projects", "models", "limits", "external_keys")


def write(db: firestore.Client, docs: Docs) -> None:
    for collection, by_id in docs.items():
        for doc_id, fields in by_id.items():
            db.collection(collection).document(doc_id).set(fields)


def dump(db: firestore.Client) -> Docs:
    return {c: {s.id: s.to_dict() or {} for s in db.collection(c).stream()} for c in COLLECTIONS}


def both(
    db: firestore.Client, docs: Docs, usage: list[dict[str, Any]] = ()
) -> tuple[Store, MemoryStore]:
    write(db, docs)
    for rec in usage:
        db.collection("usage").document(rec["call_id"]).set(rec)
    return Store(db), MemoryStore(docs, usage={r["call_id"]: r for r in usage})


@pytest.fixture
def keys() -> dict[str, str]:
    return {"alice": auth.new_key(), "bob": auth.new_key()}


def test_a_calls_context_is_the_same_from_both(db, keys):
    docs = seed_docs(keys)
    docs["limits"] = {
        "demo|gpt-4o-mini": {"budget_nano": 5, "rpm": 3, "tpm": None},
        "demo|bob|gpt-4o-mini": {"budget_nano": 2, "budget_soft": True},
    }
    real, mem = both(db, docs)
    for user in ("alice", "bob"):
        kh = auth.key_hash(keys[user])
        for model in ("gpt-4o-mini", "text-embedding-3-small", "no-such-model", None):
            got = real.load_call_context(kh, model)
            assert got is not None and got == mem.load_call_context(kh, model), (user, model)
            assert real.recent_context(kh, model) == mem.recent_context(kh, model) == got
    bob = real.load_call_context(auth.key_hash(keys["bob"]), "gpt-4o-mini")
    assert bob is not None and bob.member_model_limit is not None
    assert (bob.model_limit, bob.member_model_limit.budget_soft) == (
        mem.load_call_context(auth.key_hash(keys["bob"]), "gpt-4o-mini").model_limit,
        True,
    )
    assert real.load_call_context("0" * 64, None) is mem.load_call_context("0" * 64, None) is None


def test_a_context_whose_user_or_project_is_gone_has_none_in_both(db, keys):
    docs = seed_docs(keys)
    del docs["users"]["bob"]
    docs["projects"]["demo"]["archived"] = True
    real, mem = both(db, docs)
    kh = auth.key_hash(keys["bob"])
    got = real.load_call_context(kh, "gpt-4o-mini")
    assert got == mem.load_call_context(kh, "gpt-4o-mini")
    assert got is not None and got.user is None and got.project is not None
    assert got.project.archived


def test_models_external_keys_and_origins_are_the_same(db, keys):
    docs = seed_docs(keys)
    docs["projects"]["web"] = {"id": "web", "cors_origins": ["https://app.example.com"]}
    docs["projects"]["old"] = {
        "id": "old",
        "archived": True,
        "cors_origins": ["https://old.example.com"],
    }
    real, mem = both(db, docs)
    assert real.models() == mem.models() and len(real.models()) == 2
    ids = ["text-embedding-3-small", "nope", "gpt-4o-mini"]
    assert (
        sorted(m.id for m in real.models(ids))
        == sorted(m.id for m in mem.models(ids))
        == ["gpt-4o-mini", "text-embedding-3-small"]
    )
    assert real.external_key("main") == mem.external_key("main") is not None
    assert real.external_key("gone") is mem.external_key("gone") is None
    for origin, listed in (
        ("https://app.example.com", True),
        ("https://old.example.com", False),
        ("https://evil.example.com", False),
    ):
        assert real.origin_listed(origin) is mem.origin_listed(origin) is listed, origin


def test_an_earlier_responses_tokens_are_found_only_in_its_project(db, keys):
    usage = [
        {
            "call_id": "call_1",
            "project": "demo",
            "response_id": "resp_1",
            "input_tokens": 10,
            "output_tokens": 5,
        },
        {
            "call_id": "call_2",
            "project": "other",
            "response_id": "resp_2",
            "input_tokens": 99,
            "output_tokens": 1,
        },
    ]
    real, mem = both(db, seed_docs(keys), usage)
    for project, rid, want in (
        ("demo", "resp_1", 15),
        ("demo", "resp_2", None),
        ("other", "resp_2", 100),
        ("demo", "resp_3", None),
    ):
        assert real.response_tokens(project, rid) == mem.response_tokens(project, rid) == want


def test_what_the_admin_api_writes_reads_the_same_from_memory(world):
    """The world fixture provisions through the real Provisioner and Membership."""
    real, mem = Store(world.db), MemoryStore(dump(world.db))
    for user, key in world.keys.items():
        kh = auth.key_hash(key)
        got = real.load_call_context(kh, "gpt-4o-mini")
        assert got is not None and got.member is not None and got.member.user == user
        assert got == mem.load_call_context(kh, "gpt-4o-mini")
    assert real.models() == mem.models()
    assert real.external_key("main") == mem.external_key("main")
