"""The admin API's and the log page's store classes and their in-memory stand-ins
(tests/memory_admin.py) do the same: one scenario of member, key, top-up, limit and
user changes, refusals included, runs against ``Provisioner``/``Membership``/``Topups``/
``Views`` on the emulator and against the stand-ins, from the same documents; the
answers, the errors, the documents left behind and the audit trail must match
(timestamps, keys and random ids aside). The usage reads (records, aggregates by every
grouping, burn rates) are compared over the same records."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.cloud import firestore

from functions.core import auth, pricing
from functions.core.budget import period_key
from functions.core.errors import TollgateError
from functions.core.holds import HoldPlan, Outcome, usage_record
from functions.store import burn
from functions.store.membership import Membership
from functions.store.provision import Provisioner
from functions.store.report_filters import UNTAGGED, Filters
from functions.store.topups import Topups
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
    step(lambda: prov.create_project("lab", external_key="main", budget_usd="2.5", **a))
    step(lambda: prov.create_project("lab", external_key="main", **a))  # taken
    step(lambda: prov.create_project("lab2", external_key="nope", **a))  # no such key
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


def usage(n: int, at: datetime) -> dict[str, Any]:
    """A usage record as settlement writes it: the n-th call, at ``at``."""
    user, model = ("alice", "bob", "bob")[n % 3], ("gpt-4o-mini", "text-embedding-3-small")[n % 2]
    plan = HoldPlan(
        call_id=f"call_{n:04d}",
        project="demo",
        user=user,
        key_name="default" if n % 4 else "ci",
        model=model,
        route="chat",
        budget_period="monthly",
        period_key=period_key("monthly", at),
        limits=(),
        estimate_nano=5000,
        admitted_at=at,
        expires_at=at + timedelta(minutes=10),
        tag=None if n % 5 else "nightly",
    )
    outcome = Outcome(
        status="ok",
        cost_nano=1000 + 37 * n,
        upstream_model=model,
        usage=pricing.Usage(input_tokens=100 + n, cached_tokens=n % 7, output_tokens=20 + n),
    )
    return usage_record(plan, outcome, at + timedelta(seconds=1))


def test_the_usage_views_and_their_stand_ins_agree(db: firestore.Client) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    recs = {
        r["call_id"]: r for r in (usage(n, now - timedelta(hours=7 * n + 1)) for n in range(24))
    }
    for cid, r in recs.items():
        db.collection("usage").document(cid).set(r)
    # the configuration the real aggregates take their candidate groups from
    docs = seed_docs({"alice": auth.new_key(), "bob": auth.new_key()})
    for user in ("alice", "bob"):
        docs["keys"][f"ci-{user}"] = {"project": "demo", "user": user, "name": "ci"}
    write(db, docs)
    real = Views(db)
    mem = MemoryViews(MemoryConfig({}, usage=recs))
    week = now - timedelta(days=7)
    for f in (
        Filters(project="demo"),
        Filters(project="demo", user="bob", after=week),
        Filters(project="demo", model="gpt-4o-mini", key="ci"),
        Filters(project="demo", tag=UNTAGGED, before=now - timedelta(days=1)),
        Filters(project="other"),
    ):
        rows, _ = real.records(f, limit=100)
        assert same(rows) == same(mem.records(f, limit=100)[0]), f
        for group_by in (None, "day", "user", "model", "tag", "key"):
            got = real.aggregate(f, group_by, limit=200, now=now)["data"]
            want = mem.aggregate(f, group_by, limit=200, now=now)["data"]
            assert got == want, (f, group_by)
    budgets = [burn.Budget(None, 10**6, 40_000, 500), burn.Budget("bob", 30_000, 20_000, 0)]
    assert real.burn("demo", "monthly", budgets, now) == mem.burn("demo", "monthly", budgets, now)
