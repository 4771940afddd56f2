"""``/external-keys``: the organisation's OpenAI keys the proxy sends with. The secret
goes to the secret store, Firestore keeps its last 4 characters; a key is checked
before it is stored (one embeddings call with input "test" to the key's base URL, the
cheapest call that proves the key can spend: about $0.00000002). A key also names
where OpenAI's Usage API counts it (its OpenAI project and key id), for reconciliation.
"""

from __future__ import annotations

import json
import re
from typing import Any

import requests

from functions.admin.responses import Resp, ok
from functions.core import validate as v
from functions.core.errors import Conflict, InvalidRequest, redact
from functions.core.settings import Settings
from functions.store.provision import Provisioner
from functions.store.views import Views

CHECK_MODEL = "text-embedding-3-small"
CHECK_TIMEOUT_S = (5.0, 20.0)
# OpenAI's ids look like proj_abc123 and key_abc123; only their character set is checked
_OPENAI_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_SHOWN = (
    "id",
    "last4",
    "base_url",
    "created_at",
    "rotated_at",
    "openai_project_id",
    "openai_key_id",
)


class ExternalKeys:
    def __init__(self, settings: Settings, prov: Provisioner, views: Views) -> None:
        self.settings = settings
        self.prov = prov
        self.views = views

    def _json(self, d: dict[str, Any]) -> dict[str, Any]:
        users = list(self.views.where("projects", external_key=d.get("id")))
        return {k: d.get(k) for k in _SHOWN} | {"projects": sorted(users)}

    def index(self, **_: Any) -> Resp:
        keys = sorted(self.views.all("external_keys"), key=lambda k: str(k.get("id")))
        return ok({"data": [self._json(k) for k in keys]})

    def create(self, actor: Any, body: Any, **_: Any) -> Resp:
        b = v.body_object(body)
        v.only_fields(b, {"id", "secret", "base_url", "openai_project_id", "openai_key_id"})
        kid = v.ident(b, "id") or ""
        ids = openai_ids(b)  # where OpenAI's Usage API counts this key (reconciliation)
        secret = v.text(b, "secret", required=True, max_len=4096) or ""
        base = v.text(b, "base_url", max_len=500)
        if base is not None and not base.startswith(("http://", "https://")):
            raise InvalidRequest("'base_url' must be an http(s) URL.", param="base_url")
        if self.prov.exists("external_keys", kid):
            raise Conflict(f"An external key '{kid}' already exists.")
        check_upstream_key(secret, (base or self.settings.upstream_base_url).rstrip("/"))
        doc = self.prov.put_external_key(kid, secret, base, actor=actor.name, openai=ids)
        return ok(self._json(doc), 201)

    def rotate(self, actor: Any, body: Any, key: str, **_: Any) -> Resp:
        b = v.body_object(body)
        v.only_fields(b, {"secret"})
        secret = v.text(b, "secret", required=True, max_len=4096) or ""
        current = self.prov.get("external_keys", key, "external key")
        check_upstream_key(
            secret, (current.get("base_url") or self.settings.upstream_base_url).rstrip("/")
        )
        doc = self.prov.put_external_key(key, secret, actor=actor.name, rotate=True)
        return ok(self._json(doc))

    def update(self, actor: Any, body: Any, key: str, **_: Any) -> Resp:
        """Only the key's OpenAI ids change; a new secret is a rotation."""
        b = v.body_object(body)
        v.only_fields(b, {"openai_project_id", "openai_key_id"})
        fields = openai_ids(b)
        if not fields:
            raise InvalidRequest("Nothing to change: send openai_project_id or openai_key_id.")
        self.prov.set_openai_ids(key, fields, actor=actor.name)
        return ok(self._json(self.prov.get("external_keys", key, "external key")))

    def destroy(self, actor: Any, key: str, **_: Any) -> Resp:
        self.prov.delete_external_key(key, actor=actor.name)
        return ok({"deleted": True})


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


def check_upstream_key(secret: str, base_url: str) -> None:
    """Raise a 400 saying why the key does not work; return quietly if it does."""
    try:
        r = requests.post(
            f"{base_url}/embeddings",
            timeout=CHECK_TIMEOUT_S,
            json={"model": CHECK_MODEL, "input": "test"},
            headers={"Authorization": f"Bearer {secret}"},
        )
    except requests.RequestException as e:
        raise InvalidRequest(
            f"The key was not stored: {base_url} could not be reached ({type(e).__name__}).",
            param="base_url",
        ) from None
    if r.status_code == 200:
        return
    reason = ""
    try:
        err = json.loads(r.content).get("error") or {}
        reason = f" ({err.get('code') or err.get('type')}: {err.get('message')})"
    except (ValueError, AttributeError):
        pass
    raise InvalidRequest(
        redact(
            f"The key was not stored: the test call to {base_url}/embeddings "
            f"was answered {r.status_code}{reason}"[:500]
        ),
        param="secret",
    )
