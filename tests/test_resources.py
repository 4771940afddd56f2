"""The admin API's routing table against its resources: every route names a handler
that exists, and each path parameter a handler is given is one it takes."""

from __future__ import annotations

import inspect
from pathlib import Path

from functions.admin.app import ROUTES, SCHEDULED
from functions.admin.resources import Resources
from functions.core.settings import Settings
from functions.store.client import Store
from functions.store.secrets import CachedSecrets, LocalSecretStore


def _resources(tmp_path: Path) -> Resources:
    # no Firestore is reached: building the resources only hands the client on
    return Resources.from_store(
        Settings.from_env({"TOLLGATE_GCP_PROJECT": "p"}),
        Store(None),  # type: ignore[arg-type]
        CachedSecrets(LocalSecretStore(str(tmp_path / "secrets.json"))),
    )


def test_every_route_names_a_handler_that_takes_its_path_parameters(tmp_path: Path) -> None:
    resources = _resources(tmp_path)
    for route in ROUTES:
        handler = resources.handler(route.handler)
        params = inspect.signature(handler).parameters
        for name in route.pattern.groupindex:
            assert name in params, f"{route.handler} is not given '{name}' by name"
        assert any(p.kind is p.VAR_KEYWORD for p in params.values()), route.handler


def test_the_scheduled_routes_exist(tmp_path: Path) -> None:
    resources = _resources(tmp_path)
    named = {r.handler for r in ROUTES}
    assert SCHEDULED <= named
    for name in SCHEDULED:
        assert callable(resources.handler(name))
