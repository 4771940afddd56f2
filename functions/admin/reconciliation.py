"""Admin routes of the reconciliation with OpenAI's own Usage and Costs APIs: the OpenAI
admin key (set, shown by its last 4 characters, removed), an external key's OpenAI
project and key ids, ``POST /reconcile`` and ``GET /reconciliations``. A mixin of
``admin_handlers.Handlers``; the rules are in ``reconcile.py``, the run in
``reconcile_run.py``.

The admin key reads the organisation's usage; it is stored like the external keys (a
secret, only ``last4`` in Firestore) and never used for proxying.
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Any

from google.cloud import firestore

from functions.admin.reconcile_run import ADMIN_KEY_DOC, ADMIN_KEY_SECRET, Reconciler
from functions.admin.responses import Resp, ok
from functions.admin.usage_api import UsageApi
from functions.core import validate as v
from functions.core.errors import InvalidRequest
from functions.core.holds import utcnow
from functions.core.settings import Settings
from functions.store import indexes
from functions.store.provision import Provisioner
from functions.store.secrets import CachedSecrets

# OpenAI's ids look like proj_abc123 and key_abc123; only their character set is checked
_OPENAI_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
MAX_LIST = 200


def openai_ids(b: dict[str, Any]) -> dict[str, Any]:
    """``openai_project_id`` and ``openai_key_id`` given in ``b`` (null clears one)."""
    out: dict[str, Any] = {}
    for name in ("openai_project_id", "openai_key_id"):
        if name in b:
            value = b[name]
            if value is not None and (not isinstance(value, str) or not _OPENAI_ID.match(value)):
                raise InvalidRequest(
                    f"'{name}' must be an OpenAI id such as "
                    f"{'proj_abc123' if 'project' in name else 'key_abc123'}.",
                    param=name,
                )
            out[name] = value
    return out


def parse_day(value: Any, name: str = "day") -> date:
    if not isinstance(value, str) or not _DAY.match(value):
        raise InvalidRequest(f"'{name}' must be a UTC day, YYYY-MM-DD.", param=name)
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(f"'{name}' is not a day of the calendar.", param=name) from None


class ReconcileHandlers:
    settings: Settings
    db: firestore.Client
    prov: Provisioner
    secrets: CachedSecrets

    def _ext_json(self, d: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError  # admin_handlers.Handlers has it

    def _reconciler(self) -> Reconciler:
        return Reconciler(
            self.db,
            self.secrets,
            self.settings.usage_api_base_url,
            self.settings.reconcile_drift_percent,
        )

    # --- the admin key ----------------------------------------------------------------------

    def _admin_key_json(self) -> dict[str, Any]:
        snap = self.prov.ref(*ADMIN_KEY_DOC).get()
        d = (snap.to_dict() or {}) if snap.exists else {}
        return {
            "set": bool(d.get("last4")),
            "last4": d.get("last4"),
            "set_at": d.get("set_at"),
            "set_by": d.get("set_by"),
        }

    def get_admin_key(self, **_: Any) -> Resp:
        return ok(self._admin_key_json())

    def put_admin_key(self, actor: Any, body: Any, **_: Any) -> Resp:
        b = v.body_object(body)
        v.only_fields(b, {"secret"})
        secret = (v.text(b, "secret", required=True, max_len=4096) or "").strip()
        # one cheap Usage API call first: a refused key is never stored
        UsageApi(secret, self.settings.usage_api_base_url).check()
        assert self.prov.secrets is not None
        version = self.prov.secrets.put(ADMIN_KEY_SECRET, secret)
        batch = self.db.batch()
        batch.set(
            self.prov.ref(*ADMIN_KEY_DOC),
            {
                "secret_name": ADMIN_KEY_SECRET,
                "secret_version": version,
                "last4": secret[-4:],
                "set_at": utcnow(),
                "set_by": actor.name,
            },
        )
        self.prov.audit(batch, actor.name, "admin_key.set", "openai", {"last4": secret[-4:]})
        self.prov.commit(batch)
        return ok(self._admin_key_json())

    def delete_admin_key(self, actor: Any, **_: Any) -> Resp:
        """Forget the key (Firestore's pointer to it); its secret versions stay, as an
        external key's do, for an administrator to destroy."""
        batch = self.db.batch()
        batch.delete(self.prov.ref(*ADMIN_KEY_DOC))
        self.prov.audit(batch, actor.name, "admin_key.delete", "openai")
        self.prov.commit(batch)
        return ok({"deleted": True})

    # --- an external key's OpenAI ids -------------------------------------------------------

    def update_external_key(self, actor: Any, body: Any, key: str, **_: Any) -> Resp:
        b = v.body_object(body)
        v.only_fields(b, {"openai_project_id", "openai_key_id"})
        fields = openai_ids(b)
        if not fields:
            raise InvalidRequest("Nothing to change: send openai_project_id or openai_key_id.")
        batch = self.db.batch()
        batch.update(self.prov.ref("external_keys", key), fields)
        self.prov.audit(batch, actor.name, "external_key.update", key, fields)
        self.prov.commit(batch, missing=f"No external key '{key}'.")
        doc = self.prov.get("external_keys", key, "external key")
        return ok(self._ext_json(doc))

    # --- reconciliations --------------------------------------------------------------------

    def reconcile(self, actor: Any, body: Any, **_: Any) -> Resp:
        b = v.body_object(body if body is not None else {})
        v.only_fields(b, {"day"})
        r = self._reconciler()
        if b.get("day") is not None:
            day = parse_day(b["day"])
            if day > utcnow().date():
                raise InvalidRequest("'day' is in the future.", param="day")
            if day < utcnow().date() - timedelta(days=366):
                raise InvalidRequest("'day' is more than a year ago.", param="day")
            days = [day]
        else:
            days = r.default_days()
        return ok(r.run(days, actor.name))

    def list_reconciliations(self, args: Any, **_: Any) -> Resp:
        equals: dict[str, Any] = {}
        if args.get("day"):
            equals["day"] = parse_day(args.get("day")).isoformat()
        if args.get("external_key"):
            equals["external_key"] = str(args.get("external_key"))
        order = [] if "day" in equals else [("day", indexes.DESC)]
        q = indexes.query(self.db, "reconciliations", equals=equals, order=order, limit=MAX_LIST)
        docs = [s.to_dict() or {} for s in q.stream()]
        docs.sort(key=lambda d: (str(d.get("day")), str(d.get("external_key"))), reverse=True)
        return ok({"data": docs})
