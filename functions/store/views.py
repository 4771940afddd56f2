"""What the pages and reports read, behind one class: a project's and its members'
documents, the counters as the spend pages show them (costs settled inside a still
open escrow grant count as spent), usage aggregates and records, the audit trail and
burn rates. The handlers of the ``log`` and ``admin`` functions hold a ``Views`` and
never a Firestore client; the queries themselves are ``reports``'s and ``burn``'s.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from google.cloud import firestore

from functions.core.budget import CounterState
from functions.store import burn, indexes, reports
from functions.store.grants import exact_states


class Views:
    def __init__(self, db: firestore.Client) -> None:
        self.db = db

    def all(self, collection: str) -> list[dict[str, Any]]:
        """Every document of a configuration collection (users, models, projects...)."""
        return [s.to_dict() or {} for s in indexes.query(self.db, collection).stream()]

    def where(self, collection: str, **equals: Any) -> dict[str, dict[str, Any]]:
        """The documents whose fields equal these, by id (queries ``indexes`` knows)."""
        q = indexes.query(self.db, collection, equals=equals)
        return {s.id: s.to_dict() or {} for s in q.stream()}

    def project(self, project: str) -> dict[str, Any] | None:
        snap = self.db.collection("projects").document(project).get()
        return (snap.to_dict() or {}) if snap.exists else None

    def members(self, project: str) -> list[dict[str, Any]]:
        return list(self.where("members", project=project).values())

    def counters(self, project: str, counter_ids: Iterable[str]) -> dict[str, CounterState]:
        """The counters by id, as the spend pages show them (a missing one is zero)."""
        return exact_states(self.db, project, list(dict.fromkeys(counter_ids)))

    def aggregate(self, f: reports.Filters, group_by: str | None, **page: Any) -> dict[str, Any]:
        return reports.aggregate(self.db, f, group_by, **page)

    def records(
        self, f: reports.Filters, *, limit: int, page_token: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        return reports.records(self.db, f, limit=limit, page_token=page_token)

    def audit(self, *, limit: int, page_token: str | None = None) -> dict[str, Any]:
        return reports.audit_list(self.db, limit=limit, page_token=page_token)

    def burn(
        self, project: str, period_kind: str, budgets: list[burn.Budget], now: datetime
    ) -> dict[str, Any]:
        return burn.burn_report(burn.window_spend(self.db, project), period_kind, budgets, now)
