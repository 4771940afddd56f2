"""Where the organisation's OpenAI keys live: Secret Manager in the cloud, a local
JSON file (outside git) on a developer machine. Values are cached per instance for
at most ``SECRET_TTL_S`` per (name, version); they are never logged."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Protocol

SECRET_TTL_S = 600.0
SECRET_PREFIX = "tollgate-ext-"


class SecretStore(Protocol):
    def get(self, name: str, version: str = "latest") -> str: ...
    def put(self, name: str, value: str) -> str: ...  # returns the new version


class SecretNotFound(KeyError):
    pass


class LocalSecretStore:
    """A JSON file ``{name: {"versions": [v1, v2, ...]}}``, written with mode 0600.

    For local runs only: there is no Secret Manager emulator. Environment variables
    ``TOLLGATE_SECRET_<NAME>`` (name upper-cased, ``-`` → ``_``) override the file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def _load(self) -> dict[str, dict[str, list[str]]]:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}

    def get(self, name: str, version: str = "latest") -> str:
        env = os.environ.get("TOLLGATE_SECRET_" + name.upper().replace("-", "_"))
        if env:
            return env
        versions = self._load().get(name, {}).get("versions", [])
        if not versions:
            raise SecretNotFound(name)
        if version == "latest":
            return versions[-1]
        idx = int(version) - 1
        if not 0 <= idx < len(versions):
            raise SecretNotFound(f"{name} version {version}")
        return versions[idx]

    def put(self, name: str, value: str) -> str:
        with self._lock:
            data = self._load()
            versions = data.setdefault(name, {"versions": []})["versions"]
            versions.append(value)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=1)
            os.replace(tmp, self.path)
            return str(len(versions))


class GcpSecretStore:
    """Secret Manager, imported lazily: its client costs ~220 ms of cold start and only
    the calls that miss the cache need it."""

    def __init__(self, project: str) -> None:
        self.project = project
        self._client: Any = None
        self._lock = threading.Lock()

    def _c(self) -> Any:
        with self._lock:
            if self._client is None:
                from google.cloud import secretmanager

                self._client = secretmanager.SecretManagerServiceClient()
            return self._client

    def get(self, name: str, version: str = "latest") -> str:
        path = f"projects/{self.project}/secrets/{name}/versions/{version}"
        resp = self._c().access_secret_version(request={"name": path})
        return resp.payload.data.decode()

    def put(self, name: str, value: str) -> str:
        from google.api_core.exceptions import AlreadyExists

        parent = f"projects/{self.project}"
        try:
            self._c().create_secret(
                request={
                    "parent": parent,
                    "secret_id": name,
                    "secret": {"replication": {"automatic": {}}},
                }
            )
        except AlreadyExists:
            pass
        v = self._c().add_secret_version(
            request={"parent": f"{parent}/secrets/{name}", "payload": {"data": value.encode()}}
        )
        return v.name.rsplit("/", 1)[-1]


class CachedSecrets:
    """Per-instance cache in front of a store; pinned versions make rotation a miss."""

    def __init__(self, store: SecretStore, ttl_s: float = SECRET_TTL_S) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self._cache: dict[tuple[str, str], tuple[str, float]] = {}
        self._lock = threading.Lock()

    def get(self, name: str, version: str = "latest") -> str:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get((name, version))
            if hit and now - hit[1] < self.ttl_s:
                return hit[0]
        value = self.store.get(name, version)
        with self._lock:
            self._cache[(name, version)] = (value, now)
        return value


def store_for(backend: str, secrets_file: str, gcp_project: str) -> SecretStore:
    """The local file on a developer machine (no Secret Manager emulator exists),
    Secret Manager in the cloud."""
    if backend == "local":
        return LocalSecretStore(secrets_file)
    return GcpSecretStore(gcp_project)
