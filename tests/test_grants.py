"""Escrow grants on the real Firestore emulator: the hot counters are written once per
grant sync instead of twice per call, and every guarantee of the per-call path holds
(zero overshoot, exact counters, nothing lost on a crash, a lowered budget or a new
period seen at once)."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from google.cloud.firestore_v1.batch import WriteBatch

from functions.core import escrow
from functions.core.budget import CounterState
from functions.core.errors import BudgetExceeded
from functions.store.ledger import Ledger
from tests.conftest import burst
from tests.test_ledger import NOW, Clock, ok, plan, usage

EST = 1_000
BIG = 10**9  # far from the limit: grants are used


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Document path -> writes committed, for every batch of the test."""
    seen: Counter[str] = Counter()
    lock = threading.Lock()
    real = WriteBatch.commit

    def commit(self: WriteBatch, *a: Any, **kw: Any) -> Any:
        names = [w.update.name or w.delete or w.transform.document for w in self._write_pbs]
        result = real(self, *a, **kw)  # (it empties _write_pbs)
        with lock:
            for name in names:
                seen[name.split("/documents/", 1)[-1]] += 1
        return result

    monkeypatch.setattr(WriteBatch, "commit", commit)
    return seen


def counters(db) -> dict[str, CounterState]:
    return {s.id: CounterState.of(s.to_dict()) for s in db.collection("counters").stream()}


def grants(db) -> list[dict]:
    return [s.to_dict() or {} for s in db.collection("grants").stream()]


def call(ledger: Ledger, *, limit: int | None = BIG, cost: int = EST, **kw: Any) -> None:
    p = plan(EST, limit=limit, **kw)
    ledger.reserve(p)
    ledger.settle(p, ok(cost))


def close_everything(db, clock: Clock) -> None:
    """What the sweep does once the instance is gone: grants closed, holds booked."""
    clock.now = NOW + timedelta(hours=3)
    while Ledger(db, clock).sweep():
        pass


def assert_exact(db) -> None:
    """Every counter equals the sum of the usage records booked on it, nothing held."""
    recs = usage(db).values()
    for cid, st in counters(db).items():
        booked = sum(
            r["cost_nano"]
            for r in recs
            if cid == f"p|demo|{r['period']}" or cid == f"m|demo|bob|{r['period']}"
        )
        assert (st.spent, st.held, st.escrow, st.inflight) == (booked, 0, 0, 0), cid
    # closed grants carry the TTL field; an open one never does (see the busy test)
    assert all(g["state"] == "closed" and g.get("purge_at") for g in grants(db))


def test_a_busy_limit_set_writes_its_counters_per_sync_not_per_call(db, clock, writes):
    ledger = Ledger(db, clock)
    for _ in range(200):
        call(ledger)
    per_doc = {k: v for k, v in writes.items() if k.startswith("counters/")}
    # two writes per call before; now the counters move when a grant opens or syncs
    # (a sync is due when a grant runs low, which a fast loop of calls does quickly)
    assert max(per_doc.values()) < 200 * 2 / 4, per_doc
    grant_calls = sum(1 for r in usage(db).values() if r["status"] == "ok")
    assert grant_calls == 200
    [g] = grants(db)
    assert g["state"] == "open" and g["amount"] > 0 and "purge_at" not in g
    st = counters(db)["p|demo|2026-11"]
    assert st.held == 0 and st.escrow == g["amount"]
    close_everything(db, clock)
    assert_exact(db)
    assert counters(db)["p|demo|2026-11"].spent == 200 * EST


def test_many_threads_drawing_from_one_grant_never_pass_the_limit(db, clock):
    """Budget for 150 calls, 300 callers after a warm-up: grants while the budget is far
    from its end, per-call holds near it; spend never passes the limit."""
    limit = 150 * EST
    escrow_min, escrow.MIN_FREE_ESTIMATES = escrow.MIN_FREE_ESTIMATES, 20
    try:
        ledger = Ledger(db, clock)
        for _ in range(10):
            call(ledger, limit=limit)
        refused = [0]

        def one() -> None:
            try:
                call(ledger, limit=limit)
            except BudgetExceeded:
                refused[0] += 1

        burst(60, lambda: [one() for _ in range(5)])
    finally:
        escrow.MIN_FREE_ESTIMATES = escrow_min
    st = counters(db)["p|demo|2026-11"]
    book = [(g.amount, g.live, g.unflushed, g.closed, g.draining) for g in ledger.book.grants()]
    assert st.spent + st.held + st.escrow <= limit, (st, grants(db), book, refused)
    close_everything(db, clock)
    assert_exact(db)
    spent = counters(db)["p|demo|2026-11"].spent
    assert spent <= limit and spent == (10 + 300 - refused[0]) * EST, (spent, refused)
    # nothing stays locked: with the instance gone, what is left is free again
    assert limit - spent < EST * 2 or refused[0] == 0


def test_a_crash_with_a_grant_out_is_recovered_by_the_sweep(db, clock):
    ledger = Ledger(db, clock)
    for _ in range(6):
        call(ledger)
    inflight = [plan(EST, limit=BIG, ttl_s=3600) for _ in range(3)]
    for p in inflight:
        ledger.reserve(p)  # drawn from the grant; then the instance dies (kill -9)
    assert ledger.desk._drawn and grants(db)[0]["state"] == "open"
    del ledger
    # before the grant lapses, nothing is touched
    assert Ledger(db, clock).sweep() == 0
    clock.now = NOW + timedelta(seconds=escrow.DRAW_WINDOW_S + escrow.CLOSE_MARGIN_S + 1)
    assert Ledger(db, clock).sweep() >= 1
    [g] = grants(db)
    st = counters(db)["p|demo|2026-11"]
    # the grant gave back what it held; its three live calls hold their estimates
    assert g["state"] == "closed" and st.escrow == 0 and st.held == 3 * EST
    assert st.inflight == 3 and st.spent == 6 * EST
    close_everything(db, clock)  # the holds expire: booked orphaned at their estimate
    recs = usage(db)
    assert sorted(r["status"] for r in recs.values()).count("orphaned") == 3
    assert_exact(db)


def test_a_settlement_after_its_grant_was_closed_books_on_the_counters(db, clock):
    ledger = Ledger(db, clock)
    for _ in range(6):
        call(ledger)
    late = plan(EST, limit=BIG, ttl_s=3600)
    ledger.reserve(late)
    assert ledger.desk.drawn(late.call_id)
    clock.now = NOW + timedelta(seconds=escrow.DRAW_WINDOW_S + escrow.CLOSE_MARGIN_S + 1)
    assert Ledger(db, clock).sweep() >= 1  # another instance's sweep closes the grant
    assert ledger.settle(late, ok(400)) is None  # the hold's precondition fails: fallback
    st = counters(db)["p|demo|2026-11"]
    assert (st.held, st.escrow, st.inflight, st.spent) == (0, 0, 0, 6 * EST + 400)
    assert usage(db)[late.call_id]["cost_nano"] == 400
    assert_exact(db)


def test_a_lowered_budget_stops_drawing_at_once(db, clock):
    ledger = Ledger(db, clock)
    for _ in range(6):
        call(ledger)
    assert grants(db)[0]["state"] == "open"
    # an admin lowers the project budget to what is spent: the very next call is refused
    with pytest.raises(BudgetExceeded):
        ledger.reserve(plan(EST, limit=6 * EST))
    # and the grant made under the old budget is drained by the next settlement
    call(ledger, limit=BIG)
    close_everything(db, clock)
    assert_exact(db)


def test_a_new_period_while_a_grant_is_out(db, clock):
    ledger = Ledger(db, clock)
    for _ in range(6):
        call(ledger, period="2026-11")
    for _ in range(6):
        call(ledger, period="2026-12")  # a new period: new counters, a grant of its own
    periods = sorted(g["period"] for g in grants(db))
    assert periods == ["2026-11", "2026-12"]
    close_everything(db, clock)
    assert counters(db)["p|demo|2026-11"].spent == 6 * EST
    assert counters(db)["p|demo|2026-12"].spent == 6 * EST
    assert_exact(db)


def test_no_grant_near_the_end_of_a_budget(db, clock):
    """With fewer than MIN_FREE_ESTIMATES calls left, every call holds on its own."""
    ledger = Ledger(db, clock)
    for _ in range(20):
        call(ledger, limit=50 * EST)
    assert grants(db) == []


def test_refusals_at_a_full_budget_write_nothing_to_the_counters(db, clock, writes):
    """A storm of refusals at the end of a budget reads the counters instead of writing
    an increment and its take-back to them (599 writes in 10 s on one document in the
    benchmark's run-out before this)."""
    ledger = Ledger(db, clock)
    for _ in range(3):
        call(ledger, limit=3 * EST)
    writes.clear()
    for _ in range(20):
        with pytest.raises(BudgetExceeded, match="spent \\$0.000003000"):
            ledger.reserve(plan(EST, limit=3 * EST))
    assert not [k for k in writes if k.startswith("counters/")], writes
    # and once the budget is raised, the next call is admitted on its own increment
    call(ledger, limit=4 * EST)
    assert counters(db)["p|demo|2026-11"].spent == 4 * EST
