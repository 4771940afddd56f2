"""The configuration writers' shared plumbing (``functions/store/writer.py``) on the
emulator: a change and its audit record land together, a missing or taken document is
the 404 or 409 the caller names, dollars become exact nano-dollars."""

from __future__ import annotations

import pytest
from google.cloud import firestore

from functions.core.errors import Conflict, ResourceNotFound
from functions.store.writer import Writer, usd_to_nano


def audit(db: firestore.Client) -> list[dict]:
    return [s.to_dict() or {} for s in db.collection("audit").stream()]


def test_a_change_and_its_audit_record_land_together_or_not_at_all(db):
    w = Writer(db)
    batch = db.batch()
    batch.create(w.ref("users", "carol"), {"id": "carol"})
    w.audit(batch, "root", "user.create", "carol", {"name": "Carol"})
    w.commit(batch)
    assert w.get("users", "carol", "user") == {"id": "carol"} and w.exists("users", "carol")
    [rec] = audit(db)
    assert (rec["actor"], rec["action"], rec["target"], rec["details"]) == (
        "root",
        "user.create",
        "carol",
        {"name": "Carol"},
    )
    # the same create again: a 409 with the caller's words, and no second audit record
    batch = db.batch()
    batch.create(w.ref("users", "carol"), {"id": "carol"})
    w.audit(batch, "root", "user.create", "carol")
    with pytest.raises(Conflict, match="already here"):
        w.commit(batch, exists="already here")
    # an update of a missing document: a 404 with the caller's words, nothing recorded
    batch = db.batch()
    batch.update(w.ref("users", "dave"), {"name": "Dave"})
    w.audit(batch, "root", "user.update", "dave")
    with pytest.raises(ResourceNotFound, match="No user 'dave'"):
        w.commit(batch, missing="No user 'dave'.")
    assert len(audit(db)) == 1 and not w.exists("users", "dave")
    with pytest.raises(ResourceNotFound, match="No user 'dave'"):
        w.get("users", "dave", "user")


def test_an_action_that_is_no_single_write_is_recorded_on_its_own(db):
    Writer(db).audit_now("scheduler:sa", "holds.sweep", "*", {"swept": 3})
    [rec] = audit(db)
    assert (rec["action"], rec["details"]) == ("holds.sweep", {"swept": 3})


@pytest.mark.parametrize(
    ("usd", "nano"),
    [("12.5", 12_500_000_000), (3, 3_000_000_000), ("0.000000001", 1), (None, None)],
)
def test_dollars_are_exact_nano_dollars(usd, nano):
    assert usd_to_nano(usd) == nano


@pytest.mark.parametrize("usd", ["0.0000000001", "-1", "NaN", "Infinity", "ten"])
def test_what_is_not_a_dollar_amount_is_refused(usd):
    with pytest.raises(ValueError):
        usd_to_nano(usd)
