"""The ``openai`` function: authenticate, price, hold, forward, settle.

Order of a call (each step raises a ``TollgateError`` that becomes an OpenAI-shaped
answer): route → key format → body read → one batched read of key, user, member,
project, model and limits → every check of ``admission`` (key, origin, tag, body,
model) → the hold's plan (``core/plan.py``: estimate, counters, rate windows) → hold
(atomic) → upstream → settle (atomic) → response with cost headers (``forward``).
What a call is booked at is ``billing``'s, from what happened.

Once a hold is placed, ``Forwarder.forward`` settles it on every path out, so no hold
outlives its call unless the instance itself dies (then the sweep books it).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import Any

import flask

from functions.core import admission, auth, cors, plan, pricing, quote, routes, tokens
from functions.core.billing import Admitted
from functions.core.errors import (
    BudgetExceeded,
    ModelNotFound,
    PermissionDenied,
    TollgateError,
)
from functions.core.holds import utcnow
from functions.core.plan import Ask
from functions.core.records import CallContext
from functions.core.settings import Settings
from functions.httpio import (
    OnePer,
    error_response,
    internal_error,
    json_response,
    parse_json,
    read_body,
)
from functions.proxy.forward import Forwarder
from functions.proxy.hooks import CallHooks
from functions.proxy.upstream import Upstream
from functions.store.alerts import Alerts
from functions.store.client import Store, make_client
from functions.store.ledger import Ledger, ledger_for_settings
from functions.store.secrets import CachedSecrets, store_for

# Degrading a call to fit the budget stops short of answers too small to be of use.
MIN_CLAMPED_OUTPUT = 16


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
        self.clock = clock
        self.hooks = CallHooks(ledger, Alerts(store.db))
        self.forwarder = Forwarder(settings, store, ledger, upstream, secrets_, self.hooks, clock)
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
        objs = {m["id"]: m for m in admission.usable_models(ctx, found, now)}
        if route.kind == routes.MODELS_LIST:
            return json_response({"object": "list", "data": list(objs.values())})
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
                plan.budget_limits(ok.caller, body["model"], ask.now),
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
            resp = self.forwarder.forward(admitted, request, raw)
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
        return plan.plan(ask, ok, self.settings, self.store.response_tokens, body)


# one per instance and settings (Firestore client, HTTP session, caches)
proxy_for: OnePer[Settings, Proxy] = OnePer(Proxy.from_settings)
