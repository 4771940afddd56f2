"""Handlers of the admin API, one method per route (see docs/admin-api.md). Each
validates its input with ``validate``, then calls one atomic operation of
``provision``/``membership`` (which writes the audit record with the change)."""

from __future__ import annotations

from typing import Any

import flask
from google.cloud import firestore

from functions.admin.external_keys import check_upstream_key
from functions.admin.reconciliation import ReconcileHandlers, openai_ids
from functions.admin.responses import Resp, ok
from functions.admin.topups import TopupHandlers
from functions.core import cors, ids, pricing
from functions.core import validate as v
from functions.core.budget import PERIODS, period_key
from functions.core.errors import Conflict, InvalidRequest
from functions.core.holds import utcnow
from functions.core.settings import Settings
from functions.store.membership import Membership
from functions.store.provision import Provisioner
from functions.store.secrets import CachedSecrets
from functions.store.views import Views

_PROJECT_FIELDS = {
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


def _price_json(p: pricing.Price) -> dict[str, Any]:
    d = pricing.price_to_doc(p)
    for tiers in (d.get("tiers") or {}, d.get("long_context_tiers") or {}):
        for rates in tiers.values():
            for k, r in list(rates.items()):
                rates[k] = pricing.rate_to_usd_per_mtok(r)
    return d


def _model_id(value: Any, name: str = "id") -> str:
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= 256
        or not value.isprintable()
        or not value.isascii()
        or not value[:1].isalnum()
        or value.strip() != value
    ):
        raise InvalidRequest(f"'{name}' must be a model name.", param=name)
    return value


class Handlers(TopupHandlers, ReconcileHandlers):
    def __init__(self, settings: Settings, db: firestore.Client, secrets: CachedSecrets) -> None:
        self.settings = settings
        self.db = db  # for the writes of the handlers not yet in the store (issue 19)
        self.views = Views(db)
        self.prov = Provisioner(db, secrets.store)
        self.members = Membership(db)
        self.secrets = secrets

    def _all(self, collection: str) -> list[dict[str, Any]]:
        return self.views.all(collection)

    def whoami(self, actor: Any, **_: Any) -> Resp:
        """Who signed in: the console shows an administrator everything and a lead only
        the member pages of their project (the API refuses them the rest anyway)."""
        return ok(
            {
                "actor": actor.name,
                "kind": "lead" if actor.lead_of else "admin",
                "project": actor.lead_of,
                "user": actor.user,
            }
        )

    # --- users ----------------------------------------------------------------------

    def list_users(self, **_: Any) -> Resp:
        return ok({"data": sorted(self._all("users"), key=lambda u: str(u.get("id")))})

    def create_user(self, actor: Any, body: Any, **_: Any) -> Resp:
        b = v.body_object(body)
        v.only_fields(b, {"id", "name", "email"})
        uid = v.ident(b, "id") or ""
        doc = self.prov.create_user(
            uid, v.text(b, "name") or "", v.email(b) or "", actor=actor.name
        )
        return ok(doc, 201)

    def get_user(self, user: str, **_: Any) -> Resp:
        return ok(self.prov.get("users", user, "user"))

    def update_user(self, actor: Any, body: Any, user: str, **_: Any) -> Resp:
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
        return self.get_user(user)

    def disable_user(self, actor: Any, user: str, **_: Any) -> Resp:
        self.prov.update_user(user, {"disabled": True}, actor=actor.name)
        return self.get_user(user)

    # --- external keys -------------------------------------------------------------------

    def _ext_json(self, d: dict[str, Any]) -> dict[str, Any]:
        users = list(self.views.where("projects", external_key=d.get("id")))
        return {
            k: d.get(k)
            for k in (
                "id",
                "last4",
                "base_url",
                "created_at",
                "rotated_at",
                "openai_project_id",
                "openai_key_id",
            )
        } | {"projects": sorted(users)}

    def list_external_keys(self, **_: Any) -> Resp:
        keys = sorted(self._all("external_keys"), key=lambda k: str(k.get("id")))
        return ok({"data": [self._ext_json(k) for k in keys]})

    def add_external_key(self, actor: Any, body: Any, **_: Any) -> Resp:
        b = v.body_object(body)
        v.only_fields(b, {"id", "secret", "base_url", "openai_project_id", "openai_key_id"})
        kid = v.ident(b, "id") or ""
        ids = openai_ids(b)  # where OpenAI's Usage API counts this key (reconciliation)
        secret = v.text(b, "secret", required=True, max_len=4096) or ""
        base = v.text(b, "base_url", max_len=500)
        if base is not None and not base.startswith(("http://", "https://")):
            raise InvalidRequest("'base_url' must be an http(s) URL.", param="base_url")
        if self.prov.ref("external_keys", kid).get().exists:
            raise Conflict(f"An external key '{kid}' already exists.")
        check_upstream_key(secret, (base or self.settings.upstream_base_url).rstrip("/"))
        doc = self.prov.put_external_key(kid, secret, base, actor=actor.name, openai=ids)
        return ok(self._ext_json(doc), 201)

    def rotate_external_key(self, actor: Any, body: Any, key: str, **_: Any) -> Resp:
        b = v.body_object(body)
        v.only_fields(b, {"secret"})
        secret = v.text(b, "secret", required=True, max_len=4096) or ""
        current = self.prov.get("external_keys", key, "external key")
        check_upstream_key(
            secret, (current.get("base_url") or self.settings.upstream_base_url).rstrip("/")
        )
        doc = self.prov.put_external_key(key, secret, actor=actor.name, rotate=True)
        return ok(self._ext_json(doc))

    def delete_external_key(self, actor: Any, key: str, **_: Any) -> Resp:
        self.prov.delete_external_key(key, actor=actor.name)
        return ok({"deleted": True})

    # --- models and prices -------------------------------------------------------------------

    def _model(self, model: str) -> dict[str, Any]:
        d = self.prov.get("models", ids.model(model), "model")
        history = [pricing.price_from_doc(p) for p in d.get("prices") or ()]
        current = pricing.price_in_force(history, utcnow())
        return {
            "id": d.get("id", model),
            "created": d.get("created"),
            "price": _price_json(current) if current else None,
            "prices": [_price_json(p) for p in history],
        }

    def list_models(self, **_: Any) -> Resp:
        out = []
        for d in sorted(self._all("models"), key=lambda m: str(m.get("id"))):
            history = [pricing.price_from_doc(p) for p in d.get("prices") or ()]
            current = pricing.price_in_force(history, utcnow())
            out.append(
                {
                    "id": d.get("id"),
                    "created": d.get("created"),
                    "price": _price_json(current) if current else None,
                }
            )
        return ok({"data": out})

    def add_model(self, actor: Any, body: Any, **_: Any) -> Resp:
        b = v.body_object(body)
        v.only_fields(b, {"id"})
        model = _model_id(b.get("id"))
        self.prov.add_model(model, actor=actor.name)
        return ok(self._model(model), 201)

    def get_model(self, model: str, **_: Any) -> Resp:
        return ok(self._model(model))

    def add_cost(self, actor: Any, body: Any, model: str, **_: Any) -> Resp:
        b = v.body_object(body)
        v.only_fields(b, {"valid_from", "input", "cached_input", "output", "cache_write", "tiers"})
        self.prov.get("models", ids.model(model), "model")
        tiers = {"default": _rates(b, "")}
        extra = b.get("tiers") or {}
        if not isinstance(extra, dict):
            raise InvalidRequest("'tiers' must map a service tier to its rates.", param="tiers")
        for tier, rates in extra.items():
            if tier not in ("flex", "priority", "scale", "ultrafast") or not isinstance(
                rates, dict
            ):
                raise InvalidRequest(
                    f"'tiers.{tier}' is not a service tier with rates.", param="tiers"
                )
            tiers[tier] = _rates(rates, f"tiers.{tier}.")
        if "valid_from" not in b:
            raise InvalidRequest("Missing required field 'valid_from'.", param="valid_from")
        price = pricing.Price(
            valid_from=v.timestamp(b["valid_from"], "valid_from"),
            valid_to=None,
            tiers=tiers,
            source=f"admin:{actor.name}",
        )
        self.prov.add_price(model, price, actor=actor.name)
        return ok(self._model(model), 201)

    def load_prices(self, actor: Any, body: Any, **_: Any) -> Resp:
        from functions.store.price_loader import load_price_table

        b = v.body_object(body)
        v.only_fields(b, {"models"})
        return ok(load_price_table(self.prov, v.string_list(b, "models"), actor=actor.name))

    # --- projects ---------------------------------------------------------------------------

    def _project_fields(
        self, b: dict[str, Any], *, creating: bool, period: str = "monthly"
    ) -> dict[str, Any]:
        v.only_fields(b, _PROJECT_FIELDS if creating else _PROJECT_FIELDS - {"id"})
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
            "default_max_output_tokens": v.integer(
                b, "default_max_output_tokens", lo=1, hi=1_000_000
            ),
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

    def list_projects(self, **_: Any) -> Resp:
        return ok({"data": sorted(self._all("projects"), key=lambda p: str(p.get("id")))})

    def create_project(self, actor: Any, body: Any, **_: Any) -> Resp:
        b = v.body_object(body)
        pid = v.ident(b, "id") or ""
        fields = self._project_fields(b, creating=True)
        doc = self.prov.create_project(pid, actor=actor.name, **fields)
        return ok(doc, 201)

    def get_project(self, project: str, **_: Any) -> Resp:
        d = self.prov.get("projects", project, "project")
        return ok(d | {"spend": self._spend(d)})

    def update_project(self, actor: Any, body: Any, project: str, **_: Any) -> Resp:
        current = self.prov.get("projects", project, "project")
        fields = self._project_fields(
            v.body_object(body), creating=False, period=str(current.get("budget_period", "monthly"))
        )
        if not fields:
            raise InvalidRequest("Nothing to change.")
        if (
            "external_key" in fields
            and not self.prov.ref("external_keys", fields["external_key"]).get().exists
        ):
            raise InvalidRequest(
                f"No external key '{fields['external_key']}'.", param="external_key"
            )
        self.prov.update_project(project, actor=actor.name, **fields)
        return self.get_project(project)

    def archive_project(self, actor: Any, project: str, **_: Any) -> Resp:
        self.prov.update_project(project, actor=actor.name, archived=True)
        return self.get_project(project)

    # --- reports ------------------------------------------------------------------------------

    def usage(self, args: Any, **_: Any) -> Resp:
        from functions.store import reports

        f = reports.parse_filters(args)
        limit = _int_arg(args, "limit", 50, 200)
        return ok(
            self.views.aggregate(
                f,
                args.get("group_by") or None,
                limit=limit,
                page_token=args.get("page_token"),
            )
        )

    def queries(self, args: Any, **_: Any) -> Resp:
        from functions.store import reports

        f = reports.parse_filters(args)
        rows, token = self.views.records(
            f, limit=_int_arg(args, "limit", 100, 1000), page_token=args.get("page_token")
        )
        if args.get("format") == "csv":
            return flask.Response(
                reports.to_csv(rows),
                mimetype="text/csv",
                headers={
                    "content-disposition": "attachment; filename=tollgate-usage.csv",
                    **({"x-next-page-token": token} if token else {}),
                },
            )
        return ok({"data": [reports.record_json(r) for r in rows], "next_page_token": token})

    def ratelimits(self, **_: Any) -> Resp:
        return ok(
            {"data": sorted(self._all("ratelimits"), key=lambda d: str(d.get("external_key")))}
        )

    def audit(self, args: Any, **_: Any) -> Resp:

        return ok(
            self.views.audit(
                limit=_int_arg(args, "limit", 50, 1000), page_token=args.get("page_token")
            )
        )


def _int_arg(args: Any, name: str, default: int, hi: int) -> int:
    raw = args.get(name)
    if raw is None:
        return default
    if not str(raw).isascii() or not str(raw).isdigit() or not 1 <= int(raw) <= hi:
        raise InvalidRequest(f"'{name}' must be an integer from 1 to {hi}.", param=name)
    return int(raw)


def _rates(b: dict[str, Any], prefix: str) -> pricing.Rates:
    def rate(name: str, required: bool) -> int | None:
        try:
            return v.usd_per_mtok(b, name, required=required)
        except InvalidRequest as e:
            raise InvalidRequest(e.message, param=prefix + name) from None

    return pricing.Rates(
        input=rate("input", True) or 0,
        output=rate("output", True) or 0,
        cached_input=rate("cached_input", False),
        cache_write=rate("cache_write", False),
    )
