"""Checking an organisation's OpenAI key before it is stored: one embeddings call
with input "test" to the key's base URL (the cheapest call that proves the key can
spend: about $0.00000002)."""

from __future__ import annotations

import json

import requests

from functions.core.errors import InvalidRequest, redact

CHECK_MODEL = "text-embedding-3-small"
CHECK_TIMEOUT_S = (5.0, 20.0)


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
