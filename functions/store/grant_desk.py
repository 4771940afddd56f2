"""Escrow grants on Firestore: the path of a call drawn from a grant, and the grant
writes that ride on settlements (opening, syncing, giving back, taking back growth).
``escrow.py`` holds the arithmetic, ``grants.py`` the documents and the sweep's close.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1 import Increment

from functions.core.budget import CounterState
from functions.core.escrow import DRAW_WINDOW_S, Grant, GrantBook, SyncPlan, breaches, too_close
from functions.core.holds import (
    HoldPlan,
    Outcome,
    counter_fields,
    hold_doc,
    key_of,
    limits_of,
    states_of,
)
from functions.store.books import TRANSIENT, Books, unreachable
from functions.store.grants import CLOSED_GRANT_TTL, GEN_UNKNOWN, add_sync, open_doc, sync_doc

log = logging.getLogger("tollgate.ledger")


class GrantDesk:
    def __init__(
        self, io: Books, *, escrow: bool = True, draw_window_s: float = DRAW_WINDOW_S
    ) -> None:
        self.io = io
        self.escrow = escrow
        self.draw_window_s = draw_window_s
        self.book = GrantBook(draw_window_s=draw_window_s)
        # call id -> (grant, hold's update time) of calls drawn from a grant, until settled
        self._drawn: dict[str, tuple[Grant, Any]] = {}
        self._drawn_lock = threading.Lock()

    def pop_drawn(self, call_id: str) -> tuple[Grant, Any] | None:
        with self._drawn_lock:
            return self._drawn.pop(call_id, None)

    def drawn(self, call_id: str) -> bool:
        with self._drawn_lock:
            return call_id in self._drawn

    def return_unused(self, plan: HoldPlan) -> bool:
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
        if sp.escrow_delta >= 0:
            self.book.synced(sp, None, None, ok=False)
            return False
        deltas: dict[str, dict[str, int]] = {}
        add_sync(deltas, sp)
        batch = self.io.db.batch()
        self.io.write_counters(batch, deltas)
        self.grant_write(batch, sp, None, self.io.clock())
        try:
            results = self.io.commit_with_retry(batch)
        except Exception as exc:  # noqa: BLE001 - the sweep closes it from its document
            log.warning("could not return an unused grant (%s)", type(exc).__name__)
            self.unride(sp, None, landed=None)
            return False
        self.io.writes += len(deltas) + 1
        states = states_of(results, len(deltas))
        self.book.synced(sp, results[-1].update_time, states, ok=True)
        return True

    def _eligible(self, plan: HoldPlan) -> bool:
        # rpm/tpm windows are decided per call; a free call holds nothing to draw
        return self.escrow and not plan.rate_limits and plan.estimate_nano > 0

    def _new_grant(self, plan: HoldPlan, amount: int, **drawn: Any) -> Grant:
        return Grant(
            id="grant_" + secrets.token_hex(10),
            project=plan.project,
            period=plan.period_key,
            counters=key_of(plan),
            limits=limits_of(plan),
            amount=amount,
            synced_at=time.monotonic(),
            **drawn,
        )

    def _remember(self, call_id: str, g: Grant, hold_time: Any) -> None:
        with self._drawn_lock:
            self._drawn[call_id] = (g, hold_time)

    def reserve_from_grant(self, plan: HoldPlan) -> bool:
        if not self._eligible(plan):
            return False
        g = self.book.draw(key_of(plan), limits_of(plan), plan.estimate_nano)
        if g is None:
            return False
        batch = self.io.db.batch()
        batch.create(self.io.hold(plan.call_id), {**hold_doc(plan), "grant": g.id})
        try:
            [result] = batch.commit()
        except TRANSIENT:
            self.book.undraw(g, plan.estimate_nano)
            # the hold may have landed: delete it (no counter moved, so nothing else to undo)
            self.io.delete_hold(plan.call_id)
            raise unreachable() from None
        except Exception:
            self.book.undraw(g, plan.estimate_nano)
            raise
        self.io.writes += 1
        self._remember(plan.call_id, g, result.update_time)
        return True

    def open_for(self, plan: HoldPlan) -> bool:
        """Open a grant for a limit set that just became busy, with this call as its first
        draw: one batch adds the grant's amount to every counter's ``escrow`` and creates
        the grant and the call's hold; if a counter is then over its limit, the batch is
        taken back and the call goes the per-call way."""
        if not self._eligible(plan):
            return False
        key = key_of(plan)
        amount = self.book.want_open(key, plan.estimate_nano)
        if not amount:
            return False
        amount = max(amount, plan.estimate_nano)
        g = self._new_grant(plan, amount, live=plan.estimate_nano, live_calls=1)
        g.draws.append((g.synced_at, plan.estimate_nano))
        now = self.io.clock()
        batch = self.io.db.batch()
        for lim in plan.limits:
            batch.set(
                self.io.counter(lim.counter_id),
                {
                    **counter_fields(lim, plan.period_key),
                    "escrow": Increment(amount),
                    "held": Increment(0),
                    "inflight": Increment(0),
                    "spent": Increment(0),
                },
                merge=True,
            )
        batch.create(self.io.hold(plan.call_id), {**hold_doc(plan), "grant": g.id})
        batch.create(self.io.grant(g.id), open_doc(g, now, self.draw_window_s))
        try:
            results = batch.commit()
        except TRANSIENT:
            self.unopen(g, plan)  # the batch may have landed
            self.book.opened(key, None)
            raise unreachable() from None
        except Exception:
            self.book.opened(key, None)
            raise
        n = len(plan.limits)
        self.io.writes += n + 2
        states = states_of(results, n)
        self.book.note_states(key, limits_of(plan), states)
        if breaches(limits_of(plan), states) or too_close(
            limits_of(plan), states, amount, plan.estimate_nano
        ):
            self.unopen(g, plan)
            self.book.opened(key, None)
            return False
        g.update_time = results[-1].update_time
        self.book.opened(key, g)
        self._remember(plan.call_id, g, results[n].update_time)
        return True

    def unopen(self, g: Grant, plan: HoldPlan) -> None:
        """Take back an opening batch; a no-op if it never landed (the grant document's
        existence is the batch's precondition)."""
        batch = self.io.db.batch()
        for cid in g.counters:
            batch.set(self.io.counter(cid), {"escrow": Increment(-g.amount)}, merge=True)
        batch.delete(self.io.hold(plan.call_id))
        batch.delete(self.io.grant(g.id), option=self.io.db.write_option(exists=True))
        try:
            self.io.commit_with_retry(batch)
        except gexc.NotFound:
            return
        self.io.writes += len(g.counters) + 2

    def settle_drawn(
        self,
        plan: HoldPlan,
        outcome: Outcome,
        extra: Sequence[tuple[str, str, dict[str, Any]]],
        g: Grant,
        hold_time: Any,
    ) -> list[CounterState] | None:
        """Settle a call drawn from grant ``g``: its own documents only, plus the grant's
        sync when one is due. The hold's precondition fails if the sweep closed the
        grant meanwhile (it turned the hold into an ordinary one)."""
        now = self.io.clock()
        est, cost = plan.estimate_nano, outcome.cost_nano
        sp = self.book.plan_sync(g, own=(est, cost)) if self.escrow else None
        gen = 0 if sp is not None else self.book.begin_settle(g, est, cost)
        deltas: dict[str, dict[str, int]] = {}
        if sp is not None:
            add_sync(deltas, sp)
        batch = self.io.db.batch()
        self.io.write_counters(batch, deltas)
        self.io.settle_docs(
            batch,
            plan,
            outcome,
            extra,
            now,
            {"gen": gen, "cost_nano": cost},
            self.io.db.write_option(last_update_time=hold_time),
        )
        self.grant_write(batch, sp, None, now)
        try:
            results = self.io.commit_with_retry(batch)
        except (gexc.FailedPrecondition, gexc.AlreadyExists, gexc.NotFound):
            self.abandon(g, sp, gen, cost)
            self.settle_fallback(plan, outcome, extra)
            return None
        except Exception:
            self.abandon(g, sp, gen, cost)
            raise
        self.io.writes += len(deltas) + 2 + len(extra) + bool(plan.touch_key) + bool(sp)
        if sp is None:
            self.book.end_settle(g, gen, cost, landed=True)
            return None
        states = states_of(results, len(deltas))
        self.after_ride(plan, sp, None, results[-1].update_time, states)
        self.book.note_states(key_of(plan), limits_of(plan), states)
        return states

    def ride(self, plan: HoldPlan, now: datetime) -> tuple[SyncPlan | None, Grant | None]:
        """A due sync of this limit set's grant, or a grant to open, for this batch."""
        if not self.escrow or plan.rate_limits:
            return None, None
        key = key_of(plan)
        g = self.book.current(key)
        if g is not None:
            return self.book.plan_sync(g), None
        amount = self.book.want_open(key, plan.estimate_nano)
        return None, (self._new_grant(plan, amount) if amount else None)

    def grant_write(
        self, batch: Any, sp: SyncPlan | None, opening: Grant | None, now: datetime
    ) -> None:
        """The grant document's write; always the batch's last."""
        if sp is not None:
            batch.update(
                self.io.grant(sp.grant.id),
                sync_doc(sp, now, self.draw_window_s),
                option=self.io.db.write_option(last_update_time=sp.grant.update_time),
            )
        elif opening is not None:
            batch.create(self.io.grant(opening.id), open_doc(opening, now, self.draw_window_s))

    def unride(self, sp: SyncPlan | None, opening: Grant | None, landed: bool | None) -> None:
        """A batch carrying a sync or an opening failed; ``landed`` None: unknown."""
        if sp is not None:
            self.book.synced(sp, None, None, ok=False)
            if landed is None:
                self.book.drop(sp.grant)
        if opening is not None:
            self.book.opened(opening.counters, None)

    def abandon(self, g: Grant, sp: SyncPlan | None, gen: int, cost: int) -> None:
        """A drawn call's settlement did not land as planned: stop drawing from ``g``
        (the sweep closes it from its document, which is the truth)."""
        if sp is not None:
            self.book.synced(sp, None, None, ok=False)
        else:
            self.book.end_settle(g, gen, cost, landed=False)
        self.book.drop(g)

    def after_ride(
        self,
        plan: HoldPlan,
        sp: SyncPlan | None,
        opening: Grant | None,
        update_time: Any,
        states: list[CounterState],
    ) -> None:
        limits = limits_of(plan)
        if sp is not None:
            growth = sp.growth
            if growth > 0 and breaches(limits, states):
                # Growth that crossed a limit goes back while the sync still counts as in
                # flight: no other sync can race the take-back, and draws stay capped to
                # what the grant had before it grew (its old amount less what it flushed).
                shrunk = sp.new_amount - growth
                taken = self.take_back(sp.grant, growth, shrunk, update_time)
                self.book.synced(sp, taken, states, ok=True, amount=shrunk)
                if taken is None:
                    self.book.drop(sp.grant)
                else:
                    sp.grant.draining = True
            else:
                self.book.synced(sp, update_time, states, ok=True)
        if opening is not None:
            if breaches(limits, states) or too_close(
                limits, states, opening.amount, plan.estimate_nano
            ):
                self.take_back(opening, opening.amount, 0, update_time)
                self.book.opened(opening.counters, None)
            else:
                opening.update_time = update_time
                self.book.opened(opening.counters, opening)

    def take_back(self, g: Grant, growth: int, amount: int, update_time: Any) -> Any:
        """Return a grant's growth to the counters; the grant document's new update time,
        or None if the write failed (the sweep then closes it from its document)."""
        batch = self.io.db.batch()
        self.io.write_counters(batch, {cid: {"escrow": -growth} for cid in g.counters})
        closed = {"state": "closed", "purge_at": self.io.clock() + CLOSED_GRANT_TTL}
        batch.update(
            self.io.grant(g.id),
            {"amount": amount, **(closed if amount == 0 else {})},
            option=self.io.db.write_option(last_update_time=update_time),
        )
        try:
            results = self.io.commit_with_retry(batch)
        except Exception as exc:  # noqa: BLE001 - the sweep closes it from its document
            log.warning("could not take back grant growth (%s)", type(exc).__name__)
            return None
        self.io.writes += len(g.counters) + 1
        return results[-1].update_time

    def settle_fallback(
        self, plan: HoldPlan, outcome: Outcome, extra: Sequence[tuple[str, str, dict[str, Any]]]
    ) -> None:
        """Settle a drawn call whose grant was closed under it, from its hold document."""
        hold_ref, usage_ref = self.io.hold(plan.call_id), self.io.usage(plan.call_id)

        @firestore.transactional
        def run(tx: firestore.Transaction) -> bool:
            if usage_ref.get(transaction=tx).exists:
                return False  # booked already (swept, or an earlier attempt landed)
            h = hold_ref.get(transaction=tx).to_dict() or {}
            now = self.io.clock()
            if h.get("state") != "live":
                return False
            if h.get("grant") is None:  # an ordinary hold now: settle on the counters
                for cid in h.get("counters", []):
                    tx.set(
                        self.io.counter(cid),
                        {
                            "held": Increment(-plan.estimate_nano),
                            "inflight": Increment(-1),
                            "spent": Increment(outcome.cost_nano),
                        },
                        merge=True,
                    )
                hold: dict[str, Any] = {}
            else:  # still in an open grant this instance lost: flushed when it closes
                hold = {"gen": GEN_UNKNOWN, "cost_nano": outcome.cost_nano}
            self.io.settle_docs(tx, plan, outcome, extra, now, hold)
            return True

        if not run(self.io.db.transaction()):
            self.io.correct(plan, outcome)
