"""The opt-in response cache: identical non-streaming requests of one project within
its TTL are answered from Firestore and cost nothing. Pure rules; the reads and
writes are one ``get`` before the call and one document riding in the settlement
write after it.

The key is a SHA-256 of the project, the route and the request body in canonical
JSON (sorted keys, no spaces), so the same request written differently still hits,
and no two projects can ever share an entry.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from typing import Any

# Firestore documents are at most 1 MiB; leave room for the other fields.
MAX_BODY_BYTES = 900_000
DEFAULT_TTL_S = 3600


def wanted(project_enabled: bool, header: str | None) -> bool:
    return project_enabled or (header or "").strip().lower() == "use"


def key(project: str, route: str, body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{project}\0{route}\0{canonical}".encode()).hexdigest()


def entry(
    project: str, route: str, model: str, body: bytes, content_type: str, ttl_s: int, now: datetime
) -> dict[str, Any] | None:
    """The document to store, or None when the answer is too big to cache."""
    if len(body) > MAX_BODY_BYTES:
        return None
    return {
        "project": project,
        "route": route,
        "model": model,
        "body": body,
        "content_type": content_type,
        "created_at": now,
        "expires_at": now + timedelta(seconds=ttl_s),
    }


def usable(doc: dict[str, Any] | None, project: str, now: datetime) -> bool:
    """Firestore TTL deletes late (up to a day), so expiry is checked here too."""
    if not doc or doc.get("project") != project or not isinstance(doc.get("body"), bytes):
        return False
    expires = doc.get("expires_at")
    return expires is not None and expires > now
