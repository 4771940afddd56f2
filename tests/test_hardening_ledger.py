"""Hardening, part 5: settlement happens once, under concurrency and across transient
Firestore errors (SPEC §2 "nothing is booked twice", issue 10).

A transient error is simulated where it hurts most: the commit RPC really lands and then
raises ``ServiceUnavailable``, as if the answer were lost on the way back, so the
caller's retry sends the same writes a second time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud.firestore_v1.services.firestore.client import FirestoreClient

from functions.core.errors import BudgetExceeded
from functions.core.pricing import Usage
from functions.store.ledger import HoldPlan, Ledger, Outcome
from tests.conftest import bearer
from tests.plans import NOW, Clock, hold_plan

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def plan(estimate: int, limit: int | None = 10_000) -> HoldPlan:
    return hold_plan(estimate, limit=limit)


def ok(cost: int) -> Outcome:
    return Outcome(status="ok", cost_nano=cost, usage=Usage(input_tokens=3, output_tokens=4))


def state(db: Any) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    c = db.collection("counters").document("p|demo|2026-11").get().to_dict() or {}
    return c, {s.id: s.to_dict() or {} for s in db.collection("usage").stream()}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ledger(db: Any, clock: Clock) -> Ledger:
    return Ledger(db, clock)


class LostAnswers:
    """Wraps the Commit RPC of every Firestore client: the commits numbered in ``lose``
    (1-based, counted from arming) land, then raise ServiceUnavailable."""

    def __init__(self) -> None:
        self.real = FirestoreClient.commit
        self.lose: set[int] = set()
        self.count = 0
        self.lost = 0

    def arm(self, *numbers: int) -> None:
        self.lose, self.count, self.lost = set(numbers), 0, 0

    def __call__(self, client: Any, *args: Any, **kwargs: Any) -> Any:
        self.count += 1
        result = self.real(client, *args, **kwargs)
        if self.count in self.lose:
            self.lost += 1
            raise gexc.ServiceUnavailable("the answer was lost (test)")
        return result


@pytest.fixture
def lost_answers(monkeypatch: pytest.MonkeyPatch) -> Iterator[LostAnswers]:
    la = LostAnswers()
    monkeypatch.setattr(FirestoreClient, "commit", lambda client, *a, **k: la(client, *a, **k))
    yield la


# --- retries ----------------------------------------------------------------------------


def test_a_settlement_whose_answer_was_lost_is_retried_without_double_booking(
    db, ledger, lost_answers
):
    p = plan(300)
    ledger.reserve(p)
    lost_answers.arm(1)  # the settle batch lands; its answer does not
    assert ledger.settle(p, ok(120)) is None  # retried: AlreadyExists, then seen as settled
    assert lost_answers.lost == 1 and lost_answers.count >= 2
    c, recs = state(db)
    assert list(recs) == [p.call_id] and recs[p.call_id]["status"] == "ok"
    assert (c["spent"], c["held"], c["inflight"]) == (120, 0, 0)
    hold = db.collection("holds").document(p.call_id).get().to_dict()
    assert hold["state"] == "settled"


def test_a_settlement_that_failed_before_landing_is_retried_once(db, ledger, monkeypatch):
    p = plan(300)
    ledger.reserve(p)
    real, failures = FirestoreClient.commit, []

    def flaky(client: Any, *a: Any, **k: Any) -> Any:
        if not failures:
            failures.append(1)
            raise gexc.ServiceUnavailable("not sent (test)")
        return real(client, *a, **k)

    monkeypatch.setattr(FirestoreClient, "commit", flaky)
    after = ledger.settle(p, ok(120))
    assert after is not None and (after[0].spent, after[0].held) == (120, 0)
    c, recs = state(db)
    assert len(recs) == 1 and (c["spent"], c["held"], c["inflight"]) == (120, 0, 0)


def test_a_late_settlement_whose_answer_was_lost_corrects_once(db, ledger, clock, lost_answers):
    p = plan(500)
    ledger.reserve(p)
    clock.now = NOW + timedelta(minutes=5)
    assert ledger.sweep() == 1
    lost_answers.arm(2)  # 1: the settle batch (AlreadyExists), 2: the correction lands, lost
    with pytest.raises(gexc.ServiceUnavailable):
        ledger.settle(p, ok(210))  # a transaction is not blindly re-sent: the error surfaces
    ledger.settle(p, ok(210))  # the caller's own retry finds it corrected: nothing moves
    c, recs = state(db)
    assert recs[p.call_id]["status"] == "ok" and recs[p.call_id]["corrected_from"] == "orphaned"
    assert (c["spent"], c["held"], c["inflight"]) == (210, 0, 0)


def test_a_refusal_whose_release_answer_was_lost_does_not_release_twice(db, ledger, lost_answers):
    lost_answers.arm(2)  # 1: the increment, 2: the release lands and its answer is lost
    with pytest.raises(BudgetExceeded):
        ledger.reserve(plan(20_000))
    c, _ = state(db)
    assert (c["held"], c["inflight"], c["spent"]) == (0, 0, 0)


@pytest.mark.leaves_holds
def test_a_reserve_whose_answer_was_lost_leaves_no_hold_behind(client, world, lost_answers):
    lost_answers.arm(1)
    r = client.post("/v1/chat/completions", json=CHAT, headers=bearer(world.keys["bob"]))
    assert r.status_code < 500 or world.upstream.received == []
    assert world.live_holds() == []


# --- concurrency --------------------------------------------------------------------------


def race(n: int, fn: Any) -> tuple[list[Any], list[BaseException]]:
    start = threading.Barrier(n)
    results: list[Any] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run() -> None:
        start.wait()
        try:
            out = fn()
            with lock:
                results.append(out)
        except Exception as exc:  # noqa: BLE001 - collected and checked below
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results, errors


def test_ten_concurrent_settlements_of_one_call_book_it_once(db, ledger):
    p = plan(300)
    ledger.reserve(p)
    results, errors = race(10, lambda: ledger.settle(p, ok(120)))
    assert errors == []
    assert sum(r is not None for r in results) == 1  # one batch booked it; 9 found it booked
    c, recs = state(db)
    assert len(recs) == 1 and (c["spent"], c["held"], c["inflight"]) == (120, 0, 0)


def contention(e: BaseException) -> bool:
    """How a Firestore transaction gives up under contention (the proxy logs it and the
    sweep's booking stands): Aborted, or the client's "Failed to commit transaction"."""
    return isinstance(e, gexc.Aborted) or (
        isinstance(e, ValueError) and "Failed to commit transaction" in str(e)
    )


def test_concurrent_late_settlements_correct_the_orphan_once(db, ledger, clock):
    p = plan(500)
    ledger.reserve(p)
    clock.now = NOW + timedelta(minutes=5)
    assert ledger.sweep() == 1
    # Each late settlement is a read-modify-write transaction on the one usage record, so
    # racers serialise (10 of them take the emulator ~10 s of lock timeouts; 4 show it).
    _results, errors = race(4, lambda: ledger.settle(p, ok(210)))
    assert all(contention(e) for e in errors), errors
    ledger.settle(p, ok(210))  # a caller whose attempt gave up retries: it finds it done
    c, recs = state(db)
    assert recs[p.call_id]["status"] == "ok" and recs[p.call_id]["cost_nano"] == 210
    assert (c["spent"], c["held"], c["inflight"]) == (210, 0, 0)


def test_settlements_and_sweeps_racing_on_many_calls_book_each_once(db, ledger, clock):
    plans = [plan(100, limit=None) for _ in range(10)]
    for p in plans:
        ledger.reserve(p)
    clock.now = NOW + timedelta(minutes=5)  # all expired: the sweep may win any of them
    jobs = [lambda p=p: ledger.settle(p, ok(40)) for p in plans] * 2 + [ledger.sweep] * 4
    start = threading.Barrier(len(jobs))
    errors: list[BaseException] = []

    def run(job: Any) -> None:
        start.wait()
        try:
            job()
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(j,)) for j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(contention(e) for e in errors), errors
    for p in plans:  # a settlement that lost its race is replayed, as a caller would
        ledger.settle(p, ok(40))
    c, recs = state(db)
    assert len(recs) == 10 and {r["cost_nano"] for r in recs.values()} == {40}
    assert (c["spent"], c["held"], c["inflight"]) == (400, 0, 0)
    assert [s.id for s in db.collection("holds").stream() if s.get("state") == "live"] == []
