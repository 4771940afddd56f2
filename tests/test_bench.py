"""The benchmark's short run (``python -m bench.run --quick``) works end to end, so it
cannot rot. Timings are machine-dependent and only reported; this checks the
structure of the figures and the facts that hold on any machine: exact budget
runs, counted (not guessed) round trips and writes, no hold left behind; and, for
issue 15's runs over 2 instances, writes counted per document, zero overshoot when a
budget runs out under load, counters equal to the usage records, exactly N of 100."""

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
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
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
    for name in (
        "meta",
        "latency",
        "streaming",
        "firestore",
        "writes",
        "throughput",
        "overshoot",
        "cold_start",
        "memory",
        "hot",
        "hot_runout",
        "exact_n_2_instances",
        "added_latency",
        "targets",
    ):
        assert name in results, name
        assert not (isinstance(results[name], dict) and "error" in results[name]), results[name]
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
    # the projection counts the round trips the answer waits for: those before upstream
    # (the settlement is written after the last byte)
    assert (
        fs["projected_production_overhead_ms"]["non_streaming"]
        >= rt["before_first_byte"] * fs["production_rtt_ms_assumed"]
    )


def test_document_writes_per_call_are_counted(results):
    w = results["writes"]
    # at least a reservation and the usage record, whatever the ledger's design (per-call
    # holds on the counters, or slices / leases that keep the counters out of most calls)
    assert 2 <= w["min"] <= w["per_call_mode"] <= w["max"] <= 20
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
    assert {
        "p50 overhead",
        "p99 overhead",
        "round trips before first byte",
        "round trips in total (non-streaming)",
        "streaming first-byte overhead",
        "chunk gaps",
        "overshoot, estimate exact",
        "no deadlock, no live hold left",
    } <= names
    assert all(isinstance(t["pass"], bool) for t in results["targets"])


# --------------------------------------------------------------------------- issue 15


def test_window_counting_is_exact():
    from bench.hot import doc_figures, max_in_window

    assert max_in_window([], 10) == (0, 0.0)
    assert max_in_window([0.0, 10.0, 20.0], 10)[0] == 1  # windows are [t, t + 10)
    assert max_in_window([0.0, 9.99, 10.0, 19.98], 10) == (3, 9.99)
    assert max_in_window([5.0, 0.0, 1.0, 2.0, 30.0], 10) == (4, 0.0)
    recs = [
        {"m": "Commit", "t": 100.0 + i, "w": ["counters/p", f"usage/{i}"], "x": None}
        for i in range(12)
    ]
    recs += [
        {"m": "Commit", "t": 105.5, "w": ["counters/p"], "x": "Aborted"},  # wrote nothing
        {"m": "BatchGetDocuments", "t": 101.0, "d": 7},
        {"m": "RunQuery", "t": 102.0, "r": 0},  # billed one read
        {"m": "Commit", "t": 500.0, "w": ["counters/p"], "x": None},
    ]  # outside
    d = doc_figures(recs, 100.0, 112.0, calls=12)
    assert d["hottest_doc"] == "counters/p" and d["max_writes_one_doc_in_10s"] == 10
    assert d["writes"] == 24 and d["writes_per_call"] == 2.0
    assert d["reads"] == 8 and d["doc_ops_per_call"] == round(32 / 12, 3)
    assert d["failed_commits"] == 1
    assert d["by_collection"]["usage"] == {"docs": 12, "writes": 12, "max_in_10s": 1}


def load_run(fig: dict[str, Any]) -> None:
    assert fig["calls"] > 0 and fig["answered"] == fig["calls"]
    assert fig["failures"] == 0  # every call answered 200 or a budget refusal
    assert sum(fig["statuses"].values()) == fig["calls"]
    # spread over the 2 instances, alternately
    assert set(fig["per_instance"]) == {"0", "1"}
    assert all(v["calls"] > 0 for v in fig["per_instance"].values())
    for k in ("achieved_calls_per_s", "answered_calls_per_s", "offered_calls_per_s"):
        assert number(fig[k]) and fig[k] > 0
    percentiles(fig["latency_ms"])
    percentiles(fig["send_lateness_ms"])
    d = fig["documents"]
    # counted from the instances' own Commit requests, per document
    assert d["records_in_window"] > 0 and d["rpcs_per_call"].get("Commit", 0) >= 1
    assert isinstance(d["hottest_doc"], str) and "/" in d["hottest_doc"]
    assert 1 <= d["max_writes_one_doc_in_10s"] <= d["writes"]
    assert d["max_writes_one_doc_in_1s"] <= d["max_writes_one_doc_in_10s"]
    assert d["top_docs"][0]["doc"] == d["hottest_doc"]
    assert sum(c["writes"] for c in d["by_collection"].values()) == d["writes"]
    assert d["writes_per_call"] > 0 and d["reads_per_call"] >= 0
    assert d["doc_ops_per_call"] >= d["writes_per_call"]
    cpu = fig["cpu"]["processes"]
    assert {"function instance 0", "function instance 1"} <= set(cpu)
    assert all(number(v["cpu_s"]) and v["cpu_s"] >= 0 for v in cpu.values())
    assert isinstance(fig["sustained"], bool)


def test_hot_project_over_two_instances(results):
    hot = results["hot"]
    assert hot["instances"] == 2 and hot["members"] == hot["keys"] == hot["models"] == 1
    load_run(hot)
    assert hot["errors"] == 0 and hot["ok"] == hot["calls"]
    # usage is booked and nothing is left live (leases may still hold budget: reported)
    led = hot["ledger"]
    assert led["admin_error"] is None
    assert led["usage_records"] >= hot["ok"] and led["usage_by_status"] == {
        "ok": led["usage_records"]
    }
    assert led["live_holds_after"] == 0 and led["in_flight_after"] == 0
    assert hot["highest_sustained_calls_per_s"] in (
        None,
        hot["offered_calls_per_s"],
        *(p["offered_calls_per_s"] for p in hot["probes"]),
    )


def test_budget_running_out_under_load_is_exact(results):
    ro = results["hot_runout"]
    load_run(ro["load"])
    assert ro["admin_error"] is None
    # it ran out: some calls succeeded, the rest were refused for the budget
    assert ro["successes"] > 0 and ro["refused"] > 0
    assert ro["successes"] + ro["refused"] == ro["load"]["calls"]
    assert set(ro["refusals"]) == {"429 budget_exceeded"}
    # zero overshoot with the exact upstream; the counters equal the usage records
    assert ro["overshoot_nano"] <= 0 and ro["gap_nano"] >= 0
    assert ro["spend_nano"] == ro["usage_sum_nano"] == ro["member_spend_nano"]
    assert ro["counters_equal_usage"]
    assert ro["spend_nano"] == ro["successes"] * ro["per_call_estimate_nano"]
    assert ro["usage_records"] == ro["successes"]
    assert ro["live_holds_after"] == 0 and ro["held_after_nano"] == 0
    assert ro["in_flight_after"] == 0
    assert number(ro["gap_estimates"]) and ro["false_refusals"] >= 0


def test_exact_n_across_two_instances(results):
    ex = results["exact_n_2_instances"]
    assert ex["callers"] == 100 and ex["instances"] == 2 and ex["admin_error"] is None
    assert ex["successes"] == ex["n_fitting"] < ex["callers"]
    assert ex["spend_nano"] == ex["limit_nano"] == ex["n_fitting"] * ex["per_call_estimate_nano"]
    assert ex["usage_sum_nano"] == ex["spend_nano"] and ex["counters_equal_usage"]
    assert ex["overshoot_nano"] == 0
    assert ex["statuses"].get("429 budget_exceeded", 0) == ex["callers"] - ex["n_fitting"]
    assert sum(ex["statuses"].values()) == ex["callers"] and ex["all_callers_returned"]
    assert all(sum(v.values()) == ex["callers"] // 2 for v in ex["per_instance"].values())
    assert ex["live_holds_after"] == 0 and ex["held_after_nano"] == 0
    assert ex["in_flight_after"] == 0


def test_added_latency_and_round_trips_are_under_clear_keys(results):
    al = results["added_latency"]
    assert all(number(al["added_ms_vs_direct"][k]) for k in ("p50", "p95", "p99"))
    assert (
        al["round_trips_before_first_byte"]
        == results["firestore"]["round_trips"]["before_first_byte"]
    )
    assert 0 < al["round_trips_before_first_byte"] <= al["round_trips_total"] <= 10
    assert number(al["one_round_trip_floor_ms_p50"]) and al["one_round_trip_floor_ms_p50"] > 0
    names = {t["name"] for t in results["targets"] if t["issue"] == 15}
    assert {
        "hot project: writes to one document",
        "exact N across 2 instances",
        "run-out: zero overshoot, counters == usage records",
    } <= names
