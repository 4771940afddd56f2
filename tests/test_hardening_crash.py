"""Hardening, part 3: an instance killed while its calls hold budget (SPEC §2, issue 10).

The real ``openai`` function runs as its own process (functions-framework, as on Cloud
Functions), with a 1 s function timeout and a 1 s hold margin so its holds expire fast.
Three calls hang in the fake upstream; the process group gets SIGKILL while they hold
budget: the first on the counters, the others drawn from the escrow grant the second
call opens (draw window and close margin of 1 s, so the grant lapses fast). After
expiry the sweep closes the grant (what it held but no call needed goes back), books
each call as ``orphaned`` at its estimate and frees the rest of the budget; a
settlement that arrives late corrects its record; nothing is booked twice, and the
counters always equal the sum of the records.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from functions.core.budget import limits_for
from functions.core.holds import plan_from_hold
from functions.core.pricing import Usage
from functions.store.ledger import Ledger, Outcome
from tests.conftest import ROOT, admin_auth
from tests.emulator import free_port
from tests.fake_upstream import Stall

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1000}
CALLS = 3


def counters_match_records(world: Any) -> list[dict[str, Any]]:
    recs = world.usage()
    for cid, c in world.counters().items():
        mine = [
            r
            for r in recs
            if r["period"] == c["period"]
            and r["project"] == c["project"]
            and (c.get("user") is None or r["user"] == c["user"])
        ]
        assert c.get("spent", 0) == sum(r["cost_nano"] for r in mine), (cid, c)
    return recs


@pytest.fixture
def instance(world: Any, emulator: str, gcp_project: str) -> Any:
    """The openai function in its own process group; killed (-9) at the latest on exit."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TOLLGATE_GCP_PROJECT": gcp_project,
        "FIRESTORE_EMULATOR_HOST": emulator,
        "OPENAI_BASE_URL": world.upstream.base_url,
        "TOLLGATE_SECRET_BACKEND": "local",
        "TOLLGATE_SECRETS_FILE": str(world.secrets_file),
        "TOLLGATE_FUNCTION_TIMEOUT_S": "1",
        "TOLLGATE_HOLD_MARGIN_S": "1",
        "TOLLGATE_UPSTREAM_TIMEOUT_S": "30",
        "THREADS": "8",
        "TOLLGATE_GRANT_DRAW_WINDOW_S": "1",
        "TOLLGATE_GRANT_CLOSE_MARGIN_S": "1",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "functions_framework",
            "--source",
            str(ROOT / "functions" / "main.py"),
            "--target",
            "openai",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # its own process group: gunicorn master and worker
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.get(url + "/v1/models", timeout=2)
            break
        except requests.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the openai function did not start") from None
            time.sleep(0.2)
    yield url, proc
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def test_a_killed_instance_is_swept_and_a_late_settlement_corrects_it(
    instance: Any, world: Any, admin_client: Any, client: Any
) -> None:
    url, proc = instance
    os.environ["TOLLGATE_GRANT_CLOSE_MARGIN_S"] = "1"  # the admin function's sweep
    key = world.keys["bob"]
    world.upstream.push(*[Stall(4) for _ in range(CALLS)])
    errors: list[BaseException] = []

    def call() -> None:
        try:
            requests.post(
                url + "/v1/chat/completions",
                json=CHAT,
                timeout=30,
                headers={"Authorization": f"Bearer {key}"},
            )
        except requests.RequestException as exc:  # the instance dies under it
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(CALLS)]
    for t in threads:
        t.start()
    world.upstream.wait_for_requests(CALLS, timeout=15)  # all three are upstream, held

    holds = world.live_holds()
    assert len(holds) == CALLS
    estimates = sum(h["estimate_nano"] for h in holds)
    period = holds[0]["period"]
    p = world.counter("p", "demo", period)
    # held one by one, or inside the grant's reservation (escrow)
    assert p["inflight"] == CALLS and p["spent"] == 0
    assert p["held"] + p["escrow"] >= estimates
    drawn = [h for h in holds if h.get("grant")]
    assert drawn, "no call drew from an escrow grant"

    os.killpg(proc.pid, signal.SIGKILL)  # the instance dies: no finally, no settlement
    proc.wait(10)
    for t in threads:
        t.join(10)
    assert len(errors) == CALLS and world.usage() == []
    still = world.counter("p", "demo", period)
    assert still["held"] + still["escrow"] >= estimates  # still held

    # past expiry (admission + 1 s timeout + 1 s margin; the grant's 1 s draw window and
    # 1 s margin) the sweep closes the grant and books the calls
    [grant] = [g.to_dict() for g in world.db.collection("grants").stream()]
    expiry = max([h["expires_at"] for h in holds] + [grant["draw_until"]])
    time.sleep(max(0.0, (expiry - datetime.now(UTC)).total_seconds()) + 1.5)
    r = admin_client.post("/sweep", headers=admin_auth())
    assert r.status_code == 200 and r.get_json() == {
        "swept": CALLS,
        "grants_closed": 1,
        "alerts_resent": 0,
    }
    recs = counters_match_records(world)
    assert sorted(r["call_id"] for r in recs) == sorted(h["call_id"] for h in holds)
    for rec in recs:
        assert rec["status"] == "orphaned" and rec["estimated"] is True
        assert rec["cost_nano"] == rec["estimate_nano"]
    p = world.counter("p", "demo", period)
    assert (p["held"], p["inflight"], p["spent"], p["escrow"]) == (0, 0, estimates, 0)
    assert world.live_holds() == []
    assert admin_client.post("/sweep", headers=admin_auth()).get_json() == {
        "swept": 0,
        "grants_closed": 0,
        "alerts_resent": 0,
    }

    # the rest of the budget is usable at once
    ok = client.post("/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"})
    assert ok.status_code == 200
    after_new = world.counter("p", "demo", period)["spent"]
    assert after_new > estimates

    # a settlement of one of them arrives late (say its instance had only stalled)
    late = holds[0]
    plan = plan_from_hold(
        world.db.collection("holds").document(late["call_id"]).get().to_dict() or {}
    )
    limits = limits_for(
        project="demo",
        user="bob",
        model="gpt-4o-mini",
        period=period,
        project_limit=10_000_000_000,
        member_limit=None,
        model_limit=None,
        member_model_limit=None,
    )
    assert [lim.counter_id for lim in limits] == late["counters"]
    plan = dataclasses.replace(plan, limits=limits)
    actual = 12_345
    outcome = Outcome(status="ok", cost_nano=actual, usage=Usage(input_tokens=9, output_tokens=7))
    ledger = Ledger(world.db)
    assert ledger.settle(plan, outcome) is None  # already booked: corrected, not re-booked
    rec = world.db.collection("usage").document(late["call_id"]).get().to_dict()
    assert rec["status"] == "ok" and rec["corrected_from"] == "orphaned"
    assert rec["cost_nano"] == actual and rec["estimated"] is False
    moved = world.counter("p", "demo", period)["spent"] - after_new
    assert moved == actual - late["estimate_nano"]
    assert (
        world.counter("m", "demo", "bob", period)["spent"]
        == world.counter("p", "demo", period)["spent"]
    )

    before = world.counters()
    assert ledger.settle(plan, outcome) is None  # and again: nothing moves
    assert world.counters() == before
    recs = counters_match_records(world)
    assert len(recs) == CALLS + 1 and len({r["call_id"] for r in recs}) == CALLS + 1
    p = world.counter("p", "demo", period)
    assert (p["held"], p["inflight"]) == (0, 0) and world.live_holds() == []
