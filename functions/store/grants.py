"""The writes of escrow grants (``escrow.py`` holds the arithmetic): opening and syncing
a grant as part of a call's settlement batch, and closing a grant whose instance
stopped using it (the sweep).

A grant document ``grants/{id}``: ``project``, ``period``, ``counters`` (ids),
``limits``, ``amount`` (what every counter holds for it), ``flushed_gen`` (the last
generation of settled calls moved into ``spent``), ``synced_calls`` (its live calls
as counted in ``inflight``), ``draw_until`` (no call draws from it after this),
``state`` (``open``/``closed``). Every write of an instance to its grant carries a
``last_update_time`` precondition, so once the sweep has closed a grant nothing of
the instance's view of it can land.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1 import Increment

from functions.core.budget import CounterState
from functions.core.escrow import CLOSE_MARGIN_S, DRAW_WINDOW_S, Grant, SyncPlan
from functions.store import indexes

log = logging.getLogger("tollgate.ledger")

# Closed grants are kept for a while to debug, then Firestore's TTL purges them; an open
# grant never carries ``purge_at``, so TTL cannot delete one whose money is still out.
CLOSED_GRANT_TTL = timedelta(days=2)
GEN_UNKNOWN = 2**62  # a settled hold whose generation the instance lost: flushed at close


def counter_delta(
    deltas: dict[str, dict[str, int]],
    counter: str,
    *,
    held: int = 0,
    inflight: int = 0,
    spent: int = 0,
    escrow: int = 0,
) -> None:
    """Add to one counter's increments (a batch writes each counter once, all four
    fields, so its answer always has the same shape)."""
    d = deltas.setdefault(counter, {"escrow": 0, "held": 0, "inflight": 0, "spent": 0})
    d["escrow"] += escrow
    d["held"] += held
    d["inflight"] += inflight
    d["spent"] += spent


def add_sync(deltas: dict[str, dict[str, int]], sp: SyncPlan) -> None:
    for cid in sp.grant.counters:
        counter_delta(
            deltas, cid, escrow=sp.escrow_delta, inflight=sp.inflight_delta, spent=sp.flushed
        )


def sync_doc(sp: SyncPlan, now: datetime, draw_window_s: float = DRAW_WINDOW_S) -> dict[str, Any]:
    g = sp.grant
    return {
        "amount": sp.new_amount,
        "flushed_gen": sp.flushed_gen,
        "synced_calls": g.synced_calls + sp.inflight_delta,
        "synced_at": now,
        "draw_until": now + timedelta(seconds=draw_window_s),
        "state": "closed" if sp.close else "open",
        **({"closed_at": now, "purge_at": now + CLOSED_GRANT_TTL} if sp.close else {}),
    }


def open_doc(g: Grant, now: datetime, draw_window_s: float = DRAW_WINDOW_S) -> dict[str, Any]:
    return {
        "id": g.id,
        "project": g.project,
        "period": g.period,
        "counters": list(g.counters),
        "limits": list(g.limits),
        "amount": g.amount,
        "flushed_gen": 0,
        "synced_calls": 0,
        "created_at": now,
        "synced_at": now,
        "draw_until": now + timedelta(seconds=draw_window_s),
        "state": "open",
    }


def grant_holds(
    db: firestore.Client, grant_id: str, grant: dict[str, Any], tx: Any = None
) -> tuple[list[firestore.DocumentSnapshot], int]:
    """A grant's live holds, and the costs of its settled holds that no sync has moved
    to ``spent`` yet (generations after the grant document's ``flushed_gen``)."""
    live = list(
        indexes.query(db, "holds", equals={"grant": grant_id, "state": "live"}).stream(
            transaction=tx
        )
    )
    settled = indexes.query(
        db,
        "holds",
        equals={"grant": grant_id, "state": "settled"},
        ranges=[("gen", ">", int(grant.get("flushed_gen") or 0))],
    )
    return live, sum(int(h.get("cost_nano") or 0) for h in settled.stream(transaction=tx))


class GrantSweeper:
    """Closes grants nobody draws from any more: what they hold but no live call
    needs goes back to the counters, settled costs not yet flushed go to ``spent``,
    and their live calls become ordinary holds (settled or swept one by one)."""

    def __init__(self, db: firestore.Client, close_margin_s: float = CLOSE_MARGIN_S) -> None:
        self.db = db
        self.close_margin_s = close_margin_s

    def close_lapsed(self, now: datetime, project: str | None = None, limit: int = 20) -> int:
        equals = {"state": "open"} if project is None else {"state": "open", "project": project}
        q = indexes.query(
            self.db,
            "grants",
            equals=equals,
            ranges=[("draw_until", "<", now - timedelta(seconds=self.close_margin_s))],
            limit=limit,
        )
        closed = 0
        for snap in q.stream():
            try:
                closed += self._close(snap.reference, now)
            except (gexc.Aborted, gexc.FailedPrecondition, ValueError):
                continue  # its instance synced meanwhile, or another sweep closed it
        return closed

    def _close(self, ref: firestore.DocumentReference, now: datetime) -> int:
        holds = self.db.collection("holds")

        @firestore.transactional
        def run(tx: firestore.Transaction) -> int:
            g = ref.get(transaction=tx).to_dict() or {}
            cutoff = now - timedelta(seconds=self.close_margin_s)
            if (
                g.get("state") != "open"
                or g.get("draw_until") is None
                or (g["draw_until"] >= cutoff)
            ):
                return 0
            live, unflushed = grant_holds(self.db, ref.id, g, tx)
            live_nano = sum(int(s.get("estimate_nano") or 0) for s in live)
            for cid in g.get("counters", []):
                tx.set(
                    self.db.collection("counters").document(cid),
                    {
                        "escrow": Increment(-int(g.get("amount", 0))),
                        "held": Increment(live_nano),
                        "inflight": Increment(len(live) - int(g.get("synced_calls", 0))),
                        "spent": Increment(unflushed),
                    },
                    merge=True,
                )
            for s in live:
                # From now on the call settles (or is swept) on the counters itself.
                tx.update(holds.document(s.id), {"grant": None, "from_grant": ref.id})
            tx.update(
                ref,
                {
                    "state": "closed",
                    "closed_at": now,
                    "closed_by": "sweep",
                    "purge_at": now + CLOSED_GRANT_TTL,
                    "closed_live": len(live),
                    "closed_unflushed": unflushed,
                },
            )
            return 1

        n = run(self.db.transaction())
        if n:
            log.info("closed lapsed grant %s", ref.id)
        return n


def exact_states(
    db: firestore.Client, project: str, counter_ids: Sequence[str]
) -> dict[str, CounterState]:
    """Counters as the spend pages show them: with the costs of calls settled inside a
    still-open grant (not yet flushed by a sync) moved from ``escrow`` to ``spent``, so
    ``spent`` equals the usage records booked on the counter at this moment."""
    refs = [db.collection("counters").document(cid) for cid in counter_ids]
    out = {cid: CounterState() for cid in counter_ids}
    for snap in db.get_all(refs) if refs else []:
        if snap.exists:
            out[snap.id] = CounterState.of(snap.to_dict())
    open_grants = indexes.query(db, "grants", equals={"project": project, "state": "open"})
    for g in open_grants.stream():
        touched = [cid for cid in g.get("counters") or [] if cid in out]
        if not touched:
            continue
        live, unflushed = grant_holds(db, g.id, g.to_dict() or {})
        for cid in touched:
            c = out[cid]
            out[cid] = CounterState(
                spent=c.spent + unflushed,
                held=c.held,
                escrow=c.escrow - unflushed,
                inflight=c.inflight - int(g.get("synced_calls") or 0) + len(live),
            )
    return out
