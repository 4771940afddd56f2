"""Tollgate's benchmark (SPEC §6): one command, on loopback, in one run.

    python -m bench.run                  # full run (< 5 min on 2 cores) -> bench/results.json + .md
    python -m bench.run --quick          # a few seconds, same code path -> bench/results-quick.json
    python -m bench.run --out FILE       # figures to FILE (and FILE with .md)

It starts its own Firestore emulator, the fake upstreams of ``bench/upstream.py``
(fixed latency, fixed stream spacing) in their own process, seeds projects, and runs
the ``openai`` function as production does: ``python -m functions_framework --target
openai`` (gunicorn, gthread, ``THREADS``), with tiktoken's encodings staged in
``TIKTOKEN_CACHE_DIR`` and every download made impossible (``HTTPS_PROXY`` points at a
closed port). Then it measures, see ``bench/README.md``:

1. added latency of a non-streaming chat call, proxy vs upstream direct;
2. streaming: first ``data:`` byte, last event, end of body; gaps between events;
3. the Firestore floor (the call's reads and writes issued directly), and the
   sequential round trips of a call, counted by wrapping gRPC in an in-process proxy;
4. document writes per call, counted from the commit requests;
5. throughput and error rate at concurrency 1, 8, 32;
6. budget overshoot with 100 concurrent callers (exact estimate; estimate too low);
7. cold start: process start to first proxied 200;
8. peak RSS of the worker with near-limit bodies at full concurrency, and a
   100k-token prompt's latency;
9. (issue 15) a hot project: one member, one key, an open-loop paced load over 2
   instances whose every Firestore RPC is recorded: writes per document per 10 s,
   writes and document operations per call, calls/s, latency, CPU per process;
10. the same load against a budget that runs out halfway: successes, refusals,
   spend vs limit (counters and usage records), overshoot, holds left, the gap;
11. 100 callers over the 2 instances against a budget of exactly N calls.

Targets of issues 8 and 15 are reported with pass/fail, never asserted. Every load loop is
bounded in count and in time; every address is loopback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import BENCH, FULL, PROD_RTT_MS, QUICK, log, r3
from bench.floor import bench_round_trips
from bench.hot import HotSetup, bench_exact_n, bench_hot, bench_runout, latency_summary, start_hot
from bench.latency import bench_latency, bench_streaming
from bench.load import (
    bench_cold_start_extra,
    bench_memory,
    bench_overshoot,
    bench_throughput,
    cold_call,
)
from bench.report import markdown, targets
from bench.stack import start_stack

# --------------------------------------------------------------------------- main


@contextlib.contextmanager
def section(res: dict[str, Any], name: str) -> Iterator[dict[str, Any]]:
    log(f"{name} ...")
    t0 = time.perf_counter()
    box: dict[str, Any] = {}
    try:
        yield box
        res[name] = box.get("value", box)
    except Exception as exc:  # noqa: BLE001 - one broken section must not hide the others
        traceback.print_exc()
        res[name] = {"error": f"{type(exc).__name__}: {exc}"}
    log(f"{name} done in {time.perf_counter() - t0:.1f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small counts, a few seconds")
    ap.add_argument(
        "--out",
        help="results file (default bench/results.json, quick: "
        "bench/results-quick.json); the .md goes next to it",
    )
    ap.add_argument("--threads", type=int, default=32, help="gunicorn THREADS (default 32)")
    ap.add_argument("--emulator", help="use this running emulator (host:port) instead")
    ap.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="also cProfile N in-process calls (bench/profile.txt)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs)")
    args = ap.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    out = (
        Path(args.out)
        if args.out
        else BENCH / ("results-quick.json" if args.quick else "results.json")
    )
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="tollgate-bench-"))
    cmd = "python -m bench.run" + (" --quick" if args.quick else "")
    res: dict[str, Any] = {
        "meta": {
            "mode": cfg.name,
            "command": cmd,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "upstream_latency_ms": cfg.upstream_latency_ms,
            "chunk_delay_ms": cfg.chunk_delay_ms,
            "threads": args.threads,
            "production_rtt_ms_assumed": PROD_RTT_MS,
            "config": {k: v for k, v in cfg.__dict__.items()},
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    }
    failed = False
    log(f"{cfg.name} run, work dir {work}")
    try:
        st = start_stack(cfg, work, args)
    except Exception:
        traceback.print_exc()
        log(f"could not start the stack; logs in {work}")
        return 2
    try:
        data, headers = cold_call(st)
        st.fn.start()
        first = st.fn.first_200("/v1/chat/completions", data, headers)
        log(f"function up: first proxied answer {first['status']} after {first['total_ms']} ms")
        if first["status"] != 200:
            raise RuntimeError(f"first call failed: {first}")
        floor: dict[str, Any] = {}
        with section(res, "latency") as box:
            box["value"] = bench_latency(st)
            floor = box["value"].pop("floor")
        with section(res, "streaming") as box:
            box["value"] = bench_streaming(st)
        with section(res, "firestore") as box:
            if not floor:
                raise RuntimeError("no floor: the latency section failed")
            box["floor_ms"] = floor
            box["round_trips"] = bench_round_trips(st, args.profile)
            box["production_rtt_ms_assumed"] = PROD_RTT_MS
        fs = res.get("firestore", {})
        rt = fs.get("round_trips", {})
        if "total" in rt and "overhead_ms" in res.get("latency", {}):
            # the answer waits for the round trips before upstream only: a plain answer
            # is settled after its last byte, a stream after its last event
            rtt = fs["floor_ms"]["reserve"]["p50"]
            cpu = max(0.0, res["latency"]["overhead_ms"]["p50"] - rt["before_first_byte"] * rtt)
            fs["projected_production_overhead_ms"] = {
                "assumption": f"{PROD_RTT_MS} ms per sequential Firestore round trip on the "
                "answer's path (function and Firestore in one region) plus "
                "the measured overhead above those round trips on the "
                "emulator (CPU, platform hop)",
                "non_streaming": r3(rt["before_first_byte"] * PROD_RTT_MS + cpu),
                "first_byte": r3(rt["before_first_byte"] * PROD_RTT_MS + cpu),
                "cpu_above_floor_ms": r3(cpu),
            }
        res["writes"] = {k: v for k, v in rt.get("writes", {}).items()} if rt else {}
        with section(res, "throughput") as box:
            box["value"] = bench_throughput(st)
        with section(res, "overshoot") as box:
            box["exact"] = bench_overshoot(st, "exact")
            box["over"] = bench_overshoot(st, "over")
        with section(res, "memory") as box:
            box["value"] = bench_memory(st)
        with section(res, "cold_start") as box:
            st.fn.stop()  # one function process at a time on 2 cores
            box["value"] = bench_cold_start_extra(st, first)
        # issue 15: one busy project over 2 recorded instances (st.fn is stopped now)
        hs: HotSetup | None = None
        with section(res, "hot") as box:
            hs = start_hot(st)
            box["value"] = bench_hot(st, hs)
        with section(res, "hot_runout") as box:
            if hs is None:
                raise RuntimeError("the hot run's instances did not start")
            box["value"] = bench_runout(st, hs)
        with section(res, "exact_n_2_instances") as box:
            if hs is None:
                raise RuntimeError("the hot run's instances did not start")
            box["value"] = bench_exact_n(st, hs)
        if hs is not None:
            for f in hs.instances:
                f.stop()
    except Exception:
        traceback.print_exc()
        failed = True
    finally:
        for close in reversed(st.closers):
            with contextlib.suppress(Exception):
                close()
    res["added_latency"] = latency_summary(res)
    res["meta"]["duration_s"] = r3(time.perf_counter() - started)
    res["meta"]["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    res["targets"] = targets(res)
    failed = failed or any(isinstance(v, dict) and "error" in v for v in res.values())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2, default=str) + "\n")
    md = markdown(res)
    out.with_suffix(".md").write_text(md)
    print(md)
    log(f"wrote {out} and {out.with_suffix('.md')}")
    if failed or args.keep:
        log(f"logs kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
