"""The admin API's store classes and their in-memory stand-ins (tests/memory_admin.py)
do the same: one scenario of member, key, top-up, limit and user changes, refusals
included, runs against ``Provisioner``/``Membership``/``Topups``/``Views`` on the
emulator and against the stand-ins, from the same documents; the answers, the errors,
the documents left behind and the audit trail must match (timestamps, keys and
random ids aside)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.cloud import firestore

from functions.core import auth
from functions.core.errors import TollgateError
from functions.store.membership import Membership, Topups
from functions.store.provision import Provisioner
from functions.store.views import Views
from tests.memory_admin import (
    MemoryConfig,
    MemoryMembership,
    MemoryProvisioner,
    MemoryTopups,
    MemoryViews,
)
from tests.memory_world import seed_docs
from tests.test_store_contract import write

COLLECTIONS = ("users", "members", "keys", "projects", "limits")
RANDOM_PREFIXES = ("tg_", "tu_")
RANDOM_FIELDS = {"last4", "key_last4", "old_last4", "new_last4"}
ACTOR = "contract"


def same(value: Any) -> Any:
    """``value`` without what differs by nature between two runs: times, keys, ids."""
    if isinstance(value, datetime):
        return "<time>"
    if isinstance(value, str) and value.startswith(RANDOM_PREFIXES):
        return value[:3]
    if isinstance(value, dict):
        return {k: same(x) for k, x in value.items() if k not in RANDOM_FIELDS}
    if isinstance(value, (list, tuple)):
        return [same(x) for x in value]
    return value


def scenario(prov: Any, members: Any, topups: Any, views: Any) -> list[Any]:
    """Every step's answer, or the error it raised, in order."""
    out: list[Any] = []
    until = datetime.now(UTC) + timedelta(days=3)

    def step(fn: Callable[[], Any]) -> Any:
        try:
            got = fn()
        except TollgateError as e:
            out.append((type(e).__name__, e.message, e.param))
            return None
        out.append(same(got))
        return got

    a = {"actor": ACTOR}
    step(lambda: prov.create_user("carol", "Carol", "carol@example.com", **a))
    step(lambda: prov.create_user("carol", **a))  # taken
    step(lambda: members.add_member("demo", "nobody", **a))  # no such user
    key = step(lambda: members.add_member("demo", "carol", budget_nano=10, **a))
    step(lambda: members.add_member("demo", "carol", **a))  # already a member
    step(lambda: members.add_member("nope", "carol", **a))  # no such project
    step(lambda: members.add_key("demo", "carol", "ci", None, {"rpm": 5}, **a))
    step(lambda: members.add_key("demo", "carol", "ci", **a))  # name taken
    step(lambda: members.add_key("demo", "dave", "ci", **a))  # not a member
    step(
        lambda: members.set_key_limits("demo", "carol", "ci", {"rpm": None, "budget_nano": 7}, **a)
    )
    step(lambda: members.set_key_limits("demo", "carol", "gone", {"rpm": 1}, **a))
    step(lambda: members.rotate_key("demo", "carol", "ci", until, **a))
    step(lambda: members.rotate_key("demo", "carol", "gone", **a))
    step(lambda: members.revoke_key("demo", "carol", "default", **a))
    step(lambda: members.revoke_key("demo", "carol", "default", **a))  # already revoked
    step(lambda: members.list_keys("demo", "carol"))
    step(lambda: members.update_member("demo", "carol", {"budget_nano": 20}, **a))
    step(lambda: members.update_member("demo", "dave", {"budget_nano": 20}, **a))
    step(lambda: topups.add("demo", None, 500, until, "project", **a))
    step(lambda: topups.add("demo", "carol", 5, until, "member", **a))
    step(lambda: topups.add("demo", "bob", 5, until, "unlimited member", **a))
    step(lambda: topups.add("demo", "dave", 5, until, "no member", **a))
    step(lambda: topups.of_project("demo", ["alice", "bob", "carol"]))
    step(lambda: prov.set_limit("demo", "gpt-4o-mini", "carol", rpm=3, **a))
    step(lambda: prov.set_limit("demo", "gpt-4o-mini", budget_nano=9, budget_soft=True, **a))
    step(lambda: sorted(views.where("limits", project="demo")))
    step(lambda: prov.delete_limit("demo", "gpt-4o-mini", "carol", **a))
    step(lambda: (prov.exists("limits", "demo|gpt-4o-mini"), prov.exists("users", "dave")))
    step(lambda: prov.update_user("carol", {"disabled": True}, **a))
    step(lambda: prov.update_user("dave", {"disabled": True}, **a))
    step(lambda: prov.update_project("demo", rpm=60, **a))
    step(lambda: prov.update_project("nope", rpm=60, **a))
    step(lambda: prov.get("members", "demo|dave", "member"))
    step(lambda: sorted(u["id"] for u in views.all("users")))
    step(lambda: [m["user"] for m in members.list_members("demo")])
    step(lambda: members.remove_member("demo", "carol", **a))
    step(lambda: members.remove_member("demo", "carol", **a))
    step(lambda: [k["revoked_at"] is not None for k in members.list_keys("demo", "carol")])
    step(lambda: views.project("demo")["rpm"])
    assert key is not None and key.startswith(auth.KEY_PREFIX)
    return out


def documents(docs: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """The collections' documents; keys (whose ids are digests of random keys) in order
    of who holds them and their name."""
    out = {c: same(docs.get(c, {})) for c in COLLECTIONS if c != "keys"}
    out["keys"] = sorted(
        (same(k) for k in docs.get("keys", {}).values()),
        key=lambda k: (k["user"], k["name"], k["revoked_at"] is None, k["expires_at"] or ""),
    )
    return out


def trail(records: list[dict[str, Any]]) -> list[Any]:
    mine = [r for r in records if r.get("actor") == ACTOR]
    return [same({k: r[k] for k in ("action", "target", "details")}) for r in mine]


@pytest.fixture
def keys() -> dict[str, str]:
    return {"alice": auth.new_key(), "bob": auth.new_key()}


def test_the_admin_stores_and_their_stand_ins_agree(db: firestore.Client, keys) -> None:
    write(db, seed_docs(keys))
    real = scenario(Provisioner(db), Membership(db), Topups(db), Views(db))
    config = MemoryConfig(seed_docs(keys))
    mem = scenario(
        MemoryProvisioner(config),
        MemoryMembership(config),
        MemoryTopups(config),
        MemoryViews(config),
    )
    for n, (r, m) in enumerate(zip(real, mem, strict=True)):
        assert r == m, f"step {n}"
    dumped = {c: {s.id: s.to_dict() or {} for s in db.collection(c).stream()} for c in COLLECTIONS}
    assert documents(dumped) == documents(config.docs)
    audit = sorted(
        (s.to_dict() or {} for s in db.collection("audit").stream()), key=lambda r: r["ts"]
    )
    assert trail(audit) == trail(list(config.docs["audit"].values()))
    assert len(trail(audit)) >= 15  # the scenario's changes were recorded, not nothing
