"""The arithmetic of escrow grants (``functions/core/escrow.py``), pure: sizing, and that no
sequence of draws, settlements and syncs lets the calls of a grant spend more than the
counters reserve for it, even while a sync is in flight."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from functions.core import escrow
from functions.core.budget import CounterState
from functions.core.escrow import Grant, GrantBook, SyncPlan, free_nano, target_amount

KEY = ("p|demo|2026-11", "m|demo|bob|2026-11")
LIMITS = (10**12, None)


def test_free_is_the_smallest_room_over_limited_counters():
    states = [CounterState(spent=50, held=20, escrow=10), CounterState(spent=10**9)]
    assert free_nano((100, None), states) == 20
    assert free_nano((None, None), states) is None


def test_a_grant_is_sized_by_rate_and_never_near_the_end():
    # 6 calls/s for HORIZON_S at 1000 each, far from any limit
    assert target_amount(rate_per_s=6, mean_estimate=1000, free=None, mine=0) == 60_000
    assert target_amount(rate_per_s=0.1, mean_estimate=1000, free=None, mine=0) == (
        escrow.MIN_CALLS * 1000
    )
    # at most a SHARE of the room around it
    assert target_amount(rate_per_s=100, mean_estimate=1000, free=400_000, mine=0) == 100_000
    # fewer than MIN_FREE_ESTIMATES estimates left: no grant at all
    left = escrow.MIN_FREE_ESTIMATES * 1000 - 1
    assert target_amount(rate_per_s=100, mean_estimate=1000, free=left - 500, mine=500) == 0


def opened(book: GrantBook, amount: int) -> Grant:
    g = Grant(
        id="g",
        project="demo",
        period="2026-11",
        counters=KEY,
        limits=LIMITS,
        amount=amount,
        synced_at=book.clock(),
    )
    book.opened(KEY, g)
    return g


def test_draws_stop_at_the_amount_and_when_the_limits_change():
    book = GrantBook()
    g = opened(book, 2_500)
    assert book.draw(KEY, LIMITS, 1_000) is g and book.draw(KEY, LIMITS, 1_000) is g
    assert book.draw(KEY, LIMITS, 1_000) is None  # 500 left
    assert book.draw(KEY, (10**6, None), 100) is None and g.draining  # budget changed


def test_no_draw_after_the_draw_window():
    now = [0.0]
    book = GrantBook(clock=lambda: now[0])
    opened(book, 10_000)
    now[0] = escrow.DRAW_WINDOW_S + 0.1
    assert book.draw(KEY, LIMITS, 100) is None


ops = st.lists(
    st.tuples(
        st.sampled_from(["draw", "settle", "settle_sync", "sync", "land"]),
        st.integers(1, 2_000),
        st.integers(0, 100),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(amount=st.integers(0, 20_000), script=ops)
def test_calls_never_spend_more_than_the_grant_reserves(amount: int, script) -> None:
    book = GrantBook()
    g = opened(book, amount)
    reserved = amount  # what the counters' escrow holds for g (the last sync that landed)
    spent = 0  # what syncs moved into the counters' spent
    live: list[int] = []  # estimates drawn, not settled
    settled: list[int] = []  # costs of all settled calls
    in_flight = None  # a sync plan not landed yet

    def check() -> None:
        exposure = sum(live) + sum(settled) - spent  # what the calls may still cost
        assert exposure <= reserved, (exposure, reserved)
        if in_flight is not None:  # the write may land: then the new amount must cover
            assert exposure <= in_flight.new_amount + in_flight.flushed
        assert g.available() >= 0 or g.closed

    for op, est, pct in script:
        if op == "draw":
            if book.draw(KEY, LIMITS, est) is g:
                live.append(est)
        elif op in ("settle", "settle_sync") and live:
            e = live.pop(0)
            cost = e * pct // 100
            sp = (
                book.plan_sync(g, own=(e, cost), force=True)
                if (op == "settle_sync" and in_flight is None)
                else None
            )
            if sp is None:
                book.end_settle(g, book.begin_settle(g, e, cost), cost, landed=True)
            else:
                in_flight = sp
            settled.append(cost)
        elif op == "sync" and in_flight is None:
            in_flight = book.plan_sync(g, force=True)
        elif op == "land" and in_flight is not None:
            # what the counters take grows by exactly ``growth``; never without a check
            assert (in_flight.new_amount + spent + in_flight.flushed) - (reserved + spent) == (
                in_flight.growth
            )
            reserved, spent = in_flight.new_amount, spent + in_flight.flushed
            book.synced(in_flight, None, None, ok=True)
            in_flight = None
        check()
    if in_flight is not None:
        reserved, spent = in_flight.new_amount, spent + in_flight.flushed
        book.synced(in_flight, None, None, ok=True)
    check()


def test_a_sync_that_flushes_and_regrows_counts_as_growth():
    """A grant of 10 whose 5 settled units are flushed and which is resized to 8 takes 3
    more from the budget (escrow 10 -> 8, spent +5), although its escrow shrinks: that
    growth must be checked against the limit like any other (it was not, and a busy
    grant near a limit could overshoot by what it flushed)."""
    g = opened(GrantBook(), 10)
    sp = SyncPlan(g, flush_gens=(1,), flushed=5, new_amount=8, inflight_delta=0, close=False)
    assert sp.escrow_delta == -2 and sp.growth == 3
    assert SyncPlan(g, (1,), 5, 5, 0, False).growth == 0  # flushed and resized to the rest
