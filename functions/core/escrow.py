"""Escrow grants: budget an instance reserves on the shared counters in one write and
then hands out to its calls in memory. Pure bookkeeping, no I/O (``grants.py`` writes).

Why: every call used to write the project and member counters twice, and Firestore
sustains about one write per second per document, so a project topped out near
0.5 calls/s. With a grant, a call writes only its own documents (hold, usage record);
the shared counters are written when a grant is opened, synced (every ``SYNC_EVERY_S``
while in use, riding on a call's settlement) or closed.

A grant's money, at any moment (all nano-dollars)::

    amount  = what the counters reserve for this grant (their ``escrow`` field)
            = live + unflushed + available
    live      = estimates of calls drawn from it and not settled yet
    unflushed = actual costs of settled calls not yet moved to the counters' ``spent``
    available = what new calls may still draw

A sync moves ``unflushed`` into ``spent`` (escrow -= cost, spent += cost) and resizes
``amount``; the counters' post-write values come back, and growth that would put any
counter over its limit is taken back before anything may draw from it. So every
nano-dollar a call may spend is held on every counter it is booked against before
the call is admitted - the increment-then-verify guarantee of the per-call path,
carried by a bigger increment.

Settled calls are labelled with the grant's *generation*; a sync flushes whole
generations (those with no settlement still in flight), and the grant document
records the last generation flushed. After a crash the sweep finds exactly the
unflushed costs (settled holds of later generations) and the live calls (live holds).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from functions.core.budget import CounterState

SYNC_EVERY_S = 5.0  # a grant in use is synced at least this often (~0.2 writes/s/counter)
DRAW_WINDOW_S = 15.0  # no draw after synced_at + this; the sweep may close it 60 s later
CLOSE_MARGIN_S = 60.0  # clock skew and slow writes between a draw and its hold landing
HORIZON_S = 10.0  # a grant is sized to last this long at the rate seen
OPEN_AFTER_CALLS = 2  # calls of one limit set within RATE_WINDOW_S before a grant opens
RATE_WINDOW_S = 10.0
MIN_SPAN_S = 0.5  # a rate is calls over at least this long (two calls are not 1000/s)
LOW_WATER_S = 1.0  # a grant with less than this much traffic left syncs at once
OPEN_WAIT_S = 1.0  # a call waits at most this long for a grant being opened
MIN_CALLS = 8  # smallest grant worth a write, in estimates
# Grants exist only while the budget left is large: below this many estimates every
# call is decided by its own increment on the shared counters, exactly as before, so
# the last calls of a budget are never refused while an instance sits on a slice.
MIN_FREE_ESTIMATES = 100
SHARE = 4  # a grant takes at most 1/SHARE of the budget left around it


def free_nano(limits: Sequence[int | None], states: Sequence[CounterState]) -> int | None:
    """Smallest ``limit - spent - held - escrow`` over the limited counters; None if none
    is."""
    values = [lim - st.taken for lim, st in zip(limits, states, strict=True) if lim is not None]
    return min(values) if values else None


def target_amount(*, rate_per_s: float, mean_estimate: int, free: int | None, mine: int) -> int:
    """What a grant should hold after a sync. ``free`` is the counters' room as last
    seen (it counts ``mine`` as held); 0 means: return what is not committed."""
    mean_estimate = max(1, mean_estimate)
    want = max(MIN_CALLS, math.ceil(rate_per_s * HORIZON_S)) * mean_estimate
    if free is None:
        return want
    around = free + mine  # what this grant could have if it were the only one
    if around < MIN_FREE_ESTIMATES * mean_estimate:
        return 0
    return min(want, around // SHARE)


def rate_of(calls: int, span_s: float) -> float:
    """Calls per second seen over ``span_s`` (the rate window, or less while it fills,
    so a grant opened in a burst is sized for the burst)."""
    return calls / max(MIN_SPAN_S, min(span_s, RATE_WINDOW_S))


def too_close(
    limits: Sequence[int | None], states: Sequence[CounterState], mine: int, estimate: int
) -> bool:
    """Whether a grant of ``mine`` (already counted in ``states``) sits within
    MIN_FREE_ESTIMATES estimates of a limit, where every call must be decided alone."""
    free = free_nano(limits, states)
    return free is not None and free + mine < MIN_FREE_ESTIMATES * max(1, estimate)


def breaches(limits: Sequence[int | None], states: Sequence[CounterState]) -> bool:
    return any(lim is not None and st.taken > lim for lim, st in zip(limits, states, strict=True))


@dataclass
class Grant:
    id: str
    project: str
    period: str
    counters: tuple[str, ...]
    limits: tuple[int | None, ...]
    amount: int
    synced_at: float  # monotonic
    update_time: Any = None  # the grant document's, for the next write's precondition
    cap: int | None = None  # while a shrinking sync is in flight: draws stay under it
    live: int = 0
    live_calls: int = 0
    synced_calls: int = 0  # live_calls as counted in the counters' ``inflight``
    gen: int = 1
    flushed_gen: int = 0
    costs: dict[int, int] = field(default_factory=dict)  # gen -> unflushed settled cost
    pending: dict[int, int] = field(default_factory=dict)  # gen -> settlements in flight
    syncing: bool = False
    synced_event: threading.Event = field(default_factory=threading.Event)  # set between syncs
    draining: bool = False  # not grown any more: what is not committed goes back at syncs
    stale: bool = False  # made under other limits (a budget changed): no draw at all
    closed: bool = False
    draws: deque[tuple[float, int]] = field(default_factory=deque)  # (time, estimate)

    @property
    def unflushed(self) -> int:
        return sum(self.costs.values())

    def available(self) -> int:
        amount = self.amount if self.cap is None else min(self.amount, self.cap)
        return amount - self.live - self.unflushed

    def drawable(self, now: float, window_s: float = DRAW_WINDOW_S) -> bool:
        # A draining grant still serves draws: its money is reserved either way, and the
        # last calls of a budget must not be refused while it sits there.
        return not (self.closed or self.stale) and now < self.synced_at + window_s

    def rate(self, now: float) -> tuple[float, int]:
        """Draws per second over the rate window, and their mean estimate."""
        while self.draws and self.draws[0][0] < now - RATE_WINDOW_S:
            self.draws.popleft()
        if not self.draws:
            return 0.0, 0
        total = sum(e for _, e in self.draws)
        return rate_of(len(self.draws), now - self.draws[0][0]), total // len(self.draws)


@dataclass(frozen=True)
class SyncPlan:
    """One write that flushes settled costs and resizes a grant."""

    grant: Grant
    flush_gens: tuple[int, ...]
    flushed: int  # settled cost moved from the grant (escrow) to spent
    new_amount: int
    inflight_delta: int
    close: bool  # the grant ends with this write (nothing live, nothing left)

    @property
    def escrow_delta(self) -> int:
        """How the counters' ``escrow`` moves for this grant."""
        return self.new_amount - self.grant.amount

    @property
    def growth(self) -> int:
        """How much more the counters take (``spent + held + escrow``) after this sync:
        the flushed costs leave ``escrow`` for ``spent``, so a sync only reserves more
        when the new amount exceeds the old one *net of what it flushes*. Positive
        growth must be verified against the limits like any increment."""
        return self.flushed + self.escrow_delta

    @property
    def flushed_gen(self) -> int:
        return max(self.flush_gens, default=self.grant.flushed_gen)


class GrantBook:
    """This instance's grants, one per limit set (the tuple of counters a call is
    booked against). Every method holds the lock only for arithmetic."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, draw_window_s: float = DRAW_WINDOW_S
    ) -> None:
        self.clock = clock
        self.draw_window_s = draw_window_s
        self._grants: dict[tuple[str, ...], Grant] = {}
        self._recent: dict[tuple[str, ...], deque[float]] = {}
        self._opening: dict[tuple[str, ...], threading.Event] = {}
        self._free: dict[tuple[str, ...], int | None] = {}
        self._spent: dict[str, int] = {}  # counter id -> spent as last seen (soft budgets)
        self.lock = threading.Lock()

    # --- admission ---------------------------------------------------------------

    def draw(
        self, counters: tuple[str, ...], limits: tuple[int | None, ...], estimate: int
    ) -> Grant | None:
        """Take ``estimate`` from this limit set's grant, or None (use the per-call path).
        A grant made under other limits (a budget was changed) is drained, not used."""
        now = self.clock()
        with self.lock:
            recent = self._recent.setdefault(counters, deque())
            recent.append(now)
            while recent and recent[0] < now - RATE_WINDOW_S:
                recent.popleft()
            opening = self._opening.get(counters)
        if opening is not None and counters not in self._grants:
            # a grant is being opened for this limit set (one write, a few ms): waiting
            # for it beats a per-call write on the hot counters
            opening.wait(OPEN_WAIT_S)
        with self.lock:
            g = self._grants.get(counters)
            if g is None:
                return None
            if g.limits != limits:
                g.stale = g.draining = True
                return None
            if not g.drawable(now, self.draw_window_s) or g.available() < estimate:
                return None
            g.live += estimate
            g.live_calls += 1
            g.draws.append((now, estimate))
            return g

    def undraw(self, g: Grant, estimate: int) -> None:
        """A drawn call that never got its hold written (or was refused after all)."""
        with self.lock:
            g.live -= estimate
            g.live_calls -= 1

    # --- settlement --------------------------------------------------------------

    def begin_settle(self, g: Grant, estimate: int, cost: int) -> int:
        """Count the call's cost as unflushed in the current generation; its label."""
        with self.lock:
            g.live -= estimate
            g.live_calls -= 1
            gen = g.gen
            g.costs[gen] = g.costs.get(gen, 0) + cost
            g.pending[gen] = g.pending.get(gen, 0) + 1
            return gen

    def end_settle(self, g: Grant, gen: int, cost: int, landed: bool) -> None:
        with self.lock:
            g.pending[gen] -= 1
            if not landed:  # booked another way (the grant was closed under it)
                g.costs[gen] -= cost

    # --- syncs ---------------------------------------------------------------------

    def note_states(
        self,
        counters: tuple[str, ...],
        limits: Sequence[int | None],
        states: Sequence[CounterState],
    ) -> None:
        """Remember the counters' room as last seen (from any write's answer)."""
        with self.lock:
            self._free[counters] = free_nano(limits, states)
            for cid, st in zip(counters, states, strict=False):
                self._spent[cid] = st.spent

    def spent_seen(self, counter_id: str) -> int | None:
        """A counter's ``spent`` as last seen (settled costs flushed by grant syncs, so at
        most a sync interval behind), or None."""
        with self.lock:
            return self._spent.get(counter_id)

    def want_open(self, counters: tuple[str, ...], estimate: int) -> int:
        """The amount to open a grant with now, or 0."""
        now = self.clock()
        with self.lock:
            if counters in self._grants or counters in self._opening:
                return 0
            recent = self._recent.get(counters, deque())
            if sum(1 for t in recent if t >= now - RATE_WINDOW_S) < OPEN_AFTER_CALLS:
                return 0
            # with no room seen yet (an instance's first calls) the opening write itself
            # checks it (see ``too_close``)
            amount = target_amount(
                rate_per_s=rate_of(len(recent), now - recent[0]),
                mean_estimate=estimate,
                free=self._free.get(counters),
                mine=0,
            )
            if amount:
                self._opening[counters] = threading.Event()
            return amount

    def wait_sync(self, g: Grant, timeout_s: float = OPEN_WAIT_S) -> bool:
        """Wait for a sync in flight (a refusal may rest on what it gives back)."""
        if not g.syncing:
            return False
        return g.synced_event.wait(timeout_s)

    def current(self, counters: tuple[str, ...]) -> Grant | None:
        with self.lock:
            return self._grants.get(counters)

    def opened(self, counters: tuple[str, ...], g: Grant | None) -> None:
        with self.lock:
            event = self._opening.pop(counters, None)
            if event is not None:
                event.set()
            if g is not None:
                self._grants[counters] = g

    def plan_sync(
        self, g: Grant, own: tuple[int, int] | None = None, *, force: bool = False
    ) -> SyncPlan | None:
        """A sync for ``g`` if one is due and none is in flight; marks it in flight.

        ``own`` is (estimate, cost) of the call whose settlement the sync rides on: its
        cost is flushed by the same atomic write, so it never enters a generation. If
        no sync is planned the caller settles it with ``begin_settle``."""
        now = self.clock()
        with self.lock:
            if g.syncing or g.closed:
                return None
            rate, mean = g.rate(now)
            # low: less than about a second of the traffic seen is left
            low = g.available() < max(mean, 1) * max(2.0, rate * LOW_WATER_S)
            due = force or g.draining or low or now - g.synced_at >= SYNC_EVERY_S
            if not due:
                return None
            gens = []
            for gen in range(g.flushed_gen + 1, g.gen):
                if g.pending.get(gen, 0):
                    break
                gens.append(gen)
            gens_cost = sum(g.costs.get(gen, 0) for gen in gens)
            own_estimate, own_cost = own or (0, 0)
            if own is not None:
                g.live -= own_estimate
                g.live_calls -= 1
            flushed = gens_cost + own_cost
            committed = g.live + g.unflushed - gens_cost
            if low and not g.draining:
                # it ran out before its sync was due: traffic is ramping up, so at
                # least double it (still capped by the room around it)
                rate = max(rate, 2 * g.amount / (HORIZON_S * max(mean, 1)))
            target = (
                0
                if g.draining
                else target_amount(
                    rate_per_s=rate,
                    mean_estimate=mean,
                    free=self._free.get(g.counters),
                    mine=g.amount,
                )
            )
            if target == 0:
                g.draining = True
            new_amount = committed if g.draining else max(target, committed)
            close = g.draining and new_amount == 0 and g.live_calls == 0
            g.syncing = True
            g.synced_event.clear()
            # While the write is in flight, draws must fit the old state (where the riding
            # call still holds its estimate) and the new one (where its cost is spent).
            g.cap = min(g.amount - own_estimate, new_amount + flushed - own_cost)
            g.gen += 1  # settlements from now on belong to the next sync
            return SyncPlan(
                g, tuple(gens), flushed, new_amount, g.live_calls - g.synced_calls, close
            )

    def synced(
        self,
        plan: SyncPlan,
        update_time: Any,
        states: Sequence[CounterState] | None,
        ok: bool,
        amount: int | None = None,
    ) -> None:
        """The sync's write landed (``ok``) or failed; a grant whose document changed
        under it (closed by the sweep) is dropped: the sweep booked what it held."""
        g = plan.grant
        with self.lock:
            g.syncing = False
            g.synced_event.set()
            g.cap = None
            if not ok:
                return
            for gen in plan.flush_gens:
                g.costs.pop(gen, None)
                g.pending.pop(gen, None)
            g.flushed_gen = plan.flushed_gen
            # ``amount``: less than written, when growth crossed a limit and is being
            # taken back - nothing may draw from it meanwhile
            g.amount = plan.new_amount if amount is None else amount
            g.synced_calls += plan.inflight_delta
            g.synced_at = self.clock()
            g.update_time = update_time
            if states is not None:
                self._free[g.counters] = free_nano(g.limits, states)
            if plan.close:
                self._close(g)

    def drop(self, g: Grant) -> None:
        with self.lock:
            self._close(g)

    def _close(self, g: Grant) -> None:
        g.closed = True
        if self._grants.get(g.counters) is g:
            del self._grants[g.counters]

    def free(self, counters: tuple[str, ...]) -> int | None:
        """The room last seen on these counters (grants' reservations counted as taken)."""
        with self.lock:
            return self._free.get(counters)

    def grants(self) -> list[Grant]:
        with self.lock:
            return list(self._grants.values())
