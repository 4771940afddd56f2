"""Writes that set Tollgate up: users, projects, members and their keys, external
keys, models and prices, limits. The admin API validates input and audits around
these; the local stack and the tests call them directly.

Each operation is one atomic write (a batch or a transaction), so nothing is
half-written.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from google.cloud import firestore

from functions import auth, pricing
from functions.budget import doc_id
from functions.ledger import utcnow
from functions.secret_store import SECRET_PREFIX, SecretStore
from functions.store import limit_id, member_id


class Provisioner:
    def __init__(self, db: firestore.Client, secrets: SecretStore | None = None) -> None:
        self.db = db
        self.secrets = secrets

    def _ref(self, collection: str, doc: str) -> firestore.DocumentReference:
        return self.db.collection(collection).document(doc)

    def create_user(self, uid: str, name: str = "", email: str = "") -> None:
        self._ref("users", uid).create({"id": uid, "name": name or uid, "email": email,
                                        "disabled": False, "created_at": utcnow()})

    def set_user_disabled(self, uid: str, disabled: bool) -> None:
        self._ref("users", uid).update({"disabled": disabled})

    def put_external_key(self, key_id: str, secret: str, base_url: str | None = None) -> None:
        assert self.secrets is not None, "an external key needs a secret store"
        name = SECRET_PREFIX + key_id
        version = self.secrets.put(name, secret)
        self._ref("external_keys", key_id).set({
            "id": key_id, "secret_name": name, "secret_version": version,
            "last4": secret[-4:], "base_url": base_url, "created_at": utcnow()})

    def create_project(self, pid: str, *, external_key: str, budget_usd: str | None,
                       budget_period: str = "monthly", allowed_models: Iterable[str] = (),
                       default_max_output_tokens: int | None = None, name: str = "",
                       priced_tools: Iterable[str] = ()) -> None:
        self._ref("projects", pid).create({
            "id": pid, "name": name or pid, "external_key": external_key,
            "budget_nano": usd_to_nano(budget_usd), "budget_period": budget_period,
            "allowed_models": list(allowed_models),
            "default_max_output_tokens": default_max_output_tokens, "archived": False,
            "priced_tools": list(priced_tools), "cache": {"enabled": False, "ttl_s": 3600},
            "created_at": utcnow()})

    def update_project(self, pid: str, **fields: Any) -> None:
        self._ref("projects", pid).update(fields)

    def add_member(self, project: str, user: str, *, role: str = "member",
                   budget_usd: str | None = None, key_name: str = "default") -> str:
        """Add the member and return their first proxy key (shown once)."""
        key = auth.new_key()
        batch = self.db.batch()
        batch.create(self._ref("members", member_id(project, user)), {
            "project": project, "user": user, "role": role,
            "budget_nano": usd_to_nano(budget_usd), "created_at": utcnow()})
        batch.create(self._ref("keys", auth.key_hash(key)),
                     self._key_doc(project, user, key, key_name, None))
        batch.commit()
        return key

    def add_key(self, project: str, user: str, name: str,
                expires_at: datetime | None = None) -> str:
        key = auth.new_key()
        self._ref("keys", auth.key_hash(key)).create(
            self._key_doc(project, user, key, name, expires_at))
        return key

    def revoke_key(self, key: str) -> None:
        self._ref("keys", auth.key_hash(key)).update({"revoked_at": utcnow()})

    @staticmethod
    def _key_doc(project: str, user: str, key: str, name: str,
                 expires_at: datetime | None) -> dict[str, Any]:
        return {"project": project, "user": user, "name": name, "last4": key[-4:],
                "created_at": utcnow(), "expires_at": expires_at, "revoked_at": None,
                "last_used_at": None}

    def add_price(self, model: str, price: pricing.Price, created: int = 0) -> None:
        """Add a dated price; the previous one ends where this one starts."""
        ref = self._ref("models", doc_id(model))

        @firestore.transactional
        def run(tx: firestore.Transaction) -> None:
            snap = ref.get(transaction=tx)
            d = (snap.to_dict() or {}) if snap.exists else {}
            history = [pricing.price_from_doc(p) for p in d.get("prices") or ()]
            history = pricing.add_price(history, price)
            first_seen = created or int(history[0].valid_from.timestamp())
            tx.set(ref, {"id": model, "created": d.get("created") or first_seen,
                         "prices": [pricing.price_to_doc(p) for p in history]})

        run(self.db.transaction())

    def set_limit(self, project: str, model: str, user: str | None = None, *,
                  budget_usd: str | None = None, rpm: int | None = None,
                  tpm: int | None = None) -> None:
        self._ref("limits", limit_id(project, model, user)).set({
            "project": project, "model": model, "user": user,
            "budget_nano": usd_to_nano(budget_usd), "rpm": rpm, "tpm": tpm})


def usd_to_nano(usd: str | int | None) -> int | None:
    """'12.5' → 12_500_000_000. Exact (Decimal); more than 9 decimals is an error."""
    if usd is None:
        return None
    from decimal import Decimal, InvalidOperation

    try:
        d = Decimal(str(usd))
    except InvalidOperation:
        raise ValueError(f"not a dollar amount: {usd!r}") from None
    nano = d * 1_000_000_000
    if not d.is_finite() or d < 0 or nano != nano.to_integral_value():
        raise ValueError(f"not a dollar amount with at most 9 decimals: {usd!r}")
    return int(nano)
