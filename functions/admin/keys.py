"""``/projects/{project}/members/{user}/keys``: a member's proxy keys. A new or rotated
key is shown once, in the answer that made it; only its digest and last 4 characters
are stored. A key may carry limits of its own (a budget, an rpm, a subset of the
project's models); one with a budget shows its spend this period."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from functions.admin.members import may_manage, member_budget
from functions.admin.responses import Resp, ok
from functions.core import ids
from functions.core import validate as v
from functions.core.budget import period_key
from functions.core.errors import InvalidRequest
from functions.core.holds import utcnow
from functions.store.membership import Membership
from functions.store.provision import Provisioner
from functions.store.views import Views


class Keys:
    def __init__(self, prov: Provisioner, members: Membership, views: Views) -> None:
        self.prov = prov
        self.members = members
        self.views = views

    def index(self, project: str, user: str, **_: Any) -> Resp:
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

    def _limits(self, b: dict[str, Any], project: str) -> dict[str, Any]:
        """The limits given in ``b`` (``budget_usd``, ``rpm``, ``allowed_models``), as
        stored; a key given null loses that limit. Its models must be the project's."""
        out: dict[str, Any] = {}
        if "budget_usd" in b:
            out["budget_nano"] = member_budget(self.prov, b, project)
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

    def create(self, actor: Any, body: Any, project: str, user: str, **_: Any) -> Resp:
        b = v.body_object(body)
        v.only_fields(
            b, {"name", "expires_at", "budget_usd", "budget_soft", "rpm", "allowed_models"}
        )
        name = v.ident(b, "name") or ""
        expires = _expiry(b)
        limits = {k: x for k, x in self._limits(b, project).items() if x is not None}
        key = self.members.add_key(project, user, name, expires, limits, actor=actor.name)
        return ok(
            {"name": name, "key": key, "last4": key[-4:], "expires_at": expires, **limits}, 201
        )

    def update(self, actor: Any, body: Any, project: str, user: str, name: str, **_: Any) -> Resp:
        b = v.body_object(body)
        v.only_fields(b, {"budget_usd", "budget_soft", "rpm", "allowed_models"})
        may_manage(self.prov, actor, project, user)  # a lead: members' keys, never their own
        limits = self._limits(b, project)
        if not limits:
            raise InvalidRequest("Nothing to change: give budget_usd, rpm or allowed_models.")
        return ok(self.members.set_key_limits(project, user, name, limits, actor=actor.name))

    def rotate(self, actor: Any, body: Any, project: str, user: str, name: str, **_: Any) -> Resp:
        b = v.body_object(body)
        v.only_fields(b, {"expires_at"})
        may_manage(self.prov, actor, project, user)
        key = self.members.rotate_key(project, user, name, _expiry(b), actor=actor.name)
        return ok({"name": name, "key": key, "last4": key[-4:]})

    def destroy(self, actor: Any, project: str, user: str, name: str, **_: Any) -> Resp:
        self.members.revoke_key(project, user, name, actor=actor.name)
        return ok({"revoked": True})


def _expiry(b: dict[str, Any]) -> datetime | None:
    if b.get("expires_at") is None:
        return None
    return v.timestamp(b["expires_at"], "expires_at")
