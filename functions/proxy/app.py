"""The ``openai`` function: authenticate, price, hold, forward, settle.

Order of a call (each step raises a ``TollgateError`` that becomes an OpenAI-shaped
answer): route → key format → body read → one batched read of key, user, member,
project, model and limits → every check of ``admission`` (key, origin, tag, body,
model) → estimate → hold (atomic) → upstream → settle (atomic) → response with cost
headers. What a call is booked at is ``billing``'s, from what happened.

Once a hold is placed, ``_forward`` settles it on every path out, so no hold
outlives its call unless the instance itself dies (then the sweep books it).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import secrets
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import flask

from functions.core import admission, auth, billing, cors, pricing, quote, routes, tokens
from functions.core.billing import Admitted
from functions.core.budget import (
    CounterState,
    Limit,
    limits_for,
    period_key,
    rate_limits_for,
    topped_up,
)
from functions.core.errors import (
    BudgetExceeded,
    InvalidRequest,
    ModelNotFound,
    ModelNotPriced,
    PermissionDenied,
    TollgateError,
    UpstreamAuthError,
)
from functions.core.holds import HoldPlan, Outcome, utcnow
from functions.core.records import CallContext, Caller, LimitRecord
from functions.core.settings import Settings
from functions.httpio import error_response, internal_error, json_response, parse_json, read_body
from functions.proxy.hooks import CallHooks
from functions.proxy.streaming import relay
from functions.proxy.upstream import Upstream, UpstreamResponse, forward_headers, response_headers
from functions.store.alerts import Alerts
from functions.store.client import Store, make_client
from functions.store.ledger import Ledger, ledger_for_settings
from functions.store.secrets import CachedSecrets, store_for

log = logging.getLogger("tollgate.proxy")

_LAST_USED_EVERY = timedelta(seconds=60)
# Degrading a call to fit the budget stops short of answers too small to be of use.
MIN_CLAMPED_OUTPUT = 16
CLAMPED_HEADER = "x-tollgate-max-tokens-clamped"
SOFT_HEADER = "x-tollgate-soft-limit-exceeded"  # the soft budgets this call overspent


@dataclass(frozen=True)
class Ask:
    """One request as the proxy read it, before any check: what every step of a call
    (the quote, the guessed hold, the checks, the plan) needs to know of it."""

    kind: str
    khash: str
    body: Any  # as parsed: admission.check says whether it is a body of this route
    now: datetime
    origin: str | None
    tag: str | None  # the x-tollgate-tag header as sent
    cache_header: str | None
    count: Callable[[], int]  # the body's input tokens, counted on first use

    @property
    def model(self) -> str | None:
        return routes.model_of(self.body)


class Proxy:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        ledger: Ledger,
        upstream: Upstream,
        secrets_: CachedSecrets,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.store = store
        self.ledger = ledger
        self.upstream = upstream
        self.secrets = secrets_
        self.clock = clock
        self.hooks = CallHooks(ledger, Alerts(store.db))
        # places guessed holds while the configuration is read (see _guess)
        self.holds = ThreadPoolExecutor(max_workers=64, thread_name_prefix="tollgate-hold")

    @classmethod
    def from_settings(cls, settings: Settings) -> Proxy:
        db = make_client(settings)
        backend = store_for(settings.secret_backend, settings.secrets_file, settings.gcp_project)
        return cls(
            settings,
            Store(db),
            ledger_for_settings(db, settings),
            Upstream(settings.upstream_connect_timeout_s, settings.upstream_timeout_s),
            CachedSecrets(backend),
        )

    def handle(self, request: flask.Request) -> flask.Response:
        origin = request.headers.get("Origin")
        try:
            if request.method == "OPTIONS" and origin is not None:  # a browser's preflight
                return self._preflight(request, origin)
            route = routes.match(request.method, request.path)
            key = auth.key_from_header(request.headers.get("Authorization"))
            if route.kind in (routes.MODELS_LIST, routes.MODEL_GET):
                resp = self._models(route, auth.key_hash(key), origin)
            else:
                resp = self._call(route.kind, auth.key_hash(key), request, origin)
            if origin is not None:  # the key's project lists it (checked before anything)
                resp.headers.update(cors.response_headers(origin))
            return resp
        except TollgateError as err:
            resp = error_response(err)
            if origin is not None and self.store.origin_listed(origin):
                resp.headers.update(cors.response_headers(origin))  # the page may read why
            return resp
        except Exception as exc:  # noqa: BLE001 - the last line of defence
            return internal_error(exc, "openai")

    def _preflight(self, request: flask.Request, origin: str) -> flask.Response:
        """A browser asks whether ``origin`` may call: yes if some live project lists it
        (the key, which a preflight does not carry, is checked on the call itself)."""
        routes.match("GET" if request.path.startswith("/v1/models") else "POST", request.path)
        if not self.store.origin_listed(origin):
            raise PermissionDenied(
                f"The origin '{origin[:100]}' is not allowed by any "
                "project; a project lead can ask an administrator to add "
                "it to the project's cors_origins."
            )
        return flask.Response(
            status=204,
            headers=cors.preflight_headers(
                origin, request.headers.get("Access-Control-Request-Headers")
            ),
        )

    # --- models ----------------------------------------------------------------

    def _models(self, route: routes.Route, khash: str, origin: str | None) -> flask.Response:
        now = self.clock()
        ctx = auth.check_context(self.store.load_call_context(khash, None), now)
        admission.check_origin(ctx, origin)
        allowed = ctx.project.allowed_models
        found = self.store.models(None if "*" in allowed else list(allowed))
        usable = [
            m
            for m in found
            if ctx.project.allows(m.id)
            and pricing.price_in_force(m.prices, now)
            and (not ctx.key.allowed_models or m.id in ctx.key.allowed_models)
        ]
        objs = {
            m.id: {"id": m.id, "object": "model", "created": m.created, "owned_by": "openai"}
            for m in usable
        }
        if route.kind == routes.MODELS_LIST:
            return json_response(
                {"object": "list", "data": sorted(objs.values(), key=lambda o: str(o["id"]))}
            )
        if route.model_id not in objs:
            raise ModelNotFound(
                f"The model '{route.model_id}' does not exist or you do not have access to it.",
                param="model",
            )
        return json_response(objs[route.model_id])

    # --- proxied calls ---------------------------------------------------------

    def _call(
        self, kind: str, khash: str, request: flask.Request, origin: str | None
    ) -> flask.Response:
        raw = read_body(request, self.settings.max_body_bytes)
        body = routes.with_default_model(kind, parse_json(raw))
        ask = Ask(
            kind,
            khash,
            body,
            self.clock(),
            origin,
            tag=request.headers.get(admission.TAG_HEADER),
            cache_header=request.headers.get("x-tollgate-cache"),
            count=functools.cache(lambda: tokens.estimate_input_tokens(kind, body, body["model"])),
        )
        if quote.wants_dry_run(request.headers.get(quote.HEADER)):
            return self._quote(ask)
        guess = self._guess(ask)
        try:
            ok, ckey = self._checked(ask, self.store.load_call_context(khash, ask.model))
            hit = ckey and self.hooks.cached_answer(
                ok.caller,
                kind,
                body,
                ckey,
                ok.tag,
                ask.now,
                _budget_limits(ok.caller, body["model"], ask.now),
            )
            if hit:
                self._drop(guess)
                return hit
            fresh = self._plan(ask, ok)
            try:
                admitted = self._confirm(guess, fresh)
            except BudgetExceeded as refused:
                admitted = self._clamped(ask, ok, fresh, refused)
        except BaseException:
            self._drop(guess)
            raise
        admitted.cache_key = ckey
        try:
            resp = self._forward(admitted, request, raw)
        except TollgateError as err:
            # settled already: its answer is the error, which names the call (it has a
            # usage record) and runs what waits for the answer once it is out
            resp = error_response(err)
            resp.headers["x-tollgate-call-id"] = admitted.plan.call_id
            resp.call_on_close(admitted.answered)
            return resp
        except Exception as exc:  # noqa: BLE001 - as handle(), but the id must survive
            resp = internal_error(exc, "openai")
            resp.headers["x-tollgate-call-id"] = admitted.plan.call_id
            resp.call_on_close(admitted.answered)
            return resp
        if ckey is not None:
            resp.headers["x-tollgate-cache"] = "miss"
        return resp

    def _quote(self, ask: Ask) -> flask.Response:
        """Every check of a real call, then the quote; no hold, no upstream, no record."""
        ok, _ = self._checked(ask, self.store.load_call_context(ask.khash, ask.model))
        a = self._plan(ask, ok)
        answer = quote.build(a, self.ledger.states(a.plan))
        headers = {quote.HEADER: "1"}
        if answer["remaining_usd"] is not None:
            headers["x-tollgate-budget-remaining-usd"] = answer["remaining_usd"]
        return json_response(answer, headers=headers)

    # --- one round trip before upstream ------------------------------------------
    #
    # A call needs the key's configuration (to check it is still valid and to price the
    # call) and a hold (before anything is forwarded). Done one after the other that is
    # two sequential Firestore round trips. So when this instance has seen the key
    # recently, the hold its last-seen configuration implies is placed *while* the fresh
    # configuration is read; the hold is kept only if the fresh read gives the very same
    # plan (same limits, estimate, period, windows) and passes every check. Otherwise it
    # is taken back and the call is held again from the fresh read, as before. A revoked
    # key, a disabled user or a lowered budget is therefore still seen by the very next
    # call: nothing is forwarded before the fresh read has been checked.

    def _guess(self, ask: Ask) -> tuple[Admitted, Future[Any]] | None:
        recent = self.store.recent_context(ask.khash, ask.model) if ask.model else None
        if recent is None or ask.body.get("previous_response_id") is not None:
            return None  # (the earlier response's tokens need a query of their own)
        try:
            ok, ckey = self._checked(ask, recent)
            if ckey is not None:
                return None
            a = self._plan(ask, ok)
        except TollgateError:
            return None  # the fresh read decides, and says why
        return a, self.holds.submit(self.ledger.reserve, a.plan)

    def _confirm(self, guess: tuple[Admitted, Future[Any]] | None, fresh: Admitted) -> Admitted:
        """The fresh plan, held: by the guess's hold if it is the same plan."""
        if guess is not None:
            g = guess[0].plan
            if dataclasses.replace(fresh.plan, call_id=g.call_id, touch_key=g.touch_key) == g:
                guess[1].result()  # its refusal (budget, rate) is this call's
                fresh.plan = dataclasses.replace(fresh.plan, call_id=g.call_id)
                return fresh
            self._drop(guess)
        self.ledger.reserve(fresh.plan)
        return fresh

    def _clamped(
        self, ask: Ask, ok: admission.Checked, a: Admitted, refused: BudgetExceeded
    ) -> Admitted:
        """Degrade instead of refuse, for a project that opted in: the call is held again
        with the largest output cap the tightest budget still pays for, and sent with
        that cap. The refusal stands when not even ``MIN_CLAMPED_OUTPUT`` tokens fit,
        or when another call took the room in between (the second hold is verified
        like the first: nothing here can overspend)."""
        project = a.ctx.project
        if not project.clamp_output or not routes.CAP_FIELDS[a.spec.route]:
            raise refused
        cap = pricing.largest_cap(
            a.rates, a.input_tokens, a.spec.n, self.ledger.room(a.plan), a.spec.output_cap - 1
        )
        if cap < MIN_CLAMPED_OUTPUT:
            raise refused
        clamped = self._plan(ask, ok, routes.with_cap(a.spec.route, ask.body, cap))
        # the body sent upstream must carry the lowered cap
        clamped.spec = dataclasses.replace(clamped.spec, modified=True)
        clamped.clamped_to = cap
        self.ledger.reserve(clamped.plan)
        return clamped

    def _drop(self, guess: tuple[Admitted, Future[Any]] | None) -> None:
        """Take back a guessed hold that will not be used."""
        if guess is None:
            return
        try:
            guess[1].result()
        except Exception:  # noqa: BLE001 - refused or failed: nothing was held
            return
        self.ledger.cancel(guess[0].plan)

    def _checked(self, ask: Ask, ctx: CallContext | None) -> tuple[admission.Checked, str | None]:
        """Every check of ``admission``, and the call's cache key."""
        ok = admission.check(ask.kind, ctx, ask.body, ask.now, origin=ask.origin, tag=ask.tag)
        return ok, self.hooks.cache_key(ok.caller, ask.kind, ask.body, ask.cache_header)

    def _plan(
        self, ask: Ask, ok: admission.Checked, body: dict[str, Any] | None = None
    ) -> Admitted:
        """Everything about the call's hold, from its configuration; no write. ``body``:
        the body to send, when it is not the client's (a clamped output cap)."""
        kind, ctx, tag, now, price = ask.kind, ok.caller, ok.tag, ask.now, ok.price
        body = ask.body if body is None else body
        project, user = ctx.project, ctx.user
        model = body["model"]
        default_cap = project.default_max_output_tokens or self.settings.default_max_output_tokens
        spec = routes.prepare(
            kind,
            body,
            default_cap=default_cap,
            safety_id=routes.safety_identifier(project.id, user.id, self.settings.safety_salt),
        )
        input_tokens = ask.count()
        if spec.previous_response_id is not None:
            earlier = self.store.response_tokens(project.id, spec.previous_response_id)
            if earlier is None:
                # Not answered through this project: its context is unknown (and may be
                # another project's conversation), so no hold could bound it.
                raise InvalidRequest(
                    "'previous_response_id' is not a response this project received through "
                    "Tollgate, so the context it continues cannot be held; send the earlier "
                    "turns in 'input' instead.",
                    param="previous_response_id",
                )
            input_tokens += earlier
        hold_tier = spec.service_tier
        if hold_tier == "auto":
            # "auto" is served at the OpenAI project's default tier, which may be priority:
            # hold at the dearer of default and priority. Without a priority price, ask for
            # "default" outright rather than risk a priority bill held at default rates.
            if pricing.rates_for(price, "priority", input_tokens) is None:
                hold_tier = "default"
                spec = dataclasses.replace(
                    spec,
                    service_tier=hold_tier,
                    modified=True,
                    body={**spec.body, "service_tier": hold_tier},
                )
            else:
                hold_tier = pricing.dearest_tier(
                    price, ("default", "priority"), input_tokens, spec.output_cap, spec.n
                )
        rates = pricing.rates_for(price, hold_tier, input_tokens)
        if rates is None:
            raise ModelNotPriced(
                f"The model '{model}' has no price for service_tier '{spec.service_tier}'.",
                param="service_tier",
            )
        estimate = pricing.estimate_nano(rates, input_tokens, spec.output_cap, spec.n)
        limits = _budget_limits(ctx, model, now)
        plan = HoldPlan(
            call_id="call_" + secrets.token_hex(12),
            project=project.id,
            user=user.id,
            key_name=ctx.key.name,
            model=model,
            route=kind,
            budget_period=project.budget_period,
            period_key=period_key(project.budget_period, now),
            limits=limits,
            estimate_nano=estimate,
            admitted_at=now,
            external_key=project.external_key,
            expires_at=now + timedelta(seconds=self.settings.hold_ttl_s),
            streamed=spec.stream,
            tag=tag,
            estimate_tokens=input_tokens + spec.output_cap * spec.n,
            touch_key=ctx.key.key_hash if _stale(ctx.key.last_used_at, now) else None,
            rate_limits=rate_limits_for(
                project=project.id,
                user=user.id,
                model=model,
                at=now,
                project_limits=(project.rpm, project.tpm),
                model_limits=_rpm_tpm(ctx.model_limit),
                member_model_limits=_rpm_tpm(ctx.member_model_limit),
                key_name=ctx.key.name,
                key_rpm=ctx.key.rpm,
            ),
        )
        return Admitted(ctx, spec, plan, price, rates, input_tokens)

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

    def _forward(self, a: Admitted, request: flask.Request, raw: bytes) -> flask.Response:
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
            self._settle(a, booked)
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
            a, resp, cap_bytes=self.settings.stream_cap_bytes, started=started, settle=self._settle
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
            self._settle(a, outcome)
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

    def _settle(self, a: Admitted, outcome: Outcome) -> list[CounterState] | None:
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


def _budget_limits(ctx: Caller, model: str, now: datetime) -> list[Limit]:
    """The budget counters a call of ``model`` by this key is booked against now."""
    return limits_for(
        project=ctx.project.id,
        user=ctx.member.user,
        model=model,
        period=period_key(ctx.project.budget_period, now),
        project_limit=topped_up(ctx.project.budget_nano, ctx.project.topups, now),
        member_limit=topped_up(ctx.member.budget_nano, ctx.member.topups, now),
        model_limit=ctx.model_limit.budget_nano if ctx.model_limit else None,
        member_model_limit=(ctx.member_model_limit.budget_nano if ctx.member_model_limit else None),
        key_name=ctx.key.name,
        key_limit=ctx.key.budget_nano,
        project_windows=[(k, period_key(k, now), n) for k, n in ctx.project.windows],
        member_windows=[(k, period_key(k, now), n) for k, n in ctx.member.windows],
        soft=frozenset(
            scope
            for scope, soft in (
                ("project", ctx.project.budget_soft),
                ("member", ctx.member.budget_soft),
                ("model", ctx.model_limit is not None and ctx.model_limit.budget_soft),
                (
                    "member_model",
                    (ctx.member_model_limit is not None and ctx.member_model_limit.budget_soft),
                ),
                ("key", ctx.key.budget_soft),
            )
            if soft
        ),
    )


def _rpm_tpm(limit: LimitRecord | None) -> tuple[int | None, int | None]:
    return (limit.rpm, limit.tpm) if limit else (None, None)


def _stale(last_used: datetime | None, now: datetime) -> bool:
    # "last used" is shown to people: minute precision is plenty, and skipping the
    # write on busy keys saves a document write per call.
    return last_used is None or now - last_used > _LAST_USED_EVERY


@functools.cache
def proxy_for(settings: Settings) -> Proxy:
    """One Proxy (Firestore client, HTTP session, caches) per instance and settings."""
    return Proxy.from_settings(settings)
