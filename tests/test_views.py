"""What the pages and reports read (``functions/store/views.py``), on the emulator."""

from __future__ import annotations

from functions.core import ids
from functions.core.budget import CounterState
from functions.store.views import Views


def test_configuration_reads(world):
    v = Views(world.db)
    assert {u["id"] for u in v.all("users")} == {"alice", "bob"}
    assert sorted(m["user"] for m in v.members("demo")) == ["alice", "bob"]
    assert v.members("nope") == []
    assert list(v.where("projects", external_key="main")) == ["demo"]
    assert v.project("demo")["budget_nano"] == 10_000_000_000
    assert v.project("nope") is None


def test_counters_a_missing_one_is_zero_and_ids_are_asked_once(world):
    v = Views(world.db)
    cid = ids.project_counter("demo", "2026-12")
    world.db.collection("counters").document(cid).set(
        {"project": "demo", "spent": 7, "held": 3, "inflight": 1, "escrow": 0}
    )
    other = ids.member_counter("demo", "bob", "2026-12")
    got = v.counters("demo", [cid, other, cid])
    assert got[cid] == CounterState(spent=7, held=3, inflight=1)
    assert got[other] == CounterState()
