"""Calls of the admin API and the log API as the tests make them, against a Flask test
client of either the real functions (emulator) or the in-memory worlds."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import ADMIN_TOKEN, admin_auth, bearer


def _open(c: Any, method: str, path: str, body: Any, token: str) -> Any:
    return c.open(
        path,
        method=method,
        headers=admin_auth(token),
        data=None if body is None else json.dumps(body),
        content_type="application/json",
    )


def admin_call(
    c: Any,
    method: str,
    path: str,
    body: Any = None,
    token: str = ADMIN_TOKEN,
    status: int | None = None,
) -> Any:
    """The answer's JSON; ``status``: the status it must have."""
    r = _open(c, method, path, body, token)
    if status is not None:
        assert r.status_code == status, r.get_data(True)
    return r.get_json()


def admin_err(
    c: Any, method: str, path: str, body: Any = None, token: str = ADMIN_TOKEN
) -> tuple[int, dict[str, Any]]:
    """The status and the OpenAI-shaped error of a refused call."""
    r = _open(c, method, path, body, token)
    e = r.get_json()["error"]
    assert set(e) == {"message", "type", "param", "code"}
    return r.status_code, e


def admin_audit(c: Any) -> list[dict[str, Any]]:
    return admin_call(c, "GET", "/audit?limit=200", status=200)["data"]


def log_api(log_client: Any, proxy_key: str, path: str, status: int = 200, **args: Any) -> Any:
    """A log API answer's JSON, which must have ``status`` and never be cached."""
    r = log_client.get("/log/api/" + path, query_string=args, headers=bearer(proxy_key))
    assert r.status_code == status, r.get_data(True)
    assert r.headers["Cache-Control"] == "no-store"
    return r.get_json()
