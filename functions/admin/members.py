"""Admin handlers for a project's people and guards: members and their keys, limits,
the response cache, budget alerts and the hold sweep. A mixin of ``admin_handlers.
Handlers`` (the routes name its methods); a project lead's key reaches the member
ones for the lead's own project (``admin.py`` decides)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.cloud import firestore

from functions.admin.responses import Resp, ok
from functions.core import ids
from functions.core import validate as v
from functions.core.budget import PERIODS, period_key
from functions.core.errors import InvalidRequest, PermissionDenied, ResourceNotFound
from functions.core.holds import utcnow
from functions.core.pricing import format_usd
from functions.core.settings import Settings
from functions.store import indexes
from functions.store.alerts import DEFAULT_THRESHOLDS, FORMATS, Alerts, guess_format
from functions.store.ledger import ledger_for_settings
from functions.store.membership import Membership, check_role
from functions.store.provision import Provisioner
from functions.store.views import Views

_FLUSH_SLICE = 400


class MemberHandlers:
    settings: Settings
    db: firestore.Client
    views: Views
    prov: Provisioner
    members: Membership

    # --- members and keys --------------------------------------------------------------------

    def _may_manage(self, actor: Any, project: str, user: str) -> dict[str, Any]:
        """The member document of ``user``, if ``actor`` may change it. A lead manages the
        members of their project, never themselves (their own budget, role or keys) and
        never another lead: only an administrator changes a lead."""
        member = self.prov.get("members", ids.member(project, user), "member")
        if actor.lead_of:
            if user == actor.user:
                raise PermissionDenied(
                    "A project lead cannot change their own membership, "
                    "budget or keys; ask an administrator.",
                    param="user",
                )
            if member.get("role") == "lead":
                raise PermissionDenied(
                    f"'{user}' is a lead of '{project}': only an administrator manages a lead.",
                    param="user",
                )
        return member

    def _member_budget(self, b: dict[str, Any], project: str) -> int | None:
        """``budget_usd`` in nano-dollars, refused above the project's own budget (the
        project limit would refuse first, so a larger member budget only misleads)."""
        nano = v.usd_nano(b)
        cap = self.prov.get("projects", project, "project").get("budget_nano")
        if nano is not None and cap is not None and nano > int(cap):
            raise InvalidRequest(
                f"'budget_usd' is above the budget of project '{project}' "
                f"(${format_usd(int(cap))}); a member budget must fit "
                "inside it.",
                param="budget_usd",
            )
        return nano

    def list_members(self, project: str, **_: Any) -> Resp:
        proj = self.prov.get("projects", project, "project")
        period = period_key(proj.get("budget_period", "monthly"), utcnow())
        members = self.members.list_members(project)
        cids = [ids.member_counter(project, str(m["user"]), period) for m in members]
        states = self.views.counters(project, cids)
        out = []
        for m, cid in zip(members, cids, strict=True):
            out.append(
                {
                    "user": m["user"],
                    "role": m.get("role"),
                    "budget_nano": m.get("budget_nano"),
                    "spent_nano": states[cid].spent,
                    "created_at": m.get("created_at"),
                    "keys": self.members.list_keys(project, str(m["user"])),
                }
            )
        return ok({"data": out, "period": period})

    def add_member(self, actor: Any, body: Any, project: str, **_: Any) -> Resp:
        b = v.body_object(body)
        v.only_fields(b, {"user", "role", "budget_usd", "key_name"})
        user = v.ident(b, "user") or ""
        role = check_role(b.get("role", "member"))
        if actor.lead_of and role != "member":
            raise PermissionDenied("A project lead may only add members, not leads.", param="role")
        key = self.members.add_member(
            project,
            user,
            role=role,
            budget_nano=self._member_budget(b, project),
            key_name=v.ident(b, "key_name", required=False) or "default",
            actor=actor.name,
        )
        member = self.prov.get("members", ids.member(project, user), "member")
        return ok({"member": member, "key": key}, 201)

    def update_member(self, actor: Any, body: Any, project: str, user: str, **_: Any) -> Resp:
        b = v.body_object(body)
        v.only_fields(b, {"budget_usd", "budget_soft", "windows", "role"})
        self._may_manage(actor, project, user)
        fields: dict[str, Any] = {}
        if "windows" in b:
            period = self.prov.get("projects", project, "project").get("budget_period")
            fields["windows"] = v.windows(b, str(period or "monthly"), PERIODS) or []
        if "budget_usd" in b:
            fields["budget_nano"] = self._member_budget(b, project)
        if "budget_soft" in b:
            fields["budget_soft"] = bool(v.boolean(b, "budget_soft"))
        if "role" in b:
            if actor.lead_of:
                raise PermissionDenied(
                    "A project lead may change budgets, not roles.", param="role"
                )
            fields["role"] = check_role(b["role"])
        if not fields:
            raise InvalidRequest(
                "Nothing to change: send budget_usd, budget_soft, windows or role."
            )
        return ok(self.members.update_member(project, user, fields, actor=actor.name))

    def remove_member(self, actor: Any, project: str, user: str, **_: Any) -> Resp:
        self._may_manage(actor, project, user)
        n = self.members.remove_member(project, user, actor=actor.name)
        return ok({"deleted": True, "keys_revoked": n})

    def list_keys(self, project: str, user: str, **_: Any) -> Resp:
        self.prov.get("members", ids.member(project, user), "member")
        keys = self.members.list_keys(project, user)
        # a key with a budget: its spend this period, as the member's is shown
        proj = self.prov.get("projects", project, "project")
        period = period_key(proj.get("budget_period", "monthly"), utcnow())
        cids = {
            str(k["name"]): ids.key_counter(project, user, str(k["name"]), period)
            for k in keys
            if k.get("budget_nano") is not None and not k["revoked_at"]
        }
        states = self.views.counters(project, cids.values()) if cids else {}
        for k in keys:
            cid = cids.get(str(k["name"])) if not k["revoked_at"] else None
            if cid is not None:
                st = states[cid]
                k.update(
                    spent_nano=st.spent,
                    held_nano=st.held,
                    remaining_nano=int(k["budget_nano"]) - st.taken,
                )
        return ok({"data": keys})

    def _expiry(self, b: dict[str, Any]) -> datetime | None:
        if b.get("expires_at") is None:
            return None
        return v.timestamp(b["expires_at"], "expires_at")

    def _key_limits(self, b: dict[str, Any], project: str) -> dict[str, Any]:
        """The limits given in ``b`` (``budget_usd``, ``rpm``, ``allowed_models``), as
        stored; a key given null loses that limit. Its models must be the project's."""
        out: dict[str, Any] = {}
        if "budget_usd" in b:
            out["budget_nano"] = self._member_budget(b, project)
        if "rpm" in b:
            out["rpm"] = v.integer(b, "rpm", lo=1, hi=10**9)
        if "budget_soft" in b:
            out["budget_soft"] = bool(v.boolean(b, "budget_soft"))
        if "allowed_models" in b:
            models = v.string_list(b, "allowed_models") or []
            allowed = self.prov.get("projects", project, "project").get("allowed_models") or []
            outside = [m for m in models if m not in allowed and "*" not in allowed]
            if outside:
                raise InvalidRequest(
                    f"'allowed_models' of a key must be models of project "
                    f"'{project}'; not: {', '.join(outside[:5])}.",
                    param="allowed_models",
                )
            out["allowed_models"] = models or None
        return out

    def add_key(self, actor: Any, body: Any, project: str, user: str, **_: Any) -> Resp:
        b = v.body_object(body)
        v.only_fields(
            b, {"name", "expires_at", "budget_usd", "budget_soft", "rpm", "allowed_models"}
        )
        name = v.ident(b, "name") or ""
        expires = self._expiry(b)
        limits = {k: x for k, x in self._key_limits(b, project).items() if x is not None}
        key = self.members.add_key(project, user, name, expires, limits, actor=actor.name)
        return ok(
            {"name": name, "key": key, "last4": key[-4:], "expires_at": expires, **limits}, 201
        )

    def update_key(
        self, actor: Any, body: Any, project: str, user: str, name: str, **_: Any
    ) -> Resp:
        b = v.body_object(body)
        v.only_fields(b, {"budget_usd", "budget_soft", "rpm", "allowed_models"})
        self._may_manage(actor, project, user)  # a lead: members' keys, never their own
        limits = self._key_limits(b, project)
        if not limits:
            raise InvalidRequest("Nothing to change: give budget_usd, rpm or allowed_models.")
        return ok(self.members.set_key_limits(project, user, name, limits, actor=actor.name))

    def rotate_key(
        self, actor: Any, body: Any, project: str, user: str, name: str, **_: Any
    ) -> Resp:
        b = v.body_object(body)
        v.only_fields(b, {"expires_at"})
        self._may_manage(actor, project, user)
        key = self.members.rotate_key(project, user, name, self._expiry(b), actor=actor.name)
        return ok({"name": name, "key": key, "last4": key[-4:]})

    def revoke_key(self, actor: Any, project: str, user: str, name: str, **_: Any) -> Resp:
        self.members.revoke_key(project, user, name, actor=actor.name)
        return ok({"revoked": True})

    # --- limits, cache, sweep ----------------------------------------------------------------

    def list_limits(self, project: str, **_: Any) -> Resp:
        self.prov.get("projects", project, "project")
        docs = list(self.views.where("limits", project=project).values())
        return ok(
            {"data": sorted(docs, key=lambda d: (str(d.get("model")), str(d.get("user") or "")))}
        )

    def set_limit(
        self, actor: Any, body: Any, project: str, model: str, user: str | None = None, **_: Any
    ) -> Resp:
        b = v.body_object(body)
        v.only_fields(b, {"budget_usd", "budget_soft", "rpm", "tpm"})
        self.prov.get("projects", project, "project")
        if user is not None:
            self.prov.get("members", ids.member(project, user), "member")
        doc = self.prov.set_limit(
            project,
            model,
            user,
            budget_nano=v.usd_nano(b),
            rpm=v.integer(b, "rpm", lo=1, hi=10**9),
            tpm=v.integer(b, "tpm", lo=1, hi=10**12),
            budget_soft=bool(v.boolean(b, "budget_soft")),
            actor=actor.name,
        )
        return ok(doc)

    def delete_limit(
        self, actor: Any, project: str, model: str, user: str | None = None, **_: Any
    ) -> Resp:

        if not self.prov.ref("limits", ids.limit(project, model, user)).get().exists:
            raise ResourceNotFound("No such limit.")
        self.prov.delete_limit(project, model, user, actor=actor.name)
        return ok({"deleted": True})

    def flush_cache(self, actor: Any, project: str, **_: Any) -> Resp:
        self.prov.get("projects", project, "project")
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
                self.prov.audit(batch, actor.name, "cache.flush", project, {"entries": len(refs)})
            batch.commit()
        return ok({"flushed": len(refs)})

    def get_alerts(self, project: str, **_: Any) -> Resp:
        d = self.prov.get("projects", project, "project")
        sent = list(self.views.where("alerts_sent", project=project).values())
        config = {
            "webhook_url": None,
            "thresholds": list(DEFAULT_THRESHOLDS),
            "format": "json",
            **(d.get("alerts") or {}),
        }
        return ok({"config": config, "sent": sorted(sent, key=lambda a: a["ts"], reverse=True)})

    def set_alerts(self, actor: Any, body: Any, project: str, **_: Any) -> Resp:
        b = v.body_object(body)
        v.only_fields(b, {"webhook_url", "thresholds", "format"})
        url = v.text(b, "webhook_url", max_len=500)
        if url is not None and not url.startswith(("http://", "https://")):
            raise InvalidRequest("'webhook_url' must be an http(s) URL.", param="webhook_url")
        thresholds = b.get("thresholds", [50, 80, 100])
        if (
            not isinstance(thresholds, list)
            or not thresholds
            or len(thresholds) > 10
            or not all(
                isinstance(t, int) and not isinstance(t, bool) and 0 < t <= 1000 for t in thresholds
            )
        ):
            raise InvalidRequest(
                "'thresholds' must be a list of 1-10 whole percentages (1-1000).",
                param="thresholds",
            )
        # no format given: the one the webhook's host takes (Slack, Google Chat) or json
        fmt = v.one_of(b, "format", FORMATS) or guess_format(url)
        alerts = {"webhook_url": url, "thresholds": sorted(set(thresholds)), "format": fmt}
        self.prov.update_project(project, actor=actor.name, alerts=alerts)
        return self.get_alerts(project)

    def sweep(self, actor: Any, **_: Any) -> Resp:
        ledger, total = ledger_for_settings(self.db, self.settings), 0
        while (n := ledger.sweep(limit=100)) > 0 and total < 10_000:
            total += n
        swept, closed = ledger.sweeper.holds_swept, ledger.sweeper.grants_closed
        counts = {
            "swept": swept,
            "grants_closed": closed,
            "alerts_resent": Alerts(self.db).resend_due(),
        }
        batch = self.db.batch()
        self.prov.audit(batch, actor.name, "holds.sweep", "*", counts)
        batch.commit()
        return ok(counts)
