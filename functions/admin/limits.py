"""``/projects/{project}/limits``: a budget, rpm or tpm on one model of a project, for
the whole project or for one member."""

from __future__ import annotations

from typing import Any

from functions.admin.responses import Resp, ok
from functions.core import ids
from functions.core import validate as v
from functions.core.errors import ResourceNotFound
from functions.store.provision import Provisioner
from functions.store.views import Views


class Limits:
    def __init__(self, prov: Provisioner, views: Views) -> None:
        self.prov = prov
        self.views = views

    def index(self, project: str, **_: Any) -> Resp:
        self.prov.get("projects", project, "project")
        docs = list(self.views.where("limits", project=project).values())
        return ok(
            {"data": sorted(docs, key=lambda d: (str(d.get("model")), str(d.get("user") or "")))}
        )

    def update(
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

    def destroy(
        self, actor: Any, project: str, model: str, user: str | None = None, **_: Any
    ) -> Resp:
        if not self.prov.exists("limits", ids.limit(project, model, user)):
            raise ResourceNotFound("No such limit.")
        self.prov.delete_limit(project, model, user, actor=actor.name)
        return ok({"deleted": True})
