"""What reconciliation keeps in Firestore (``functions/store/reconciliations.py``) on the
emulator: the OpenAI admin key only as a pointer to its secret and its last 4
characters, the external keys mapped to OpenAI projects, which days are stable, and the
runs listed newest day first."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from google.cloud import firestore

from functions.core.reconcile import KeyMap
from functions.store.reconciliations import ADMIN_KEY_SECRET, ReconcileBooks
from functions.store.secrets import LocalSecretStore

SECRET = "sk-admin-0123456789abcdefWXYZ"


def test_the_admin_key_is_a_secret_and_a_pointer_with_its_last_4(
    db: firestore.Client, tmp_path: Path
):
    secrets = LocalSecretStore(tmp_path / "secrets.json")
    books = ReconcileBooks(db, secrets)
    assert books.admin_key() == {}
    books.set_admin_key(SECRET, actor="root")
    pointer = books.admin_key()
    assert pointer["last4"] == "WXYZ" and pointer["set_by"] == "root"
    assert secrets.get(ADMIN_KEY_SECRET, pointer["secret_version"]) == SECRET
    stored = [s.to_dict() for c in ("config", "audit") for s in db.collection(c).stream()]
    assert SECRET not in repr(stored) and len(stored) == 2  # pointer + audit record
    books.delete_admin_key(actor="root")
    assert books.admin_key() == {}
    assert secrets.get(ADMIN_KEY_SECRET) == SECRET  # its versions stay, for an admin to destroy


def test_mapped_keys_stable_days_and_runs(db: firestore.Client):
    books = ReconcileBooks(db)
    keys = db.collection("external_keys")
    keys.document("main").set(
        {"id": "main", "openai_project_id": "proj_1", "openai_key_id": "key_1"}
    )
    keys.document("spare").set({"id": "spare", "openai_project_id": "proj_1"})
    keys.document("unmapped").set({"id": "unmapped"})
    assert books.key_maps() == [KeyMap("main", "proj_1", "key_1"), KeyMap("spare", "proj_1", None)]
    day1, day2 = date(2026, 12, 1), date(2026, 12, 2)
    run = {"over_threshold": [], "runs": 1}
    books.write_day(
        day1, [{**run, "day": "2026-12-01", "external_key": "main", "stable": True}], actor="r"
    )
    books.write_day(
        day2,
        [
            {**run, "day": "2026-12-02", "external_key": "main", "stable": False},
            {**run, "day": "2026-12-02", "external_key": "spare", "stable": True},
        ],
        actor="r",
    )
    assert books.stable_keys(day1) == {"main"} and books.stable_keys(day2) == {"spare"}
    assert set(books.previous(day2, ["main", "spare", "gone"])) == {"main", "spare"}
    listed = [(d["day"], d["external_key"]) for d in books.recent()]
    assert listed == [("2026-12-02", "spare"), ("2026-12-02", "main"), ("2026-12-01", "main")]
    assert [d["external_key"] for d in books.recent(day=day2, external_key="main")] == ["main"]
    actions = [s.get("action") for s in db.collection("audit").stream()]
    assert actions == ["reconcile.run", "reconcile.run"]  # one per day, with its documents
