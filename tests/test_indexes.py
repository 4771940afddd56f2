"""Index rules (pure) and THE coverage test: every query shape the code builds on the
emulator must be served by an index declared in functions/firestore.indexes.json
(the emulator does not enforce indexes; production refuses the query)."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from google.cloud import firestore

from functions.store import indexes, reports
from functions.store.client import Store
from functions.store.indexes import ASC, DESC, Index, Shape, covered, declared, needed_index
from functions.store.ledger import Ledger
from functions.store.reconciliations import ReconcileBooks
from functions.store.reports import Filters

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def ix(collection: str, *fields: tuple[str, str], scope: str = "COLLECTION") -> Index:
    return Index(collection, scope, tuple(fields))


def test_needed_index_automatic_cases() -> None:
    assert needed_index(Shape("usage", ("response_id",), None, ())) is None
    assert needed_index(Shape("keys", ("project", "user"), None, ())) is None  # merged
    assert needed_index(Shape("users", (), None, ())) is None
    assert needed_index(Shape("usage", (), "ts", (("ts", DESC),))) is None
    assert needed_index(Shape("usage", (), "ts", ())) is None
    # the __name__ tie-breaker in the last field's direction is implicit
    assert needed_index(Shape("audit", (), None, (("ts", DESC), ("__name__", DESC)))) is None


def test_needed_index_composites() -> None:
    assert needed_index(Shape("holds", ("project", "state"), "expires_at", ())) == (
        ("project", ASC),
        ("state", ASC),
        ("expires_at", ASC),
    )
    assert needed_index(Shape("usage", ("user",), "ts", (("ts", DESC), ("__name__", DESC)))) == (
        ("user", ASC),
        ("ts", DESC),
    )
    assert needed_index(Shape("usage", ("user",), None, (("ts", ASC),))) == (
        ("user", ASC),
        ("ts", ASC),
    )
    # a tie-breaker against the direction of ts is a real index field
    assert needed_index(Shape("usage", (), None, (("ts", DESC), ("__name__", ASC)))) == (
        ("ts", DESC),
        ("__name__", ASC),
    )
    # a range field not ordered on explicitly comes after the explicit orders
    assert needed_index(Shape("usage", (), "ts", (("cost_nano", DESC),))) == (
        ("cost_nano", DESC),
        ("ts", ASC),
    )


def test_covered_positive_and_negative() -> None:
    shape = Shape("usage", ("project", "user"), "ts", (("ts", DESC),))
    good = ix("usage", ("user", ASC), ("project", ASC), ("ts", DESC))  # any equality order
    assert covered(shape, [good])
    assert covered(
        shape, [ix("usage", ("project", ASC), ("user", ASC), ("ts", DESC), ("__name__", DESC))]
    )
    negatives = [
        ix("usage", ("project", ASC), ("user", ASC), ("ts", ASC)),  # wrong direction
        ix("usage", ("project", ASC), ("ts", DESC)),  # missing field
        ix("usage", ("project", ASC), ("user", ASC), ("model", ASC), ("ts", DESC)),  # extra
        ix("usage", ("project", DESC), ("user", ASC), ("ts", DESC)),  # equality not ASC
        ix("usage", ("project", ASC), ("ts", DESC), ("user", ASC)),  # equality after ts
        ix("holds", ("project", ASC), ("user", ASC), ("ts", DESC)),  # other collection
        ix("usage", ("project", ASC), ("user", ASC), ("ts", DESC), scope="COLLECTION_GROUP"),
    ]
    for bad in negatives:
        assert not covered(shape, [bad]), bad
    assert covered(shape, [*negatives, good])
    # a range without an order counts as ASCENDING
    holds = Shape("holds", ("state",), "expires_at", ())
    assert covered(holds, [ix("holds", ("state", ASC), ("expires_at", ASC))])
    assert not covered(holds, [ix("holds", ("state", ASC), ("expires_at", DESC))])
    # nothing needed: covered by nothing
    assert covered(Shape("usage", ("response_id",), None, ()), [])


def test_declared_parses_the_file(tmp_path: Path) -> None:
    decl = declared()
    assert ix("holds", ("state", ASC), ("expires_at", ASC)) in decl
    assert ix("usage", ("project", ASC), ("user", ASC), ("model", ASC), ("ts", DESC)) in decl
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"indexes": [{"collectionGroup": "x"}]}))
    with pytest.raises(ValueError, match="malformed"):
        declared(bad)


def test_query_records_its_shape(db: firestore.Client) -> None:
    q = indexes.query(
        db,
        "usage",
        equals={"user": "u", "project": "p"},
        ranges=[("ts", ">=", NOW), ("ts", "<", NOW)],
        order=[("ts", DESC)],
        limit=3,
    )
    assert list(q.stream()) == []
    assert Shape("usage", ("project", "user"), "ts", (("ts", DESC),)) in indexes.seen()
    with pytest.raises(ValueError):
        indexes.query(db, "usage", ranges=[("ts", ">", NOW), ("cost_nano", "<", 1)])
    with pytest.raises(ValueError):
        indexes.query(db, "usage", ranges=[("ts", "!=", NOW)])
    with pytest.raises(ValueError):
        indexes.query(db, "usage", order=[("ts", "desc")])


def seed(db: firestore.Client) -> None:
    for coll, ids in (("users", ("u", "v")), ("projects", ("p", "q")), ("models", ("m",))):
        for i in ids:
            db.collection(coll).document(i).set({"id": i})
    db.collection("members").document("p|u").set({"project": "p", "user": "u"})
    db.collection("keys").document("h").set({"project": "p", "user": "u", "name": "k"})
    for cid, tag in (("c1", "t"), ("c2", None)):
        db.collection("usage").document(cid).set(
            {
                "call_id": cid,
                "ts": NOW - timedelta(days=1),
                "project": "p",
                "user": "u",
                "model": "m",
                "key_name": "k",
                "tag": tag,
                "input_tokens": 1,
                "cached_tokens": 0,
                "output_tokens": 1,
                "cost_nano": 5,
                "response_id": "resp_" + cid,
            }
        )
    db.collection("audit").document("a").set(
        {"ts": NOW, "actor": "x", "action": "y", "target": "z", "details": {}}
    )


def test_every_query_shape_is_covered_by_a_declared_index(db: firestore.Client) -> None:
    seed(db)
    after, before = NOW - timedelta(days=3), NOW
    # Every combination of the five equality filters (the shapes do not depend on which
    # time bounds are given: ts is ordered on either way), with and without bounds.
    for (user, project, model, tag, key), (a, b) in itertools.product(
        itertools.product((None, "u"), (None, "p"), (None, "m"), (None, "t"), (None, "k")),
        ((None, None), (after, before)),
    ):
        f = Filters(user=user, project=project, model=model, after=a, before=b, tag=tag, key=key)
        for group_by in (None, *reports.GROUP_BY):
            page = reports.aggregate(db, f, group_by, limit=1, now=NOW)
            if page["next_page_token"]:
                reports.aggregate(
                    db, f, group_by, limit=1, now=NOW, page_token=page["next_page_token"]
                )
        _, token = reports.records(db, f, limit=1)
        if token:
            reports.records(db, f, limit=1, page_token=token)
    reports.audit_list(db, limit=1)
    ledger = Ledger(db, clock=lambda: NOW)
    ledger.sweep()
    ledger.sweep(project="p")
    Store(db).response_tokens("p", "resp_c1")
    # reconciliation: a day's records by the key they were sent with, and by project
    db.collection("projects").document("p").set({"id": "p", "external_key": "main"})
    ReconcileBooks(db).records("main", (NOW - timedelta(days=1)).date())

    shapes = indexes.seen()
    usage = {s.equals for s in shapes if s.collection == "usage" and s.range_field == "ts"}
    assert ("external_key",) in usage  # reconciliation's
    # every subset of the five filterable fields of the reports was exercised
    assert len(usage - {("external_key",)}) == 32
    # the tag skip scan, under every subset of the other four equality filters
    scans = {s.equals for s in shapes if s.collection == "usage" and s.range_field == "tag"}
    assert len(scans) == 16
    assert Shape("holds", ("project", "state"), "expires_at", ()) in shapes  # the sweep's
    assert Shape("usage", ("response_id",), None, ()) in shapes  # previous_response_id
    decl = declared()
    missing = sorted(
        {(s.collection, needed_index(s) or ()) for s in shapes if not covered(s, decl)}
    )
    assert not missing, f"add these to functions/firestore.indexes.json: {missing}"
    # and no usage index is dead weight (each one slows every settlement's write)
    used = {
        (frozenset(s.equals), need[len(s.equals) :])
        for s in shapes
        if s.collection == "usage" and (need := needed_index(s))
    }
    unused = [
        ix.fields
        for ix in decl
        if ix.collection == "usage"
        and (frozenset(f for f, _ in ix.fields[:-1]), ix.fields[-1:]) not in used
    ]
    assert not unused, f"no query needs these usage indexes: {unused}"
