"""An in-memory ledger: what ``functions.store.ledger.Ledger`` promises, without Firestore.

It keeps the same counters, windows, holds and usage records in dicts under one lock,
and decides with the same pure rules (``budget.first_breach``, ``rate_breach``,
``refusal_message``, ``holds.usage_record``), so a test of the logic *around* the
budget path (the proxy's flow, handlers) runs in milliseconds. It has no escrow
grants and no lost answers to recover from: what it is checked against is the
contract both ledgers pass (tests/test_ledger_contract.py); everything that counts
money under concurrency is tested on the emulator.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from functions.core.budget import (
    CounterState,
    WindowState,
    first_breach,
    rate_breach,
    rate_refusal,
    refusal_message,
    remaining_nano,
    soft_crossed,
)
from functions.core.errors import BudgetExceeded, RateLimited
from functions.core.holds import HoldPlan, Outcome, usage_record, utcnow
from functions.core.pricing import Usage


class MemoryLedger:
    def __init__(self, clock: Callable[[], datetime] = utcnow) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self.counters: dict[str, CounterState] = {}
        self.windows: dict[str, WindowState] = {}
        self.holds: dict[str, HoldPlan] = {}  # live holds by call id
        self.usage: dict[str, dict[str, Any]] = {}

    # --- reading ---------------------------------------------------------------------

    def _states(self, plan: HoldPlan) -> list[CounterState]:
        return [self.counters.get(lim.counter_id, CounterState()) for lim in plan.limits]

    def states(self, plan: HoldPlan) -> list[CounterState]:
        with self._lock:
            return self._states(plan)

    def record(self, call_id: str) -> dict[str, Any] | None:
        with self._lock:
            rec = self.usage.get(call_id)
            return dict(rec) if rec is not None else None

    def remaining(self, plan: HoldPlan) -> int | None:
        return remaining_nano(plan.limits, self.states(plan))

    def remaining_after(self, plan: HoldPlan, cost_nano: int) -> int | None:
        free = self.remaining(plan)
        return None if free is None else free + plan.estimate_nano - cost_nano

    def room(self, plan: HoldPlan) -> int:
        return self.remaining(plan) or 0

    def soft_exceeded(self, plan: HoldPlan, cost_nano: int) -> tuple[str, ...]:
        spent = [st.spent for st in self.states(plan)]
        return tuple(soft_crossed(plan.limits, spent, cost_nano))

    # --- writing ---------------------------------------------------------------------

    def reserve(self, plan: HoldPlan) -> list[CounterState]:
        with self._lock:
            after = [st.with_call(plan.estimate_nano) for st in self._states(plan)]
            windows = [self.windows.get(rl.counter_id, WindowState()) for rl in plan.rate_limits]
            windows = [
                WindowState(w.requests + 1, w.tokens + plan.estimate_tokens) for w in windows
            ]
            rate = rate_breach(plan.rate_limits, windows)
            if rate is not None:
                message, wait = rate_refusal(rate, plan.admitted_at)
                raise RateLimited(message, retry_after_s=wait)
            breach = first_breach(plan.limits, after)
            if breach is not None:
                raise BudgetExceeded(
                    refusal_message(
                        *breach, plan.estimate_nano, plan.budget_period, plan.period_key
                    )
                )
            for lim, st in zip(plan.limits, after, strict=True):
                self.counters[lim.counter_id] = st
            for rl, w in zip(plan.rate_limits, windows, strict=True):
                self.windows[rl.counter_id] = w
            self.holds[plan.call_id] = plan
            return after

    def _move(self, plan: HoldPlan, spent: int) -> list[CounterState]:
        out = []
        for lim in plan.limits:
            st = self.counters.get(lim.counter_id, CounterState())
            st = replace(
                st,
                held=st.held - plan.estimate_nano,
                inflight=st.inflight - 1,
                spent=st.spent + spent,
            )
            self.counters[lim.counter_id] = st
            out.append(st)
        return out

    def cancel(self, plan: HoldPlan) -> None:
        with self._lock:
            if self.holds.pop(plan.call_id, None) is None:
                return
            self._move(plan, 0)
            for rl in plan.rate_limits:
                w = self.windows[rl.counter_id]
                self.windows[rl.counter_id] = WindowState(
                    w.requests - 1, w.tokens - plan.estimate_tokens
                )

    def settle(
        self,
        plan: HoldPlan,
        outcome: Outcome,
        extra: Sequence[tuple[str, str, dict[str, Any]]] = (),
    ) -> list[CounterState] | None:
        if outcome.soft_exceeded is None:
            outcome.soft_exceeded = self.soft_exceeded(plan, outcome.cost_nano)
        with self._lock:
            if plan.call_id in self.usage or self.holds.pop(plan.call_id, None) is None:
                return None  # booked already (or never held): exactly once
            states = self._move(plan, outcome.cost_nano)
            self.usage[plan.call_id] = usage_record(plan, outcome, self.clock())
            return states

    def book_cached(self, plan: HoldPlan, usage: Usage) -> None:
        outcome = Outcome(status="ok", cost_nano=0, cached=True, usage=usage)
        with self._lock:
            if plan.call_id in self.usage:
                raise ValueError(f"{plan.call_id} is booked already")
            self.usage[plan.call_id] = usage_record(plan, outcome, plan.admitted_at)

    def sweep(self, project: str | None = None, limit: int = 50) -> int:
        """Book expired live holds ``orphaned`` at their estimate (upstream may have
        billed them), as the real sweep does."""
        now = self.clock()
        with self._lock:
            due = [
                p
                for p in self.holds.values()
                if p.expires_at <= now and (project is None or p.project == project)
            ][:limit]
            for plan in due:
                del self.holds[plan.call_id]
                self._move(plan, plan.estimate_nano)
                self.usage[plan.call_id] = usage_record(
                    plan,
                    Outcome(
                        status="orphaned",
                        cost_nano=plan.estimate_nano,
                        http_status=0,
                        estimated=True,
                    ),
                    now,
                )
            return len(due)
