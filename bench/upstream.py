"""The benchmark's fake OpenAI upstreams, in a process of their own.

Run by ``bench.run`` (not by hand): three ``tests.fake_upstream.FakeUpstream``
servers on loopback, so the load generator's threads never compete with them for
one interpreter lock:

* ``plain``: a fixed latency before every answer; every stream is spaced by a
  fixed chunk delay (the measured upstream gaps are this server's own);
* ``exact``: bills the request's output cap and, as prompt tokens, exactly the
  proxy's own estimate (``functions.core.tokens.estimate_input_tokens``): actual == estimate;
* ``over``: like ``exact`` but reports ``--extra-tokens`` more prompt tokens than the
  estimate allowed: actual > estimate, by a known amount per call;
* ``hot``: bills like ``exact`` (actual == estimate) with ``plain``'s latency: the hot
  project runs of ``bench/hot.py``, where spend must land exactly on the limit.

Prints one JSON line ``{"plain": URL, "exact": URL, "over": URL, "hot": URL}`` and serves until
its standard input closes (the parent exited) or it gets SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import Any

from functions.core import encodings, tokens
from tests import fake_upstream
from tests.fake_upstream import FakeUpstream, Stream

ROUTE_OF = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
    "/v1/responses": "responses",
}


def _estimate(extra: int) -> Any:
    def count(path: str, body: dict[str, Any]) -> int:
        return tokens.estimate_input_tokens(ROUTE_OF[path], body, body["model"]) + extra

    return count


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.upstream")
    ap.add_argument("--key", required=True)
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--chunk-delay-ms", type=float, default=10.0)
    ap.add_argument("--chunks", type=int, default=12)
    ap.add_argument("--budget-latency-ms", type=float, default=1000.0)
    ap.add_argument("--extra-tokens", type=int, default=1000)
    args = ap.parse_args(argv)

    encodings.get_encoding(encodings.O200K)  # loaded before the first budget call, not during it
    # The fake writes headers and body in separate sends; with Nagle on, the body waits
    # for the client's delayed ACK (up to 40 ms on Linux) and the "fixed" latency is not.
    # Real API servers (and gunicorn) set TCP_NODELAY; so does the fake here.
    fake_upstream._Handler.disable_nagle_algorithm = True
    servers = {
        name: FakeUpstream(valid_keys=(args.key,)).start()
        for name in ("plain", "exact", "over", "hot")
    }
    plain = servers["plain"]
    plain.latency_s = args.latency_ms / 1000
    spec = Stream(chunk_delay_s=args.chunk_delay_ms / 1000, chunks=args.chunks)
    # Every request gets the same stream spacing (ignored by non-streaming requests),
    # instead of a behaviour queued per request.
    plain._next_behaviour = lambda: spec  # type: ignore[method-assign]
    for name, extra in (("exact", 0), ("over", args.extra_tokens)):
        fake = servers[name]
        fake.bill_cap = True
        fake.prompt_tokens = _estimate(extra)
        fake.latency_s = args.budget_latency_ms / 1000
    hot = servers["hot"]
    hot.bill_cap = True
    hot.prompt_tokens = _estimate(0)
    hot.latency_s = args.latency_ms / 1000

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    def watch_parent() -> None:
        sys.stdin.read()  # EOF: the benchmark exited, however it ended
        stop.set()

    threading.Thread(target=watch_parent, daemon=True).start()
    print(json.dumps({name: s.base_url for name, s in servers.items()}), flush=True)
    while not stop.wait(0.5):
        pass
    for s in servers.values():
        s.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
