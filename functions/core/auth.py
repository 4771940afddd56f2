"""Proxy keys: their format, their digest, and who may use them. Pure functions.

A key is ``tg_`` + 40 base62 characters (≈238 bits), shown once and stored only as
its SHA-256 hex digest, which is also the ``keys`` document id. A digest (not a
slow KDF) is right here: the key is random, not a password, so there is nothing
to brute-force, and the proxy must check it on every call.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import secrets
import string
from datetime import datetime

from functions.core.errors import InvalidApiKey
from functions.core.records import CallContext, Caller

KEY_PREFIX = "tg_"
KEY_RANDOM_CHARS = 40
_BASE62 = string.ascii_letters + string.digits
_KEY_RE = re.compile(r"^tg_[A-Za-z0-9]{32,128}$")

_NEED_KEY = (
    "A Tollgate proxy key is needed: send 'Authorization: Bearer tg_…' or "
    "'Authorization: UserName tg_…'. Ask your project lead for a key."
)
_BAD_KEY = "Incorrect or unknown Tollgate proxy key. Ask your project lead for a new one."


def new_key() -> str:
    return KEY_PREFIX + "".join(secrets.choice(_BASE62) for _ in range(KEY_RANDOM_CHARS))


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_from_header(header: str | None) -> str:
    """The proxy key from ``Authorization: Bearer KEY`` or ``Authorization: NAME KEY``.

    The name in the second form is a label the seed projects used; it is never
    trusted for identity (the key alone says who calls). A bare name with no key
    gets the 401 that says a key is needed."""
    if not header or not header.strip():
        raise InvalidApiKey(_NEED_KEY)
    parts = header.split()
    if len(parts) == 1:
        # "Authorization: alice" or "Authorization: tg_..." without a scheme
        token = parts[0]
        if _KEY_RE.match(token):
            return token
        raise InvalidApiKey(_NEED_KEY)
    if len(parts) != 2:
        raise InvalidApiKey(_NEED_KEY)
    token = parts[1]
    if not _KEY_RE.match(token):
        if parts[0].lower() == "bearer":
            raise InvalidApiKey(_BAD_KEY)
        raise InvalidApiKey(_NEED_KEY)
    return token


def check_context(ctx: CallContext | None, now: datetime) -> Caller:
    """Refuse a key that is unknown, revoked, expired, or whose user, membership or
    project is gone or disabled. Every case is the same 401 so that a caller learns
    nothing about which keys exist."""
    if ctx is None:
        raise InvalidApiKey(_BAD_KEY)
    key = ctx.key
    if key.revoked_at is not None:
        raise InvalidApiKey("This Tollgate proxy key has been revoked.")
    if key.expires_at is not None and key.expires_at <= now:
        raise InvalidApiKey("This Tollgate proxy key has expired.")
    if ctx.user is None or ctx.user.disabled:
        raise InvalidApiKey("The user of this Tollgate proxy key is disabled.")
    if ctx.member is None or ctx.project is None or ctx.project.archived:
        raise InvalidApiKey("This Tollgate proxy key no longer belongs to an active project.")
    return Caller(**{f.name: getattr(ctx, f.name) for f in dataclasses.fields(ctx)})
