"""The proxy's flow over in-memory store and ledger (tests/memory_world.py): every check
before upstream, what each ending of a call is booked at, and the headers a client
sees. No emulator, so these run in milliseconds; tests/test_proxy.py covers the same
ground against Firestore, and tests/test_ledger_contract.py and
tests/test_store_contract.py hold the in-memory parts to the real ones.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from functions.core.pricing import format_usd
from functions.proxy.upstream import Upstream
from tests.fake_upstream import Error, FakeUpstream, InvalidJSON, Stall, Stream
from tests.memory_world import MemoryWorld, memory_world


@pytest.fixture
def mem(upstream: FakeUpstream, tmp_path: Path) -> Iterator[MemoryWorld]:
    w = memory_world(upstream, tmp_path)
    yield w
    assert w.ledger.holds == {}, "a call left a live hold behind"


def records(w: MemoryWorld) -> list[dict[str, Any]]:
    return list(w.ledger.usage.values())


def error_of(resp: Any) -> dict[str, Any]:
    return json.loads(resp.data)["error"]


def test_a_call_is_answered_booked_and_priced_in_its_headers(mem):
    resp = mem.call()
    assert resp.status_code == 200, resp.data
    [rec] = records(mem)
    assert (rec["status"], rec["user"], rec["model"], rec["route"]) == (
        "ok",
        "bob",
        "gpt-4o-mini",
        "chat",
    )
    assert rec["cost_nano"] > 0 and not rec["estimated"]
    assert rec["external_key"] == "main"  # the organisation key it went out with
    assert resp.headers["x-tollgate-call-id"] == rec["call_id"]
    assert resp.headers["x-tollgate-cost-usd"] == format_usd(rec["cost_nano"])
    assert resp.headers["x-tollgate-budget-remaining-usd"] == format_usd(
        10_000_000_000 - rec["cost_nano"]
    )
    [sent] = mem.upstream.received
    assert sent.headers["authorization"] == "Bearer sk-fake-upstream-org-key-0001"


def test_over_the_budget_nothing_reaches_upstream_and_nothing_is_booked(mem):
    mem.project(budget_nano=1_000)
    resp = mem.call()
    assert resp.status_code == 429
    assert error_of(resp)["code"] == "budget_exceeded"
    assert "project 'demo'" in error_of(resp)["message"]
    assert mem.upstream.received == [] and records(mem) == []


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"model": "gpt-4o"}, 403, "model_not_allowed"),
        ({"stream": "yes"}, 400, None),
        ({"messages": "not a list"}, 400, None),
        ({"max_tokens": -1}, 400, None),
    ],
)
def test_a_refused_body_never_reaches_upstream(mem, change, status, code):
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], **change}
    resp = mem.call(body=body)
    if resp.status_code != status:
        pytest.fail(f"{change}: {resp.status_code} {resp.data[:300]!r}")
    if code:
        assert error_of(resp)["code"] == code
    assert mem.upstream.received == [] and records(mem) == []


def test_unknown_revoked_and_archived_keys_are_the_same_401(mem):
    mem.keys["eve"] = "tg_" + "x" * 40
    assert mem.call("eve").status_code == 401
    [kh] = [h for h, d in mem.store.docs["keys"].items() if d["user"] == "bob"]
    mem.store.docs["keys"][kh]["revoked_at"] = datetime(2020, 2, 1, tzinfo=UTC)
    assert mem.call("bob").status_code == 401
    mem.project(archived=True)
    assert mem.call("alice").status_code == 401
    assert mem.upstream.received == [] and records(mem) == []


def test_a_dry_run_quotes_without_upstream_or_booking(mem):
    resp = mem.call(**{"x-tollgate-dry-run": "1"})
    assert resp.status_code == 200
    quote = json.loads(resp.data)
    assert quote["object"] == "tollgate.quote" and quote["budgets"][0]["fits"] is True
    assert mem.upstream.received == [] and records(mem) == []


@pytest.mark.parametrize(
    ("behaviour", "status", "booked", "estimated"),
    [
        (Error(500), 500, "upstream_error", False),
        (Error(429), 429, "upstream_error", False),
        (InvalidJSON(), 502, "upstream_bad_response", True),
    ],
)
def test_what_an_upstream_failure_is_booked_at(mem, behaviour, status, booked, estimated):
    mem.upstream.push(behaviour)
    resp = mem.call()
    assert resp.status_code == status
    [rec] = records(mem)
    assert (rec["status"], rec["estimated"]) == (booked, estimated)
    assert rec["cost_nano"] == (rec["estimate_nano"] if estimated else 0)
    assert resp.headers["x-tollgate-call-id"] == rec["call_id"]


def test_a_timeout_is_booked_at_the_hold(mem):
    mem.proxy.forwarder.upstream = Upstream(connect_timeout_s=2.0, read_timeout_s=0.3)
    mem.upstream.push(Stall(2.0))
    resp = mem.call()
    assert resp.status_code == 504
    [rec] = records(mem)
    assert (rec["status"], rec["cost_nano"], rec["estimated"]) == (
        "upstream_timeout",
        rec["estimate_nano"],
        True,
    )


def test_upstream_down_costs_nothing(mem):
    forwarder = mem.proxy.forwarder
    forwarder.settings = dataclasses.replace(
        forwarder.settings, upstream_base_url="http://127.0.0.1:9"
    )
    resp = mem.call()
    assert resp.status_code == 502 and error_of(resp)["code"] == "upstream_unavailable"
    [rec] = records(mem)
    assert (rec["status"], rec["cost_nano"]) == ("upstream_unavailable", 0)


def test_the_organisation_key_refused_is_not_the_members_fault(mem):
    mem.upstream.valid_keys = {"sk-some-other-key"}
    resp = mem.call()
    assert resp.status_code == 502 and error_of(resp)["code"] == "upstream_auth_error"
    assert "organisation" in error_of(resp)["message"]
    [rec] = records(mem)
    assert (rec["status"], rec["cost_nano"]) == ("upstream_auth_error", 0)


def test_rpm_refuses_the_call_past_it(mem):
    mem.project(rpm=2)
    assert [mem.call().status_code for _ in range(3)] == [200, 200, 429]
    assert len(records(mem)) == 2 and len(mem.upstream.received) == 2


def test_a_stream_is_booked_from_its_usage_chunk(mem):
    mem.upstream.push(Stream(chunks=3))
    resp = mem.call(
        body={
            "model": "gpt-4o-mini",
            "stream": True,
            "messages": [{"role": "user", "content": "Hi"}],
        }
    )
    assert resp.status_code == 200
    assert b"data: [DONE]" in resp.data
    [rec] = records(mem)
    assert (rec["status"], rec["streamed"], rec["estimated"]) == ("ok", True, False)
    assert rec["output_tokens"] == 7


def test_embeddings_are_booked_on_their_route(mem):
    resp = mem.call(
        body={"model": "text-embedding-3-small", "input": "hello"}, path="/v1/embeddings"
    )
    assert resp.status_code == 200
    [rec] = records(mem)
    assert (rec["route"], rec["output_tokens"]) == ("embeddings", 0)
