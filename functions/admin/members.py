"""``/projects/{project}/members``: who belongs to a project, in which role, with which
budget, and their spend this period. A project lead's key reaches these routes for
the lead's own project (``app`` decides); what a lead may do to whom is
``may_manage``, also used by the keys and top-ups routes."""

from __future__ import annotations

from typing import Any

from functions.admin.responses import Resp, ok
from functions.core import ids
from functions.core import validate as v
from functions.core.budget import PERIODS, period_key
from functions.core.errors import InvalidRequest, PermissionDenied
from functions.core.holds import utcnow
from functions.core.pricing import format_usd
from functions.store.membership import Membership, check_role
from functions.store.provision import Provisioner
from functions.store.views import Views


def may_manage(prov: Provisioner, actor: Any, project: str, user: str) -> dict[str, Any]:
    """The member document of ``user``, if ``actor`` may change it. A lead manages the
    members of their project, never themselves (their own budget, role or keys) and
    never another lead: only an administrator changes a lead."""
    member = prov.get("members", ids.member(project, user), "member")
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


def member_budget(prov: Provisioner, b: dict[str, Any], project: str) -> int | None:
    """``budget_usd`` in nano-dollars, refused above the project's own budget (the
    project limit would refuse first, so a larger member budget only misleads)."""
    nano = v.usd_nano(b)
    cap = prov.get("projects", project, "project").get("budget_nano")
    if nano is not None and cap is not None and nano > int(cap):
        raise InvalidRequest(
            f"'budget_usd' is above the budget of project '{project}' "
            f"(${format_usd(int(cap))}); a member budget must fit "
            "inside it.",
            param="budget_usd",
        )
    return nano


class Members:
    def __init__(self, prov: Provisioner, members: Membership, views: Views) -> None:
        self.prov = prov
        self.members = members
        self.views = views

    def index(self, project: str, **_: Any) -> Resp:
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

    def create(self, actor: Any, body: Any, project: str, **_: Any) -> Resp:
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
            budget_nano=member_budget(self.prov, b, project),
            key_name=v.ident(b, "key_name", required=False) or "default",
            actor=actor.name,
        )
        member = self.prov.get("members", ids.member(project, user), "member")
        return ok({"member": member, "key": key}, 201)

    def update(self, actor: Any, body: Any, project: str, user: str, **_: Any) -> Resp:
        b = v.body_object(body)
        v.only_fields(b, {"budget_usd", "budget_soft", "windows", "role"})
        may_manage(self.prov, actor, project, user)
        fields: dict[str, Any] = {}
        if "windows" in b:
            period = self.prov.get("projects", project, "project").get("budget_period")
            fields["windows"] = v.windows(b, str(period or "monthly"), PERIODS) or []
        if "budget_usd" in b:
            fields["budget_nano"] = member_budget(self.prov, b, project)
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

    def destroy(self, actor: Any, project: str, user: str, **_: Any) -> Resp:
        may_manage(self.prov, actor, project, user)
        n = self.members.remove_member(project, user, actor=actor.name)
        return ok({"deleted": True, "keys_revoked": n})
