"""Top-ups: +$X on a project's or a member's main budget until a date. They live on the
scope's own document (read by every call anyway: no extra round trip) and end by
themselves; expired ones are pruned when the next one is written. Each is written in
one transaction with its audit record.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from google.cloud import firestore

from functions.core import ids
from functions.core.errors import InvalidRequest
from functions.core.holds import utcnow
from functions.store.writer import SYSTEM, Writer


def topup_target(project: str, user: str | None) -> tuple[str, str]:
    """The document a top-up is written on: the member's, or the project's."""
    return ("members", ids.member(project, user)) if user else ("projects", project)


class Topups(Writer):
    """Adding and listing top-ups."""

    def add(
        self,
        project: str,
        user: str | None,
        amount_nano: int,
        until: datetime,
        note: str,
        *,
        actor: str = SYSTEM,
    ) -> dict[str, Any]:
        collection, doc = topup_target(project, user)
        ref = self.ref(collection, doc)
        now = utcnow()
        entry = {
            "id": "tu_" + secrets.token_hex(6),
            "amount_nano": amount_nano,
            "until": until,
            "note": note,
            "by": actor,
            "at": now,
        }

        @firestore.transactional
        def run(tx: firestore.Transaction) -> None:
            current = self.get(collection, doc, "member" if user else "project", tx)
            if current.get("budget_nano") is None:
                raise InvalidRequest(
                    "There is no budget to top up: this "
                    f"{'member' if user else 'project'} is unlimited.",
                    param="user" if user else None,
                )
            live = [t for t in current.get("topups") or () if t.get("until") > now]
            tx.update(ref, {"topups": [*live, entry]})
            self.audit(
                tx,
                actor,
                "topup.add",
                f"{doc}",
                {k: entry[k] for k in ("id", "amount_nano", "until", "note")},
            )

        run(self.db.transaction())
        return entry

    def of_project(self, project: str, users: Iterable[str]) -> list[dict[str, Any]]:
        """The top-ups of the project and of ``users`` (its members), newest first, each
        with ``active`` (not yet ended)."""
        now, out = utcnow(), []
        for user in [None, *users]:
            snap = self.ref(*topup_target(project, user)).get()
            for t in (snap.to_dict() or {}).get("topups") or () if snap.exists else ():
                out.append({"project": project, "user": user, **t, "active": t.get("until") > now})
        return sorted(out, key=lambda t: t["at"], reverse=True)
