"""In-memory stand-ins for the store classes the admin API's member-side resources and
the log page use: ``Provisioner`` (reads, users, projects, limits), ``Membership``,
``Topups`` and ``Views`` (configuration reads, counters, usage records, aggregates and
burn rates, one page each), over the same ``{collection: {id: fields}}`` documents as
``MemoryStore`` and a ``MemoryLedger``'s usage records (so a key is checked by the real
``Admin``/``LogApp`` against the same members and keys the handlers change).

They write the documents Firestore would hold, with the same ids, fields and audit
records, and refuse what the real ones refuse with the same errors;
tests/test_admin_contract.py runs one scenario against both and compares. With them
the admin API's rules (what a lead may do to whom, what each route refuses) are tested
in milliseconds; the atomicity of those writes stays on the emulator.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from functions.core import auth, ids
from functions.core.budget import CounterState
from functions.core.errors import Conflict, InvalidRequest, ResourceNotFound
from functions.core.holds import utcnow
from functions.store import burn
from functions.store.membership import KEY_LIMIT_FIELDS, key_doc
from functions.store.provision import project_doc
from functions.store.report_filters import FIELDS, Filters, equalities
from functions.store.report_groups import day_window, narrow
from functions.store.reports import SUMS
from functions.store.reports import total_row as row
from functions.store.topups import topup_target
from functions.store.writer import SYSTEM
from tests.memory_store import Docs

_KEY_SHOWN = ("name", "last4", "created_at", "last_used_at", "expires_at", "revoked_at")


class MemoryConfig:
    """The documents and their audit trail, shared by the stand-ins below."""

    def __init__(
        self,
        docs: Docs,
        counters: Callable[[], dict[str, CounterState]] = dict,
        usage: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.docs = docs
        # a MemoryLedger's counters and usage records, when paired with one
        self.counter_states = counters
        self.usage = usage if usage is not None else {}
        self.lock = threading.RLock()

    def col(self, collection: str) -> dict[str, dict[str, Any]]:
        return self.docs.setdefault(collection, {})

    def audit(self, actor: str, action: str, target: str, details: dict[str, Any] | None) -> None:
        self.col("audit")[f"a{len(self.col('audit')):06d}"] = {
            "ts": utcnow(),
            "actor": actor,
            "action": action,
            "target": target,
            "details": details or {},
        }

    # --- Writer ---------------------------------------------------------------------

    def get(self, collection: str, doc: str, what: str, tx: Any = None) -> dict[str, Any]:
        with self.lock:
            found = self.col(collection).get(doc)
            if found is None:
                raise ResourceNotFound(f"No {what} '{doc}'.")
            return dict(found)

    def exists(self, collection: str, doc: str) -> bool:
        with self.lock:
            return doc in self.col(collection)

    def _update(self, collection: str, doc: str, fields: dict[str, Any], missing: str) -> None:
        if doc not in self.col(collection):
            raise ResourceNotFound(missing)
        self.col(collection)[doc].update(fields)


class MemoryProvisioner:
    """``Provisioner``'s users, projects and limits (models, prices and external keys
    are not stood in for: their routes are tested on the emulator)."""

    def __init__(self, config: MemoryConfig) -> None:
        self.c = config
        self.get = config.get
        self.exists = config.exists

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
        with self.c.lock:
            if uid in self.c.col("users"):
                raise Conflict(f"A user '{uid}' already exists.")
            self.c.col("users")[uid] = doc
            self.c.audit(actor, "user.create", uid, {"name": doc["name"], "email": doc["email"]})
        return dict(doc)

    def update_user(self, uid: str, fields: dict[str, Any], *, actor: str = SYSTEM) -> None:
        with self.c.lock:
            self.c._update("users", uid, fields, f"No user '{uid}'.")
            self.c.audit(actor, "user.update", uid, fields)

    def create_project(self, pid: str, *, actor: str = SYSTEM, **fields: Any) -> dict[str, Any]:
        doc = project_doc(pid, **fields)
        with self.c.lock:
            if doc["external_key"] not in self.c.col("external_keys"):
                raise InvalidRequest(
                    f"No external key '{doc['external_key']}'; add it first.",
                    param="external_key",
                )
            if pid in self.c.col("projects"):
                raise Conflict(f"A project '{pid}' already exists.")
            self.c.col("projects")[pid] = doc
            self.c.audit(
                actor, "project.create", pid, {k: v for k, v in doc.items() if k != "created_at"}
            )
        return dict(doc)

    def update_project(self, pid: str, *, actor: str = SYSTEM, **fields: Any) -> None:
        with self.c.lock:
            self.c._update("projects", pid, fields, f"No project '{pid}'.")
            self.c.audit(actor, "project.update", pid, fields)

    def set_limit(
        self,
        project: str,
        model: str,
        user: str | None = None,
        *,
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
            "budget_nano": budget_nano,
            "rpm": rpm,
            "tpm": tpm,
            "budget_soft": budget_soft,
        }
        with self.c.lock:
            self.c.col("limits")[ids.limit(project, model, user)] = doc
            self.c.audit(actor, "limit.set", ids.limit(project, model, user), doc)
        return dict(doc)

    def delete_limit(
        self, project: str, model: str, user: str | None = None, *, actor: str = SYSTEM
    ) -> None:
        with self.c.lock:
            self.c.col("limits").pop(ids.limit(project, model, user), None)
            self.c.audit(actor, "limit.delete", ids.limit(project, model, user), None)


class MemoryMembership:
    """``Membership``: members and their keys (stored by hash, shown once)."""

    def __init__(self, config: MemoryConfig) -> None:
        self.c = config

    def _keys(self, project: str, user: str) -> dict[str, dict[str, Any]]:
        return {
            h: k
            for h, k in self.c.col("keys").items()
            if k.get("project") == project and k.get("user") == user
        }

    def _active(self, project: str, user: str, name: str) -> dict[str, Any]:
        for k in self._keys(project, user).values():
            if k.get("name") == name and k.get("revoked_at") is None:
                return k
        raise ResourceNotFound(f"'{user}' has no active key named '{name}' in '{project}'.")

    def add_member(
        self,
        project: str,
        user: str,
        *,
        role: str = "member",
        budget_nano: int | None = None,
        key_name: str = "default",
        actor: str = SYSTEM,
    ) -> str:
        key = auth.new_key()
        with self.c.lock:
            if self.c.get("projects", project, "project").get("archived"):
                raise Conflict(f"Project '{project}' is archived.")
            self.c.get("users", user, "user")
            mid = ids.member(project, user)
            if mid in self.c.col("members"):
                raise Conflict(f"'{user}' is already a member of '{project}'.")
            self.c.col("members")[mid] = {
                "project": project,
                "user": user,
                "role": role,
                "budget_nano": budget_nano,
                "created_at": utcnow(),
            }
            self.c.col("keys")[auth.key_hash(key)] = key_doc(project, user, key, key_name, None)
            self.c.audit(
                actor,
                "member.add",
                mid,
                {
                    "role": role,
                    "budget_nano": budget_nano,
                    "key_name": key_name,
                    "key_last4": key[-4:],
                },
            )
        return key

    def update_member(
        self, project: str, user: str, fields: dict[str, Any], *, actor: str = SYSTEM
    ) -> dict[str, Any]:
        mid = ids.member(project, user)
        with self.c.lock:
            self.c._update("members", mid, fields, f"'{user}' is not a member of '{project}'.")
            self.c.audit(actor, "member.update", mid, fields)
            return self.c.get("members", mid, "member")

    def remove_member(self, project: str, user: str, *, actor: str = SYSTEM) -> int:
        mid = ids.member(project, user)
        with self.c.lock:
            if self.c.col("members").pop(mid, None) is None:
                raise ResourceNotFound(f"'{user}' is not a member of '{project}'.")
            live = [k for k in self._keys(project, user).values() if k.get("revoked_at") is None]
            for k in live:
                k["revoked_at"] = utcnow()
            self.c.audit(actor, "member.remove", mid, {"keys_revoked": len(live)})
            return len(live)

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
        with self.c.lock:
            self.c.get("members", ids.member(project, user), "member")
            try:
                self._active(project, user, name)
            except ResourceNotFound:
                pass
            else:
                raise Conflict(f"'{user}' already has a key named '{name}' in '{project}'.")
            self.c.col("keys")[auth.key_hash(key)] = key_doc(
                project, user, key, name, expires_at, limits
            )
            self.c.audit(
                actor,
                "key.add",
                f"{ids.member(project, user)}|{name}",
                {"last4": key[-4:], "expires_at": expires_at, **(limits or {})},
            )
        return key

    def rotate_key(
        self,
        project: str,
        user: str,
        name: str,
        expires_at: datetime | None = None,
        *,
        actor: str = SYSTEM,
    ) -> str:
        key = auth.new_key()
        with self.c.lock:
            old = self._active(project, user, name)
            old["revoked_at"] = utcnow()
            kept = {f: old[f] for f in KEY_LIMIT_FIELDS if old.get(f) is not None}
            self.c.col("keys")[auth.key_hash(key)] = key_doc(
                project, user, key, name, expires_at or old.get("expires_at"), kept
            )
            self.c.audit(
                actor,
                "key.rotate",
                f"{ids.member(project, user)}|{name}",
                {"old_last4": old.get("last4"), "new_last4": key[-4:]},
            )
        return key

    def set_key_limits(
        self, project: str, user: str, name: str, limits: dict[str, Any], *, actor: str = SYSTEM
    ) -> dict[str, Any]:
        with self.c.lock:
            self._active(project, user, name).update(limits)
            self.c.audit(actor, "key.limits", f"{ids.member(project, user)}|{name}", limits)
        return next(
            k
            for k in self.list_keys(project, user)
            if k["name"] == name and k["revoked_at"] is None
        )

    def revoke_key(self, project: str, user: str, name: str, *, actor: str = SYSTEM) -> None:
        with self.c.lock:
            old = self._active(project, user, name)
            old["revoked_at"] = utcnow()
            self.c.audit(
                actor,
                "key.revoke",
                f"{ids.member(project, user)}|{name}",
                {"last4": old.get("last4")},
            )

    def list_keys(self, project: str, user: str) -> list[dict[str, Any]]:
        with self.c.lock:
            out = [
                {k: d.get(k) for k in (*_KEY_SHOWN, *KEY_LIMIT_FIELDS)}
                for d in self._keys(project, user).values()
            ]
        return sorted(out, key=lambda k: (k["revoked_at"] is not None, str(k["name"])))

    def list_members(self, project: str) -> list[dict[str, Any]]:
        with self.c.lock:
            found = [dict(m) for m in self.c.col("members").values() if m["project"] == project]
        return sorted(found, key=lambda m: str(m.get("user")))


class MemoryTopups:
    def __init__(self, config: MemoryConfig) -> None:
        self.c = config

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
        now = utcnow()
        entry = {
            "id": "tu_" + secrets.token_hex(6),
            "amount_nano": amount_nano,
            "until": until,
            "note": note,
            "by": actor,
            "at": now,
        }
        with self.c.lock:
            current = self.c.get(collection, doc, "member" if user else "project")
            if current.get("budget_nano") is None:
                raise InvalidRequest(
                    "There is no budget to top up: this "
                    f"{'member' if user else 'project'} is unlimited.",
                    param="user" if user else None,
                )
            live = [t for t in current.get("topups") or () if t.get("until") > now]
            self.c.col(collection)[doc]["topups"] = [*live, entry]
            self.c.audit(
                actor,
                "topup.add",
                doc,
                {k: entry[k] for k in ("id", "amount_nano", "until", "note")},
            )
        return entry

    def of_project(self, project: str, users: Iterable[str]) -> list[dict[str, Any]]:
        now, out = utcnow(), []
        with self.c.lock:
            for user in [None, *users]:
                collection, doc = topup_target(project, user)
                for t in self.c.col(collection).get(doc, {}).get("topups") or ():
                    out.append(
                        {"project": project, "user": user, **t, "active": t.get("until") > now}
                    )
        return sorted(out, key=lambda t: t["at"], reverse=True)


class MemoryViews:
    """``Views``' configuration reads and counters."""

    def __init__(self, config: MemoryConfig) -> None:
        self.c = config

    def all(self, collection: str) -> list[dict[str, Any]]:
        with self.c.lock:
            return [dict(d) for d in self.c.col(collection).values()]

    def where(self, collection: str, **equals: Any) -> dict[str, dict[str, Any]]:
        with self.c.lock:
            return {
                i: dict(d)
                for i, d in self.c.col(collection).items()
                if all(d.get(k) == x for k, x in equals.items())
            }

    def project(self, project: str) -> dict[str, Any] | None:
        with self.c.lock:
            found = self.c.col("projects").get(project)
            return dict(found) if found is not None else None

    def members(self, project: str) -> list[dict[str, Any]]:
        return list(self.where("members", project=project).values())

    def counters(self, project: str, counter_ids: Iterable[str]) -> dict[str, CounterState]:
        states = self.c.counter_states()
        return {cid: states.get(cid, CounterState()) for cid in dict.fromkeys(counter_ids)}

    def audit(self, *, limit: int, page_token: str | None = None) -> dict[str, Any]:
        """Newest first; one page (the paging is the emulator's to test)."""
        from functions.store.reports import record_json

        with self.c.lock:
            items = sorted(
                self.c.col("audit").items(), key=lambda kv: (kv[1]["ts"], kv[0]), reverse=True
            )
        return {
            "data": [record_json({"id": i, **d}) for i, d in items[:limit]],
            "next_page_token": None,
        }

    # --- usage: what the log page and the reports read ------------------------------------

    def _matching(self, f: Filters) -> list[dict[str, Any]]:
        eq = equalities(f)
        with self.c.lock:
            recs = [dict(r) for r in self.c.usage.values()]
        return [
            r
            for r in recs
            if all(r.get(k) == x for k, x in eq.items())
            and (f.after is None or r["ts"] >= f.after)
            and (f.before is None or r["ts"] < f.before)
        ]

    def _totals(self, f: Filters) -> dict[str, int]:
        recs = self._matching(f)
        return {"calls": len(recs)} | {s: sum(int(r.get(s) or 0) for r in recs) for s in SUMS}

    def records(
        self, f: Filters, *, limit: int, page_token: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        rows = sorted(self._matching(f), key=lambda r: (r["ts"], r["call_id"]), reverse=True)
        return rows[:limit], None

    def aggregate(
        self,
        f: Filters,
        group_by: str | None,
        *,
        limit: int = 50,
        page_token: str | None = None,
        now: datetime | None = None,
    ) -> dict[str, Any]:
        if not group_by:
            return {"data": [row(None, self._totals(f))], "next_page_token": None}
        groups: list[str | None]
        if group_by == "day":
            f, days = day_window(f, now or utcnow())
            groups = list(days)
        else:
            # the groups with calls (the real one asks the configuration for candidates;
            # the contract test seeds it to match); the untagged calls come last
            seen = {r.get(FIELDS[group_by]) for r in self._matching(f)}
            groups = [*sorted(str(g) for g in seen if g is not None), *[None] * (None in seen)]
        rows = [row(g, t) for g in groups if (t := self._totals(narrow(f, group_by, g)))["calls"]]
        return {"data": rows[:limit], "next_page_token": None}

    def burn(
        self, project: str, period_kind: str, budgets: list[burn.Budget], now: datetime
    ) -> dict[str, Any]:
        def spend(user: str | None, since: datetime, until: datetime) -> int:
            f = Filters(project=project, user=user, after=since, before=until)
            return self._totals(f)["cost_nano"]

        return burn.burn_report(spend, period_kind, budgets, now)
