"""An in-memory store: the proxy's reads of ``functions.store.Store`` over plain dicts.

Documents are kept as Firestore holds them (``{collection: {id: fields}}``, the same
ids, the same fields) and turned into records by the same ``from_doc`` converters,
so a test seeds both stores with the same documents and gets the same answers
(tests/test_store_contract.py checks that on the emulator and here). Paired with
``MemoryLedger`` it lets the proxy's flow be tested without an emulator.
"""

from __future__ import annotations

import threading
from typing import Any

from functions.core import ids
from functions.core.records import (
    CallContext,
    ExternalKeyRecord,
    KeyRecord,
    LimitRecord,
    MemberRecord,
    ModelRecord,
    ProjectRecord,
    UserRecord,
)

Docs = dict[str, dict[str, dict[str, Any]]]


class MemoryStore:
    db = None  # nothing here is Firestore

    def __init__(
        self, docs: Docs | None = None, usage: dict[str, dict[str, Any]] | None = None
    ) -> None:
        self.docs: Docs = docs if docs is not None else {}
        # the usage records (a MemoryLedger's, when paired with one)
        self.usage = usage if usage is not None else {}
        self._recent: dict[tuple[str, str | None], CallContext] = {}
        self._lock = threading.Lock()

    def put(self, collection: str, doc: str, fields: dict[str, Any]) -> None:
        with self._lock:
            self.docs.setdefault(collection, {})[doc] = dict(fields)

    def _get(self, collection: str, doc: str) -> dict[str, Any] | None:
        with self._lock:
            found = self.docs.get(collection, {}).get(doc)
            return dict(found) if found is not None else None

    def load_call_context(self, key_hash: str, model: str | None) -> CallContext | None:
        key = self._get("keys", key_hash)
        if key is None:
            return None
        project, user = str(key.get("project", "")), str(key.get("user", ""))
        u, m = self._get("users", user or "-"), self._get("members", ids.member(project, user))
        p = self._get("projects", project or "-")
        mod = self._get("models", ids.model(model)) if model else None
        ml = self._get("limits", ids.limit(project, model)) if model else None
        mml = self._get("limits", ids.limit(project, model, user)) if model else None
        ctx = CallContext(
            key=KeyRecord.from_doc(key_hash, key),
            user=UserRecord.from_doc(user, u) if u is not None else None,
            member=MemberRecord.from_doc(m) if m is not None else None,
            project=ProjectRecord.from_doc(project, p) if p is not None else None,
            model=ModelRecord.from_doc(model, mod) if model and mod is not None else None,
            model_limit=LimitRecord.from_doc(ml) if ml is not None else None,
            member_model_limit=LimitRecord.from_doc(mml) if mml is not None else None,
        )
        with self._lock:
            self._recent[(key_hash, model)] = ctx
        return ctx

    def recent_context(self, key_hash: str, model: str | None) -> CallContext | None:
        with self._lock:
            return self._recent.get((key_hash, model))

    def origin_listed(self, origin: str) -> bool:
        with self._lock:
            return any(
                origin in (p.get("cors_origins") or ()) and not p.get("archived")
                for p in self.docs.get("projects", {}).values()
            )

    def external_key(self, key_id: str) -> ExternalKeyRecord | None:
        d = self._get("external_keys", key_id or "-")
        return ExternalKeyRecord.from_doc(key_id, d) if d is not None else None

    def models(self, names: list[str] | None = None) -> list[ModelRecord]:
        with self._lock:
            found = self.docs.get("models", {})
            docs = (
                [(i, found[i]) for i in sorted(found)]
                if names is None
                else [(ids.model(m), found[ids.model(m)]) for m in names if ids.model(m) in found]
            )
        return [ModelRecord.from_doc(str(d.get("id", i)), d) for i, d in docs]

    def response_tokens(self, project: str, response_id: str) -> int | None:
        for rec in list(self.usage.values()):
            if rec.get("response_id") == response_id:
                if rec.get("project") != project:
                    return None
                return int(rec.get("input_tokens", 0)) + int(rec.get("output_tokens", 0))
        return None
