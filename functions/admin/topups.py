"""``/projects/{project}/topups``: +$X on a project's or a member's budget until a date.

An administrator tops up anyone. A lead tops up the members of their project (never
themselves, never another lead), and only within the project's budget: the member's
budget with its top-ups in force may not pass the project's own.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from functions.admin.members import may_manage
from functions.admin.responses import Resp, ok
from functions.core import validate as v
from functions.core.budget import topped_up
from functions.core.errors import InvalidRequest, PermissionDenied
from functions.core.holds import utcnow
from functions.core.pricing import format_usd
from functions.core.records import topups_of
from functions.store.membership import Membership
from functions.store.provision import Provisioner
from functions.store.topups import Topups

MAX_TOPUP_DAYS = 366


class ProjectTopups:
    def __init__(self, prov: Provisioner, members: Membership, topups: Topups) -> None:
        self.prov = prov
        self.members = members
        self.topups = topups

    def create(self, actor: Any, body: Any, project: str, **_: Any) -> Resp:
        b = v.body_object(body)
        v.only_fields(b, {"user", "amount_usd", "until", "note"})
        user = v.ident(b, "user", required=False)
        amount = v.usd_nano(b, "amount_usd")
        if not amount:
            raise InvalidRequest("'amount_usd' must be more than $0.", param="amount_usd")
        if b.get("until") is None:
            raise InvalidRequest("Missing required parameter: 'until'.", param="until")
        until, now = v.timestamp(b["until"], "until"), utcnow()
        if not now < until <= now + timedelta(days=MAX_TOPUP_DAYS):
            raise InvalidRequest(
                f"'until' must be in the next {MAX_TOPUP_DAYS} days.", param="until"
            )
        project_doc = self.prov.get("projects", project, "project")
        if actor.lead_of:
            if user is None:
                raise PermissionDenied(
                    "A lead tops up members; only an administrator tops up the project.",
                    param="user",
                )
            member = may_manage(self.prov, actor, project, user)
            room = topped_up(project_doc.get("budget_nano"), topups_of(project_doc), now)
            after = topped_up(member.get("budget_nano"), topups_of(member), now)
            if room is not None and after is not None and after + amount > room:
                raise PermissionDenied(
                    f"A lead tops up within the project's budget: '{user}' would have "
                    f"${format_usd(after + amount)} of the project's ${format_usd(room)}.",
                    param="amount_usd",
                )
        entry = self.topups.add(
            project, user, amount, until, v.text(b, "note") or "", actor=actor.name
        )
        return ok({"project": project, "user": user, **entry}, 201)

    def index(self, project: str, **_: Any) -> Resp:
        self.prov.get("projects", project, "project")
        users = [str(m.get("user")) for m in self.members.list_members(project)]
        return ok({"data": self.topups.of_project(project, users)})
