"""The admin API's resources, one object each, wired to the store classes they use.
A route names its handler as ``"resource.method"`` (``app.ROUTES``); every handler
takes the route's path parameters and ``actor``, ``body`` and ``args``, validates its
input with ``core/validate.py``, and calls one atomic operation of the store (which
writes the audit record with the change)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from functions.admin.alerts import ProjectAlerts
from functions.admin.external_keys import ExternalKeys
from functions.admin.keys import Keys
from functions.admin.limits import Limits
from functions.admin.members import Members
from functions.admin.models import Models
from functions.admin.operations import Operations
from functions.admin.projects import Projects
from functions.admin.reconciliation import Reconciliations
from functions.admin.reports import Reports
from functions.admin.responses import Resp
from functions.admin.topups import ProjectTopups
from functions.admin.users import Users
from functions.core.settings import Settings
from functions.store.alerts import Alerts
from functions.store.client import Store
from functions.store.ledger import Ledger, ledger_for_settings
from functions.store.membership import Membership
from functions.store.provision import Provisioner
from functions.store.reconciliations import ReconcileBooks
from functions.store.secrets import CachedSecrets
from functions.store.topups import Topups
from functions.store.views import Views

Handler = Callable[..., Resp]


class Resources:
    """One object per resource over the store classes given; ``from_store`` gives the
    real ones (tests hand in-memory ones to test the handlers without Firestore)."""

    def __init__(
        self,
        settings: Settings,
        *,
        prov: Provisioner,
        membership: Membership,
        views: Views,
        topups: Topups,
        books: ReconcileBooks,
        alerts: Alerts,
        ledger: Callable[[], Ledger],
        secrets: CachedSecrets,
    ) -> None:
        self.by_name: dict[str, Any] = {
            "users": Users(prov, views),
            "external_keys": ExternalKeys(settings, prov, views),
            "models": Models(prov, views),
            "projects": Projects(prov, views),
            "alerts": ProjectAlerts(prov, views),
            "members": Members(prov, membership, views),
            "keys": Keys(prov, membership, views),
            "limits": Limits(prov, views),
            "topups": ProjectTopups(prov, membership, topups),
            "reports": Reports(views),
            "reconciliation": Reconciliations(settings, books, secrets),
            "operations": Operations(ledger, alerts, prov),
        }

    @classmethod
    def from_store(cls, settings: Settings, store: Store, secrets: CachedSecrets) -> Resources:
        db = store.db  # handed on to the store classes, never queried here
        return cls(
            settings,
            prov=Provisioner(db, secrets.store),
            membership=Membership(db),
            views=Views(db),
            topups=Topups(db),
            books=ReconcileBooks(db, secrets.store),
            alerts=Alerts(db),
            ledger=lambda: ledger_for_settings(db, settings),
            secrets=secrets,
        )

    def handler(self, name: str) -> Handler:
        """The bound method a route names, e.g. ``"users.index"``."""
        resource, method = name.split(".")
        found: Handler = getattr(self.by_name[resource], method)
        return found
