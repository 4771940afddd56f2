"""The Firestore client the functions use (``store.make_client``), on the emulator."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from google.api_core import exceptions, gapic_v1
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from functions.core.settings import Settings
from functions.store.client import make_client


@pytest.fixture
def client(db: firestore.Client, gcp_project: str) -> Any:
    c = make_client(
        Settings.from_env(
            {"TOLLGATE_GCP_PROJECT": gcp_project, "FIRESTORE_EMULATOR_HOST": db._emulator_host}
        )
    )
    yield c
    c.close()


def test_reads_run_on_the_calling_thread_and_see_what_was_written(
    client: Any, db: firestore.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    refs = [db.collection("c").document(f"d{i}") for i in range(7)]
    for i, ref in enumerate(refs):
        ref.set({"i": i})
    started: list[str] = []
    real_start = threading.Thread.start

    def counting_start(self: threading.Thread) -> None:
        started.append(self.name)
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", counting_start)
    mine = [client.collection("c").document(f"d{i}") for i in range(7)]
    for _ in range(3):  # what every proxied call does: one batched read
        got = {s.id: s.to_dict() for s in client.get_all(mine)}
        assert got == {f"d{i}": {"i": i} for i in range(7)}
    # a query and an aggregation: the other streamed reads
    q = client.collection("c").where(filter=FieldFilter("i", ">=", 5))
    assert [s.id for s in q.stream()] == ["d5", "d6"]
    assert client.collection("c").count().get()[0][0].value == 7
    assert started == []  # no per-read "channel spin" thread

    monkeypatch.setattr(threading.Thread, "start", real_start)
    list(db.get_all(refs))  # the stock client, for contrast: the test can fail
    monkeypatch.setattr(threading.Thread, "start", counting_start)
    list(db.get_all(refs))
    assert started, "the stock client starts a thread per streamed read"


@pytest.mark.parametrize(
    ("error", "resumed"),
    [
        (exceptions.ServiceUnavailable("blip"), True),
        (exceptions.DeadlineExceeded("slow"), True),
        (exceptions.PermissionDenied("no"), False),
    ],
)
def test_a_query_stream_that_fails_asks_its_retry_instead_of_crashing(error, resumed, monkeypatch):
    """google-cloud-firestore looks up ``transport.run_query._retry`` when a stream
    fails (a bare gRPC stub: an AttributeError, a 500); make_client lends it one."""
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", "127.0.0.1:1")  # never dialled here
    db = make_client(Settings(gcp_project="test-retry", emulator_host="127.0.0.1:1"))
    q = db.collection("usage").where(filter=FieldFilter("project", "==", "p"))
    for streamed in (q, q.count()):
        assert (
            streamed._retry_query_after_exception(  # type: ignore[union-attr]
                error, gapic_v1.method.DEFAULT, None
            )
            is resumed
        )
