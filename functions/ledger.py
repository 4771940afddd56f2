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
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, NoReturn

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1 import Increment

from functions.budget import (
    CounterState,
    Limit,
    WindowState,
    first_breach,
    rate_breach,
    refusal_message,
    retry_after_s,
)
from functions.errors import BudgetExceeded, RateLimited, ServiceUnavailable
from functions.escrow import (
    CLOSE_MARGIN_S,
    DRAW_WINDOW_S,
    Grant,
    GrantBook,
    SyncPlan,
    breaches,
    too_close,
)
from functions.grants import GEN_UNKNOWN, add_sync, counter_delta, open_doc, sync_doc
from functions.holds import (  # HoldPlan, Outcome, usage_record, utcnow: re-exported
    SETTLED_HOLD_TTL,
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
from functions.settings import Settings
from functions.sweep import HoldSweeper

log = logging.getLogger("tollgate.ledger")

SWEEP_BEFORE_REFUSAL_S = 5.0

_TRANSIENT = (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.InternalServerError,
              gexc.Aborted, gexc.TooManyRequests)


class Ledger:
    def __init__(self, db: firestore.Client, clock: Callable[[], datetime] = utcnow,
                 escrow: bool = True, draw_window_s: float = DRAW_WINDOW_S,
                 close_margin_s: float = CLOSE_MARGIN_S) -> None:
        self.db = db
        self.clock = clock
        self.writes = 0  # document writes issued, for the benchmark
        self.escrow = escrow
        self.book = GrantBook(draw_window_s=draw_window_s)
        self.draw_window_s = draw_window_s
        self.sweeper = HoldSweeper(db, clock, close_margin_s)
        # call id -> (grant, hold's update time) of calls drawn from a grant, until settled
        self._drawn: dict[str, tuple[Grant, Any]] = {}
        # call id -> its hold's update time, for calls held on the counters one by one
        self._held: dict[str, Any] = {}
        self._swept_at: dict[str, float] = {}  # project -> last sweep before a refusal
        self._drawn_lock = threading.Lock()

    def _counter(self, cid: str) -> firestore.DocumentReference:
        return self.db.collection("counters").document(cid)

    def _window(self, wid: str) -> firestore.DocumentReference:
        return self.db.collection("windows").document(wid)

    def _hold(self, call_id: str) -> firestore.DocumentReference:
        return self.db.collection("holds").document(call_id)

    def _usage(self, call_id: str) -> firestore.DocumentReference:
        return self.db.collection("usage").document(call_id)

    def _grant(self, grant_id: str) -> firestore.DocumentReference:
        return self.db.collection("grants").document(grant_id)

    # --- reserve -------------------------------------------------------------

    def reserve(self, plan: HoldPlan) -> list[CounterState] | None:
        """Hold the estimate against every limit, or raise BudgetExceeded.

        Expired holds are swept before anyone is refused, so a refusal never rests on
        a hold nobody will settle: they are booked ``orphaned`` at their estimate
        (which keeps the spend, since upstream may have billed them) and the refusal
        reports only calls really in flight.

        A call whose limit set has an escrow grant with room draws from it instead:
        the only write is its own hold document (see ``escrow.py``)."""
        if self._reserve_from_grant(plan) or self._open_for(plan):
            return None
        self._refuse_if_full(plan)
        states, windows = self._increment(plan)
        rate = rate_breach(plan.rate_limits, windows)
        breach = first_breach(plan.limits, states)
        if rate is None and breach is not None and self._return_unused(plan):
            # this instance sat on part of the room (a grant made under other limits, or
            # one draining near the end): it went back to the counters; decide again
            with self._drawn_lock:
                self._held.pop(plan.call_id, None)
            self._release(plan)
            states, windows = self._increment(plan)
            rate = rate_breach(plan.rate_limits, windows)
            breach = first_breach(plan.limits, states)
        if rate is None and breach is None:
            if first_of_period(states[0], plan.estimate_nano):
                # A new period (or a first call) starts: book holds orphaned in the
                # last one now, rather than waiting for someone to be refused.
                self.sweep(project=plan.project)
            self.book.note_states(key_of(plan), limits_of(plan), states)
            return states
        with self._drawn_lock:
            self._held.pop(plan.call_id, None)
        self._release(plan)
        if rate is not None:
            lim, what, value = rate
            wait = retry_after_s(plan.admitted_at)
            unit = "requests" if what == "requests" else "tokens (estimated at admission)"
            raise RateLimited(f"Rate limit reached for {lim.label}: {value} {unit} per minute. "
                              f"Retry in {wait} s.", retry_after_s=wait)
        assert breach is not None
        self._refuse(plan, *breach)

    def _refuse(self, plan: HoldPlan, limit: Limit, state: CounterState) -> NoReturn:
        """Raise the refusal, after sweeping expired holds (at most every
        ``SWEEP_BEFORE_REFUSAL_S`` per project on this instance: a storm of refusals at
        the end of a budget must not run a sweep query each)."""
        now = self.clock().timestamp()  # the ledger's clock: tests move it
        with self._drawn_lock:
            due = now - self._swept_at.get(plan.project, -1e18) >= SWEEP_BEFORE_REFUSAL_S
            if due:
                self._swept_at[plan.project] = now
        if due and self.sweep(project=plan.project):
            state = self._counter_state(limit.counter_id, plan.estimate_nano)
        raise BudgetExceeded(refusal_message(limit, state, plan.estimate_nano,
                                             plan.budget_period, plan.period_key))

    def _refuse_if_full(self, plan: HoldPlan) -> None:
        """Near the end of a budget, refuse without writing: when the room last seen is
        smaller than the estimate, the counters are *read* (a read does not add to a hot
        document's write load) and a call they have no room for is refused from that
        read. A refusal from a read is as exact as one from an increment: at that
        instant the budget, net of holds and grants, had no room for the estimate."""
        free = self.book.free(key_of(plan))
        if free is None or free >= plan.estimate_nano:
            return
        refs = [self._counter(lim.counter_id) for lim in plan.limits]
        got = {snap.id: CounterState.of(snap.to_dict()) for snap in self.db.get_all(refs)}
        states = [got.get(lim.counter_id, CounterState()) for lim in plan.limits]
        self.book.note_states(key_of(plan), limits_of(plan), states)
        after = [CounterState(spent=st.spent, held=st.held + plan.estimate_nano,
                              inflight=st.inflight + 1, escrow=st.escrow) for st in states]
        breach = first_breach(plan.limits, after)
        if breach is None or self._return_unused(plan):
            return  # room after all (or given back by this instance): hold it for real
        self._refuse(plan, *breach)

    def _return_unused(self, plan: HoldPlan) -> bool:
        """Give back at once what this instance's grant for the call's limit set holds
        but no call needs (before refusing anyone for lack of budget). True if any."""
        g = self.book.current(key_of(plan))
        if g is None or (not g.stale and g.available() <= 0):
            return False
        g.draining = True
        sp = self.book.plan_sync(g, force=True)
        if sp is None:
            # another call is giving it back right now: decide after that write
            return self.book.wait_sync(g)
        if sp.held_delta >= 0:
            if sp is not None:
                self.book.synced(sp, None, None, ok=False)
            return False
        deltas: dict[str, dict[str, int]] = {}
        add_sync(deltas, sp)
        batch = self.db.batch()
        self._write_counters(batch, deltas)
        self._grant_write(batch, sp, None, self.clock())
        try:
            results = self._commit_with_retry(batch)
        except Exception as exc:  # noqa: BLE001 - the sweep closes it from its document
            log.warning("could not return an unused grant (%s)", type(exc).__name__)
            self._unride(sp, None, landed=None)
            return False
        self.writes += len(deltas) + 1
        states = states_of(results, len(deltas))
        self.book.synced(sp, results[-1].update_time, states, ok=True)
        return True

    def _reserve_from_grant(self, plan: HoldPlan) -> bool:
        if not self.escrow or plan.rate_limits or plan.estimate_nano <= 0:
            return False  # rpm/tpm windows are decided per call
        g = self.book.draw(key_of(plan), limits_of(plan), plan.estimate_nano)
        if g is None:
            return False
        batch = self.db.batch()
        batch.create(self._hold(plan.call_id), {**hold_doc(plan), "grant": g.id})
        try:
            [result] = batch.commit()
        except _TRANSIENT:
            self.book.undraw(g, plan.estimate_nano)
            # the hold may have landed: delete it (no counter moved, so nothing else to undo)
            self._delete_hold(plan.call_id)
            raise ServiceUnavailable("Tollgate could not reach its database in time; "
                                     "retry the call.", headers={"retry-after": "1"}) from None
        except Exception:
            self.book.undraw(g, plan.estimate_nano)
            raise
        self.writes += 1
        with self._drawn_lock:
            self._drawn[plan.call_id] = (g, result.update_time)
        return True

    def _open_for(self, plan: HoldPlan) -> bool:
        """Open a grant for a limit set that just became busy, with this call as its first
        draw: one batch adds the grant's amount to every counter's ``escrow`` and creates
        the grant and the call's hold; if a counter is then over its limit, the batch is
        taken back and the call goes the per-call way."""
        if not self.escrow or plan.rate_limits or plan.estimate_nano <= 0:
            return False
        key = key_of(plan)
        amount = self.book.want_open(key, plan.estimate_nano)
        if not amount:
            return False
        amount = max(amount, plan.estimate_nano)
        g = Grant(id="grant_" + secrets.token_hex(10), project=plan.project,
                  period=plan.period_key, counters=key, limits=limits_of(plan), amount=amount,
                  synced_at=time.monotonic(), live=plan.estimate_nano, live_calls=1)
        g.draws.append((g.synced_at, plan.estimate_nano))
        now = self.clock()
        batch = self.db.batch()
        for lim in plan.limits:
            batch.set(self._counter(lim.counter_id), {
                **counter_fields(lim, plan.period_key), "escrow": Increment(amount),
                "held": Increment(0), "inflight": Increment(0), "spent": Increment(0)},
                merge=True)
        batch.create(self._hold(plan.call_id), {**hold_doc(plan), "grant": g.id})
        batch.create(self._grant(g.id), open_doc(g, now, self.draw_window_s))
        try:
            results = batch.commit()
        except _TRANSIENT:
            self._unopen(g, plan)  # the batch may have landed
            self.book.opened(key, None)
            raise ServiceUnavailable("Tollgate could not reach its database in time; "
                                     "retry the call.", headers={"retry-after": "1"}) from None
        except Exception:
            self.book.opened(key, None)
            raise
        n = len(plan.limits)
        self.writes += n + 2
        states = states_of(results, n)
        self.book.note_states(key, limits_of(plan), states)
        if breaches(limits_of(plan), states) or too_close(limits_of(plan), states, amount,
                                                          plan.estimate_nano):
            self._unopen(g, plan)
            self.book.opened(key, None)
            return False
        g.update_time = results[-1].update_time
        self.book.opened(key, g)
        with self._drawn_lock:
            self._drawn[plan.call_id] = (g, results[n].update_time)
        return True

    def _unopen(self, g: Grant, plan: HoldPlan) -> None:
        """Take back an opening batch; a no-op if it never landed (the grant document's
        existence is the batch's precondition)."""
        batch = self.db.batch()
        for cid in g.counters:
            batch.set(self._counter(cid), {"escrow": Increment(-g.amount)}, merge=True)
        batch.delete(self._hold(plan.call_id))
        batch.delete(self._grant(g.id), option=self.db.write_option(exists=True))
        try:
            self._commit_with_retry(batch)
        except gexc.NotFound:
            return
        self.writes += len(g.counters) + 2

    def _delete_hold(self, call_id: str) -> None:
        batch = self.db.batch()
        batch.delete(self._hold(call_id))
        try:
            self._commit_with_retry(batch)
        except Exception as exc:  # noqa: BLE001 - the sweep books it at the estimate
            log.error("could not delete the unused hold of %s (%s)", call_id,
                      type(exc).__name__)

    def remaining(self, plan: HoldPlan) -> int | None:
        """``limit - spent - held - escrow`` as last seen for this call's limits: the
        budget header of a call settled inside a grant, which wrote no counter."""
        return self.book.free(key_of(plan))

    def cancel(self, plan: HoldPlan) -> None:
        """Undo a reservation of a call that will not be forwarded after all."""
        with self._drawn_lock:
            drawn = self._drawn.pop(plan.call_id, None)
            self._held.pop(plan.call_id, None)
        if drawn is not None:
            self._delete_hold(plan.call_id)
            self.book.undraw(drawn[0], plan.estimate_nano)
        else:
            self._release(plan)

    def _counter_state(self, counter_id: str, estimate: int) -> CounterState:
        """A counter as this (released) call would have seen it, for the message."""
        c = CounterState.of(self._counter(counter_id).get().to_dict())
        return CounterState(spent=c.spent, held=c.held + estimate, inflight=c.inflight + 1,
                            escrow=c.escrow)

    def _increment(self, plan: HoldPlan) -> tuple[list[CounterState], list[WindowState]]:
        batch = self.db.batch()
        for lim in plan.limits:
            batch.set(self._counter(lim.counter_id), {
                **counter_fields(lim, plan.period_key),
                "escrow": Increment(0), "held": Increment(plan.estimate_nano),
                "inflight": Increment(1), "spent": Increment(0)}, merge=True)
        for rl in plan.rate_limits:
            batch.set(self._window(rl.counter_id), {
                "project": plan.project, "requests": Increment(1),
                "tokens": Increment(plan.estimate_tokens)}, merge=True)
        batch.create(self._hold(plan.call_id), hold_doc(plan))
        try:
            results = batch.commit()
        except _TRANSIENT:
            # The answer is lost, the write may or may not have landed: take it back
            # (a no-op if it never landed) and let the client retry the call.
            self._release(plan)
            raise ServiceUnavailable("Tollgate could not reach its database in time; "
                                     "retry the call.", headers={"retry-after": "1"}) from None
        n, m = len(plan.limits), len(plan.rate_limits)
        self.writes += n + m + 1
        with self._drawn_lock:
            self._held[plan.call_id] = results[n + m].update_time
        return states_of(results, n), windows_of(results[n:n + m])

    def _release(self, plan: HoldPlan) -> None:
        batch = self.db.batch()
        for lim in plan.limits:
            batch.set(self._counter(lim.counter_id), {
                "held": Increment(-plan.estimate_nano), "inflight": Increment(-1),
                "spent": Increment(0)}, merge=True)
        for rl in plan.rate_limits:
            batch.set(self._window(rl.counter_id), {
                "requests": Increment(-1), "tokens": Increment(-plan.estimate_tokens)},
                merge=True)
        # Deleting the hold only if it exists makes the release all-or-nothing
        # idempotent: a retry after a lost answer (or a release of a reserve that never
        # landed) fails as a whole with NotFound instead of decrementing twice.
        batch.delete(self._hold(plan.call_id), option=self.db.write_option(exists=True))
        try:
            self._commit_with_retry(batch)
        except gexc.NotFound:
            return
        self.writes += len(plan.limits) + len(plan.rate_limits) + 1

    # --- settle --------------------------------------------------------------

    def settle(self, plan: HoldPlan, outcome: Outcome,
               extra: Sequence[tuple[str, str, dict[str, Any]]] = ()
               ) -> list[CounterState] | None:
        """Book the call exactly once. Returns post-settlement counter values, or None
        when the call had already been booked (by the sweep, or an earlier attempt) or
        was settled inside an escrow grant without touching the counters.

        ``extra`` documents (collection, id, fields; replaced whole) ride in the same write:
        the response-cache entry, the last rate-limit headers - no extra round trip."""
        with self._drawn_lock:
            drawn = self._drawn.pop(plan.call_id, None)
            held = self._held.pop(plan.call_id, None)
        if drawn is not None:
            return self._settle_drawn(plan, outcome, extra, *drawn)
        if held is not None:
            return self._settle_direct(plan, outcome, extra, held)
        # Not reserved by this instance (a retry, or a call whose instance died): only
        # its hold document says whether it holds on the counters or inside a grant.
        self._settle_fallback(plan, outcome, extra)
        return None

    def _settle_docs(self, batch: Any, plan: HoldPlan, outcome: Outcome,
                     extra: Sequence[tuple[str, str, dict[str, Any]]], now: datetime,
                     hold: dict[str, Any], hold_option: Any = None) -> None:
        """The call's own documents of a settlement batch."""
        for collection, doc, fields in extra:
            batch.set(self.db.collection(collection).document(doc), fields)
        batch.create(self._usage(plan.call_id), usage_record(plan, outcome, now))
        batch.update(self._hold(plan.call_id), {
            "state": "settled", "settled_at": now, "purge_at": now + SETTLED_HOLD_TTL, **hold},
            option=hold_option)
        if plan.touch_key:
            # merge, not update: a key document that vanished must not fail the booking
            batch.set(self.db.collection("keys").document(plan.touch_key),
                      {"last_used_at": now}, merge=True)

    def _write_counters(self, batch: Any, deltas: dict[str, dict[str, int]]) -> None:
        for cid, d in deltas.items():
            batch.set(self._counter(cid), {k: Increment(v) for k, v in d.items()}, merge=True)

    def _settle_direct(self, plan: HoldPlan, outcome: Outcome,
                       extra: Sequence[tuple[str, str, dict[str, Any]]], hold_time: Any
                       ) -> list[CounterState] | None:
        now = self.clock()
        key, limits = key_of(plan), limits_of(plan)
        deltas: dict[str, dict[str, int]] = {}
        for lim in plan.limits:
            counter_delta(deltas, lim.counter_id, held=-plan.estimate_nano, inflight=-1,
                          spent=outcome.cost_nano)
        sp, opening = self._ride(plan, now) if self.escrow else (None, None)
        if sp is not None:
            add_sync(deltas, sp)
        if opening is not None:
            for cid in key:
                counter_delta(deltas, cid, escrow=opening.amount)
        batch = self.db.batch()
        self._write_counters(batch, deltas)
        used = outcome.usage.input_tokens + outcome.usage.output_tokens
        for rl in plan.rate_limits:
            # tokens per minute: the estimate counted at admission becomes the actual,
            # in the admission minute's window
            batch.set(self._window(rl.counter_id),
                      {"tokens": Increment(used - plan.estimate_tokens)}, merge=True)
        self._settle_docs(batch, plan, outcome, extra, now, {},
                          self.db.write_option(last_update_time=hold_time))
        self._grant_write(batch, sp, opening, now)
        try:
            results = self._commit_with_retry(batch)
        except gexc.AlreadyExists:
            # the usage record exists: an earlier attempt of this very batch may have
            # landed (its answer lost and the batch re-sent), sync included - so the
            # grant's state in memory is no longer known: drop it (``landed=None``)
            self._unride(sp, opening, landed=None)
            self._correct(plan, outcome)
            return None
        except gexc.FailedPrecondition:
            # the hold changed (swept, or settled by a racing attempt), or the sweep
            # closed the grant this settlement carried a sync of: decide from the hold
            self._unride(sp, opening, landed=None)
            self._settle_fallback(plan, outcome, extra)
            return None
        except Exception:
            self._unride(sp, opening, landed=None)
            raise
        states = states_of(results, len(plan.limits))
        self._after_ride(plan, sp, opening, results[-1].update_time, states)
        self.book.note_states(key, limits, states)
        self.writes += len(deltas) + len(plan.rate_limits) + 2 + len(extra) + bool(
            plan.touch_key) + bool(sp or opening)
        return states

    def _settle_drawn(self, plan: HoldPlan, outcome: Outcome,
                      extra: Sequence[tuple[str, str, dict[str, Any]]], g: Grant,
                      hold_time: Any) -> list[CounterState] | None:
        """Settle a call drawn from grant ``g``: its own documents only, plus the grant's
        sync when one is due. The hold's precondition fails if the sweep closed the
        grant meanwhile (it turned the hold into an ordinary one)."""
        now = self.clock()
        est, cost = plan.estimate_nano, outcome.cost_nano
        sp = self.book.plan_sync(g, own=(est, cost)) if self.escrow else None
        gen = 0 if sp is not None else self.book.begin_settle(g, est, cost)
        deltas: dict[str, dict[str, int]] = {}
        if sp is not None:
            add_sync(deltas, sp)
        batch = self.db.batch()
        self._write_counters(batch, deltas)
        self._settle_docs(batch, plan, outcome, extra, now, {"gen": gen, "cost_nano": cost},
                          self.db.write_option(last_update_time=hold_time))
        self._grant_write(batch, sp, None, now)
        try:
            results = self._commit_with_retry(batch)
        except (gexc.FailedPrecondition, gexc.AlreadyExists, gexc.NotFound):
            self._abandon(g, sp, gen, cost)
            self._settle_fallback(plan, outcome, extra)
            return None
        except Exception:
            self._abandon(g, sp, gen, cost)
            raise
        self.writes += len(deltas) + 2 + len(extra) + bool(plan.touch_key) + bool(sp)
        if sp is None:
            self.book.end_settle(g, gen, cost, landed=True)
            return None
        states = states_of(results, len(deltas))
        self._after_ride(plan, sp, None, results[-1].update_time, states)
        self.book.note_states(key_of(plan), limits_of(plan), states)
        return states

    # --- escrow grants riding on settlements --------------------------------

    def _ride(self, plan: HoldPlan, now: datetime) -> tuple[SyncPlan | None, Grant | None]:
        """A due sync of this limit set's grant, or a grant to open, for this batch."""
        if plan.rate_limits:
            return None, None
        key = key_of(plan)
        g = self.book.current(key)
        if g is not None:
            return self.book.plan_sync(g), None
        amount = self.book.want_open(key, plan.estimate_nano)
        if not amount:
            return None, None
        return None, Grant(id="grant_" + secrets.token_hex(10), project=plan.project,
                           period=plan.period_key, counters=key, limits=limits_of(plan),
                           amount=amount, synced_at=time.monotonic())

    def _grant_write(self, batch: Any, sp: SyncPlan | None, opening: Grant | None,
                     now: datetime) -> None:
        """The grant document's write; always the batch's last."""
        if sp is not None:
            batch.update(self._grant(sp.grant.id), sync_doc(sp, now, self.draw_window_s),
                         option=self.db.write_option(last_update_time=sp.grant.update_time))
        elif opening is not None:
            batch.create(self._grant(opening.id), open_doc(opening, now, self.draw_window_s))

    def _unride(self, sp: SyncPlan | None, opening: Grant | None,
                landed: bool | None) -> None:
        """A batch carrying a sync or an opening failed; ``landed`` None: unknown."""
        if sp is not None:
            self.book.synced(sp, None, None, ok=False)
            if landed is None:
                self.book.drop(sp.grant)
        if opening is not None:
            self.book.opened(opening.counters, None)

    def _abandon(self, g: Grant, sp: SyncPlan | None, gen: int, cost: int) -> None:
        """A drawn call's settlement did not land as planned: stop drawing from ``g``
        (the sweep closes it from its document, which is the truth)."""
        if sp is not None:
            self.book.synced(sp, None, None, ok=False)
        else:
            self.book.end_settle(g, gen, cost, landed=False)
        self.book.drop(g)

    def _after_ride(self, plan: HoldPlan, sp: SyncPlan | None, opening: Grant | None,
                    update_time: Any, states: list[CounterState]) -> None:
        limits = limits_of(plan)
        if sp is not None:
            growth = sp.held_delta
            if growth > 0 and breaches(limits, states):
                # Growth that crossed a limit goes back while the sync still counts as in
                # flight: no other sync can race the take-back, and draws stay capped to
                # what the grant had before it grew.
                shrunk = sp.new_amount - growth
                taken = self._take_back(sp.grant, growth, shrunk, update_time)
                self.book.synced(sp, taken, states, ok=True, amount=shrunk)
                if taken is None:
                    self.book.drop(sp.grant)
                else:
                    sp.grant.draining = True
            else:
                self.book.synced(sp, update_time, states, ok=True)
        if opening is not None:
            if breaches(limits, states) or too_close(limits, states, opening.amount,
                                                     plan.estimate_nano):
                self._take_back(opening, opening.amount, 0, update_time)
                self.book.opened(opening.counters, None)
            else:
                opening.update_time = update_time
                self.book.opened(opening.counters, opening)

    def _take_back(self, g: Grant, growth: int, amount: int, update_time: Any) -> Any:
        """Return a grant's growth to the counters; the grant document's new update time,
        or None if the write failed (the sweep then closes it from its document)."""
        batch = self.db.batch()
        self._write_counters(batch, {cid: {"escrow": -growth} for cid in g.counters})
        batch.update(self._grant(g.id), {"amount": amount,
                                         **({"state": "closed"} if amount == 0 else {})},
                     option=self.db.write_option(last_update_time=update_time))
        try:
            results = self._commit_with_retry(batch)
        except Exception as exc:  # noqa: BLE001 - the sweep closes it from its document
            log.warning("could not take back grant growth (%s)", type(exc).__name__)
            return None
        self.writes += len(g.counters) + 1
        return results[-1].update_time

    def _settle_fallback(self, plan: HoldPlan, outcome: Outcome,
                         extra: Sequence[tuple[str, str, dict[str, Any]]]) -> None:
        """Settle a drawn call whose grant was closed under it, from its hold document."""
        hold_ref, usage_ref = self._hold(plan.call_id), self._usage(plan.call_id)

        @firestore.transactional
        def run(tx: firestore.Transaction) -> bool:
            if usage_ref.get(transaction=tx).exists:
                return False  # booked already (swept, or an earlier attempt landed)
            h = hold_ref.get(transaction=tx).to_dict() or {}
            now = self.clock()
            if h.get("state") != "live":
                return False
            if h.get("grant") is None:  # an ordinary hold now: settle on the counters
                for cid in h.get("counters", []):
                    tx.set(self._counter(cid), {
                        "held": Increment(-plan.estimate_nano), "inflight": Increment(-1),
                        "spent": Increment(outcome.cost_nano)}, merge=True)
                hold: dict[str, Any] = {}
            else:  # still in an open grant this instance lost: flushed when it closes
                hold = {"gen": GEN_UNKNOWN, "cost_nano": outcome.cost_nano}
            self._settle_docs(tx, plan, outcome, extra, now, hold)
            return True

        if not run(self.db.transaction()):
            self._correct(plan, outcome)

    def _commit_with_retry(self, batch: Any, attempts: int = 4) -> Any:
        # A batch is atomic, so retrying a transient failure is safe: if the first
        # commit did land, the retry's `create` fails with AlreadyExists instead of
        # booking twice.
        for i in range(attempts):
            try:
                return batch.commit()
            except _TRANSIENT:
                if i == attempts - 1:
                    raise
                time.sleep(0.05 * 2**i)
        raise AssertionError("unreachable")

    def _correct(self, plan: HoldPlan, outcome: Outcome) -> None:
        """A settlement after the sweep: replace the orphaned estimate by the actual."""
        usage_ref, hold_ref = self._usage(plan.call_id), self._hold(plan.call_id)

        @firestore.transactional
        def run(tx: firestore.Transaction) -> bool:
            snap = usage_ref.get(transaction=tx)
            rec = snap.to_dict() or {}
            if rec.get("status") != "orphaned":
                return False  # already settled: nothing to do, nothing booked twice
            delta = outcome.cost_nano - int(rec.get("cost_nano", 0))
            for cid in (lim.counter_id for lim in plan.limits):
                tx.set(self._counter(cid), {"spent": Increment(delta)}, merge=True)
            fixed = usage_record(plan, outcome, self.clock())
            fixed["corrected_from"] = "orphaned"
            tx.set(usage_ref, fixed)
            tx.set(hold_ref, {"state": "settled", "settled_at": self.clock()}, merge=True)
            return True

        if run(self.db.transaction()):
            self.writes += len(plan.limits) + 2
            log.info("late settlement corrected orphaned call %s", plan.call_id)

    # --- sweep ---------------------------------------------------------------

    def sweep(self, project: str | None = None, limit: int = 50) -> int:
        """Close lapsed escrow grants, then book expired live holds ``orphaned``."""
        return self.sweeper.sweep(project, limit)


def ledger_for_settings(db: firestore.Client, settings: Settings) -> Ledger:
    return Ledger(db, escrow=settings.escrow, draw_window_s=settings.grant_draw_window_s,
                  close_margin_s=settings.grant_close_margin_s)
