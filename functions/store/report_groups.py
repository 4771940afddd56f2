"""The groups of a ``group_by``: which candidates exist, in which order, and the filters
that narrow a report to one of them.

Firestore has no GROUP BY, so ``reports.aggregate`` runs one aggregation query per
candidate and leaves out those without calls. Candidates come from configuration where
it lists them: ``user``: every user, or with ``project`` everyone who holds or held a
key in it (``members`` ∪ ``keys.user``: keys are revoked, never deleted, so a removed
member's usage still shows); ``project``: every project, or with ``user`` those they
hold or held keys in; ``model``: every model; ``key``: the names of the keys matching
``project``/``user``; ``day``: every UTC day in [after, before), newest first, at most
366 (``before`` defaults to now; without ``after``, the 30 UTC days ending with the day
of ``before``). A filter on the grouped field leaves one candidate.

Tags are free text that no configuration lists, so their candidates are read from the
usage records by a *skip scan*: ``tag > last ORDER BY tag LIMIT 1`` under the report's
equality filters returns the next distinct tag, one document read per tag, however many
calls carry it (the time bounds are left out: Firestore would need a second inequality,
so a tag used only outside them costs one empty aggregation). Calls without a tag form
one more group, ``None``, after every tag. Candidates are produced lazily, so a page
reads only the tags it shows (plus one to look ahead).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from google.cloud import firestore

from functions.core.errors import InvalidRequest
from functions.store import indexes
from functions.store.report_filters import UNTAGGED, Filters, equalities

GROUP_BY = ("user", "project", "model", "day", "tag", "key")
MAX_DAYS = 366
DEFAULT_DAYS = 30


def _ids(db: firestore.Client, collection: str) -> set[str]:
    return {s.id for s in indexes.query(db, collection).select([]).stream()}


def _related(db: firestore.Client, field: str, value: str, want: str) -> set[str]:
    """``want`` of members and keys whose ``field`` is ``value`` (keys outlive members)."""
    return {
        str(s.get(want))
        for coll in ("members", "keys")
        for s in indexes.query(db, coll, equals={field: value}).select([want]).stream()
    }


def _key_names(db: firestore.Client, f: Filters) -> set[str]:
    equals = {k: v for k in ("project", "user") if (v := getattr(f, k)) is not None}
    docs = indexes.query(db, "keys", equals=equals).select(["name"]).stream()
    return {str(name) for s in docs if (name := (s.to_dict() or {}).get("name"))}


def _tags(db: firestore.Client, f: Filters, after: str | None) -> Iterator[str]:
    """Distinct tags of the usage records under ``f``'s equality filters, ascending,
    from just after ``after``: one single-document read each (see the module doc)."""
    equals = equalities(replace(f, tag=None))
    last = after
    while True:
        ranges = [("tag", ">", last)] if last is not None else [("tag", ">=", "")]
        q = indexes.query(
            db, "usage", equals=equals, ranges=ranges, order=[("tag", indexes.ASC)], limit=1
        ).select(["tag"])
        snaps = list(q.stream())
        if not snaps:
            return
        last = str(snaps[0].get("tag"))
        yield last


def day_window(f: Filters, now: datetime) -> tuple[Filters, list[str]]:
    """``f`` with both time bounds set, and its UTC days newest first (a 400 past
    MAX_DAYS)."""
    before = f.before or now
    last = (before - timedelta(microseconds=1)).date()
    after = f.after or datetime.combine(last - timedelta(days=DEFAULT_DAYS - 1), time(), tzinfo=UTC)
    if after >= before:
        return replace(f, after=after, before=before), []
    n = (last - after.date()).days + 1
    if n > MAX_DAYS:
        raise InvalidRequest(
            f"group_by=day covers at most {MAX_DAYS} days, this range has "
            f"{n}: narrow 'after'/'before'.",
            param="after",
        )
    return replace(f, after=after, before=before), [
        (last - timedelta(days=i)).isoformat() for i in range(n)
    ]


def narrow(f: Filters, group_by: str, group: str | None) -> Filters:
    """``f`` restricted to one group (``None`` of ``tag``: the untagged calls)."""
    if group_by == "day":
        assert group is not None and f.after is not None and f.before is not None
        start = datetime.combine(date.fromisoformat(group), time(), tzinfo=UTC)
        return replace(
            f, after=max(f.after, start), before=min(f.before, start + timedelta(days=1))
        )
    one: dict[str, Any] = {group_by: UNTAGGED if group is None else group}
    return replace(f, **one)


def candidates(
    db: firestore.Client, f: Filters, group_by: str, after: str | None
) -> Iterator[str | None]:
    """The groups of ``group_by`` (not ``day``) in page order, from just after the group
    ``after`` (a page token's), lazily."""
    pinned = getattr(f, group_by)
    if pinned is not None:
        one = None if (group_by == "tag" and pinned == UNTAGGED) else pinned
        if after is None:
            yield one
        return
    if group_by == "tag":
        yield from _tags(db, f, after)
        yield None  # the untagged calls, after every tag
        return
    if group_by == "user":
        ids = _related(db, "project", f.project, "user") if f.project else _ids(db, "users")
    elif group_by == "project":
        ids = _related(db, "user", f.user, "project") if f.user else _ids(db, "projects")
    elif group_by == "key":
        ids = _key_names(db, f)
    else:
        ids = _ids(db, "models")
    yield from sorted(g for g in ids if after is None or g > after)
