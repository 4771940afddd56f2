"""The issue's targets with a verdict, and the Markdown table."""

from __future__ import annotations

from typing import Any

from bench.common import PROD_RTT_MS

# --------------------------------------------------------------------------- targets


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(name: str, target: str, measured: Any, ok: Any, issue: int = 8) -> None:
        out.append(
            {
                "name": name,
                "target": target,
                "measured": measured,
                "pass": bool(ok) if ok is not None else None,
                "issue": issue,
            }
        )

    lat, fs = res.get("latency", {}), res.get("firestore", {})
    floor = fs.get("floor_ms", {}).get("total", {})
    ov = lat.get("overhead_ms", {})
    if "p50" in ov and "p50" in floor:
        add(
            "p50 overhead",
            "<= Firestore floor p50 + 3 ms",
            f"{ov['p50']:.2f} ms vs floor {floor['p50']:.2f} + 3 ms",
            ov["p50"] <= floor["p50"] + 3,
        )
    op = lat.get("over_passthrough_ms", {})
    if "p50" in op and "p50" in floor:
        add(
            "p50 overhead above the pass-through function (platform hop removed)",
            "<= Firestore floor p50 + 3 ms",
            f"{op['p50']:.2f} ms vs floor {floor['p50']:.2f} + 3 ms",
            op["p50"] <= floor["p50"] + 3,
        )
    if "p99" in ov and "p99" in floor:
        add(
            "p99 overhead",
            "<= Firestore floor p99 + 15 ms",
            f"{ov['p99']:.2f} ms vs floor {floor['p99']:.2f} + 15 ms",
            ov["p99"] <= floor["p99"] + 15,
        )
    rt = fs.get("round_trips", {})
    if "before_first_byte" in rt:
        add(
            "round trips before first byte",
            "<= 2 sequential",
            f"{rt['before_first_byte']} (max {rt['before_first_byte_max']}; stream "
            f"{rt['stream_before_first_byte']})",
            max(rt["before_first_byte"], rt["stream_before_first_byte"]) <= 2,
        )
        add(
            "round trips in total (non-streaming)",
            "<= 3 sequential",
            f"{rt['total']} (max {rt['total_max']})",
            rt["total"] <= 3,
        )
    stm = res.get("streaming", {})
    sto = stm.get("first_data_byte_ms", {}).get("overhead", {})
    if "p50" in sto and "p50" in ov:
        add(
            "streaming first-byte overhead",
            "within 5 ms of the non-streaming overhead",
            f"{sto['p50']:.2f} ms vs {ov['p50']:.2f} ms (p50)",
            sto["p50"] <= ov["p50"] + 5,
        )
    gap = stm.get("chunk_gap_ms", {})
    if gap.get("p99_delta") is not None:
        add(
            "chunk gaps",
            "p99 within 2 ms of upstream's",
            f"{gap['proxy']['p99']:.2f} vs {gap['direct']['p99']:.2f} ms (+{gap['p99_delta']:.2f})",
            gap["p99_delta"] <= 2,
        )
    ex = res.get("overshoot", {}).get("exact", {})
    if "successes" in ex:
        add(
            "overshoot, estimate exact",
            "successes == N and overshoot == 0",
            f"{ex['successes']}/{ex['n_fitting']} succeeded, overshoot {ex['overshoot_nano']} "
            "nano-$",
            ex["successes"] == ex["n_fitting"] and ex["overshoot_nano"] == 0,
        )
    over = res.get("overshoot", {}).get("over", {})
    if "successes" in over:
        add(
            "overshoot, estimate too low",
            "overshoot == sum(actual - estimate)",
            f"{over['overshoot_nano']} vs {over['sum_actual_minus_estimate_nano']} nano-$ "
            f"({over['successes']}/{over['n_fitting']} admitted)",
            over["overshoot_nano"] == over["sum_actual_minus_estimate_nano"],
        )
    runs = [r for r in (ex, over) if "successes" in r]
    if runs:
        add(
            "no deadlock, no live hold left",
            "every caller answered, 0 live holds, held 0",
            "; ".join(
                f"{'all' if r['all_callers_returned'] else 'NOT all'} answered in "
                f"{r['wall_s']:.1f} s, {r['live_holds_after']} live holds, held "
                f"{r['held_after_nano']}"
                for r in runs
            ),
            all(
                r["all_callers_returned"]
                and r["live_holds_after"] == 0
                and r["held_after_nano"] == 0
                and r["inflight_after"] == 0
                for r in runs
            ),
        )
    cs = res.get("cold_start", {})
    if "all_200" in cs:
        add(
            "cold start without download",
            "first proxied call 200 with downloads blocked",
            f"median {cs['median_ms']} ms",
            cs["all_200"],
        )
    _targets_15(res, add)
    dur = res.get("meta", {}).get("duration_s")
    if dur is not None and res.get("meta", {}).get("mode") == "full":
        add("benchmark duration", "< 5 minutes on 2 cores", f"{dur:.0f} s", dur < 300)
    return out


def _targets_15(res: dict[str, Any], add: Any) -> None:
    """Issue 15 (the ledger at scale)."""
    full = res.get("meta", {}).get("mode") == "full"
    al = res.get("added_latency", {})
    added, one = al.get("added_ms_vs_direct", {}).get("p50"), al.get("one_round_trip_floor_ms_p50")
    if added is not None and one is not None:
        add(
            "added p50 vs direct (issue 15)",
            "<= one-round-trip Firestore floor p50 + 3 ms",
            f"{added:.2f} ms vs {one:.2f} + 3 ms",
            added <= one + 3,
            15,
        )
    if al.get("round_trips_before_first_byte") is not None:
        b, t = al["round_trips_before_first_byte"], al["round_trips_total"]
        add(
            "round trips (issue 15)",
            "<= 1 sequential before the first byte, <= 2 in total",
            f"{b} / {t} (stream {al['stream_round_trips_before_first_byte']} / "
            f"{al['stream_round_trips_total']})",
            b <= 1 and t <= 2 and al["stream_round_trips_before_first_byte"] <= 1,
            15,
        )
    hot = res.get("hot", {})
    if "documents" in hot:
        d = hot["documents"]
        add(
            "hot project: writes to one document",
            f"<= {d['target_max_in_window']} in any {d['window_s']:.0f} s window",
            f"{d['max_writes_one_doc_in_10s']} ({d['hottest_doc']}) at "
            f"{hot['achieved_calls_per_s']:.1f} calls/s; {d['writes_per_call']} writes/call",
            d["max_writes_one_doc_in_10s"] <= d["target_max_in_window"],
            15,
        )
        add(
            "hot project: sustained rate over 2 instances",
            ">= 40 calls/s for >= 60 s (quick run: its own rate)",
            f"{hot['achieved_calls_per_s']:.1f} of {hot['offered_calls_per_s']:.0f} calls/s "
            f"for {hot['duration_s']:.0f} s, {hot['errors']} errors; highest sustained "
            f"{hot['highest_sustained_calls_per_s']}",
            hot["sustained"]
            and (not full or (hot["offered_calls_per_s"] >= 40 and hot["duration_s"] >= 60)),
            15,
        )
    ro = res.get("hot_runout", {})
    if "successes" in ro:
        add(
            "run-out: zero overshoot, counters == usage records",
            "spend <= limit; counters (admin API) == sum of usage records",
            f"overshoot {ro['overshoot_nano']} nano-$, counters {ro['spend_nano']} vs usage "
            f"{ro['usage_sum_nano']}",
            ro["overshoot_nano"] is not None
            and ro["overshoot_nano"] <= 0
            and ro["counters_equal_usage"],
            15,
        )
        add(
            "run-out: final spend near the limit",
            "limit - spend <= one estimate per instance",
            f"{ro['gap_estimates']} estimates unspent ({ro['instances']} instances)",
            ro["gap_within_one_estimate_per_instance"],
            15,
        )
        add(
            "run-out: no false refusal, nothing left held",
            "no refusal followed by a later admission; 0 live holds, held 0, 0 in flight",
            f"{ro['false_refusals']} false refusals, {ro['live_holds_after']} live holds, held "
            f"{ro['held_after_nano']}, {ro['in_flight_after']} in flight",
            ro["false_refusals"] == 0
            and ro["live_holds_after"] == 0
            and ro["held_after_nano"] == 0
            and ro["in_flight_after"] == 0,
            15,
        )
    ex = res.get("exact_n_2_instances", {})
    if "successes" in ex:
        add(
            "exact N across 2 instances",
            "successes == N, spend == limit",
            f"{ex['successes']}/{ex['n_fitting']} succeeded of {ex['callers']}, spend "
            f"{ex['spend_nano']} vs limit {ex['limit_nano']}",
            ex["successes"] == ex["n_fitting"] and ex["spend_nano"] == ex["limit_nano"],
            15,
        )


# --------------------------------------------------------------------------- report


def fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.2f}{unit}"
    return f"{v}{unit}"


def markdown(res: dict[str, Any]) -> str:
    m = res["meta"]
    lines = [
        f"# Tollgate benchmark ({m['mode']})",
        "",
        f"{m['finished']} · {m['cpus']} CPUs · Python {m['python']} · "
        f"upstream latency {m['upstream_latency_ms']:.0f} ms, stream chunks every "
        f"{m['chunk_delay_ms']:.0f} ms · gunicorn gthread THREADS={m['threads']} · "
        f"Firestore emulator · run took {m['duration_s']:.0f} s",
        "",
        f"Reproduce: `{m['command']}`",
        "",
        "| measure | proxy | direct / floor | added |",
        "| --- | --- | --- | --- |",
    ]

    def row(name: str, a: Any, b: Any, c: Any) -> None:
        lines.append(f"| {name} | {a} | {b} | {c} |")

    lat = res.get("latency", {})
    if "proxy_ms" in lat:
        for q in ("p50", "p95", "p99"):
            row(
                f"non-streaming call, {q} ({lat['calls']} calls)",
                fmt(lat["proxy_ms"][q], " ms"),
                fmt(lat["direct_ms"][q], " ms"),
                fmt(lat["overhead_ms"][q], " ms"),
            )
        row(
            "proxy CPU per call (gunicorn worker)",
            fmt(lat["worker_cpu_ms_per_call"], " ms"),
            "",
            "",
        )
        if lat.get("passthrough_ms"):
            for q in ("p50", "p99"):
                row(
                    f"pass-through function (the same HTTP hop, no Tollgate), {q}",
                    fmt(lat["passthrough_ms"][q], " ms"),
                    fmt(lat["direct_ms"][q], " ms"),
                    fmt(lat["platform_overhead_ms"][q], " ms"),
                )
            floor_p50 = res.get("firestore", {}).get("floor_ms", {}).get("total", {}).get("p50")
            if floor_p50 is not None:
                own = lat["over_passthrough_ms"]["p50"] - floor_p50
                row(
                    "Tollgate's own work, p50 (proxy − pass-through − Firestore floor)",
                    fmt(own, " ms"),
                    "",
                    "",
                )
    stm = res.get("streaming", {})
    if "first_data_byte_ms" in stm:
        for k, label in (
            ("first_data_byte_ms", "stream: first data byte"),
            ("last_event_ms", "stream: last event ([DONE])"),
            ("end_of_body_ms", "stream: end of body"),
        ):
            v = stm[k]
            for q in ("p50", "p99"):
                row(
                    f"{label}, {q}",
                    fmt(v["proxy"].get(q), " ms"),
                    fmt(v["direct"].get(q), " ms"),
                    fmt(v["overhead"].get(q), " ms"),
                )
        g = stm["chunk_gap_ms"]
        row(
            "stream: gap between events, p99",
            fmt(g["proxy"].get("p99"), " ms"),
            fmt(g["direct"].get("p99"), " ms"),
            fmt(g["p99_delta"], " ms"),
        )
    fs = res.get("firestore", {})
    fl = fs.get("floor_ms", {})
    if fl:
        for k in ("get_all", "reserve", "settle", "total"):
            row(
                f"Firestore floor: {k}, p50 / p99",
                "",
                f"{fmt(fl[k].get('p50'), ' ms')} / {fmt(fl[k].get('p99'), ' ms')}",
                "",
            )
    rt = fs.get("round_trips", {})
    if "total" in rt:
        row(
            "sequential Firestore round trips (before first byte / total)",
            f"{rt['before_first_byte']} / {rt['total']}",
            "",
            "",
        )
        row(
            "  streaming (before first byte / total)",
            f"{rt['stream_before_first_byte']} / {rt['stream_total']}",
            "",
            "",
        )
        row(
            "  first call of an instance",
            f"{rt['first_call_of_instance']['before_upstream']}"
            f" / {rt['first_call_of_instance']['sequential']}",
            "",
            "",
        )
        row(
            "document writes per call",
            fmt(rt["writes"]["per_call_mode"]),
            f"min {rt['writes']['min']}, max {rt['writes']['max']}",
            "",
        )
        pj = fs.get("projected_production_overhead_ms", {})
        first_byte = fmt(pj.get("first_byte"), " ms")
        row(
            f"projected production overhead ({PROD_RTT_MS:.0f} ms per round trip + CPU)",
            fmt(pj.get("non_streaming"), " ms"),
            "",
            f"first byte {first_byte}",
        )
    tp = res.get("throughput", {})
    for lv in tp.get("levels", []):
        row(
            f"throughput at concurrency {lv['concurrency']}",
            fmt(lv["calls_per_s"], " calls/s"),
            f"p50 {fmt(lv['latency_ms'].get('p50'), ' ms')}",
            f"errors {lv['errors']}/{lv['calls']}",
        )
    for name in ("exact", "over"):
        o = res.get("overshoot", {}).get(name, {})
        if "successes" in o:
            row(
                f"overshoot run '{name}' ({o['callers']} callers, N={o['n_fitting']})",
                f"{o['successes']} ok, spend {o['spend_nano']}",
                f"limit {o['limit_nano']}",
                f"overshoot {o['overshoot_nano']} (Σ actual−estimate "
                f"{o['sum_actual_minus_estimate_nano']}), live holds {o['live_holds_after']}, "
                f"{o['wall_s']:.1f} s",
            )
    cs = res.get("cold_start", {})
    if "median_ms" in cs:
        row(
            "cold start: process start to first proxied 200",
            fmt(cs["median_ms"], " ms"),
            f"runs {[r['total_ms'] for r in cs['runs']]}",
            "",
        )
    mem = res.get("memory", {})
    if "peak_rss_mib" in mem:
        row(
            f"worker peak RSS, {mem['concurrency']} × {mem['body_bytes'] / 2**20:.1f} MiB bodies",
            fmt(mem["peak_rss_mib"], " MiB"),
            f"baseline {fmt(mem['baseline_rss_mib'], ' MiB')}",
            f"{mem['ok']}/{mem['concurrency']} ok in {mem['wall_s']:.1f} s",
        )
        b = mem["big_prompt"]
        row(
            f"{b['tokens']}-token prompt, p50",
            fmt(b["proxy_ms"].get("p50"), " ms"),
            fmt(b["direct_ms"].get("p50"), " ms"),
            fmt(b["overhead_ms"], " ms"),
        )
    lines += hot_tables(res)
    lines += [
        "",
        "## Targets (issues 8 and 15)",
        "",
        "| issue | target | measured | pass |",
        "| --- | --- | --- | --- |",
    ]
    for t in res.get("targets", []):
        verdict = "pass" if t["pass"] else ("FAIL" if t["pass"] is False else "-")
        lines.append(
            f"| {t.get('issue', 8)} | {cell(t['name'])}: {cell(t['target'])} | "
            f"{cell(t['measured'])} | {verdict} |"
        )
    errs = {k: v["error"] for k, v in res.items() if isinstance(v, dict) and "error" in v}
    if errs:
        lines += ["", "## Sections that failed", ""]
        lines += [f"- {k}: {v}" for k, v in errs.items()]
    return "\n".join(lines) + "\n"


def cell(v: Any) -> str:
    """A table cell: document ids hold "|", which would split the cell."""
    return str(v).replace("|", "\\|")


def _ms(d: dict[str, Any]) -> str:
    return f"{fmt(d.get('p50'), ' ms')} / {fmt(d.get('p99'), ' ms')}"


def hot_tables(res: dict[str, Any]) -> list[str]:
    """Issue 15's runs: the hot project, the run-out, exact N over 2 instances."""
    lines = [
        "",
        "## One busy project on 2 instances (issue 15)",
        "",
        "| run | measure | value |",
        "| --- | --- | --- |",
    ]

    def row(run: str, name: str, value: Any) -> None:
        lines.append(f"| {run} | {name} | {cell(value)} |")

    al = res.get("added_latency", {})
    if al.get("added_ms_vs_direct", {}).get("p50") is not None:
        row("latency", "added vs direct, p50 / p99", _ms(al["added_ms_vs_direct"]))
        row(
            "latency",
            "sequential Firestore round trips before first byte / total",
            f"{al['round_trips_before_first_byte']} / {al['round_trips_total']}",
        )
        row(
            "latency",
            "one-round-trip Firestore floor, p50",
            fmt(al["one_round_trip_floor_ms_p50"], " ms"),
        )
    hot = res.get("hot", {})
    if "documents" in hot:
        d = hot["documents"]
        name = f"hot ({hot['offered_calls_per_s']:.0f}/s × {hot['duration_s']:.0f} s)"
        row(
            name,
            "calls/s achieved (offered), errors",
            f"{hot['achieved_calls_per_s']:.1f} ({hot['offered_calls_per_s']:.0f}), "
            f"{hot['errors']}/{hot['calls']}",
        )
        row(name, "latency from scheduled send, p50 / p99", _ms(hot["latency_ms"]))
        row(
            name,
            f"most writes to one document in any {d['window_s']:.0f} s",
            f"{d['max_writes_one_doc_in_10s']} (`{d['hottest_doc']}`)",
        )
        row(
            name,
            "writes / reads / document operations per call",
            f"{d['writes_per_call']} / {d['reads_per_call']} / {d['doc_ops_per_call']}",
        )
        for coll, c in sorted(d["by_collection"].items()):
            row(
                name,
                f"  `{coll}`: docs, writes, most in 10 s to one",
                f"{c['docs']}, {c['writes']}, {c['max_in_10s']}",
            )
        cpu = hot.get("cpu", {})
        if cpu:
            parts = ", ".join(f"{k} {v['cores']:.2f}" for k, v in cpu["processes"].items())
            row(
                name,
                f"CPU, cores of {cpu['cpus']}",
                f"{parts}; other processes {cpu['other_processes_cores']:.2f} (load avg "
                f"{hot['loadavg_before_after'][0]:.1f})",
            )
        row(
            name,
            "sustained; highest sustained rate",
            f"{hot['sustained']}; {fmt(hot['highest_sustained_calls_per_s'], ' calls/s')}",
        )
        for p in hot.get("probes", []):
            row(
                name,
                f"  probe at {p['offered_calls_per_s']:.0f}/s",
                f"{p['achieved_calls_per_s']:.1f} calls/s, sustained {p['sustained']}, most "
                f"writes to one doc in 10 s {p['documents']['max_writes_one_doc_in_10s']}",
            )
        led = hot.get("ledger", {})
        if led:
            row(
                name,
                "spend: counters (admin API) vs usage records; held after",
                f"{led['spend_nano']} vs {led['usage_sum_nano']}; held "
                f"{led['held_after_nano']}, live holds {led['live_holds_after']}",
            )
    ro = res.get("hot_runout", {})
    if "successes" in ro:
        ld = ro["load"]
        name = f"run-out ({ld['offered_calls_per_s']:.0f}/s × {ld['duration_s']:.0f} s)"
        row(name, "successes, refusals", f"{ro['successes']}, {ro['refusals']}")
        row(
            name,
            "limit; spend from counters / from usage records",
            f"{ro['limit_nano']}; {ro['spend_nano']} / {ro['usage_sum_nano']}",
        )
        row(name, "overshoot; gap in estimates", f"{ro['overshoot_nano']}; {ro['gap_estimates']}")
        row(
            name,
            "false refusals; live holds, held, in flight after",
            f"{ro['false_refusals']}; {ro['live_holds_after']}, {ro['held_after_nano']}, "
            f"{ro['in_flight_after']}",
        )
        row(
            name,
            "most writes to one document in any 10 s, writes per call",
            f"{ld['documents']['max_writes_one_doc_in_10s']} "
            f"(`{ld['documents']['hottest_doc']}`), {ld['documents']['writes_per_call']}",
        )
        row(
            name,
            "latency from scheduled send, p50 / p99: admitted; refused",
            f"{_ms(ld['latency_ms'])}; {_ms(ld['refusal_ms'])}",
        )
        row(name, "calls that failed (not sent, no answer, errors)", ro.get("failures") or 0)
        row(
            name,
            "per 5 s of schedule: ok / refused / other (p50 ms ok, refused)",
            "; ".join(
                f"{b['from_s']:.0f} s: {b['ok']}/{b['refused']}/{b['other']} "
                f"({fmt(b['ok_p50_ms'])}, {fmt(b['refused_p50_ms'])})"
                for b in ld["timeline"]
            ),
        )
        row(
            name,
            "calls/s answered; sustained",
            f"{ld['answered_calls_per_s']:.1f}; {ld['sustained']}",
        )
    ex = res.get("exact_n_2_instances", {})
    if "successes" in ex:
        name = f"exact N ({ex['callers']} callers, 2 instances)"
        row(name, "successes / N", f"{ex['successes']} / {ex['n_fitting']}")
        row(name, "spend / limit", f"{ex['spend_nano']} / {ex['limit_nano']}")
        row(
            name,
            "usage records sum; live holds after",
            f"{ex['usage_sum_nano']}; {ex['live_holds_after']}",
        )
    return lines if len(lines) > 5 else []
