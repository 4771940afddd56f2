"""A held call's way out: to the upstream with the project's organisation key, back to
the client, and settled on every path (an answer when the WSGI server closes it, a
stream in its generator, a failure at once). What it is booked at is
``core/billing.py``'s; what follows a settlement (alerts, the cache, rate-limit
headers) is ``hooks``'s.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import datetime

import flask

from functions.core import billing, pricing, routes
from functions.core.billing import Admitted
from functions.core.budget import CounterState
from functions.core.errors import UpstreamAuthError
from functions.core.holds import Outcome
from functions.core.records import Caller
from functions.core.settings import Settings
from functions.proxy.hooks import CallHooks
from functions.proxy.streaming import relay
from functions.proxy.upstream import Upstream, UpstreamResponse, forward_headers, response_headers
from functions.store.client import Store
from functions.store.ledger import Ledger
from functions.store.secrets import CachedSecrets

log = logging.getLogger("tollgate.proxy")
CLAMPED_HEADER = "x-tollgate-max-tokens-clamped"
SOFT_HEADER = "x-tollgate-soft-limit-exceeded"  # the soft budgets this call overspent


class Forwarder:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        ledger: Ledger,
        upstream: Upstream,
        secrets: CachedSecrets,
        hooks: CallHooks,
        clock: Callable[[], datetime],
    ) -> None:
        self.settings = settings
        self.store = store
        self.ledger = ledger
        self.upstream = upstream
        self.secrets = secrets
        self.hooks = hooks
        self.clock = clock

    def _secret_for(self, ctx: Caller) -> tuple[str, str]:
        ext = self.store.external_key(ctx.project.external_key)
        if ext is None:
            raise UpstreamAuthError(
                "This project has no upstream API key configured; ask an administrator."
            )
        try:
            secret = self.secrets.get(ext.secret_name, ext.secret_version)
        except Exception:  # noqa: BLE001 - any store failure means "no usable key"
            raise UpstreamAuthError(
                "The project's upstream API key could not be read; ask an administrator."
            ) from None
        return secret, (ext.base_url or self.settings.upstream_base_url).rstrip("/")

    def forward(self, a: Admitted, request: flask.Request, raw: bytes) -> flask.Response:
        """Send the held call upstream and answer with what came back; every path out,
        exceptions included, settles the hold."""
        started = time.monotonic()
        sent, outcome = False, None
        try:
            secret, base = self._secret_for(a.ctx)
            data = json.dumps(a.spec.body).encode() if a.spec.modified else raw
            sent = True  # from here upstream may bill the call
            resp = self.upstream.post(
                base + routes.UPSTREAM_PATH[a.spec.route],
                data,
                forward_headers(dict(request.headers), secret),
                stream=a.spec.stream,
            )
            if resp.raw is not None:
                return self._stream(a, resp, started)  # its generator settles the call
            if resp.status in (401, 403):
                log.error(
                    "upstream rejected the organisation key of project %s (%s)",
                    a.plan.project,
                    resp.status,
                )
            outcome = billing.from_answer(
                a, resp.status, resp.body, resp.headers.get("x-request-id")
            )
            self.hooks.ratelimits(a, resp, self.clock())
            self.hooks.remember(a, resp, outcome, self.clock())
        except BaseException as err:
            # Every path out of a held call settles it, exceptions included.
            booked = outcome or billing.from_failure(
                err, sent=sent, estimate_nano=a.plan.estimate_nano
            )
            booked.latency_ms = int((time.monotonic() - started) * 1000)
            self.settle(a, booked)
            raise
        return self._reply_then_settle(a, resp, outcome, started)

    def _stream(self, a: Admitted, resp: UpstreamResponse, started: float) -> flask.Response:
        headers = response_headers(resp.headers)
        headers["x-tollgate-call-id"] = a.plan.call_id
        if a.clamped_to is not None:
            headers[CLAMPED_HEADER] = str(a.clamped_to)
        headers["cache-control"] = "no-cache"
        headers["x-accel-buffering"] = "no"
        # settled in the generator after the last event; what waits for the answer
        # (alert posts) runs at close(), once the body's end is written too
        body = relay(
            a, resp, cap_bytes=self.settings.stream_cap_bytes, started=started, settle=self.settle
        )
        # content_type, not mimetype: Flask appends "; charset=utf-8" to a text/* mimetype,
        # which doubled the charset upstream already sends.
        reply = flask.Response(
            body,
            status=200,
            headers=headers,
            content_type=headers.pop("content-type", "text/event-stream"),
        )
        reply.call_on_close(a.answered)
        return reply

    def _reply_then_settle(
        self, a: Admitted, resp: UpstreamResponse, outcome: Outcome, started: float
    ) -> flask.Response:
        """The answer, settled when the WSGI server closes the response: after its last
        byte is written, so the settlement commit is not between upstream and the
        client (one Firestore round trip less on the critical path).

        The request is still open while ``close()`` runs, so on Cloud Run the instance
        still has CPU (platform notes 1.2, the same reason streams settle in their
        generator's ``finally``); both gunicorn and werkzeug call ``close()`` whether
        or not the client stayed. Were it never called, the hold expires and the
        sweep books the call at its estimate, as for a crash."""
        remaining = self.ledger.remaining_after(a.plan, outcome.cost_nano)
        outcome.soft_exceeded = self.ledger.soft_exceeded(a.plan, outcome.cost_nano)
        reply = flask.Response(
            resp.body, status=resp.status, headers=self._headers(a, resp, outcome, remaining)
        )

        def settle() -> None:
            outcome.latency_ms = int((time.monotonic() - started) * 1000)
            self.settle(a, outcome)
            a.answered()

        reply.call_on_close(settle)
        return reply

    @staticmethod
    def _headers(
        a: Admitted, resp: UpstreamResponse, outcome: Outcome, remaining: int | None
    ) -> dict[str, str]:
        headers = response_headers(resp.headers)
        headers["x-tollgate-call-id"] = a.plan.call_id
        if a.clamped_to is not None:
            headers[CLAMPED_HEADER] = str(a.clamped_to)
        if outcome.status == "ok":
            headers["x-tollgate-cost-usd"] = pricing.format_usd(outcome.cost_nano)
        if remaining is not None:
            headers["x-tollgate-budget-remaining-usd"] = pricing.format_usd(remaining)
        if outcome.soft_exceeded:
            headers[SOFT_HEADER] = "; ".join(outcome.soft_exceeded)
        return headers

    def settle(self, a: Admitted, outcome: Outcome) -> list[CounterState] | None:
        try:
            states = self.ledger.settle(a.plan, outcome, a.extra)
        except Exception as exc:  # noqa: BLE001
            # The hold stays live and the sweep will book it at the estimate.
            log.error(
                "settlement of %s failed (%s); the sweep will book it",
                a.plan.call_id,
                type(exc).__name__,
            )
            return None
        log.info(
            "call %s project=%s user=%s model=%s status=%s cost_nano=%d",
            a.plan.call_id,
            a.plan.project,
            a.plan.user,
            a.plan.model,
            outcome.status,
            outcome.cost_nano,
        )
        if states is not None:
            self.hooks.after_settle(a, outcome, states, self.clock())
        return states
