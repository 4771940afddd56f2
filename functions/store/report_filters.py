"""What a usage report is about: the ``Filters`` of ``/usage``, ``/queries`` and the log
API, read from a query string, and the one Firestore query they become.

Every usage query orders by ``ts`` DESCENDING, aggregated or not, so one declared index
per combination of equality filters serves both (the emulator accepts and honours an
order_by in an aggregation query). With five filterable fields that is 31 composite
indexes on ``usage``; ``tests/test_indexes.py`` runs every combination and checks each
against ``firestore.indexes.json``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.cloud import firestore

from functions.core import validate
from functions.core.errors import InvalidRequest
from functions.store import indexes

# Filter (and group_by) name -> usage record field. A key is filtered by its name, which
# is unique per member, not per project: "ci" groups every member's key named "ci".
FIELDS = {"user": "user", "project": "project", "model": "model", "tag": "tag", "key": "key_name"}
# ``Filters.tag == UNTAGGED`` selects the calls sent without ``x-tollgate-tag`` (stored
# as null). The proxy only stores tags of 1-64 characters, so "" is never a real tag.
UNTAGGED = ""
TAG_MAX = 64  # the proxy's limit on x-tollgate-tag: a longer filter cannot match


@dataclass(frozen=True)
class Filters:
    user: str | None = None
    project: str | None = None
    model: str | None = None
    after: datetime | None = None  # inclusive: ts >= after
    before: datetime | None = None  # exclusive: ts < before
    tag: str | None = None  # UNTAGGED: calls without a tag
    key: str | None = None  # a key's name (usage field key_name)


def parse_filters(args: Mapping[str, str]) -> Filters:
    """Filters from query-string arguments; times need a zone (a 400 names the param)."""
    times: dict[str, datetime | None] = {}
    for name in ("after", "before"):
        raw = args.get(name)
        times[name] = validate.timestamp(raw, name).astimezone(UTC) if raw else None
    after, before = times["after"], times["before"]
    if after is not None and before is not None and after >= before:
        raise InvalidRequest("'after' must be earlier than 'before'.", param="after")
    return Filters(
        user=filter_value(args, "user"),
        project=filter_value(args, "project"),
        model=filter_value(args, "model"),
        after=after,
        before=before,
        tag=tag_value(args),
        key=filter_value(args, "key"),
    )


def filter_value(args: Mapping[str, str], name: str) -> str | None:
    """An id to filter on: ids are printable ASCII of at most 256 characters, and
    Firestore refuses query values over 1500 bytes, so anything else is a 400."""
    v = args.get(name) or None
    if v is not None and not validate.is_name(v):
        raise InvalidRequest(f"'{name}' is not an id.", param=name)
    return v


def tag_value(args: Mapping[str, str]) -> str | None:
    """A tag to filter on: what ``x-tollgate-tag`` accepts (1-64 printable ASCII)."""
    v = args.get("tag") or None
    if v is not None and not validate.is_name(v, TAG_MAX):
        raise InvalidRequest(
            f"'tag' must be 1-{TAG_MAX} printable ASCII characters, as sent in x-tollgate-tag.",
            param="tag",
        )
    return v


def equalities(f: Filters) -> dict[str, Any]:
    """The usage fields ``f`` pins, by record field name (an untagged filter is null)."""
    out: dict[str, Any] = {}
    for name, field in FIELDS.items():
        v = getattr(f, name)
        if v is not None:
            out[field] = None if (name == "tag" and v == UNTAGGED) else v
    return out


def usage_query(
    db: firestore.Client, f: Filters, *, tie_break: bool = False, limit: int | None = None
) -> firestore.Query:
    """The usage records matching ``f``, newest first (``tie_break``: then by id, for
    cursors)."""
    ranges = ([("ts", ">=", f.after)] if f.after else []) + (
        [("ts", "<", f.before)] if f.before else []
    )
    order = [("ts", indexes.DESC)] + ([(indexes.NAME, indexes.DESC)] if tie_break else [])
    return indexes.query(db, "usage", equals=equalities(f), ranges=ranges, order=order, limit=limit)
