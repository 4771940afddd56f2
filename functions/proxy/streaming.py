"""Relaying an upstream event stream to the client, and booking it however it ends.

Bytes go out as they arrive: each upstream read that completes one or more events
becomes one write, so chunk timing is preserved. The hold is settled in the
generator's ``finally:``, which runs on every way out - normal end, upstream
failure, or the client going away. Under WSGI the proxy cannot notice a client
disconnect by itself: it learns of it only when its next write fails, at which
point the server closes this generator (``GeneratorExit`` at the ``yield``). So a
disconnect is seen at the next upstream chunk, upstream is closed then, and the
settlement runs while the request is still open (gen2 throttles CPU after the
response ends, so no work is left for later).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from functions.core import billing, sse
from functions.core.billing import Admitted
from functions.core.holds import Outcome
from functions.proxy.upstream import StreamBroken, UpstreamResponse

SettleFn = Callable[[Admitted, Outcome], object]


def relay(
    a: Admitted, resp: UpstreamResponse, *, cap_bytes: int, started: float, settle: SettleFn
) -> Iterator[bytes]:
    meter = sse.StreamMeter(a.spec.route)
    buf = sse.EventBuffer()
    sent = 0
    status = "upstream_cut"
    try:
        try:
            for chunk in resp.iter_chunks():
                out = _passable(buf.feed(chunk), meter, a.spec.client_wants_usage)
                if not out:
                    continue
                if sent + len(out) > cap_bytes:
                    # Gen2 cuts a streamed response at 10 MB; stop first, bill what was
                    # seen, and say why, rather than being cut off unbilled.
                    status = "stream_too_large"
                    yield sse.error_event(
                        "The response reached Tollgate's streamed-size limit and was ended; "
                        "ask for less output per call.",
                        "stream_too_large",
                    )
                    break
                sent += len(out)
                yield out
            else:
                if buf.pending.strip():
                    # end the unterminated event so the error event stays its own
                    yield buf.pending + b"\n\n"
                status = "ok" if meter.finished else "upstream_cut"
                if not meter.finished:
                    yield sse.error_event(
                        "The upstream stream ended early.", "upstream_stream_error"
                    )
        except StreamBroken:
            status = "upstream_cut"
            yield sse.error_event(
                "The upstream stream broke off; what was received has been billed as an estimate.",
                "upstream_stream_error",
            )
    except GeneratorExit:
        status = "client_closed"
        raise
    finally:
        resp.close()  # closes upstream's connection: it stops generating for us
        outcome = _outcome(a, meter, status, resp.headers.get("x-request-id"))
        outcome.latency_ms = int((time.monotonic() - started) * 1000)
        settle(a, outcome)


def _passable(raw_events: list[bytes], meter: sse.StreamMeter, wants_usage: bool) -> bytes:
    out = []
    for raw in raw_events:
        if meter.observe(sse.parse(raw)) and not wants_usage:
            continue  # the usage chunk the proxy asked for on the client's behalf
        out.append(raw)
    return b"".join(out)


def _outcome(a: Admitted, meter: sse.StreamMeter, status: str, rid: str | None) -> Outcome:
    if meter.usage is not None:
        # Upstream's own count, even if the stream then broke or the client left.
        return billing.from_usage(
            a,
            meter.usage,
            tier=meter.service_tier,
            model=meter.model,
            request_id=rid,
            response_id=meter.response_id,
            status=status,
        )
    return billing.from_text_seen(
        a,
        meter.seen_text,
        status=status,
        model=meter.model,
        request_id=rid,
        response_id=meter.response_id,
    )
