"""Holds, settlement and the sweep against the real Firestore emulator."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from functions.core.errors import BudgetExceeded
from functions.core.pricing import Usage
from functions.store.ledger import Ledger, Outcome
from tests.plans import NOW, Clock
from tests.plans import hold_plan as plan


def ok(cost: int) -> Outcome:
    return Outcome(status="ok", cost_nano=cost, usage=Usage(input_tokens=1, output_tokens=1))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ledger(db, clock) -> Ledger:
    return Ledger(db, clock)


def counter(db, period: str = "2026-11") -> dict:
    """The project counter as the spend pages see it (costs settled inside a still-open
    escrow grant count as spent; ``grants.exact_states``)."""
    from functions.store.grants import exact_states

    cid = f"p|demo|{period}"
    raw = db.collection("counters").document(cid).get().to_dict() or {}
    st = exact_states(db, "demo", [cid])[cid]
    return {**raw, "spent": st.spent, "held": st.held, "inflight": st.inflight, "escrow": st.escrow}


def usage(db) -> dict[str, dict]:
    return {s.id: s.to_dict() for s in db.collection("usage").stream()}


def live(db) -> list[str]:
    return [s.id for s in db.collection("holds").stream() if s.get("state") == "live"]


def test_reserve_then_settle_moves_the_hold_into_spend(db, ledger):
    p = plan(300)
    states = ledger.reserve(p)
    assert (states[0].held, states[0].inflight, states[0].spent) == (300, 1, 0)
    after = ledger.settle(p, ok(120))
    assert after is not None and (after[0].held, after[0].spent, after[0].inflight) == (0, 120, 0)
    assert usage(db)[p.call_id]["cost_nano"] == 120 and live(db) == []


def test_a_retried_settlement_books_once(db, ledger):
    p = plan(300)
    ledger.reserve(p)
    ledger.settle(p, ok(120))
    assert ledger.settle(p, ok(120)) is None
    assert counter(db)["spent"] == 120 and len(usage(db)) == 1


def test_refusal_takes_the_increment_back_and_names_the_limit(db, ledger):
    ledger.reserve(plan(700))
    with pytest.raises(BudgetExceeded) as e:
        ledger.reserve(plan(400))
    assert "held $0.000000700 by 1 call(s) in flight" in e.value.message
    c = counter(db)
    assert (c["held"], c["inflight"]) == (700, 1) and len(live(db)) == 1


@pytest.mark.leaves_holds
def test_estimate_alone_over_the_limit_is_refused_even_when_idle(db, ledger):
    with pytest.raises(BudgetExceeded):
        ledger.reserve(plan(1001))
    assert counter(db)["held"] == 0 and live(db) == []


def test_expired_holds_are_swept_before_anyone_is_refused(db, ledger, clock):
    crashed = plan(800, at=NOW, ttl_s=60)
    ledger.reserve(crashed)  # its instance dies: never settled
    clock.now = NOW + timedelta(seconds=30)
    with pytest.raises(BudgetExceeded, match="by 1 call"):  # not expired: still in flight
        ledger.reserve(plan(300, at=clock.now))
    assert (counter(db)["held"], counter(db)["spent"]) == (800, 0)

    clock.now = NOW + timedelta(seconds=61)
    with pytest.raises(BudgetExceeded) as e:
        ledger.reserve(plan(300, at=clock.now))
    # the crashed call was booked at its estimate (upstream may have billed it) before
    # the refusal, which now reports the spend and no call in flight
    assert "spent $0.000000800, held $0.000000000 by 0 call(s)" in e.value.message
    rec = usage(db)[crashed.call_id]
    assert rec["status"] == "orphaned" and rec["cost_nano"] == 800 and rec["estimated"]
    fresh = plan(150, at=clock.now)
    ledger.reserve(fresh)  # the rest of the budget is free
    ledger.settle(fresh, ok(100))
    c = counter(db)
    assert (c["spent"], c["held"], c["inflight"]) == (900, 0, 0)
    assert sum(r["cost_nano"] for r in usage(db).values()) == c["spent"]


def test_a_late_settlement_corrects_the_orphaned_record(db, ledger, clock):
    p = plan(500)
    ledger.reserve(p)
    clock.now = NOW + timedelta(minutes=5)
    assert ledger.sweep() == 1
    assert counter(db)["spent"] == 500 and live(db) == []
    assert ledger.settle(p, ok(210)) is None  # the call finally comes back
    rec = usage(db)[p.call_id]
    assert rec["status"] == "ok" and rec["cost_nano"] == 210
    assert rec["corrected_from"] == "orphaned" and rec["estimated"] is False
    assert counter(db)["spent"] == 210
    ledger.settle(p, ok(210))  # and once more: nothing moves
    assert counter(db)["spent"] == 210 and len(usage(db)) == 1


def test_sweep_leaves_live_and_settled_holds_alone(db, ledger, clock):
    running, done = plan(100, ttl_s=600), plan(100, ttl_s=1)
    ledger.reserve(running)
    ledger.reserve(done)
    ledger.settle(done, ok(50))
    clock.now = NOW + timedelta(seconds=30)
    assert ledger.sweep() == 0
    ledger.settle(running, ok(60))
    assert {r["status"] for r in usage(db).values()} == {"ok"}


def test_a_new_period_sweeps_the_old_one(db, ledger, clock):
    old = plan(100, at=NOW, ttl_s=60, period="2026-11")
    ledger.reserve(old)
    clock.now = datetime(2026, 12, 1, 0, 5, tzinfo=UTC)
    new = plan(100, at=clock.now, period="2026-12")
    ledger.reserve(new)  # the first call of December
    assert usage(db)[old.call_id]["status"] == "orphaned"
    assert counter(db, "2026-11")["spent"] == 100 and counter(db, "2026-11")["held"] == 0
    ledger.settle(new, ok(100))


def test_sweep_racing_settlement_books_once(db, ledger, clock):
    """Settlement and sweep of the same expired call, many times over, in threads."""
    plans = [plan(100, limit=None) for _ in range(20)]
    for p in plans:
        ledger.reserve(p)
    clock.now = NOW + timedelta(minutes=5)
    threads = [threading.Thread(target=ledger.settle, args=(p, ok(40))) for p in plans]
    threads.append(threading.Thread(target=ledger.sweep))
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    ledger.sweep()
    recs = usage(db)
    assert len(recs) == 20 and all(r["cost_nano"] == 40 for r in recs.values())
    c = counter(db)
    assert (c["spent"], c["held"], c["inflight"]) == (800, 0, 0) and live(db) == []
