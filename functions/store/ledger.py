"""Holds and settlement: every write that moves money on the counters, on Firestore.

Design (measured on the emulator, see docs/data-model.md "Why increment-then-verify"):
a read-modify-write transaction on a hot budget document serialises and aborts
under concurrency (40 callers: 1 succeeded). So no write here reads a counter:

* reserve: ONE atomic batch increments ``held``/``inflight`` of every applicable
  counter by the estimate and creates ``holds/{call_id}``. The commit returns the
  post-increment values (``WriteResult.transform_results``); if any limit is
  exceeded, a second batch takes the increment back and the call is refused.
* settle: ONE atomic batch moves the estimate from ``held`` to the actual cost in
  ``spent``, *creates* ``usage/{call_id}`` and marks the hold settled. ``create``
  fails if the record exists, which makes the batch all-or-nothing idempotent: a
  retried settlement, or one that arrives after the sweep booked the call, falls
  back to ``_correct`` (a transaction reading only that call's own documents).
* escrow: a busy limit set is served from a grant (``escrow.py``, ``grants.py``):
  the counters are written when the grant opens or syncs, riding on a settlement
  batch; a call drawn from it writes only its own hold and usage record.
* sweep (``sweep.py``): lapsed grants are closed and expired live holds booked
  ``orphaned`` at their estimate (upstream may have billed the call).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, NoReturn

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1 import Increment

from functions.core.budget import (
    CounterState,
    Limit,
    WindowState,
    first_breach,
    rate_breach,
    rate_refusal,
    refusal_message,
    remaining_nano,
    soft_crossed,
)
from functions.core.errors import BudgetExceeded, RateLimited
from functions.core.escrow import (
    CLOSE_MARGIN_S,
    DRAW_WINDOW_S,
    GrantBook,
)
from functions.core.holds import (  # HoldPlan and Outcome are re-exported
    HoldPlan,
    Outcome,
    counter_fields,
    first_of_period,
    hold_doc,
    key_of,
    limits_of,
    states_of,
    usage_record,
    utcnow,
    windows_of,
)
from functions.core.pricing import Usage
from functions.core.settings import Settings
from functions.store.books import TRANSIENT, Books, unreachable
from functions.store.grant_desk import GrantDesk
from functions.store.grants import add_sync, counter_delta, exact_states
from functions.store.sweep import HoldSweeper

log = logging.getLogger("tollgate.ledger")

SWEEP_BEFORE_REFUSAL_S = 5.0


class Ledger:
    """The budget path of one instance: per-call holds on the counters, escrow grants
    (``GrantDesk``) for busy limit sets, and the sweep."""

    def __init__(
        self,
        db: firestore.Client,
        clock: Callable[[], datetime] = utcnow,
        escrow: bool = True,
        draw_window_s: float = DRAW_WINDOW_S,
        close_margin_s: float = CLOSE_MARGIN_S,
    ) -> None:
        self.io = Books(db, clock)
        self.desk = GrantDesk(self.io, escrow=escrow, draw_window_s=draw_window_s)
        self.sweeper = HoldSweeper(db, clock, close_margin_s)
        self._lock = threading.Lock()
        # call id -> its hold's update time, for calls held on the counters one by one
        self._held: dict[str, Any] = {}
        self._swept_at: dict[str, float] = {}  # project -> last sweep before a refusal

    @property
    def db(self) -> firestore.Client:
        return self.io.db

    @property
    def clock(self) -> Callable[[], datetime]:
        return self.io.clock

    @property
    def writes(self) -> int:
        """Document writes issued, for the benchmark."""
        return self.io.writes

    @property
    def book(self) -> GrantBook:
        return self.desk.book

    # --- reserve -------------------------------------------------------------

    def reserve(self, plan: HoldPlan) -> list[CounterState] | None:
        """Hold the estimate against every limit, or raise BudgetExceeded.

        Expired holds are swept before anyone is refused, so a refusal never rests on
        a hold nobody will settle: they are booked ``orphaned`` at their estimate
        (which keeps the spend, since upstream may have billed them) and the refusal
        reports only calls really in flight.

        A call whose limit set has an escrow grant with room draws from it instead:
        the only write is its own hold document (see ``escrow.py``)."""
        if self.desk.reserve_from_grant(plan) or self.desk.open_for(plan):
            return None
        self._refuse_if_full(plan)
        states, windows = self._increment(plan)
        rate = rate_breach(plan.rate_limits, windows)
        breach = first_breach(plan.limits, states)
        if rate is None and breach is not None and self.desk.return_unused(plan):
            # this instance sat on part of the room (a grant made under other limits, or
            # one draining near the end): it went back to the counters; decide again
            self._release(plan)
            states, windows = self._increment(plan)
            rate = rate_breach(plan.rate_limits, windows)
            breach = first_breach(plan.limits, states)
        if rate is None and breach is None:
            if first_of_period(states[0], plan.estimate_nano):
                # A new period (or a first call) starts: book holds orphaned in the
                # last one now, rather than waiting for someone to be refused.
                self.sweep(project=plan.project)
            self.desk.book.note_states(key_of(plan), limits_of(plan), states)
            return states
        self._release(plan)
        if rate is not None:
            message, wait = rate_refusal(rate, plan.admitted_at)
            raise RateLimited(message, retry_after_s=wait)
        assert breach is not None
        self._refuse(plan, *breach)

    def _refuse(self, plan: HoldPlan, limit: Limit, state: CounterState) -> NoReturn:
        """Raise the refusal, after sweeping expired holds (at most every
        ``SWEEP_BEFORE_REFUSAL_S`` per project on this instance: a storm of refusals at
        the end of a budget must not run a sweep query each)."""
        now = self.io.clock().timestamp()  # the ledger's clock: tests move it
        with self._lock:
            due = now - self._swept_at.get(plan.project, -1e18) >= SWEEP_BEFORE_REFUSAL_S
            if due:
                self._swept_at[plan.project] = now
        if due and self.sweep(project=plan.project):
            state = self._counter_state(limit.counter_id, plan.estimate_nano)
        raise BudgetExceeded(
            refusal_message(limit, state, plan.estimate_nano, plan.budget_period, plan.period_key)
        )

    def _refuse_if_full(self, plan: HoldPlan) -> None:
        """Near the end of a budget, refuse without writing: when the room last seen is
        smaller than the estimate, the counters are *read* (a read does not add to a hot
        document's write load) and a call they have no room for is refused from that
        read. A refusal from a read is as exact as one from an increment: at that
        instant the budget, net of holds and grants, had no room for the estimate."""
        free = self.desk.book.free(key_of(plan))
        if free is None or free >= plan.estimate_nano:
            return
        states = self._read_states(plan)
        self.desk.book.note_states(key_of(plan), limits_of(plan), states)
        breach = first_breach(plan.limits, [st.with_call(plan.estimate_nano) for st in states])
        if breach is None or self.desk.return_unused(plan):
            return  # room after all (or given back by this instance): hold it for real
        self._refuse(plan, *breach)

    def remaining(self, plan: HoldPlan) -> int | None:
        """``limit - spent - held - escrow`` as last seen for this call's limits: the
        budget header of a call settled inside a grant, which wrote no counter."""
        return self.desk.book.free(key_of(plan))

    def soft_exceeded(self, plan: HoldPlan, cost_nano: int) -> tuple[str, ...]:
        """The soft budgets this call leaves overspent, from the counters as last seen
        on this instance (exact on the per-call path, a sync behind inside a grant)."""
        seen = [self.desk.book.spent_seen(lim.counter_id) for lim in plan.limits]
        return tuple(soft_crossed(plan.limits, seen, cost_nano))

    def remaining_after(self, plan: HoldPlan, cost_nano: int) -> int | None:
        """The room this call will leave once settled at ``cost_nano``, as last seen:
        the reservation noted this call's estimate as taken; settlement swaps it for
        the cost. Lets the reply carry the header before the settlement is written."""
        free = self.remaining(plan)
        return None if free is None else free + plan.estimate_nano - cost_nano

    def room(self, plan: HoldPlan) -> int:
        """What the tightest of the call's limits has left now (``limit - spent - held -
        escrow``, read from the counters): what a clamped call may still hold."""
        return remaining_nano(plan.limits, self._read_states(plan)) or 0

    def _read_states(self, plan: HoldPlan) -> list[CounterState]:
        """The call's counters as they are now, in the order of its limits (one read)."""
        return self.read_with(plan)[1]

    def read_with(
        self, plan: HoldPlan, collection: str | None = None, doc: str = ""
    ) -> tuple[dict[str, Any] | None, list[CounterState]]:
        """One more document (None if it does not exist) and the call's counters, in one
        read: a cached answer's entry comes with the counters its budget header needs."""
        other = self.io.db.collection(collection).document(doc) if collection else None
        refs = [self.io.counter(lim.counter_id) for lim in plan.limits]
        snaps = {
            s.reference.path: s.to_dict() or {}
            for s in self.io.db.get_all(refs + ([other] if other else []))
            if s.exists
        }
        return (
            snaps.get(other.path) if other else None,
            [CounterState.of(snaps.get(r.path)) for r in refs],
        )

    def book_cached(self, plan: HoldPlan, usage: Usage) -> None:
        """A call answered from the response cache: free, so it holds nothing and moves
        no counter; only its record is written (``create``: a call is booked once)."""
        outcome = Outcome(status="ok", cost_nano=0, cached=True, usage=usage)
        self.io.usage(plan.call_id).create(usage_record(plan, outcome, plan.admitted_at))

    def states(self, plan: HoldPlan) -> list[CounterState]:
        """The call's counters as the spend pages show them, in the order of its limits:
        costs settled inside a still-open escrow grant count as spent."""
        exact = exact_states(self.io.db, plan.project, list(key_of(plan)))
        return [exact.get(cid, CounterState()) for cid in key_of(plan)]

    def record(self, call_id: str) -> dict[str, Any] | None:
        """The usage record of a call, None while it is not booked."""
        return self.io.usage(call_id).get().to_dict()

    def cancel(self, plan: HoldPlan) -> None:
        """Undo a reservation of a call that will not be forwarded after all."""
        drawn = self.desk.pop_drawn(plan.call_id)
        if drawn is not None:
            self.io.delete_hold(plan.call_id)
            self.desk.book.undraw(drawn[0], plan.estimate_nano)
        else:
            self._release(plan)

    def _counter_state(self, counter_id: str, estimate: int) -> CounterState:
        """A counter as this (released) call would have seen it, for the message."""
        return CounterState.of(self.io.counter(counter_id).get().to_dict()).with_call(estimate)

    def _increment(self, plan: HoldPlan) -> tuple[list[CounterState], list[WindowState]]:
        batch = self.io.db.batch()
        for lim in plan.limits:
            batch.set(
                self.io.counter(lim.counter_id),
                {
                    **counter_fields(lim, plan.period_key),
                    "escrow": Increment(0),
                    "held": Increment(plan.estimate_nano),
                    "inflight": Increment(1),
                    "spent": Increment(0),
                },
                merge=True,
            )
        for rl in plan.rate_limits:
            batch.set(
                self.io.window(rl.counter_id),
                {
                    "project": plan.project,
                    "requests": Increment(1),
                    "tokens": Increment(plan.estimate_tokens),
                },
                merge=True,
            )
        batch.create(self.io.hold(plan.call_id), hold_doc(plan))
        try:
            results = batch.commit()
        except TRANSIENT:
            # The answer is lost, the write may or may not have landed: take it back
            # (a no-op if it never landed) and let the client retry the call.
            self._release(plan)
            raise unreachable() from None
        n, m = len(plan.limits), len(plan.rate_limits)
        self.io.writes += n + m + 1
        with self._lock:
            self._held[plan.call_id] = results[n + m].update_time
        return states_of(results, n), windows_of(results[n : n + m])

    def _release(self, plan: HoldPlan) -> None:
        """Take a per-call reservation back (the call is refused or not forwarded)."""
        with self._lock:
            self._held.pop(plan.call_id, None)
        batch = self.io.db.batch()
        for lim in plan.limits:
            batch.set(
                self.io.counter(lim.counter_id),
                {
                    "held": Increment(-plan.estimate_nano),
                    "inflight": Increment(-1),
                    "spent": Increment(0),
                },
                merge=True,
            )
        for rl in plan.rate_limits:
            batch.set(
                self.io.window(rl.counter_id),
                {"requests": Increment(-1), "tokens": Increment(-plan.estimate_tokens)},
                merge=True,
            )
        # Deleting the hold only if it exists makes the release all-or-nothing
        # idempotent: a retry after a lost answer (or a release of a reserve that never
        # landed) fails as a whole with NotFound instead of decrementing twice.
        batch.delete(self.io.hold(plan.call_id), option=self.io.db.write_option(exists=True))
        try:
            self.io.commit_with_retry(batch)
        except gexc.NotFound:
            return
        self.io.writes += len(plan.limits) + len(plan.rate_limits) + 1

    # --- settle --------------------------------------------------------------

    def settle(
        self,
        plan: HoldPlan,
        outcome: Outcome,
        extra: Sequence[tuple[str, str, dict[str, Any]]] = (),
    ) -> list[CounterState] | None:
        """Book the call exactly once. Returns post-settlement counter values, or None
        when the call had already been booked (by the sweep, or an earlier attempt) or
        was settled inside an escrow grant without touching the counters.

        ``extra`` documents (collection, id, fields; replaced whole) ride in the same write:
        the response-cache entry, the last rate-limit headers - no extra round trip."""
        if outcome.soft_exceeded is None:
            outcome.soft_exceeded = self.soft_exceeded(plan, outcome.cost_nano)
        drawn = self.desk.pop_drawn(plan.call_id)
        with self._lock:
            held = self._held.pop(plan.call_id, None)
        if drawn is not None:
            return self.desk.settle_drawn(plan, outcome, extra, *drawn)
        if held is not None:
            return self._settle_direct(plan, outcome, extra, held)
        # Not reserved by this instance (a retry, or a call whose instance died): only
        # its hold document says whether it holds on the counters or inside a grant.
        self.desk.settle_fallback(plan, outcome, extra)
        return None

    def _settle_direct(
        self,
        plan: HoldPlan,
        outcome: Outcome,
        extra: Sequence[tuple[str, str, dict[str, Any]]],
        hold_time: Any,
    ) -> list[CounterState] | None:
        now = self.io.clock()
        key, limits = key_of(plan), limits_of(plan)
        deltas: dict[str, dict[str, int]] = {}
        for lim in plan.limits:
            counter_delta(
                deltas,
                lim.counter_id,
                held=-plan.estimate_nano,
                inflight=-1,
                spent=outcome.cost_nano,
            )
        sp, opening = self.desk.ride(plan, now)
        if sp is not None:
            add_sync(deltas, sp)
        if opening is not None:
            for cid in key:
                counter_delta(deltas, cid, escrow=opening.amount)
        batch = self.io.db.batch()
        self.io.write_counters(batch, deltas)
        used = outcome.usage.input_tokens + outcome.usage.output_tokens
        for rl in plan.rate_limits:
            # tokens per minute: the estimate counted at admission becomes the actual,
            # in the admission minute's window
            batch.set(
                self.io.window(rl.counter_id),
                {"tokens": Increment(used - plan.estimate_tokens)},
                merge=True,
            )
        self.io.settle_docs(
            batch,
            plan,
            outcome,
            extra,
            now,
            {},
            self.io.db.write_option(last_update_time=hold_time),
        )
        self.desk.grant_write(batch, sp, opening, now)
        try:
            results = self.io.commit_with_retry(batch)
        except gexc.AlreadyExists:
            # the usage record exists: an earlier attempt of this very batch may have
            # landed (its answer lost and the batch re-sent), sync included - so the
            # grant's state in memory is no longer known: drop it (``landed=None``)
            self.desk.unride(sp, opening, landed=None)
            self.io.correct(plan, outcome)
            return None
        except gexc.FailedPrecondition:
            # the hold changed (swept, or settled by a racing attempt), or the sweep
            # closed the grant this settlement carried a sync of: decide from the hold
            self.desk.unride(sp, opening, landed=None)
            self.desk.settle_fallback(plan, outcome, extra)
            return None
        except Exception:
            self.desk.unride(sp, opening, landed=None)
            raise
        states = states_of(results, len(plan.limits))
        self.desk.after_ride(plan, sp, opening, results[-1].update_time, states)
        self.desk.book.note_states(key, limits, states)
        self.io.writes += (
            len(deltas)
            + len(plan.rate_limits)
            + 2
            + len(extra)
            + bool(plan.touch_key)
            + bool(sp or opening)
        )
        return states

    # --- sweep ---------------------------------------------------------------

    def sweep(self, project: str | None = None, limit: int = 50) -> int:
        """Close lapsed escrow grants, then book expired live holds ``orphaned``."""
        return self.sweeper.sweep(project, limit)


def ledger_for_settings(db: firestore.Client, settings: Settings) -> Ledger:
    return Ledger(
        db,
        escrow=settings.escrow,
        draw_window_s=settings.grant_draw_window_s,
        close_margin_s=settings.grant_close_margin_s,
    )
