"""The issue's targets with a verdict, and the Markdown table."""

from __future__ import annotations

from typing import Any

from bench.common import PROD_RTT_MS

# --------------------------------------------------------------------------- targets


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(name: str, target: str, measured: Any, ok: Any) -> None:
        out.append({"name": name, "target": target, "measured": measured,
                    "pass": bool(ok) if ok is not None else None})

    lat, fs = res.get("latency", {}), res.get("firestore", {})
    floor = fs.get("floor_ms", {}).get("total", {})
    ov = lat.get("overhead_ms", {})
    if "p50" in ov and "p50" in floor:
        add("p50 overhead", "<= Firestore floor p50 + 3 ms",
            f"{ov['p50']:.2f} ms vs floor {floor['p50']:.2f} + 3 ms",
            ov["p50"] <= floor["p50"] + 3)
    op = lat.get("over_passthrough_ms", {})
    if "p50" in op and "p50" in floor:
        add("p50 overhead above the pass-through function (platform hop removed)",
            "<= Firestore floor p50 + 3 ms",
            f"{op['p50']:.2f} ms vs floor {floor['p50']:.2f} + 3 ms",
            op["p50"] <= floor["p50"] + 3)
    if "p99" in ov and "p99" in floor:
        add("p99 overhead", "<= Firestore floor p99 + 15 ms",
            f"{ov['p99']:.2f} ms vs floor {floor['p99']:.2f} + 15 ms",
            ov["p99"] <= floor["p99"] + 15)
    rt = fs.get("round_trips", {})
    if "before_first_byte" in rt:
        add("round trips before first byte", "<= 2 sequential",
            f"{rt['before_first_byte']} (max {rt['before_first_byte_max']}; stream "
            f"{rt['stream_before_first_byte']})",
            max(rt["before_first_byte"], rt["stream_before_first_byte"]) <= 2)
        add("round trips in total (non-streaming)", "<= 3 sequential",
            f"{rt['total']} (max {rt['total_max']})", rt["total"] <= 3)
    stm = res.get("streaming", {})
    sto = stm.get("first_data_byte_ms", {}).get("overhead", {})
    if "p50" in sto and "p50" in ov:
        add("streaming first-byte overhead", "within 5 ms of the non-streaming overhead",
            f"{sto['p50']:.2f} ms vs {ov['p50']:.2f} ms (p50)",
            sto["p50"] <= ov["p50"] + 5)
    gap = stm.get("chunk_gap_ms", {})
    if gap.get("p99_delta") is not None:
        add("chunk gaps", "p99 within 2 ms of upstream's",
            f"{gap['proxy']['p99']:.2f} vs {gap['direct']['p99']:.2f} ms "
            f"(+{gap['p99_delta']:.2f})", gap["p99_delta"] <= 2)
    ex = res.get("overshoot", {}).get("exact", {})
    if "successes" in ex:
        add("overshoot, estimate exact", "successes == N and overshoot == 0",
            f"{ex['successes']}/{ex['n_fitting']} succeeded, overshoot {ex['overshoot_nano']} "
            "nano-$", ex["successes"] == ex["n_fitting"] and ex["overshoot_nano"] == 0)
    over = res.get("overshoot", {}).get("over", {})
    if "successes" in over:
        add("overshoot, estimate too low", "overshoot == sum(actual - estimate)",
            f"{over['overshoot_nano']} vs {over['sum_actual_minus_estimate_nano']} nano-$ "
            f"({over['successes']}/{over['n_fitting']} admitted)",
            over["overshoot_nano"] == over["sum_actual_minus_estimate_nano"])
    runs = [r for r in (ex, over) if "successes" in r]
    if runs:
        add("no deadlock, no live hold left", "every caller answered, 0 live holds, held 0",
            "; ".join(f"{'all' if r['all_callers_returned'] else 'NOT all'} answered in "
                      f"{r['wall_s']:.1f} s, {r['live_holds_after']} live holds, held "
                      f"{r['held_after_nano']}" for r in runs),
            all(r["all_callers_returned"] and r["live_holds_after"] == 0
                and r["held_after_nano"] == 0 and r["inflight_after"] == 0 for r in runs))
    cs = res.get("cold_start", {})
    if "all_200" in cs:
        add("cold start without download", "first proxied call 200 with downloads blocked",
            f"median {cs['median_ms']} ms", cs["all_200"])
    dur = res.get("meta", {}).get("duration_s")
    if dur is not None and res.get("meta", {}).get("mode") == "full":
        add("benchmark duration", "< 5 minutes on 2 cores", f"{dur:.0f} s", dur < 300)
    return out


# --------------------------------------------------------------------------- report


def fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.2f}{unit}"
    return f"{v}{unit}"


def markdown(res: dict[str, Any]) -> str:
    m = res["meta"]
    lines = [f"# Tollgate benchmark ({m['mode']})", "",
             f"{m['finished']} · {m['cpus']} CPUs · Python {m['python']} · "
             f"upstream latency {m['upstream_latency_ms']:.0f} ms, stream chunks every "
             f"{m['chunk_delay_ms']:.0f} ms · gunicorn gthread THREADS={m['threads']} · "
             f"Firestore emulator · run took {m['duration_s']:.0f} s", "",
             f"Reproduce: `{m['command']}`", "",
             "| measure | proxy | direct / floor | added |", "| --- | --- | --- | --- |"]

    def row(name: str, a: Any, b: Any, c: Any) -> None:
        lines.append(f"| {name} | {a} | {b} | {c} |")

    lat = res.get("latency", {})
    if "proxy_ms" in lat:
        for q in ("p50", "p95", "p99"):
            row(f"non-streaming call, {q} ({lat['calls']} calls)",
                fmt(lat["proxy_ms"][q], " ms"), fmt(lat["direct_ms"][q], " ms"),
                fmt(lat["overhead_ms"][q], " ms"))
        row("proxy CPU per call (gunicorn worker)", fmt(lat["worker_cpu_ms_per_call"], " ms"),
            "", "")
        if lat.get("passthrough_ms"):
            for q in ("p50", "p99"):
                row(f"pass-through function (the same HTTP hop, no Tollgate), {q}",
                    fmt(lat["passthrough_ms"][q], " ms"), fmt(lat["direct_ms"][q], " ms"),
                    fmt(lat["platform_overhead_ms"][q], " ms"))
            floor_p50 = res.get("firestore", {}).get("floor_ms", {}).get("total", {}).get("p50")
            if floor_p50 is not None:
                own = lat["over_passthrough_ms"]["p50"] - floor_p50
                row("Tollgate's own work, p50 (proxy − pass-through − Firestore floor)",
                    fmt(own, " ms"), "", "")
    stm = res.get("streaming", {})
    if "first_data_byte_ms" in stm:
        for k, label in (("first_data_byte_ms", "stream: first data byte"),
                         ("last_event_ms", "stream: last event ([DONE])"),
                         ("end_of_body_ms", "stream: end of body")):
            v = stm[k]
            for q in ("p50", "p99"):
                row(f"{label}, {q}", fmt(v["proxy"].get(q), " ms"),
                    fmt(v["direct"].get(q), " ms"), fmt(v["overhead"].get(q), " ms"))
        g = stm["chunk_gap_ms"]
        row("stream: gap between events, p99", fmt(g["proxy"].get("p99"), " ms"),
            fmt(g["direct"].get("p99"), " ms"), fmt(g["p99_delta"], " ms"))
    fs = res.get("firestore", {})
    fl = fs.get("floor_ms", {})
    if fl:
        for k in ("get_all", "reserve", "settle", "total"):
            row(f"Firestore floor: {k}, p50 / p99", "",
                f"{fmt(fl[k].get('p50'), ' ms')} / {fmt(fl[k].get('p99'), ' ms')}", "")
    rt = fs.get("round_trips", {})
    if "total" in rt:
        row("sequential Firestore round trips (before first byte / total)",
            f"{rt['before_first_byte']} / {rt['total']}", "", "")
        row("  streaming (before first byte / total)",
            f"{rt['stream_before_first_byte']} / {rt['stream_total']}", "", "")
        row("  first call of an instance", f"{rt['first_call_of_instance']['before_upstream']}"
            f" / {rt['first_call_of_instance']['sequential']}", "", "")
        row("document writes per call", fmt(rt["writes"]["per_call_mode"]),
            f"min {rt['writes']['min']}, max {rt['writes']['max']}", "")
        pj = fs.get("projected_production_overhead_ms", {})
        first_byte = fmt(pj.get("first_byte"), " ms")
        row(f"projected production overhead ({PROD_RTT_MS:.0f} ms per round trip + CPU)",
            fmt(pj.get("non_streaming"), " ms"), "", f"first byte {first_byte}")
    tp = res.get("throughput", {})
    for lv in tp.get("levels", []):
        row(f"throughput at concurrency {lv['concurrency']}", fmt(lv["calls_per_s"], " calls/s"),
            f"p50 {fmt(lv['latency_ms'].get('p50'), ' ms')}",
            f"errors {lv['errors']}/{lv['calls']}")
    for name in ("exact", "over"):
        o = res.get("overshoot", {}).get(name, {})
        if "successes" in o:
            row(f"overshoot run '{name}' ({o['callers']} callers, N={o['n_fitting']})",
                f"{o['successes']} ok, spend {o['spend_nano']}",
                f"limit {o['limit_nano']}",
                f"overshoot {o['overshoot_nano']} (Σ actual−estimate "
                f"{o['sum_actual_minus_estimate_nano']}), live holds {o['live_holds_after']}, "
                f"{o['wall_s']:.1f} s")
    cs = res.get("cold_start", {})
    if "median_ms" in cs:
        row("cold start: process start to first proxied 200", fmt(cs["median_ms"], " ms"),
            f"runs {[r['total_ms'] for r in cs['runs']]}", "")
    mem = res.get("memory", {})
    if "peak_rss_mib" in mem:
        row(f"worker peak RSS, {mem['concurrency']} × {mem['body_bytes'] / 2**20:.1f} MiB bodies",
            fmt(mem["peak_rss_mib"], " MiB"), f"baseline {fmt(mem['baseline_rss_mib'], ' MiB')}",
            f"{mem['ok']}/{mem['concurrency']} ok in {mem['wall_s']:.1f} s")
        b = mem["big_prompt"]
        row(f"{b['tokens']}-token prompt, p50", fmt(b["proxy_ms"].get("p50"), " ms"),
            fmt(b["direct_ms"].get("p50"), " ms"), fmt(b["overhead_ms"], " ms"))
    lines += ["", "## Targets (issue 8)", "", "| target | measured | pass |", "| --- | --- | --- |"]
    for t in res.get("targets", []):
        verdict = "pass" if t["pass"] else ("FAIL" if t["pass"] is False else "-")
        lines.append(f"| {t['name']}: {t['target']} | {t['measured']} | {verdict} |")
    errs = {k: v["error"] for k, v in res.items() if isinstance(v, dict) and "error" in v}
    if errs:
        lines += ["", "## Sections that failed", ""]
        lines += [f"- {k}: {v}" for k, v in errs.items()]
    return "\n".join(lines) + "\n"


