"""``/openai-admin-key``, ``/reconcile``, ``/reconciliations``: the reconciliation with
OpenAI's own Usage and Costs APIs. The rules are ``core/reconcile.py``, the run
``reconcile_run.py``, what they read and write ``store/reconciliations.py``.

The admin key reads the organisation's usage; it is stored like the external keys (a
secret, only ``last4`` in Firestore) and never used for proxying.
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Any

from functions.admin.reconcile_run import Reconciler
from functions.admin.responses import Resp, ok
from functions.admin.usage_api import UsageApi
from functions.core import validate as v
from functions.core.errors import InvalidRequest
from functions.core.holds import utcnow
from functions.core.settings import Settings
from functions.store.reconciliations import ReconcileBooks
from functions.store.secrets import CachedSecrets

_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
MAX_LIST = 200


def parse_day(value: Any, name: str = "day") -> date:
    if not isinstance(value, str) or not _DAY.match(value):
        raise InvalidRequest(f"'{name}' must be a UTC day, YYYY-MM-DD.", param=name)
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(f"'{name}' is not a day of the calendar.", param=name) from None


class Reconciliations:
    def __init__(self, settings: Settings, books: ReconcileBooks, secrets: CachedSecrets) -> None:
        self.settings = settings
        self.books = books
        self.secrets = secrets

    # --- the admin key ----------------------------------------------------------------

    def _admin_key_json(self) -> dict[str, Any]:
        d = self.books.admin_key()
        return {
            "set": bool(d.get("last4")),
            "last4": d.get("last4"),
            "set_at": d.get("set_at"),
            "set_by": d.get("set_by"),
        }

    def show_admin_key(self, **_: Any) -> Resp:
        return ok(self._admin_key_json())

    def put_admin_key(self, actor: Any, body: Any, **_: Any) -> Resp:
        b = v.body_object(body)
        v.only_fields(b, {"secret"})
        secret = (v.text(b, "secret", required=True, max_len=4096) or "").strip()
        # one cheap Usage API call first: a refused key is never stored
        UsageApi(secret, self.settings.usage_api_base_url).check()
        self.books.set_admin_key(secret, actor=actor.name)
        return ok(self._admin_key_json())

    def delete_admin_key(self, actor: Any, **_: Any) -> Resp:
        self.books.delete_admin_key(actor=actor.name)
        return ok({"deleted": True})

    # --- runs -------------------------------------------------------------------------

    def run(self, actor: Any, body: Any, **_: Any) -> Resp:
        b = v.body_object(body if body is not None else {})
        v.only_fields(b, {"day"})
        r = Reconciler(
            self.books,
            self.secrets,
            self.settings.usage_api_base_url,
            self.settings.reconcile_drift_percent,
        )
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

    def index(self, args: Any, **_: Any) -> Resp:
        day = parse_day(args.get("day")) if args.get("day") else None
        key = str(args.get("external_key")) if args.get("external_key") else None
        return ok({"data": self.books.recent(day=day, external_key=key, limit=MAX_LIST)})
