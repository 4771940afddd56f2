"""The plumbing every configuration writer shares: document references, reads that
name what is missing, and the audit record that rides in the same atomic write as the
change it records (so a change and the record of who made it land together or not at
all). ``provision``, ``membership``, ``reconciliations`` build on it.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from functions.core.errors import Conflict, ResourceNotFound
from functions.core.holds import utcnow
from functions.store.secrets import SecretStore

SYSTEM = "system"


def usd_to_nano(usd: str | int | None) -> int | None:
    """'12.5' → 12_500_000_000. Exact (Decimal); more than 9 decimals is an error."""
    if usd is None:
        return None
    try:
        d = Decimal(str(usd))
    except InvalidOperation:
        raise ValueError(f"not a dollar amount: {usd!r}") from None
    nano = d * 1_000_000_000
    if not d.is_finite() or d < 0 or nano != nano.to_integral_value():
        raise ValueError(f"not a dollar amount with at most 9 decimals: {usd!r}")
    return int(nano)


class Writer:
    """Shared plumbing: document references and the audit record of each change."""

    def __init__(self, db: firestore.Client, secrets: SecretStore | None = None) -> None:
        self.db = db
        self.secrets = secrets

    def ref(self, collection: str, doc: str) -> firestore.DocumentReference:
        return self.db.collection(collection).document(doc)

    def audit(
        self,
        writer: Any,
        actor: str,
        action: str,
        target: str,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Add the audit record to ``writer`` (a batch or transaction). ``details`` must
        never hold a key or secret."""
        writer.create(
            self.db.collection("audit").document(),
            {
                "ts": utcnow(),
                "actor": actor,
                "action": action,
                "target": target,
                "details": details or {},
            },
        )

    def commit(self, batch: Any, missing: str | None = None, exists: str | None = None) -> None:
        try:
            batch.commit()
        except gexc.NotFound:
            raise ResourceNotFound(missing or "Not found.") from None
        except gexc.AlreadyExists:
            raise Conflict(exists or "Already exists.") from None

    def audit_now(
        self, actor: str, action: str, target: str, details: dict[str, Any] | None = None
    ) -> None:
        """An audit record on its own, for an action that is not one write (a sweep)."""
        batch = self.db.batch()
        self.audit(batch, actor, action, target, details)
        batch.commit()

    def exists(self, collection: str, doc: str) -> bool:
        return bool(self.ref(collection, doc).get().exists)

    def get(self, collection: str, doc: str, what: str, tx: Any = None) -> dict[str, Any]:
        snap = self.ref(collection, doc).get(transaction=tx)
        if not snap.exists:
            raise ResourceNotFound(f"No {what} '{doc}'.")
        return snap.to_dict() or {}
