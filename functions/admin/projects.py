"""``/projects``: a project's settings (its external key, budget and period, allowed
models, cache, rate limits, CORS origins), its spend this period, archiving, and
flushing its response cache."""

from __future__ import annotations

from typing import Any

from functions.admin.responses import Resp, ok
from functions.core import cors, ids
from functions.core import validate as v
from functions.core.budget import PERIODS, period_key
from functions.core.errors import InvalidRequest
from functions.core.holds import utcnow
from functions.store.provision import Provisioner
from functions.store.views import Views

FIELDS = {
    "id",
    "name",
    "external_key",
    "budget_usd",
    "budget_period",
    "allowed_models",
    "default_max_output_tokens",
    "cache",
    "priced_tools",
    "rpm",
    "tpm",
    "clamp_output",
    "cors_origins",
    "budget_soft",
    "windows",
}


class Projects:
    def __init__(self, prov: Provisioner, views: Views) -> None:
        self.prov = prov
        self.views = views

    def _spend(self, project: dict[str, Any]) -> dict[str, Any]:
        period = period_key(project.get("budget_period", "monthly"), utcnow())
        cid = ids.project_counter(project["id"], period)
        st = self.views.counters(project["id"], [cid])[cid]
        budget = project.get("budget_nano")
        # held: estimates of calls in flight; escrow: reserved by busy instances' grants
        return {
            "period": period,
            "spent_nano": st.spent,
            "held_nano": st.held,
            "escrow_nano": st.escrow,
            "in_flight": st.inflight,
            "budget_nano": budget,
            "remaining_nano": None if budget is None else budget - st.taken,
        }

    def index(self, **_: Any) -> Resp:
        return ok({"data": sorted(self.views.all("projects"), key=lambda p: str(p.get("id")))})

    def create(self, actor: Any, body: Any, **_: Any) -> Resp:
        b = v.body_object(body)
        pid = v.ident(b, "id") or ""
        doc = self.prov.create_project(pid, actor=actor.name, **fields_of(b, creating=True))
        return ok(doc, 201)

    def show(self, project: str, **_: Any) -> Resp:
        d = self.prov.get("projects", project, "project")
        return ok(d | {"spend": self._spend(d)})

    def update(self, actor: Any, body: Any, project: str, **_: Any) -> Resp:
        current = self.prov.get("projects", project, "project")
        fields = fields_of(
            v.body_object(body), creating=False, period=str(current.get("budget_period", "monthly"))
        )
        if not fields:
            raise InvalidRequest("Nothing to change.")
        if "external_key" in fields and not self.prov.exists(
            "external_keys", fields["external_key"]
        ):
            raise InvalidRequest(
                f"No external key '{fields['external_key']}'.", param="external_key"
            )
        self.prov.update_project(project, actor=actor.name, **fields)
        return self.show(project)

    def archive(self, actor: Any, project: str, **_: Any) -> Resp:
        self.prov.update_project(project, actor=actor.name, archived=True)
        return self.show(project)

    def flush_cache(self, actor: Any, project: str, **_: Any) -> Resp:
        self.prov.get("projects", project, "project")
        return ok({"flushed": self.prov.flush_cache(project, actor=actor.name)})


def fields_of(b: dict[str, Any], *, creating: bool, period: str = "monthly") -> dict[str, Any]:
    """The project fields given in ``b``, checked and as stored (``budget_usd`` becomes
    ``budget_nano``); ``period`` is the budget period that ``windows`` must fit."""
    v.only_fields(b, FIELDS if creating else FIELDS - {"id"})
    cache = b.get("cache")
    if cache is not None:
        if not isinstance(cache, dict):
            raise InvalidRequest(
                '\'cache\' must be {"enabled": bool, "ttl_s": int}.', param="cache"
            )
        v.only_fields(cache, {"enabled", "ttl_s"})
        cache = {
            "enabled": bool(v.boolean(cache, "enabled")),
            "ttl_s": v.integer(cache, "ttl_s", lo=1, hi=30 * 86400) or 3600,
        }
    fields = {
        "name": v.text(b, "name"),
        "external_key": v.ident(b, "external_key", required=creating),
        "budget_period": v.one_of(b, "budget_period", PERIODS),
        "allowed_models": v.string_list(b, "allowed_models"),
        "default_max_output_tokens": v.integer(b, "default_max_output_tokens", lo=1, hi=1_000_000),
        "priced_tools": v.string_list(b, "priced_tools"),
        "cache": cache,
        "rpm": v.integer(b, "rpm", lo=1, hi=10**9),
        "tpm": v.integer(b, "tpm", lo=1, hi=10**12),
        "clamp_output": v.boolean(b, "clamp_output"),
        "budget_soft": v.boolean(b, "budget_soft"),
        "windows": v.windows(b, b.get("budget_period") or period, PERIODS),
        "cors_origins": (
            cors.check_origins(b["cors_origins"]) if b.get("cors_origins") is not None else None
        ),
    }
    out: dict[str, Any] = {k: x for k, x in fields.items() if x is not None}
    if "budget_usd" in b:
        out["budget_nano"] = v.usd_nano(b)
    return out
