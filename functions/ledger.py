"""Holds, settlement and the sweep: every write that moves money, on Firestore.

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
* sweep: for each expired live hold, a transaction over the hold and its usage
  record books the estimate as ``orphaned`` (upstream may have billed the call).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1 import Increment

from functions import indexes
from functions.budget import (
    CounterState,
    Limit,
    RateLimit,
    WindowState,
    first_breach,
    rate_breach,
    refusal_message,
    retry_after_s,
)
from functions.errors import BudgetExceeded, RateLimited, ServiceUnavailable
from functions.pricing import Usage

log = logging.getLogger("tollgate.ledger")

SETTLED_HOLD_TTL = timedelta(days=2)  # settled holds are only kept to debug; TTL purges them
_TRANSIENT = (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.InternalServerError,
              gexc.Aborted, gexc.TooManyRequests)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class HoldPlan:
    call_id: str
    project: str
    user: str
    key_name: str
    model: str
    route: str
    budget_period: str  # total | monthly | daily
    period_key: str  # total | 2026-11 | 2026-11-23
    limits: Sequence[Limit]
    estimate_nano: int
    admitted_at: datetime
    expires_at: datetime
    streamed: bool = False
    tag: str | None = None
    estimate_tokens: int = 0
    touch_key: str | None = None  # key hash whose last_used_at the settlement updates
    rate_limits: Sequence[RateLimit] = ()  # rpm/tpm windows of the admission minute


@dataclass
class Outcome:
    """What to book for a call once it is over."""

    status: str  # ok | upstream_error | upstream_timeout | upstream_unavailable | cut ...
    cost_nano: int
    http_status: int = 200
    usage: Usage = field(default_factory=Usage)
    estimated: bool = False
    upstream_model: str | None = None
    request_id: str | None = None
    response_id: str | None = None
    service_tier: str | None = None
    latency_ms: int = 0
    cached: bool = False
    usage_raw: dict[str, Any] | None = None


def _counter_fields(limit: Limit, period_key: str) -> dict[str, Any]:
    fields: dict[str, Any] = {"scope": limit.scope, "project": limit.project,
                              "period": period_key}
    if limit.user:
        fields["user"] = limit.user
    if limit.model:
        fields["model"] = limit.model
    return fields


def _states(results: Sequence[Any], n: int) -> list[CounterState]:
    # The client sorts field transforms by path, so each counter's results come back
    # as [held, inflight, spent] (see platform notes §2.4).
    out = []
    for wr in results[:n]:
        held, inflight, spent = (v.integer_value for v in wr.transform_results)
        out.append(CounterState(spent=spent, held=held, inflight=inflight))
    return out


def usage_record(plan: HoldPlan, outcome: Outcome, settled_at: datetime) -> dict[str, Any]:
    u = outcome.usage
    return {
        "call_id": plan.call_id, "ts": plan.admitted_at, "settled_at": settled_at,
        "period": plan.period_key, "project": plan.project, "user": plan.user,
        "key_name": plan.key_name, "model": plan.model, "route": plan.route,
        "upstream_model": outcome.upstream_model, "status": outcome.status,
        "http_status": outcome.http_status,
        "input_tokens": u.input_tokens, "cached_tokens": u.cached_tokens,
        "cache_write_tokens": u.cache_write_tokens, "output_tokens": u.output_tokens,
        "reasoning_tokens": u.reasoning_tokens,
        "cost_nano": outcome.cost_nano, "estimate_nano": plan.estimate_nano,
        "latency_ms": outcome.latency_ms, "streamed": plan.streamed, "cached": outcome.cached,
        "estimated": outcome.estimated, "tag": plan.tag, "request_id": outcome.request_id,
        "response_id": outcome.response_id, "service_tier": outcome.service_tier,
        "usage": outcome.usage_raw,
    }


class Ledger:
    def __init__(self, db: firestore.Client, clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.clock = clock
        self.writes = 0  # document writes issued, for the benchmark

    def _counter(self, cid: str) -> firestore.DocumentReference:
        return self.db.collection("counters").document(cid)

    def _window(self, wid: str) -> firestore.DocumentReference:
        return self.db.collection("windows").document(wid)

    def _hold(self, call_id: str) -> firestore.DocumentReference:
        return self.db.collection("holds").document(call_id)

    def _usage(self, call_id: str) -> firestore.DocumentReference:
        return self.db.collection("usage").document(call_id)

    # --- reserve -------------------------------------------------------------

    def reserve(self, plan: HoldPlan) -> list[CounterState]:
        """Hold the estimate against every limit, or raise BudgetExceeded.

        Expired holds are swept before anyone is refused, so a refusal never rests on
        a hold nobody will settle: they are booked ``orphaned`` at their estimate
        (which keeps the spend, since upstream may have billed them) and the refusal
        reports only calls really in flight."""
        states, windows = self._increment(plan)
        rate = rate_breach(plan.rate_limits, windows)
        breach = first_breach(plan.limits, states)
        if rate is None and breach is None:
            if _first_of_period(states[0], plan.estimate_nano):
                # A new period (or a first call) starts: book holds orphaned in the
                # last one now, rather than waiting for someone to be refused.
                self.sweep(project=plan.project)
            return states
        self._release(plan)
        if rate is not None:
            lim, what, value = rate
            wait = retry_after_s(plan.admitted_at)
            unit = "requests" if what == "requests" else "tokens (estimated at admission)"
            raise RateLimited(f"Rate limit reached for {lim.label}: {value} {unit} per minute. "
                              f"Retry in {wait} s.", retry_after_s=wait)
        assert breach is not None
        limit, state = breach
        if self.sweep(project=plan.project):
            state = self._counter_state(limit.counter_id, plan.estimate_nano)
        raise BudgetExceeded(refusal_message(limit, state, plan.estimate_nano,
                                             plan.budget_period, plan.period_key))

    def _counter_state(self, counter_id: str, estimate: int) -> CounterState:
        """A counter as this (released) call would have seen it, for the message."""
        d = self._counter(counter_id).get().to_dict() or {}
        return CounterState(spent=int(d.get("spent", 0)), held=int(d.get("held", 0)) + estimate,
                            inflight=int(d.get("inflight", 0)) + 1)

    def _increment(self, plan: HoldPlan) -> tuple[list[CounterState], list[WindowState]]:
        batch = self.db.batch()
        for lim in plan.limits:
            batch.set(self._counter(lim.counter_id), {
                **_counter_fields(lim, plan.period_key),
                "held": Increment(plan.estimate_nano), "inflight": Increment(1),
                "spent": Increment(0)}, merge=True)
        for rl in plan.rate_limits:
            batch.set(self._window(rl.counter_id), {
                "project": plan.project, "requests": Increment(1),
                "tokens": Increment(plan.estimate_tokens)}, merge=True)
        batch.create(self._hold(plan.call_id), {
            "call_id": plan.call_id, "project": plan.project, "user": plan.user,
            "key_name": plan.key_name, "model": plan.model, "route": plan.route,
            "period": plan.period_key, "counters": [lim.counter_id for lim in plan.limits],
            "estimate_nano": plan.estimate_nano, "estimate_tokens": plan.estimate_tokens,
            "created_at": plan.admitted_at, "expires_at": plan.expires_at,
            "state": "live", "streamed": plan.streamed, "tag": plan.tag})
        try:
            results = batch.commit()
        except _TRANSIENT:
            # The answer is lost, the write may or may not have landed: take it back
            # (a no-op if it never landed) and let the client retry the call.
            self._release(plan)
            raise ServiceUnavailable("Tollgate could not reach its database in time; "
                                     "retry the call.", headers={"retry-after": "1"}) from None
        n = len(plan.limits)
        self.writes += n + len(plan.rate_limits) + 1
        return _states(results, n), _windows(results[n:n + len(plan.rate_limits)])

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
        when the call had already been booked (by the sweep, or an earlier attempt).

        ``extra`` documents (collection, id, fields; replaced whole) ride in the same write:
        the response-cache entry, the last rate-limit headers - no extra round trip."""
        now = self.clock()
        batch = self.db.batch()
        for lim in plan.limits:
            batch.set(self._counter(lim.counter_id), {
                "held": Increment(-plan.estimate_nano), "inflight": Increment(-1),
                "spent": Increment(outcome.cost_nano)}, merge=True)
        used = outcome.usage.input_tokens + outcome.usage.output_tokens
        for rl in plan.rate_limits:
            # tokens per minute: the estimate counted at admission becomes the actual,
            # in the admission minute's window
            batch.set(self._window(rl.counter_id),
                      {"tokens": Increment(used - plan.estimate_tokens)}, merge=True)
        for collection, doc, fields in extra:
            batch.set(self.db.collection(collection).document(doc), fields)
        batch.create(self._usage(plan.call_id), usage_record(plan, outcome, now))
        batch.update(self._hold(plan.call_id), {
            "state": "settled", "settled_at": now, "purge_at": now + SETTLED_HOLD_TTL})
        if plan.touch_key:
            # merge, not update: a key document that vanished must not fail the booking
            batch.set(self.db.collection("keys").document(plan.touch_key),
                      {"last_used_at": now}, merge=True)
        try:
            results = self._commit_with_retry(batch)
        except gexc.AlreadyExists:
            self._correct(plan, outcome)
            return None
        self.writes += len(plan.limits) + len(plan.rate_limits) + 2 + len(extra) + bool(
            plan.touch_key)
        return _states(results, len(plan.limits))

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
        """Book expired live holds as ``orphaned`` at their estimate. Returns the count."""
        now = self.clock()
        equals = {"state": "live"} if project is None else {"state": "live", "project": project}
        q = indexes.query(self.db, "holds", equals=equals, ranges=[("expires_at", "<", now)],
                          limit=limit)
        swept = 0
        for snap in q.stream():
            try:
                swept += self._sweep_one(snap.reference, now)
            except (gexc.AlreadyExists, gexc.Aborted, ValueError):
                # The call settled while we looked at it: it is booked, leave it.
                continue
        return swept

    def _sweep_one(self, hold_ref: firestore.DocumentReference, now: datetime) -> int:
        usage_ref = self._usage(hold_ref.id)

        @firestore.transactional
        def run(tx: firestore.Transaction) -> int:
            hold = hold_ref.get(transaction=tx)
            h = hold.to_dict() or {}
            if h.get("state") != "live" or h.get("expires_at") is None or h["expires_at"] >= now:
                return 0
            if usage_ref.get(transaction=tx).exists:
                return 0
            est = int(h.get("estimate_nano", 0))
            for cid in h.get("counters", []):
                tx.set(self._counter(cid), {"held": Increment(-est), "inflight": Increment(-1),
                                            "spent": Increment(est)}, merge=True)
            plan = plan_from_hold(h)
            tx.create(usage_ref, usage_record(plan, Outcome(
                status="orphaned", cost_nano=est, http_status=0, estimated=True), now))
            tx.update(hold_ref, {"state": "swept", "settled_at": now,
                                 "purge_at": now + SETTLED_HOLD_TTL})
            return 1

        n = run(self.db.transaction())
        if n:
            log.warning("swept expired hold of call %s (booked orphaned)", hold_ref.id)
        return n


def _windows(results: Sequence[Any]) -> list[WindowState]:
    # sorted field paths again: [requests, tokens]
    out = []
    for wr in results:
        requests, tokens = (v.integer_value for v in wr.transform_results)
        out.append(WindowState(requests=requests, tokens=tokens))
    return out


def _first_of_period(project_counter: CounterState, estimate: int) -> bool:
    return (project_counter.spent == 0 and project_counter.inflight == 1
            and project_counter.held == estimate)


def plan_from_hold(h: dict[str, Any]) -> HoldPlan:
    """Rebuild enough of a HoldPlan from a hold document to book it."""
    return HoldPlan(
        call_id=str(h.get("call_id")), project=str(h.get("project")), user=str(h.get("user")),
        key_name=str(h.get("key_name", "")), model=str(h.get("model")),
        route=str(h.get("route", "")), budget_period="", period_key=str(h.get("period", "")),
        limits=(), estimate_nano=int(h.get("estimate_nano", 0)),
        admitted_at=h.get("created_at") or utcnow(), expires_at=h.get("expires_at") or utcnow(),
        streamed=bool(h.get("streamed", False)), tag=h.get("tag"),
        estimate_tokens=int(h.get("estimate_tokens", 0)))
