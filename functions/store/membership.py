"""Members of projects and their proxy keys. Keys are returned once, at creation or
rotation, and stored only as SHA-256 digests; a member's keys are found by the
``project``/``user`` fields of the ``keys`` documents (equality filters only, so
Firestore's automatic single-field indexes serve the query).

Every change is one atomic write with its audit record; rotation creates the new
key and revokes the old in the same batch, so there is no moment with both or
neither."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.cloud import firestore

from functions.core import auth, ids
from functions.core.errors import Conflict, InvalidRequest, ResourceNotFound
from functions.core.holds import utcnow
from functions.store import indexes
from functions.store.writer import SYSTEM, Writer

# What a named key may carry of its own: a budget (in the project's period), an rpm
# limit and the models it may call (a subset of the project's).
KEY_LIMIT_FIELDS = ("budget_nano", "budget_soft", "rpm", "allowed_models")


def key_doc(
    project: str,
    user: str,
    key: str,
    name: str,
    expires_at: datetime | None,
    limits: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "project": project,
        "user": user,
        "name": name,
        "last4": key[-4:],
        "created_at": utcnow(),
        "expires_at": expires_at,
        "revoked_at": None,
        "last_used_at": None,
        **(limits or {}),
    }


class Membership(Writer):
    def _keys(self, project: str, user: str, tx: Any = None) -> list[firestore.DocumentSnapshot]:
        q = indexes.query(self.db, "keys", equals={"project": project, "user": user})
        return list(q.stream(transaction=tx))

    def _active_key(
        self, project: str, user: str, name: str, tx: Any = None
    ) -> firestore.DocumentSnapshot | None:
        for snap in self._keys(project, user, tx):
            if snap.get("name") == name and snap.get("revoked_at") is None:
                return snap
        return None

    def add_member(
        self,
        project: str,
        user: str,
        *,
        role: str = "member",
        budget_usd: str | None = None,
        budget_nano: int | None = None,
        key_name: str = "default",
        actor: str = SYSTEM,
    ) -> str:
        """Add the member and return their first proxy key (shown once)."""
        from functions.store.writer import usd_to_nano

        key = auth.new_key()
        mref = self.ref("members", ids.member(project, user))
        doc = {
            "project": project,
            "user": user,
            "role": role,
            "budget_nano": budget_nano if budget_nano is not None else usd_to_nano(budget_usd),
            "created_at": utcnow(),
        }

        @firestore.transactional
        def run(tx: firestore.Transaction) -> None:
            proj = self.get("projects", project, "project", tx)
            if proj.get("archived"):
                raise Conflict(f"Project '{project}' is archived.")
            self.get("users", user, "user", tx)
            if mref.get(transaction=tx).exists:
                raise Conflict(f"'{user}' is already a member of '{project}'.")
            tx.create(mref, doc)
            tx.create(
                self.ref("keys", auth.key_hash(key)), key_doc(project, user, key, key_name, None)
            )
            self.audit(
                tx,
                actor,
                "member.add",
                ids.member(project, user),
                {
                    "role": role,
                    "budget_nano": doc["budget_nano"],
                    "key_name": key_name,
                    "key_last4": key[-4:],
                },
            )

        run(self.db.transaction())
        return key

    def update_member(
        self, project: str, user: str, fields: dict[str, Any], *, actor: str = SYSTEM
    ) -> dict[str, Any]:
        batch = self.db.batch()
        batch.update(self.ref("members", ids.member(project, user)), fields)
        self.audit(batch, actor, "member.update", ids.member(project, user), fields)
        self.commit(batch, missing=f"'{user}' is not a member of '{project}'.")
        return self.get("members", ids.member(project, user), "member")

    def remove_member(self, project: str, user: str, *, actor: str = SYSTEM) -> int:
        """Remove the member and revoke every key they hold in the project."""
        mref = self.ref("members", ids.member(project, user))

        @firestore.transactional
        def run(tx: firestore.Transaction) -> int:
            if not mref.get(transaction=tx).exists:
                raise ResourceNotFound(f"'{user}' is not a member of '{project}'.")
            live = [s for s in self._keys(project, user, tx) if s.get("revoked_at") is None]
            now = utcnow()
            tx.delete(mref)
            for snap in live:
                tx.update(snap.reference, {"revoked_at": now})
            self.audit(
                tx, actor, "member.remove", ids.member(project, user), {"keys_revoked": len(live)}
            )
            return len(live)

        return run(self.db.transaction())

    def add_key(
        self,
        project: str,
        user: str,
        name: str,
        expires_at: datetime | None = None,
        limits: dict[str, Any] | None = None,
        *,
        actor: str = SYSTEM,
    ) -> str:
        key = auth.new_key()

        @firestore.transactional
        def run(tx: firestore.Transaction) -> None:
            self.get("members", ids.member(project, user), "member", tx)
            if self._active_key(project, user, name, tx) is not None:
                raise Conflict(f"'{user}' already has a key named '{name}' in '{project}'.")
            tx.create(
                self.ref("keys", auth.key_hash(key)),
                key_doc(project, user, key, name, expires_at, limits),
            )
            self.audit(
                tx,
                actor,
                "key.add",
                f"{ids.member(project, user)}|{name}",
                {"last4": key[-4:], "expires_at": expires_at, **(limits or {})},
            )

        run(self.db.transaction())
        return key

    def _revoke_active(self, project: str, user: str, name: str, tx: firestore.Transaction) -> Any:
        """Inside ``tx``: mark the active key ``name`` revoked; its snapshot, or 404."""
        old = self._active_key(project, user, name, tx)
        if old is None:
            raise ResourceNotFound(f"'{user}' has no active key named '{name}' in '{project}'.")
        tx.update(old.reference, {"revoked_at": utcnow()})
        return old

    def rotate_key(
        self,
        project: str,
        user: str,
        name: str,
        expires_at: datetime | None = None,
        *,
        actor: str = SYSTEM,
    ) -> str:
        """A new key under the same name; the old one stops at once."""
        key = auth.new_key()

        @firestore.transactional
        def run(tx: firestore.Transaction) -> None:
            old = self._revoke_active(project, user, name, tx)
            # the new key keeps the old one's limits
            fields = old.to_dict() or {}  # (a snapshot's get() raises on a missing field)
            kept = {f: fields[f] for f in KEY_LIMIT_FIELDS if fields.get(f) is not None}
            tx.create(
                self.ref("keys", auth.key_hash(key)),
                key_doc(project, user, key, name, expires_at or old.get("expires_at"), kept),
            )
            self.audit(
                tx,
                actor,
                "key.rotate",
                f"{ids.member(project, user)}|{name}",
                {"old_last4": old.get("last4"), "new_last4": key[-4:]},
            )

        run(self.db.transaction())
        return key

    def set_key_limits(
        self, project: str, user: str, name: str, limits: dict[str, Any], *, actor: str = SYSTEM
    ) -> dict[str, Any]:
        """Change the limits of the active key ``name`` (a None value removes one)."""

        @firestore.transactional
        def run(tx: firestore.Transaction) -> None:
            old = self._active_key(project, user, name, tx)
            if old is None:
                raise ResourceNotFound(f"'{user}' has no active key named '{name}' in '{project}'.")
            tx.update(old.reference, limits)
            self.audit(tx, actor, "key.limits", f"{ids.member(project, user)}|{name}", limits)

        run(self.db.transaction())
        return next(
            k
            for k in self.list_keys(project, user)
            if k["name"] == name and k["revoked_at"] is None
        )

    def revoke_key(self, project: str, user: str, name: str, *, actor: str = SYSTEM) -> None:
        @firestore.transactional
        def run(tx: firestore.Transaction) -> None:
            old = self._revoke_active(project, user, name, tx)
            self.audit(
                tx,
                actor,
                "key.revoke",
                f"{ids.member(project, user)}|{name}",
                {"last4": old.get("last4")},
            )

        run(self.db.transaction())

    def revoke_by_key(self, key: str, *, actor: str = SYSTEM) -> None:
        """Revoke a key given the key itself (tests and the local stack)."""
        snap = self.ref("keys", auth.key_hash(key)).get()
        if not snap.exists:
            raise ResourceNotFound("No such key.")
        self.revoke_key(snap.get("project"), snap.get("user"), snap.get("name"), actor=actor)

    def list_keys(self, project: str, user: str) -> list[dict[str, Any]]:
        out = []
        for snap in self._keys(project, user):
            d = snap.to_dict() or {}
            out.append(
                {
                    k: d.get(k)
                    for k in (
                        "name",
                        "last4",
                        "created_at",
                        "last_used_at",
                        "expires_at",
                        "revoked_at",
                        *KEY_LIMIT_FIELDS,
                    )
                }
            )
        return sorted(out, key=lambda k: (k["revoked_at"] is not None, str(k["name"])))

    def list_members(self, project: str) -> list[dict[str, Any]]:
        snaps = indexes.query(self.db, "members", equals={"project": project}).stream()
        return sorted((s.to_dict() or {} for s in snaps), key=lambda m: str(m.get("user")))


def check_role(role: Any) -> str:
    if role not in ("member", "lead"):
        raise InvalidRequest("'role' must be 'member' or 'lead'.", param="role")
    return str(role)
