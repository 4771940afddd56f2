"""``/users``: the people who may hold proxy keys. A user exists once and is a member
of any number of projects; disabling one stops every key they hold at once."""

from __future__ import annotations

from typing import Any

from functions.admin.responses import Resp, ok
from functions.core import validate as v
from functions.core.errors import InvalidRequest
from functions.store.provision import Provisioner
from functions.store.views import Views


class Users:
    def __init__(self, prov: Provisioner, views: Views) -> None:
        self.prov = prov
        self.views = views

    def index(self, **_: Any) -> Resp:
        return ok({"data": sorted(self.views.all("users"), key=lambda u: str(u.get("id")))})

    def create(self, actor: Any, body: Any, **_: Any) -> Resp:
        b = v.body_object(body)
        v.only_fields(b, {"id", "name", "email"})
        uid = v.ident(b, "id") or ""
        doc = self.prov.create_user(
            uid, v.text(b, "name") or "", v.email(b) or "", actor=actor.name
        )
        return ok(doc, 201)

    def show(self, user: str, **_: Any) -> Resp:
        return ok(self.prov.get("users", user, "user"))

    def update(self, actor: Any, body: Any, user: str, **_: Any) -> Resp:
        b = v.body_object(body)
        v.only_fields(b, {"name", "email", "disabled"})
        fields = {
            k: x
            for k, x in {
                "name": v.text(b, "name"),
                "email": v.email(b),
                "disabled": v.boolean(b, "disabled"),
            }.items()
            if x is not None
        }
        if not fields:
            raise InvalidRequest("Nothing to change: send name, email or disabled.")
        self.prov.update_user(user, fields, actor=actor.name)
        return self.show(user)

    def disable(self, actor: Any, user: str, **_: Any) -> Resp:
        self.prov.update_user(user, {"disabled": True}, actor=actor.name)
        return self.show(user)
