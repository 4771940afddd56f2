"""Writes that set Tollgate up: users, external keys, projects, models and prices,
limits, the response cache's flush. Members and their keys are in ``membership.py``.
The admin API validates input and calls these; the local stack and the tests call
them directly.

Every operation is one atomic write (a batch or a transaction) that also creates
its audit record (``writer.py``), so a change and the record of who made it land
together or not at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.cloud import firestore

from functions.core import ids, pricing
from functions.core.errors import Conflict, InvalidRequest, ResourceNotFound
from functions.core.holds import utcnow
from functions.store import indexes
from functions.store.secrets import SECRET_PREFIX
from functions.store.writer import SYSTEM, Writer, usd_to_nano

# re-exported: the local stack, the bench and the tests set budgets in dollars
__all__ = ["SYSTEM", "Provisioner", "Writer", "usd_to_nano"]
_FLUSH_SLICE = 400


class Provisioner(Writer):
    # --- users ----------------------------------------------------------------

    def create_user(
        self, uid: str, name: str = "", email: str = "", *, actor: str = SYSTEM
    ) -> dict[str, Any]:
        doc = {
            "id": uid,
            "name": name or uid,
            "email": email or "",
            "disabled": False,
            "created_at": utcnow(),
        }
        batch = self.db.batch()
        batch.create(self.ref("users", uid), doc)
        self.audit(batch, actor, "user.create", uid, {"name": doc["name"], "email": doc["email"]})
        self.commit(batch, exists=f"A user '{uid}' already exists.")
        return doc

    def update_user(self, uid: str, fields: dict[str, Any], *, actor: str = SYSTEM) -> None:
        batch = self.db.batch()
        batch.update(self.ref("users", uid), fields)
        self.audit(batch, actor, "user.update", uid, fields)
        self.commit(batch, missing=f"No user '{uid}'.")

    def set_user_disabled(self, uid: str, disabled: bool, *, actor: str = SYSTEM) -> None:
        self.update_user(uid, {"disabled": disabled}, actor=actor)

    # --- external keys ----------------------------------------------------------

    def put_external_key(
        self,
        key_id: str,
        secret: str,
        base_url: str | None = None,
        *,
        actor: str = SYSTEM,
        rotate: bool = False,
        openai: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Store the secret (a new version), then the Firestore record pinning that
        version. The secret store is a separate system, so this is two writes: if the
        second fails, an unused secret version is left behind, never a record that
        points at a missing secret."""
        assert self.secrets is not None, "an external key needs a secret store"
        ref = self.ref("external_keys", key_id)
        current = ref.get()
        if rotate and not current.exists:
            raise ResourceNotFound(f"No external key '{key_id}'.")
        if not rotate and current.exists:
            raise Conflict(f"An external key '{key_id}' already exists.")
        name = SECRET_PREFIX + key_id
        version = self.secrets.put(name, secret)
        now = utcnow()
        old = (current.to_dict() or {}) if current.exists else {}
        doc = {
            "id": key_id,
            "secret_name": name,
            "secret_version": version,
            "last4": secret[-4:],
            "base_url": base_url if not rotate else old.get("base_url"),
            "created_at": old.get("created_at", now),
            "rotated_at": now if rotate else None,
        }
        # the key's OpenAI project and key id (reconciliation): kept across a rotation
        for f in ("openai_project_id", "openai_key_id"):
            doc[f] = old.get(f) if rotate else (openai or {}).get(f)
        batch = self.db.batch()
        batch.set(ref, doc)
        self.audit(
            batch,
            actor,
            "external_key.rotate" if rotate else "external_key.add",
            key_id,
            {
                "last4": doc["last4"],
                "base_url": doc["base_url"],
                "openai_project_id": doc["openai_project_id"],
                "openai_key_id": doc["openai_key_id"],
            },
        )
        self.commit(batch)
        return doc

    def set_openai_ids(self, key_id: str, fields: dict[str, Any], *, actor: str = SYSTEM) -> None:
        """The key's OpenAI project and key id, where the Usage API counts it."""
        batch = self.db.batch()
        batch.update(self.ref("external_keys", key_id), fields)
        self.audit(batch, actor, "external_key.update", key_id, fields)
        self.commit(batch, missing=f"No external key '{key_id}'.")

    def delete_external_key(self, key_id: str, *, actor: str = SYSTEM) -> None:
        ref = self.ref("external_keys", key_id)

        @firestore.transactional
        def run(tx: firestore.Transaction) -> None:
            self.get("external_keys", key_id, "external key", tx)
            users = [
                s.id
                for s in indexes.query(
                    self.db, "projects", equals={"external_key": key_id}, limit=5
                ).stream(transaction=tx)
            ]
            if users:
                raise Conflict(
                    f"External key '{key_id}' is used by project(s) "
                    f"{', '.join(users)}; point them at another key first."
                )
            tx.delete(ref)
            self.audit(tx, actor, "external_key.delete", key_id)

        run(self.db.transaction())

    # --- projects ----------------------------------------------------------------

    def create_project(self, pid: str, *, actor: str = SYSTEM, **fields: Any) -> dict[str, Any]:
        """Create a project; ``fields`` are ``project_doc``'s."""
        doc = project_doc(pid, **fields)
        external_key = doc["external_key"]

        @firestore.transactional
        def run(tx: firestore.Transaction) -> None:
            if not self.ref("external_keys", external_key).get(transaction=tx).exists:
                raise InvalidRequest(
                    f"No external key '{external_key}'; add it first.", param="external_key"
                )
            if self.ref("projects", pid).get(transaction=tx).exists:
                raise Conflict(f"A project '{pid}' already exists.")
            tx.create(self.ref("projects", pid), doc)
            self.audit(
                tx,
                actor,
                "project.create",
                pid,
                {k: v for k, v in doc.items() if k != "created_at"},
            )

        run(self.db.transaction())
        return doc

    def update_project(self, pid: str, *, actor: str = SYSTEM, **fields: Any) -> None:
        batch = self.db.batch()
        batch.update(self.ref("projects", pid), fields)
        self.audit(batch, actor, "project.update", pid, fields)
        self.commit(batch, missing=f"No project '{pid}'.")

    def flush_cache(self, project: str, *, actor: str = SYSTEM) -> int:
        """Delete the project's cached answers; how many there were."""
        q = indexes.query(self.db, "cache_entries", equals={"project": project})
        refs = [snap.reference for snap in q.stream()]
        # A commit takes at most 500 writes: delete in slices, the audit record riding in
        # the last. A flush cut short is safe to repeat (it only deletes).
        slices = [refs[i : i + _FLUSH_SLICE] for i in range(0, len(refs), _FLUSH_SLICE)] or [[]]
        for k, part in enumerate(slices):
            batch = self.db.batch()
            for ref in part:
                batch.delete(ref)
            if k == len(slices) - 1:
                self.audit(batch, actor, "cache.flush", project, {"entries": len(refs)})
            batch.commit()
        return len(refs)

    # --- models and prices --------------------------------------------------------

    def add_model(self, model: str, *, actor: str = SYSTEM) -> dict[str, Any]:
        doc = {"id": model, "created": int(utcnow().timestamp()), "prices": []}
        batch = self.db.batch()
        batch.create(self.ref("models", ids.model(model)), doc)
        self.audit(batch, actor, "model.add", model)
        self.commit(batch, exists=f"A model '{model}' already exists.")
        return doc

    def add_price(
        self, model: str, price: pricing.Price, created: int = 0, *, actor: str = SYSTEM
    ) -> list[pricing.Price]:
        """Add a dated price; the previous one ends where this one starts."""
        ref = self.ref("models", ids.model(model))

        @firestore.transactional
        def run(tx: firestore.Transaction) -> list[pricing.Price]:
            snap = ref.get(transaction=tx)
            d = (snap.to_dict() or {}) if snap.exists else {}
            history = [pricing.price_from_doc(p) for p in d.get("prices") or ()]
            try:
                history = pricing.add_price(history, price)
            except ValueError as e:
                raise Conflict(str(e)) from None
            first_seen = created or int(history[0].valid_from.timestamp())
            tx.set(
                ref,
                {
                    "id": model,
                    "created": d.get("created") or first_seen,
                    "prices": [pricing.price_to_doc(p) for p in history],
                },
            )
            self.audit(
                tx,
                actor,
                "model.price_add",
                model,
                {
                    "valid_from": price.valid_from.isoformat(),
                    "source": price.source,
                    "default": pricing.price_to_doc(price)["tiers"]["default"],
                },
            )
            return history

        return run(self.db.transaction())

    # --- limits ---------------------------------------------------------------------

    def set_limit(
        self,
        project: str,
        model: str,
        user: str | None = None,
        *,
        budget_usd: str | None = None,
        budget_nano: int | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        budget_soft: bool = False,
        actor: str = SYSTEM,
    ) -> dict[str, Any]:
        doc = {
            "project": project,
            "model": model,
            "user": user,
            "budget_nano": budget_nano if budget_nano is not None else usd_to_nano(budget_usd),
            "rpm": rpm,
            "tpm": tpm,
            "budget_soft": budget_soft,
        }
        batch = self.db.batch()
        batch.set(self.ref("limits", ids.limit(project, model, user)), doc)
        self.audit(batch, actor, "limit.set", ids.limit(project, model, user), doc)
        self.commit(batch)
        return doc

    def delete_limit(
        self, project: str, model: str, user: str | None = None, *, actor: str = SYSTEM
    ) -> None:
        batch = self.db.batch()
        batch.delete(self.ref("limits", ids.limit(project, model, user)))
        self.audit(batch, actor, "limit.delete", ids.limit(project, model, user))
        self.commit(batch)


def project_doc(
    pid: str,
    *,
    external_key: str,
    budget_usd: str | None = None,
    budget_nano: int | None = None,
    budget_period: str = "monthly",
    allowed_models: Iterable[str] = (),
    default_max_output_tokens: int | None = None,
    name: str = "",
    priced_tools: Iterable[str] = (),
    cache: dict[str, Any] | None = None,
    rpm: int | None = None,
    tpm: int | None = None,
    clamp_output: bool = False,
    cors_origins: Iterable[str] = (),
    budget_soft: bool = False,
    windows: Iterable[dict[str, Any]] = (),
) -> dict[str, Any]:
    """A new project's document, as stored."""
    return {
        "id": pid,
        "name": name or pid,
        "external_key": external_key,
        "budget_nano": budget_nano if budget_nano is not None else usd_to_nano(budget_usd),
        "budget_period": budget_period,
        "allowed_models": list(allowed_models),
        "default_max_output_tokens": default_max_output_tokens,
        "archived": False,
        "priced_tools": list(priced_tools),
        "cache": cache or {"enabled": False, "ttl_s": 3600},
        "rpm": rpm,
        "tpm": tpm,
        "clamp_output": clamp_output,
        "cors_origins": list(cors_origins),
        "budget_soft": budget_soft,
        "windows": list(windows),
        "created_at": utcnow(),
    }
