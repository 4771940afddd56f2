"""What any ledger promises, checked on both: the real one (``functions.store.ledger.Ledger``
on the Firestore emulator, escrow grants on as deployed) and the in-memory one that
fast tests use (``tests/memory_ledger.py``). A behaviour the fake gets wrong fails
here, next to the same check passing on the real thing.

Everything is observed through the ledger's own reads: ``states`` (the counters as
the spend pages show them), ``record`` (a call's usage record), ``room``.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from functions.core.budget import limits_for, rate_limits_for
from functions.core.errors import BudgetExceeded, RateLimited
from functions.core.holds import HoldPlan, Outcome
from functions.core.pricing import Usage
from functions.store.ledger import Ledger
from tests.memory_ledger import MemoryLedger

NOW = datetime(2026, 12, 3, 12, 0, 30, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(params=["firestore", "memory"])
def ledger_and_clock(request: pytest.FixtureRequest) -> tuple[Any, Clock]:
    clock = Clock()
    if request.param == "memory":
        return MemoryLedger(clock), clock
    return Ledger(request.getfixturevalue("db"), clock), clock


@pytest.fixture
def ledger(ledger_and_clock: tuple[Any, Clock]) -> Any:
    return ledger_and_clock[0]


def plan(
    estimate: int,
    *,
    budget: int | None = 1000,
    member: int | None = None,
    soft: frozenset[str] = frozenset(),
    rpm: int | None = None,
    ttl_s: int = 60,
) -> HoldPlan:
    return HoldPlan(
        call_id="call_" + secrets.token_hex(8),
        project="lab",
        user="bob",
        key_name="k",
        model="m",
        route="chat",
        budget_period="monthly",
        period_key="2026-12",
        limits=limits_for(
            project="lab",
            user="bob",
            model="m",
            period="2026-12",
            project_limit=budget,
            member_limit=member,
            model_limit=None,
            member_model_limit=None,
            soft=soft,
        ),
        estimate_nano=estimate,
        admitted_at=NOW,
        expires_at=NOW + timedelta(seconds=ttl_s),
        estimate_tokens=10,
        rate_limits=rate_limits_for(
            project="lab",
            user="bob",
            model="m",
            at=NOW,
            project_limits=(rpm, None),
            model_limits=(None, None),
            member_model_limits=(None, None),
        ),
    )


def ok(cost: int) -> Outcome:
    return Outcome(status="ok", cost_nano=cost, usage=Usage(input_tokens=3, output_tokens=4))


def spent_held(ledger: Any, p: HoldPlan) -> tuple[int, int]:
    project = ledger.states(p)[0]
    return project.spent, project.held


def test_a_held_call_is_booked_at_its_cost(ledger):
    p = plan(300)
    ledger.reserve(p)
    assert spent_held(ledger, p) == (0, 300) and ledger.room(p) == 700
    ledger.settle(p, ok(120))
    assert spent_held(ledger, p) == (120, 0) and ledger.room(p) == 880
    rec = ledger.record(p.call_id)
    assert rec is not None
    assert (rec["cost_nano"], rec["status"], rec["estimate_nano"]) == (120, "ok", 300)
    assert (rec["input_tokens"], rec["output_tokens"], rec["user"]) == (3, 4, "bob")


def test_a_call_is_booked_once(ledger):
    p = plan(300)
    ledger.reserve(p)
    ledger.settle(p, ok(120))
    assert ledger.settle(p, ok(120)) is None
    assert spent_held(ledger, p) == (120, 0)


def test_a_call_over_the_budget_is_refused_and_leaves_nothing(ledger):
    first = plan(700)
    ledger.reserve(first)
    ledger.settle(first, ok(700))
    p = plan(301)
    with pytest.raises(
        BudgetExceeded,
        match=r"Budget exceeded for project 'lab'.*"
        r"spent \$0\.000000700",
    ):
        ledger.reserve(p)
    assert spent_held(ledger, p) == (700, 0) and ledger.record(p.call_id) is None
    ledger.reserve(plan(300))  # what is left still fits


def test_the_tightest_limit_refuses_and_is_named(ledger):
    with pytest.raises(BudgetExceeded, match="member 'bob'"):
        ledger.reserve(plan(200, budget=1000, member=100))


def test_a_cancelled_call_gives_its_hold_back_and_is_not_booked(ledger):
    p = plan(600)
    ledger.reserve(p)
    ledger.cancel(p)
    assert spent_held(ledger, p) == (0, 0) and ledger.record(p.call_id) is None
    ledger.reserve(plan(1000))


def test_a_soft_budget_never_refuses_but_names_the_overspend(ledger):
    p = plan(800, budget=500, soft=frozenset({"project"}))
    ledger.reserve(p)
    assert ledger.soft_exceeded(p, 600) == ("project 'lab'",)
    ledger.settle(p, ok(600))
    assert ledger.record(p.call_id)["soft_limits_exceeded"] == ["project 'lab'"]


def test_rpm_refuses_the_call_past_it_with_a_retry_after(ledger):
    ledger.reserve(plan(1, rpm=2))
    ledger.reserve(plan(1, rpm=2))
    with pytest.raises(RateLimited, match="2 requests per minute") as refused:
        ledger.reserve(plan(1, rpm=2))
    assert refused.value.headers.get("retry-after") == "30"


def test_remaining_after_is_the_room_once_settled(ledger):
    p = plan(300)
    ledger.reserve(p)
    assert ledger.remaining_after(p, 100) == 900
    ledger.settle(p, ok(100))
    assert ledger.room(p) == 900


def test_a_cached_answer_is_a_free_record_that_moves_no_counter(ledger):
    p = plan(0)
    ledger.book_cached(p, Usage(input_tokens=5, output_tokens=6))
    rec = ledger.record(p.call_id)
    assert rec is not None and (rec["cost_nano"], rec["cached"], rec["output_tokens"]) == (
        0,
        True,
        6,
    )
    assert spent_held(ledger, p) == (0, 0)


def test_the_sweep_books_an_expired_hold_at_its_estimate(ledger_and_clock):
    ledger, clock = ledger_and_clock
    p = plan(250, ttl_s=5)
    ledger.reserve(p)
    clock.now = NOW + timedelta(seconds=30)
    assert ledger.sweep(project="lab") == 1
    rec = ledger.record(p.call_id)
    assert rec is not None and (rec["status"], rec["cost_nano"], rec["estimated"]) == (
        "orphaned",
        250,
        True,
    )
    assert spent_held(ledger, p) == (250, 0)
    assert ledger.settle(p, ok(10)) is None  # too late: booked once, by the sweep


def test_concurrent_calls_never_overspend(ledger):
    admitted: list[HoldPlan] = []
    lock = threading.Lock()

    def call() -> None:
        p = plan(100)
        try:
            ledger.reserve(p)
        except BudgetExceeded:
            return
        with lock:
            admitted.append(p)

    run_all([call] * 16)
    assert 1 <= len(admitted) <= 10
    for p in admitted:
        ledger.settle(p, ok(100))
    spent, held = spent_held(ledger, admitted[0])
    assert (spent, held) == (100 * len(admitted), 0) and spent <= 1000


def run_all(fns: list[Callable[[], None]]) -> None:
    barrier = threading.Barrier(len(fns))

    def go(fn: Callable[[], None]) -> None:
        barrier.wait()
        fn()

    threads = [threading.Thread(target=go, args=(fn,)) for fn in fns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
