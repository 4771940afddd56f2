"""Every Firestore query Tollgate issues is built here, so its index needs are known.

Why: production Firestore refuses a query that no index serves, but the emulator does
not enforce indexes (platform notes §2.6), so a missing composite index would only
show up in production. ``query`` records the *shape* of every query it builds in
``SHAPES_SEEN``; a test runs every code path on the emulator and then checks each
shape against ``firestore.indexes.json`` with ``needed_index`` and ``covered``.

Index rules encoded here (Firestore documentation, "Index types" / "Index merging"):

* single-field indexes are automatic, in both directions, and Firestore merges them
  for queries made only of equality filters, so those need no composite index;
* anything else (equality + range or order, or order on several fields) needs a
  composite index: the equality fields (ASCENDING, any order), then the range/order
  fields in query order with their direction. A range field that is not ordered on
  explicitly is ordered ASCENDING after the explicit orders (Firestore's implicit
  ordering);
* every index ends with an implicit ``__name__`` in the direction of its last field,
  so a trailing ``order_by("__name__")`` in that direction (the tie-breaker of our
  cursors) needs nothing more.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

DEFAULT_INDEX_FILE = Path(__file__).resolve().parents[1] / "firestore.indexes.json"
ASC, DESC = "ASCENDING", "DESCENDING"
RANGE_OPS = frozenset({"<", "<=", ">", ">="})
NAME = "__name__"

Fields = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Shape:
    """What an index must cover: the query without its values, limit or cursors."""

    collection: str
    equals: tuple[str, ...]  # sorted field names with == filters
    range_field: str | None  # the one field with <, <=, >, >= filters
    order: Fields  # ((field, ASC|DESC), ...) as ordered in the query


@dataclass(frozen=True)
class Index:
    """One composite index declared in firestore.indexes.json."""

    collection: str
    query_scope: str
    fields: Fields


SHAPES_SEEN: set[Shape] = set()
_SEEN_LOCK = threading.Lock()


def seen() -> set[Shape]:
    """A copy of SHAPES_SEEN (iterating the live set races with queries in threads)."""
    with _SEEN_LOCK:
        return set(SHAPES_SEEN)


def query(
    db: firestore.Client,
    collection: str,
    *,
    equals: Mapping[str, Any] | None = None,
    ranges: Sequence[tuple[str, str, Any]] = (),
    order: Sequence[tuple[str, str]] = (),
    limit: int | None = None,
) -> firestore.Query:
    """``db.collection(collection)`` with the filters, orders and limit, shape recorded.

    Raises ValueError for a shape this module cannot reason about (ranges on two
    fields, an unknown operator or direction): that is a bug in the caller."""
    equals = equals or {}
    range_fields = {f for f, _, _ in ranges}
    if len(range_fields) > 1:
        raise ValueError(f"range filters on several fields: {sorted(range_fields)}")
    for f, op, _ in ranges:
        if op not in RANGE_OPS:
            raise ValueError(f"unsupported range operator {op!r} on {f!r}")
    for f, direction in order:
        if direction not in (ASC, DESC):
            raise ValueError(f"unsupported direction {direction!r} on {f!r}")
    shape = Shape(
        collection,
        tuple(sorted(equals)),
        next(iter(range_fields), None),
        tuple((f, d) for f, d in order),
    )
    with _SEEN_LOCK:
        SHAPES_SEEN.add(shape)

    q: Any = db.collection(collection)
    for f, value in sorted(equals.items()):
        q = q.where(filter=FieldFilter(f, "==", value))
    for f, op, value in ranges:
        q = q.where(filter=FieldFilter(f, op, value))
    for f, direction in order:
        q = q.order_by(f, direction=direction)
    if limit is not None:
        q = q.limit(limit)
    return q


def _index_order(shape: Shape) -> Fields:
    """The range/order part of the index a shape needs, implicit parts removed."""
    order = [(f, d) for f, d in shape.order if f not in shape.equals]
    if shape.range_field and shape.range_field not in {f for f, _ in order}:
        order.append((shape.range_field, ASC))
    if order and order[-1][0] == NAME:
        # The implicit __name__ of every index runs in its last field's direction
        # (ASCENDING when __name__ is the only order: plain document order).
        if (len(order) == 1 and order[0][1] == ASC) or (
            len(order) > 1 and order[-2][1] == order[-1][1]
        ):
            order.pop()
    return tuple(order)


def needed_index(shape: Shape) -> Fields | None:
    """The composite index ``shape`` needs, or None when automatic indexes serve it."""
    order = _index_order(shape)
    if not order:
        return None  # only equality filters: single-field indexes, merged
    fields = set(shape.equals) | {f for f, _ in order}
    if len(fields) == 1 and len(order) == 1:
        return None  # one field, any direction: its automatic single-field index
    return tuple((f, ASC) for f in shape.equals) + order


def declared(path: Path | str = DEFAULT_INDEX_FILE) -> list[Index]:
    """The composite indexes of a Firebase CLI index file (``fieldOverrides`` ignored)."""
    doc = json.loads(Path(path).read_text())
    out = []
    for i, entry in enumerate(doc.get("indexes", [])):
        try:
            fields = tuple((str(f["fieldPath"]), str(f.get("order", ""))) for f in entry["fields"])
            out.append(
                Index(
                    str(entry["collectionGroup"]),
                    str(entry.get("queryScope", "COLLECTION")),
                    fields,
                )
            )
        except (KeyError, TypeError) as e:
            raise ValueError(f"{path}: malformed index #{i}: {e!r}") from None
    return out


def covered(shape: Shape, declared_indexes: Sequence[Index]) -> bool:
    """True when no composite index is needed or one declared index serves ``shape``
    exactly: its equality fields (any order, ASCENDING) then the range/order fields
    with the same directions. A declared trailing __name__ in the direction of the
    field before it is the implicit one and is ignored."""
    need = needed_index(shape)
    if need is None:
        return True
    n_eq = len(shape.equals)
    for ix in declared_indexes:
        if ix.collection != shape.collection or ix.query_scope != "COLLECTION":
            continue  # a COLLECTION_GROUP index does not serve collection queries
        fields = ix.fields
        if len(fields) >= 2 and fields[-1][0] == NAME and fields[-1][1] == fields[-2][1]:
            fields = fields[:-1]
        if (
            len(fields) == len(need)
            and {f for f, _ in fields[:n_eq]} == set(shape.equals)
            and all(d == ASC for _, d in fields[:n_eq])
            and fields[n_eq:] == need[n_eq:]
        ):
            return True
    return False
