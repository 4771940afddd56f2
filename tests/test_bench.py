"""The benchmark's short run (``python -m bench.run --quick``) works end to end, so it
cannot rot. Timings are machine-dependent and only reported; this checks the
structure of the figures and the facts that hold on any machine: exact budget
runs, counted (not guessed) round trips and writes, no hold left behind."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench") / "r.json"
    proc = subprocess.run([sys.executable, "-m", "bench.run", "--quick", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert out.with_suffix(".md").exists()
    assert "## Targets" in proc.stdout  # the table is printed too
    return json.loads(out.read_text())


def number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def percentiles(d: dict[str, Any]) -> None:
    assert d["n"] > 0
    assert all(number(d[k]) and d[k] >= 0 for k in ("p50", "p95", "p99", "mean"))
    assert d["p50"] <= d["p95"] <= d["p99"] <= d["max"]


def test_every_section_is_there_and_none_failed(results):
    for name in ("meta", "latency", "streaming", "firestore", "writes", "throughput",
                 "overshoot", "cold_start", "memory", "targets"):
        assert name in results, name
        assert not (isinstance(results[name], dict) and "error" in results[name]), \
            results[name]
    assert results["meta"]["mode"] == "quick"


def test_latency_proxy_and_direct(results):
    lat = results["latency"]
    assert lat["calls"] > 0 and lat["errors"] == 0
    percentiles(lat["proxy_ms"])
    percentiles(lat["direct_ms"])
    # the upstream's fixed latency is a floor under both
    assert lat["direct_ms"]["p50"] >= lat["upstream_latency_ms"]
    assert lat["proxy_ms"]["p50"] >= lat["upstream_latency_ms"]
    assert all(number(lat["overhead_ms"][k]) for k in ("p50", "p95", "p99"))
    assert number(lat["worker_cpu_ms_per_call"]) and lat["worker_cpu_ms_per_call"] > 0
    # the pass-through function answered every call, through the upstream's latency too
    percentiles(lat["passthrough_ms"])
    assert lat["passthrough_ms"]["n"] == lat["calls"]
    assert lat["passthrough_ms"]["p50"] >= lat["upstream_latency_ms"]


def test_streaming_first_byte_last_byte_and_gaps(results):
    st = results["streaming"]
    assert st["streams"] > 0 and st["errors"] == 0
    # same events through the proxy as straight from upstream (usage asked for)
    assert st["events_per_stream"]["proxy"] == st["events_per_stream"]["direct"] > 3
    for k in ("first_data_byte_ms", "last_event_ms", "end_of_body_ms"):
        percentiles(st[k]["proxy"])
        percentiles(st[k]["direct"])
    gaps = st["chunk_gap_ms"]
    percentiles(gaps["proxy"])
    percentiles(gaps["direct"])
    assert number(gaps["p99_delta"])


def test_firestore_floor_and_counted_round_trips(results):
    fs = results["firestore"]
    for k in ("get_all", "reserve", "settle", "total"):
        percentiles(fs["floor_ms"][k])
    rt = fs["round_trips"]
    assert rt["recorder_self_check"]["ok"], rt["recorder_self_check"]
    assert rt["errors"] == 0
    # counted from the gRPC calls the proxy really made
    assert 0 < rt["before_first_byte"] <= rt["total"] <= 10
    assert 0 < rt["stream_before_first_byte"] <= rt["stream_total"] <= 10
    assert rt["methods"].count("Commit") >= 2  # a hold and a settlement, at least
    assert "Commit" in rt["stream_methods"]
    assert fs["projected_production_overhead_ms"]["non_streaming"] >= \
        rt["total"] * fs["production_rtt_ms_assumed"]


def test_document_writes_per_call_are_counted(results):
    w = results["writes"]
    # at least the hold, the usage record and the project and member counters
    assert 4 <= w["min"] <= w["per_call_mode"] <= w["max"] <= 20
    assert w["ledger_counter_per_call"] is None or w["ledger_counter_per_call"] > 0


def test_throughput_levels(results):
    levels = results["throughput"]["levels"]
    assert [lv["concurrency"] for lv in levels] == [1, 8, 32]
    for lv in levels:
        assert lv["ok"] > 0 and number(lv["calls_per_s"]) and lv["calls_per_s"] > 0
        assert 0 <= lv["error_rate"] <= 1


def test_overshoot_exact_run_spends_exactly_the_limit(results):
    ex = results["overshoot"]["exact"]
    assert ex["callers"] == 100
    assert ex["successes"] == ex["n_fitting"]
    assert ex["spend_nano"] == ex["limit_nano"] == ex["n_fitting"] * ex["per_call_estimate_nano"]
    assert ex["overshoot_nano"] == 0 == ex["sum_actual_minus_estimate_nano"]
    assert ex["usage_cost_sum_nano"] == ex["spend_nano"]
    assert ex["live_holds_after"] == 0 and ex["held_after_nano"] == 0
    assert ex["inflight_after"] == 0 and ex["all_callers_returned"]
    assert sum(ex["statuses"].values()) == ex["callers"]
    assert ex["statuses"].get("429 budget_exceeded", 0) == ex["callers"] - ex["n_fitting"]


def test_overshoot_low_estimate_run_is_bounded_by_the_excess(results):
    over = results["overshoot"]["over"]
    assert over["live_holds_after"] == 0 and over["held_after_nano"] == 0
    assert over["all_callers_returned"]
    assert over["usage_cost_sum_nano"] == over["spend_nano"]
    assert over["sum_actual_minus_estimate_nano"] > 0
    # SPEC §2: spend never exceeds a limit by more than the estimates' shortfall; with
    # every admission before the first settlement (1 s upstream), exactly N fit and the
    # overshoot is that shortfall, to the nano-dollar
    assert over["successes"] == over["n_fitting"]
    assert over["overshoot_nano"] == over["sum_actual_minus_estimate_nano"]


def test_cold_start_without_download(results):
    cs = results["cold_start"]
    assert cs["all_200"]
    run = cs["runs"][0]
    assert run["status"] == 200
    assert 0 < run["listening_ms"] < run["total_ms"]


def test_memory_and_big_prompt(results):
    mem = results["memory"]
    assert mem["ok"] == mem["concurrency"] > 0
    assert mem["peak_rss_mib"] >= mem["baseline_rss_mib"] > 0
    big = mem["big_prompt"]
    assert big["tokens"] >= 100_000 and big["errors"] == 0
    percentiles(big["proxy_ms"])


def test_targets_are_reported_with_a_verdict(results):
    names = {t["name"] for t in results["targets"]}
    assert {"p50 overhead", "p99 overhead", "round trips before first byte",
            "round trips in total (non-streaming)", "streaming first-byte overhead",
            "chunk gaps", "overshoot, estimate exact", "no deadlock, no live hold left"} <= names
    assert all(isinstance(t["pass"], bool) for t in results["targets"])
