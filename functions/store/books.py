"""Firestore's side of booking a call: document references, the shared writes of a
settlement, commits retried on transient errors, and the correction of a call the
sweep booked before its settlement arrived. Used by the per-call path (``ledger.py``)
and by escrow grants (``grant_desk.py``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1 import Increment

from functions.core.errors import ServiceUnavailable
from functions.core.holds import SETTLED_HOLD_TTL, HoldPlan, Outcome, usage_record

log = logging.getLogger("tollgate.ledger")

TRANSIENT = (
    gexc.ServiceUnavailable,
    gexc.DeadlineExceeded,
    gexc.InternalServerError,
    gexc.Aborted,
    gexc.TooManyRequests,
)


def unreachable() -> ServiceUnavailable:
    """The answer to a call whose reservation met a transient database failure (it was
    taken back, or was a no-op): the client may simply retry."""
    return ServiceUnavailable(
        "Tollgate could not reach its database in time; retry the call.",
        headers={"retry-after": "1"},
    )


class Books:
    def __init__(self, db: firestore.Client, clock: Callable[[], datetime]) -> None:
        self.db = db
        self.clock = clock
        self.writes = 0  # document writes issued, for the benchmark

    def counter(self, cid: str) -> firestore.DocumentReference:
        return self.db.collection("counters").document(cid)

    def window(self, wid: str) -> firestore.DocumentReference:
        return self.db.collection("windows").document(wid)

    def hold(self, call_id: str) -> firestore.DocumentReference:
        return self.db.collection("holds").document(call_id)

    def usage(self, call_id: str) -> firestore.DocumentReference:
        return self.db.collection("usage").document(call_id)

    def grant(self, grant_id: str) -> firestore.DocumentReference:
        return self.db.collection("grants").document(grant_id)

    def delete_hold(self, call_id: str) -> None:
        batch = self.db.batch()
        batch.delete(self.hold(call_id))
        try:
            self.commit_with_retry(batch)
        except Exception as exc:  # noqa: BLE001 - the sweep books it at the estimate
            log.error("could not delete the unused hold of %s (%s)", call_id, type(exc).__name__)

    def settle_docs(
        self,
        batch: Any,
        plan: HoldPlan,
        outcome: Outcome,
        extra: Sequence[tuple[str, str, dict[str, Any]]],
        now: datetime,
        hold: dict[str, Any],
        hold_option: Any = None,
    ) -> None:
        """The call's own documents of a settlement batch."""
        for collection, doc, fields in extra:
            batch.set(self.db.collection(collection).document(doc), fields)
        batch.create(self.usage(plan.call_id), usage_record(plan, outcome, now))
        batch.update(
            self.hold(plan.call_id),
            {"state": "settled", "settled_at": now, "purge_at": now + SETTLED_HOLD_TTL, **hold},
            option=hold_option,
        )
        if plan.touch_key:
            # merge, not update: a key document that vanished must not fail the booking
            batch.set(
                self.db.collection("keys").document(plan.touch_key),
                {"last_used_at": now},
                merge=True,
            )

    def write_counters(self, batch: Any, deltas: dict[str, dict[str, int]]) -> None:
        for cid, d in deltas.items():
            batch.set(self.counter(cid), {k: Increment(v) for k, v in d.items()}, merge=True)

    def commit_with_retry(self, batch: Any, attempts: int = 4) -> Any:
        # A batch is atomic, so retrying a transient failure is safe: if the first
        # commit did land, the retry's `create` fails with AlreadyExists instead of
        # booking twice.
        for i in range(attempts):
            try:
                return batch.commit()
            except TRANSIENT:
                if i == attempts - 1:
                    raise
                time.sleep(0.05 * 2**i)
        raise AssertionError("unreachable")

    def correct(self, plan: HoldPlan, outcome: Outcome) -> None:
        """A settlement after the sweep: replace the orphaned estimate by the actual."""
        usage_ref, hold_ref = self.usage(plan.call_id), self.hold(plan.call_id)

        @firestore.transactional
        def run(tx: firestore.Transaction) -> bool:
            snap = usage_ref.get(transaction=tx)
            rec = snap.to_dict() or {}
            if rec.get("status") != "orphaned":
                return False  # already settled: nothing to do, nothing booked twice
            delta = outcome.cost_nano - int(rec.get("cost_nano", 0))
            for cid in (lim.counter_id for lim in plan.limits):
                tx.set(self.counter(cid), {"spent": Increment(delta)}, merge=True)
            fixed = usage_record(plan, outcome, self.clock())
            fixed["corrected_from"] = "orphaned"
            tx.set(usage_ref, fixed)
            tx.set(hold_ref, {"state": "settled", "settled_at": self.clock()}, merge=True)
            return True

        if run(self.db.transaction()):
            self.writes += len(plan.limits) + 2
            log.info("late settlement corrected orphaned call %s", plan.call_id)
