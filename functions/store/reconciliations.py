"""What a reconciliation reads and writes in Firestore: the OpenAI admin key's pointer
(its secret is in the secret store), the external keys mapped to OpenAI projects, a
day's usage records by the key they were sent with, and the ``reconciliations``
documents, one per (day, external key). The rules that compare are in
``core/reconcile.py``; the run that fetches from OpenAI is ``admin/reconcile_run.py``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime
from typing import Any

from functions.core import ids, reconcile
from functions.core.holds import utcnow
from functions.core.reconcile import KeyMap
from functions.store import indexes
from functions.store.writer import Writer

ADMIN_KEY_DOC = ("config", "openai_admin_key")
# Not under tollgate-ext-: the openai function may read those secrets, and this key reads
# the organisation's usage and costs; deploy.sh grants it to the admin function alone.
ADMIN_KEY_SECRET = "tollgate-openai-admin-key"
# the fields of a usage record a comparison reads (a projection: records are large)
RECORD_FIELDS = [
    "model",
    "upstream_model",
    "status",
    "cached",
    "estimated",
    "external_key",
    "input_tokens",
    "cached_tokens",
    "output_tokens",
    "cost_nano",
]


class ReconcileBooks(Writer):
    # --- the OpenAI admin key --------------------------------------------------------

    def admin_key(self) -> dict[str, Any]:
        """The admin key's pointer: ``secret_name``, ``secret_version``, ``last4``,
        ``set_at``, ``set_by``; {} when none is set."""
        snap = self.ref(*ADMIN_KEY_DOC).get()
        return (snap.to_dict() or {}) if snap.exists else {}

    def set_admin_key(self, secret: str, *, actor: str) -> None:
        """Store the key (a new secret version), then the pointer to that version: as
        with an external key, a failure between leaves an unused version, never a
        pointer to a missing secret."""
        assert self.secrets is not None, "the admin key needs a secret store"
        version = self.secrets.put(ADMIN_KEY_SECRET, secret)
        batch = self.db.batch()
        batch.set(
            self.ref(*ADMIN_KEY_DOC),
            {
                "secret_name": ADMIN_KEY_SECRET,
                "secret_version": version,
                "last4": secret[-4:],
                "set_at": utcnow(),
                "set_by": actor,
            },
        )
        self.audit(batch, actor, "admin_key.set", "openai", {"last4": secret[-4:]})
        self.commit(batch)

    def delete_admin_key(self, *, actor: str) -> None:
        """Forget the key (Firestore's pointer to it); its secret versions stay, as an
        external key's do, for an administrator to destroy."""
        batch = self.db.batch()
        batch.delete(self.ref(*ADMIN_KEY_DOC))
        self.audit(batch, actor, "admin_key.delete", "openai")
        self.commit(batch)

    # --- what a run reads -------------------------------------------------------------

    def key_maps(self) -> list[KeyMap]:
        """The external keys mapped to an OpenAI project, by id."""
        out = []
        for s in indexes.query(self.db, "external_keys").stream():
            d = s.to_dict() or {}
            if d.get("openai_project_id"):
                out.append(
                    KeyMap(s.id, str(d["openai_project_id"]), d.get("openai_key_id") or None)
                )
        return sorted(out, key=lambda k: k.external_key)

    def stable_keys(self, day: date) -> set[str]:
        """The external keys whose reconciliation of ``day`` is stable."""
        q = indexes.query(self.db, "reconciliations", equals={"day": day.isoformat()})
        return {
            str(d.get("external_key"))
            for d in (s.to_dict() or {} for s in q.stream())
            if d.get("stable")
        }

    def records(self, key: str, day: date) -> list[dict[str, Any]]:
        """The day's usage records sent with this external key: a record names the key
        it was sent with. Records booked before records named it are taken from the
        projects that use the key now (a project that changed keys that day is then
        attributed to its new key)."""
        s, e = reconcile.day_bounds(day)
        span = [
            ("ts", ">=", datetime.fromtimestamp(s, UTC)),
            ("ts", "<", datetime.fromtimestamp(e, UTC)),
        ]
        by_key = indexes.query(
            self.db,
            "usage",
            equals={"external_key": key},
            ranges=span,
            order=[("ts", indexes.DESC)],
        )
        out = [r.to_dict() or {} for r in by_key.select(RECORD_FIELDS).stream()]
        for p in self.projects_of(key):
            q = indexes.query(
                self.db, "usage", equals={"project": p}, ranges=span, order=[("ts", indexes.DESC)]
            )
            out += [
                d
                for d in (r.to_dict() or {} for r in q.select(RECORD_FIELDS).stream())
                if not d.get("external_key")
            ]
        return out

    def projects_of(self, key: str) -> dict[str, dict[str, Any]]:
        """The projects that send with external key ``key``, by id."""
        q = indexes.query(self.db, "projects", equals={"external_key": key})
        return {s.id: s.to_dict() or {} for s in q.stream()}

    def previous(self, day: date, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The reconciliations of ``day`` already written, by external key."""
        by_id = {ids.reconciliation(day.isoformat(), k): k for k in keys}
        refs = [self.ref("reconciliations", i) for i in by_id]
        return {by_id[s.id]: s.to_dict() or {} for s in self.db.get_all(refs) if s.exists}

    # --- what a run writes ------------------------------------------------------------

    def write_day(self, day: date, docs: list[dict[str, Any]], *, actor: str) -> None:
        """One day's documents and their audit record, in one batch."""
        batch = self.db.batch()
        for doc in docs:
            doc_id = ids.reconciliation(day.isoformat(), doc["external_key"])
            batch.set(self.ref("reconciliations", doc_id), doc)
        self.audit(
            batch,
            actor,
            "reconcile.run",
            day.isoformat(),
            {
                "keys": [d["external_key"] for d in docs],
                "over_threshold": [d["external_key"] for d in docs if d["over_threshold"]],
            },
        )
        batch.commit()

    def recent(
        self, *, day: date | None = None, external_key: str | None = None, limit: int = 200
    ) -> list[dict[str, Any]]:
        """Reconciliations, newest day first."""
        equals: dict[str, Any] = {}
        if day is not None:
            equals["day"] = day.isoformat()
        if external_key:
            equals["external_key"] = external_key
        order = [] if day is not None else [("day", indexes.DESC)]
        q = indexes.query(self.db, "reconciliations", equals=equals, order=order, limit=limit)
        docs = [s.to_dict() or {} for s in q.stream()]
        docs.sort(key=lambda d: (str(d.get("day")), str(d.get("external_key"))), reverse=True)
        return docs
