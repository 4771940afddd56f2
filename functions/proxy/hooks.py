"""What the proxy does around a call besides holding and settling budget: the response
cache, the upstream rate-limit headers kept per external key, and budget alerts.

None of these adds a round trip to an ordinary call: a cache lookup happens only for
projects (or requests) that opted in, cache entries and rate-limit headers ride in the
settlement write, and an alert is posted only by the call that crosses a threshold.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import datetime
from typing import Any

import flask

from functions.core import cache
from functions.core.alerting import DEFAULT_THRESHOLDS, AlertConfig, crossings
from functions.core.billing import USAGE_OF, Admitted
from functions.core.budget import CounterState, Limit, period_key, remaining_nano
from functions.core.holds import HoldPlan, Outcome
from functions.core.pricing import Usage, format_usd
from functions.core.records import Caller
from functions.proxy.upstream import UpstreamResponse
from functions.store.alerts import Alerts
from functions.store.ledger import Ledger

log = logging.getLogger("tollgate.proxy")
RATELIMIT_EVERY_S = 5.0  # per external key and instance: fresh enough, cheap enough


class CallHooks:
    def __init__(self, ledger: Ledger, alerts: Alerts) -> None:
        self.ledger = ledger  # the one writer of money records, a cached call's included
        self.alerts = alerts
        self._rl_written: dict[str, float] = {}
        self._lock = threading.Lock()

    # --- response cache --------------------------------------------------------------

    def cache_key(
        self, ctx: Caller, kind: str, body: dict[str, Any], header: str | None
    ) -> str | None:
        if body.get("stream") or not cache.wanted(ctx.project.cache_enabled, header):
            return None
        return cache.key(ctx.project.id, kind, body)

    def cached_answer(
        self,
        ctx: Caller,
        kind: str,
        body: dict[str, Any],
        ckey: str,
        tag: str | None,
        now: datetime,
        limits: list[Limit],
    ) -> flask.Response | None:
        """A stored answer, booked as a free ``cached`` call, or None on a miss.

        The entry and the call's budget counters are read in one round trip, so a hit
        carries the same budget header as any non-streaming 200, and its record says
        which period it belongs to and which tokens it saved."""
        period = period_key(ctx.project.budget_period, now)
        plan = HoldPlan(
            call_id="call_" + ckey[:8] + format(time.time_ns(), "x")[-16:],
            project=ctx.project.id,
            user=ctx.user.id,
            key_name=ctx.key.name,
            model=str(body["model"]),
            route=kind,
            budget_period=ctx.project.budget_period,
            period_key=period,
            limits=tuple(limits),
            estimate_nano=0,
            admitted_at=now,
            expires_at=now,
            tag=tag,
        )
        doc, states = self.ledger.read_with(plan, "cache_entries", ckey)
        if not cache.usable(doc, ctx.project.id, now):
            return None
        assert doc is not None
        self.ledger.book_cached(plan, _saved_usage(kind, doc["body"]))
        headers = {
            "x-tollgate-cache": "hit",
            "x-tollgate-call-id": plan.call_id,
            "x-tollgate-cost-usd": format_usd(0),
        }
        remaining = remaining_nano(limits, states)
        if remaining is not None:
            headers["x-tollgate-budget-remaining-usd"] = format_usd(remaining)
        return flask.Response(
            doc["body"], status=200, headers=headers, content_type=doc.get("content_type")
        )

    def remember(
        self, a: Admitted, resp: UpstreamResponse, outcome: Outcome, now: datetime
    ) -> None:
        """Queue the answer for the cache (written with the settlement) if it may be."""
        if a.cache_key is None or outcome.status != "ok" or resp.status != 200:
            return
        doc = cache.entry(
            a.plan.project,
            a.spec.route,
            a.plan.model,
            resp.body,
            resp.headers.get("content-type", "application/json"),
            a.ctx.project.cache_ttl_s or cache.DEFAULT_TTL_S,
            now,
        )
        if doc is not None:
            a.extra.append(("cache_entries", a.cache_key, doc))

    # --- upstream rate-limit headers ----------------------------------------------------

    def ratelimits(self, a: Admitted, resp: UpstreamResponse, now: datetime) -> None:
        headers = {k: v for k, v in resp.headers.items() if k.startswith("x-ratelimit-")}
        ext = a.ctx.project.external_key
        if not headers or not ext:
            return
        with self._lock:
            last = self._rl_written.get(ext, -1e9)
            if time.monotonic() - last < RATELIMIT_EVERY_S:
                return
            self._rl_written[ext] = time.monotonic()
        a.extra.append(
            ("ratelimits", ext, {"external_key": ext, "seen_at": now, "headers": headers})
        )

    # --- alerts ---------------------------------------------------------------------------

    def after_settle(
        self, a: Admitted, outcome: Outcome, states: list[CounterState], now: datetime
    ) -> None:
        """Record the thresholds this call crossed; the post waits in the call's
        ``after_answer`` until the client has its whole answer (every answer of a held
        call runs it at its ``close()``: a plain one, a stream, an error)."""
        project = a.ctx.project
        try:
            crossed = crossings(
                a.plan.limits,
                states,
                outcome.cost_nano,
                project.alert_thresholds or DEFAULT_THRESHOLDS,
            )
            if not crossed:
                return
            config = AlertConfig(project.alert_webhook, project.alert_format)
            pending = self.alerts.record(
                project=a.plan.project,
                period=a.plan.period_key,
                period_kind=a.plan.budget_period,
                config=config,
                crossed=crossed,
                now=now,
            )
        except Exception as exc:  # noqa: BLE001 - an alert must never fail the call
            log.warning("budget alert check failed: %s", type(exc).__name__)
            return
        if pending and config.webhook:
            a.after_answer.append(lambda: self.alerts.deliver(config, pending))


def _saved_usage(kind: str, body: bytes) -> Usage:
    """The tokens the stored answer reports: what the hit saved (zero if unreadable)."""
    try:
        usage = json.loads(body).get("usage")
        return USAGE_OF[kind](usage) if isinstance(usage, dict) else Usage()
    except (ValueError, AttributeError, TypeError, KeyError):
        return Usage()
