"""Budget alerts: a project's webhook is told when spend crosses a threshold (50, 80
and 100 % of a budget by default), once per threshold, budget and period.

"Once" is a document created per (counter, threshold) - ``create`` fails if it
exists, so of two calls crossing together exactly one posts. The post has a short
timeout and its failure is logged, never raised: an alert must not fail a call, and
only the call that crosses the line waits for it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import requests
from google.api_core import exceptions as gexc
from google.cloud import firestore

from functions.budget import CounterState, Limit
from functions.pricing import format_usd

log = logging.getLogger("tollgate.alerts")
DEFAULT_THRESHOLDS = (50, 80, 100)
POST_TIMEOUT_S = (1.0, 2.0)


def crossings(limits: Sequence[Limit], after: Sequence[CounterState], cost: int,
              thresholds: Sequence[int]) -> list[tuple[Limit, int, int]]:
    """(limit, threshold %, spent) for each threshold this call's cost crossed."""
    out = []
    for lim, st in zip(limits, after, strict=True):
        if lim.limit_nano is None or lim.limit_nano <= 0 or cost <= 0:
            continue
        before = st.spent - cost
        for t in sorted(set(thresholds)):
            line = lim.limit_nano * t  # compare spent*100 with limit*t: no rounding
            if before * 100 < line <= st.spent * 100:
                out.append((lim, t, st.spent))
    return out


class Alerts:
    def __init__(self, db: firestore.Client) -> None:
        self.db = db
        self.session = requests.Session()
        self.session.trust_env = False

    def notify(self, *, project: str, period: str, webhook: str | None,
               thresholds: Sequence[int], limits: Sequence[Limit],
               after: Sequence[CounterState], cost: int, now: datetime) -> int:
        """Record and post every crossing; returns how many this call sent."""
        sent = 0
        for lim, t, spent in crossings(limits, after, cost, thresholds):
            payload: dict[str, Any] = {
                "project": project, "limit": lim.label, "scope": lim.scope, "user": lim.user,
                "model": lim.model, "period": period, "threshold_percent": t,
                "spent_usd": format_usd(spent), "budget_usd": format_usd(lim.limit_nano or 0)}
            ref = self.db.collection("alerts_sent").document(f"{lim.counter_id}|{t}")
            try:
                ref.create({**payload, "ts": now, "webhook": bool(webhook), "delivered": None})
            except gexc.AlreadyExists:
                continue  # another call crossed it first
            delivered = self._post(webhook, payload) if webhook else None
            try:
                ref.update({"delivered": delivered})
            except gexc.GoogleAPICallError:
                log.warning("could not record delivery of alert %s", ref.id)
            sent += 1
        return sent

    def _post(self, url: str, payload: dict[str, Any]) -> bool:
        try:
            r = self.session.post(url, json=payload, timeout=POST_TIMEOUT_S)
            return r.status_code < 300
        except requests.RequestException as e:
            log.warning("budget alert to webhook failed: %s", type(e).__name__)
            return False
