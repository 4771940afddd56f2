"""The sweep: books what crashed instances left behind. Lapsed escrow grants are closed
first (``grants.GrantSweeper``), then every expired live hold is booked ``orphaned``
at its estimate (upstream may have billed the call) in a transaction over the hold and
its usage record, so a settlement racing it books the call once either way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1 import Increment

from functions.core.escrow import CLOSE_MARGIN_S
from functions.core.holds import SETTLED_HOLD_TTL, Outcome, plan_from_hold, usage_record
from functions.store import indexes
from functions.store.grants import GrantSweeper

log = logging.getLogger("tollgate.ledger")


class HoldSweeper:
    def __init__(
        self,
        db: firestore.Client,
        clock: Callable[[], datetime],
        close_margin_s: float = CLOSE_MARGIN_S,
    ) -> None:
        self.db = db
        self.clock = clock
        self.grants = GrantSweeper(db, close_margin_s)
        self.holds_swept = self.grants_closed = 0  # since this sweeper was made

    def sweep(self, project: str | None = None, limit: int = 50) -> int:
        """Close lapsed escrow grants, then book expired live holds as ``orphaned`` at
        their estimate. Returns the count of both."""
        now = self.clock()
        closed = self.grants.close_lapsed(now, project)
        self.grants_closed += closed
        swept = 0
        equals = {"state": "live"} if project is None else {"state": "live", "project": project}
        q = indexes.query(
            self.db, "holds", equals=equals, ranges=[("expires_at", "<", now)], limit=limit
        )
        for snap in q.stream():
            try:
                swept += self._sweep_one(snap.reference, now)
            except (gexc.AlreadyExists, gexc.Aborted, ValueError):
                # The call settled while we looked at it: it is booked, leave it.
                continue
        self.holds_swept += swept
        return swept + closed

    def _sweep_one(self, hold_ref: firestore.DocumentReference, now: datetime) -> int:
        usage_ref = self.db.collection("usage").document(hold_ref.id)

        @firestore.transactional
        def run(tx: firestore.Transaction) -> int:
            hold = hold_ref.get(transaction=tx)
            h = hold.to_dict() or {}
            if h.get("state") != "live" or h.get("expires_at") is None or h["expires_at"] >= now:
                return 0
            if h.get("grant"):
                return 0  # inside an open grant: booked when the grant is closed
            if usage_ref.get(transaction=tx).exists:
                return 0
            est = int(h.get("estimate_nano", 0))
            for cid in h.get("counters", []):
                tx.set(
                    self.db.collection("counters").document(cid),
                    {"held": Increment(-est), "inflight": Increment(-1), "spent": Increment(est)},
                    merge=True,
                )
            plan = plan_from_hold(h)
            tx.create(
                usage_ref,
                usage_record(
                    plan,
                    Outcome(status="orphaned", cost_nano=est, http_status=0, estimated=True),
                    now,
                ),
            )
            tx.update(
                hold_ref, {"state": "swept", "settled_at": now, "purge_at": now + SETTLED_HOLD_TTL}
            )
            return 1

        n = run(self.db.transaction())
        if n:
            log.warning("swept expired hold of call %s (booked orphaned)", hold_ref.id)
        return n
