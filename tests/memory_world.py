"""The proxy over in-memory parts: ``MemoryStore`` and ``MemoryLedger`` instead of
Firestore, the real fake upstream on loopback, a real Flask app around
``Proxy.handle``. A test of the proxy's flow (checks, refusals, headers, booking)
runs in milliseconds here; what counts money under concurrency stays on the emulator.

The documents are seeded in Firestore's shape, as the admin API writes them
(tests/test_store_contract.py reads the same documents through both stores).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import flask

from functions.core import auth, ids, pricing
from functions.core.settings import Settings
from functions.log.app import LogApp
from functions.proxy.app import Proxy
from functions.proxy.upstream import Upstream
from functions.store.secrets import CachedSecrets, LocalSecretStore
from tests.fake_upstream import FakeUpstream
from tests.memory_admin import (
    MemoryConfig,
    MemoryMembership,
    MemoryProvisioner,
    MemoryTopups,
    MemoryViews,
)
from tests.memory_ledger import MemoryLedger
from tests.memory_store import Docs, MemoryStore

EPOCH = datetime(2020, 1, 1, tzinfo=UTC)
SECRET = "sk-fake-upstream-org-key-0001"


def price_doc(inp: str, cached: str | None, out: str) -> dict[str, Any]:
    rates = pricing.Rates(
        input=pricing.usd_per_mtok_to_rate(inp),
        output=pricing.usd_per_mtok_to_rate(out),
        cached_input=pricing.usd_per_mtok_to_rate(cached) if cached else None,
    )
    return pricing.price_to_doc(
        pricing.Price(valid_from=EPOCH, valid_to=None, tiers={"default": rates}, source="tests")
    )


def seed_docs(keys: dict[str, str]) -> Docs:
    """``demo`` with a $10 monthly budget, alice (lead) and bob with one key each,
    gpt-4o-mini and text-embedding-3-small priced, the external key ``main``."""
    docs: Docs = {
        "external_keys": {
            "main": {
                "id": "main",
                "secret_name": "tollgate-ext-main",
                "secret_version": "1",
                "last4": SECRET[-4:],
            }
        },
        "models": {
            ids.model("gpt-4o-mini"): {
                "id": "gpt-4o-mini",
                "created": 1,
                "prices": [price_doc("0.15", "0.075", "0.60")],
            },
            ids.model("text-embedding-3-small"): {
                "id": "text-embedding-3-small",
                "created": 1,
                "prices": [price_doc("0.02", None, "0")],
            },
        },
        "projects": {
            "demo": {
                "id": "demo",
                "name": "Demo",
                "external_key": "main",
                "budget_nano": 10_000_000_000,
                "budget_period": "monthly",
                "allowed_models": ["gpt-4o-mini", "text-embedding-3-small"],
                "default_max_output_tokens": 256,
                "archived": False,
            }
        },
        "users": {},
        "members": {},
        "keys": {},
    }
    for user, key in keys.items():
        docs["users"][user] = {
            "id": user,
            "name": user.title(),
            "email": f"{user}@example.com",
            "disabled": False,
        }
        docs["members"][ids.member("demo", user)] = {
            "project": "demo",
            "user": user,
            "role": "lead" if user == "alice" else "member",
            "budget_nano": None,
        }
        docs["keys"][auth.key_hash(key)] = {
            "project": "demo",
            "user": user,
            "name": "default",
            "last4": key[-4:],
            "created_at": EPOCH,
            "expires_at": None,
            "revoked_at": None,
            "last_used_at": None,
        }
    return docs


@dataclass
class MemoryWorld:
    store: MemoryStore
    ledger: MemoryLedger
    proxy: Proxy
    client: Any
    keys: dict[str, str]
    upstream: FakeUpstream
    extra: dict[str, Any] = field(default_factory=dict)

    def call(
        self,
        user: str = "bob",
        body: dict[str, Any] | None = None,
        path: str = "/v1/chat/completions",
        **headers: str,
    ) -> Any:
        body = (
            body
            if body is not None
            else {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}
        )
        # buffered: the answer is read and closed, as a server does after the last byte
        # (a plain answer is settled in its close())
        return self.client.post(
            path,
            data=json.dumps(body),
            buffered=True,
            headers={
                "Authorization": f"Bearer {self.keys[user]}",
                "Content-Type": "application/json",
                **headers,
            },
        )

    def project(self, **fields: Any) -> None:
        doc = self.store.docs["projects"]["demo"]
        doc.update(fields)


def memory_world(upstream: FakeUpstream, tmp_path: Path) -> MemoryWorld:
    keys = {"alice": auth.new_key(), "bob": auth.new_key()}
    ledger = MemoryLedger()
    store = MemoryStore(seed_docs(keys), usage=ledger.usage)
    secrets_file = tmp_path / "secrets.json"
    backend = LocalSecretStore(secrets_file)
    assert backend.put("tollgate-ext-main", SECRET) == "1"
    settings = Settings(
        gcp_project="memory",
        upstream_base_url=upstream.base_url,
        upstream_timeout_s=5.0,
        secrets_file=str(secrets_file),
    )
    proxy = Proxy(
        settings,
        store,  # type: ignore[arg-type]
        ledger,  # type: ignore[arg-type]
        Upstream(settings.upstream_connect_timeout_s, settings.upstream_timeout_s),
        CachedSecrets(backend),
    )
    app = flask.Flask("tollgate-memory")

    def handle(_path: str = "") -> flask.Response:
        return proxy.handle(flask.request)

    for rule in ("/", "/<path:_path>"):
        app.add_url_rule(rule, rule, handle, methods=["GET", "POST", "OPTIONS"])
    w = MemoryWorld(store, ledger, proxy, app.test_client(), keys, upstream)
    w.extra["secrets"] = backend
    return w


@dataclass
class MemoryAdminWorld:
    """The proxy world plus the admin API and the log page over the same documents and
    usage records: a key is checked by the real ``Admin``/``LogApp``, the admin
    handlers change what the proxy reads, the log page shows what the proxy booked."""

    proxy: MemoryWorld
    admin: Any  # a Flask test client of the admin API
    log: Any  # and of the log function
    prov: MemoryProvisioner
    members: MemoryMembership
    config: MemoryConfig

    @property
    def keys(self) -> dict[str, str]:
        return self.proxy.keys

    @property
    def client(self) -> Any:
        return self.proxy.client

    @property
    def extra(self) -> dict[str, Any]:
        return self.proxy.extra


def memory_admin_world(upstream: FakeUpstream, tmp_path: Path) -> MemoryAdminWorld:
    from functions.admin.app import ADMIN_TOKENS_SECRET, Admin
    from functions.admin.resources import Resources
    from tests.conftest import ADMIN_TOKEN

    pw = memory_world(upstream, tmp_path)
    backend = pw.extra["secrets"]
    backend.put(ADMIN_TOKENS_SECRET, json.dumps({"root": ADMIN_TOKEN}))
    config = MemoryConfig(pw.store.docs, counters=lambda: pw.ledger.counters, usage=pw.ledger.usage)
    prov, members = MemoryProvisioner(config), MemoryMembership(config)
    resources = Resources(
        pw.proxy.settings,
        prov=prov,  # type: ignore[arg-type]
        membership=members,  # type: ignore[arg-type]
        views=MemoryViews(config),  # type: ignore[arg-type]
        topups=MemoryTopups(config),  # type: ignore[arg-type]
        books=None,  # type: ignore[arg-type]  # reconciliation: tests/test_reconcile.py
        alerts=None,  # type: ignore[arg-type]
        ledger=lambda: pw.ledger,  # type: ignore[arg-type,return-value]
        secrets=CachedSecrets(backend),
    )
    admin = Admin(
        pw.proxy.settings,
        pw.store,  # type: ignore[arg-type]
        CachedSecrets(backend),
        resources=resources,
    )
    app = flask.Flask("tollgate-memory-admin")

    def handle(_path: str = "") -> flask.Response:
        return admin.handle(flask.request)

    for rule in ("/", "/<path:_path>"):
        app.add_url_rule(rule, rule, handle, methods=["GET", "POST", "PATCH", "PUT", "DELETE"])
    log = LogApp(pw.store, views=MemoryViews(config))  # type: ignore[arg-type]
    log_app = flask.Flask("tollgate-memory-log")

    def handle_log(_path: str = "") -> flask.Response:
        return log.handle(flask.request)

    for rule in ("/", "/<path:_path>"):
        log_app.add_url_rule(rule, rule, handle_log, methods=["GET", "HEAD", "POST"])
    return MemoryAdminWorld(pw, app.test_client(), log_app.test_client(), prov, members, config)
