"""The ``admin`` function: routing and authorisation. A route names its handler as
``"resource.method"``; the resources are ``resources.py``'s, one module each. The API
is documented in docs/admin-api.md.

Two kinds of caller: an administrator with a named admin token (compared in
constant time against every configured token, so timing says nothing about which
one nearly matched), or a project lead with their own proxy key, limited to the
member operations of their own project (routes marked ``lead=True``).
"""

from __future__ import annotations

import hmac
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import flask

from functions.admin import oidc
from functions.admin.console import console_path
from functions.admin.console import serve as serve_console
from functions.admin.resources import Resources
from functions.core import auth
from functions.core.errors import InvalidApiKey, PermissionDenied, TollgateError
from functions.core.holds import utcnow
from functions.core.records import CallContext
from functions.core.settings import Settings
from functions.httpio import OnePer, error_response, internal_error, parse_json, read_body
from functions.store.client import Store, make_client
from functions.store.secrets import CachedSecrets, store_for

ADMIN_TOKENS_SECRET = "tollgate-admin-tokens"
# ids in paths: printable ASCII, no leading "." or "_" (Firestore reserves those forms)
_ID_OK = re.compile(r"^[A-Za-z0-9][\x21-\x7e]{0,255}$")
# How long an instance trusts its copy of the admin tokens. Removing a token must take
# effect within seconds on every instance (an audit found a removed token working for a
# minute); a re-read is one Secret Manager access, cheap at admin-API traffic.
TOKENS_TTL_S = 3.0
# the routes Cloud Scheduler calls with its service account's ID token (oidc.py)
SCHEDULED = frozenset({"reconciliation.run", "operations.sweep"})


@dataclass(frozen=True)
class Actor:
    name: str  # recorded in audit records
    lead_of: str | None = None  # a lead's project; None for an administrator
    user: str | None = None


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: str
    lead: bool = False


def _r(method: str, path: str, handler: str, lead: bool = False) -> Route:
    regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path)
    return Route(method, re.compile(f"^{regex}$"), handler, lead)


ROUTES = [
    _r("GET", "/users", "users.index"),
    _r("POST", "/users", "users.create"),
    _r("GET", "/users/{user}", "users.show"),
    _r("PATCH", "/users/{user}", "users.update"),
    _r("POST", "/users/{user}/disable", "users.disable"),
    _r("GET", "/external-keys", "external_keys.index"),
    _r("POST", "/external-keys", "external_keys.create"),
    _r("POST", "/external-keys/{key}/rotate", "external_keys.rotate"),
    _r("DELETE", "/external-keys/{key}", "external_keys.destroy"),
    _r("PATCH", "/external-keys/{key}", "external_keys.update"),
    # OpenAI's organisation admin key (reads the Usage and Costs APIs; never proxies)
    _r("GET", "/openai-admin-key", "reconciliation.show_admin_key"),
    _r("PUT", "/openai-admin-key", "reconciliation.put_admin_key"),
    _r("DELETE", "/openai-admin-key", "reconciliation.delete_admin_key"),
    _r("POST", "/reconcile", "reconciliation.run"),
    _r("GET", "/reconciliations", "reconciliation.index"),
    _r("GET", "/models", "models.index"),
    _r("POST", "/models", "models.create"),
    _r("POST", "/models/load-prices", "models.load_prices"),
    _r("GET", "/models/{model}", "models.show"),
    _r("POST", "/models/{model}/costs", "models.add_cost"),
    _r("GET", "/projects", "projects.index"),
    _r("POST", "/projects", "projects.create"),
    _r("GET", "/projects/{project}", "projects.show"),
    _r("PATCH", "/projects/{project}", "projects.update"),
    _r("POST", "/projects/{project}/archive", "projects.archive"),
    _r("GET", "/projects/{project}/members", "members.index", lead=True),
    _r("POST", "/projects/{project}/members", "members.create", lead=True),
    _r("PATCH", "/projects/{project}/members/{user}", "members.update", lead=True),
    _r("DELETE", "/projects/{project}/members/{user}", "members.destroy", lead=True),
    _r("GET", "/projects/{project}/members/{user}/keys", "keys.index"),
    _r("POST", "/projects/{project}/members/{user}/keys", "keys.create"),
    _r("POST", "/projects/{project}/members/{user}/keys/{name}/rotate", "keys.rotate", lead=True),
    _r("PATCH", "/projects/{project}/members/{user}/keys/{name}", "keys.update", lead=True),
    _r("DELETE", "/projects/{project}/members/{user}/keys/{name}", "keys.destroy"),
    _r("GET", "/projects/{project}/topups", "topups.index", lead=True),
    _r("POST", "/projects/{project}/topups", "topups.create", lead=True),
    _r("GET", "/projects/{project}/limits", "limits.index"),
    _r("PUT", "/projects/{project}/limits/{model}", "limits.update"),
    _r("PUT", "/projects/{project}/limits/{model}/users/{user}", "limits.update"),
    _r("DELETE", "/projects/{project}/limits/{model}", "limits.destroy"),
    _r("DELETE", "/projects/{project}/limits/{model}/users/{user}", "limits.destroy"),
    _r("POST", "/projects/{project}/cache/flush", "projects.flush_cache"),
    _r("GET", "/projects/{project}/alerts", "alerts.show"),
    _r("PUT", "/projects/{project}/alerts", "alerts.update"),
    _r("POST", "/sweep", "operations.sweep"),
    _r("GET", "/usage", "reports.usage"),
    _r("GET", "/queries", "reports.queries"),
    _r("GET", "/ratelimits", "reports.ratelimits"),
    _r("GET", "/audit", "reports.audit"),
    # who the token belongs to (the console's sign-in): any admin, any lead of any project
    _r("GET", "/whoami", "operations.whoami", lead=True),
]


def match(method: str, path: str) -> tuple[Route, dict[str, str]]:
    from functions.core.errors import MethodNotAllowed, NotFound

    path = path.removeprefix("/admin") or "/"
    allowed = []
    for route in ROUTES:
        m = route.pattern.match(path)
        if m:
            if route.method == method:
                # the path is already percent-decoded by the server: decoding again
                # would turn "%252F" into "/"
                params = m.groupdict()
                if any(not _ID_OK.match(v) for v in params.values()):
                    raise NotFound("No such resource.")
                return route, params
            allowed.append(route.method)
    if allowed:
        raise MethodNotAllowed(
            f"{method} is not allowed on {path[:200]}; use {' or '.join(sorted(set(allowed)))}."
        )
    raise NotFound(f"Unknown admin path {path[:200]}; see docs/admin-api.md.")


class AdminTokens:
    """Named admin tokens from the secret store, re-read every ``TOKENS_TTL_S`` seconds."""

    def __init__(self, secrets: CachedSecrets, clock: Callable[[], float] = time.monotonic) -> None:
        self.secrets = secrets
        self.clock = clock
        self._tokens: dict[str, str] = {}
        self._at = -1e9
        self._lock = threading.Lock()

    def _load(self) -> dict[str, str]:
        with self._lock:
            if self.clock() - self._at >= TOKENS_TTL_S:
                try:
                    raw = json.loads(self.secrets.store.get(ADMIN_TOKENS_SECRET))
                    self._tokens = {str(k): str(v) for k, v in raw.items() if v}
                except Exception:  # noqa: BLE001 - missing or malformed: no admin can log in
                    self._tokens = {}
                self._at = self.clock()
            return self._tokens

    def name_of(self, token: str) -> str | None:
        found = None
        for name, value in self._load().items():
            # compare with every token, without stopping early
            if hmac.compare_digest(token.encode(), value.encode()):
                found = name
        return found


class Admin:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        secrets: CachedSecrets,
        clock: Callable[[], datetime] = utcnow,
        resources: Resources | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.tokens = AdminTokens(secrets)
        self.clock = clock
        self.resources = resources or Resources.from_store(settings, store, secrets)
        self.scheduler = oidc.SchedulerTokens(
            settings.scheduler_audience, settings.scheduler_sa, settings.oidc_certs_url
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Admin:
        backend = store_for(settings.secret_backend, settings.secrets_file, settings.gcp_project)
        return cls(settings, Store(make_client(settings)), CachedSecrets(backend))

    def handle(self, request: flask.Request) -> flask.Response:
        where = console_path(request.path)
        if where is not None:  # the console's static files: no token needed
            return serve_console(request, where)
        try:
            route, params = match(request.method, request.path)
            actor = self._authorise(request.headers.get("Authorization"), route, params)
            body: Any = None
            if request.method in ("POST", "PATCH", "PUT"):
                raw = read_body(request, 1024 * 1024)
                body = parse_json(raw) if raw.strip() else {}
            handler = self.resources.handler(route.handler)
            return handler(actor=actor, body=body, args=request.args, **params)
        except TollgateError as err:
            return error_response(err)
        except Exception as exc:  # noqa: BLE001 - the last line of defence
            return internal_error(exc, "admin")

    def _authorise(self, header: str | None, route: Route, params: dict[str, str]) -> Actor:
        parts = (header or "").split()
        if len(parts) != 2 or parts[0].lower() != "bearer":
            raise InvalidApiKey(
                "Send 'Authorization: Bearer ADMIN_TOKEN' (or a project "
                "lead's proxy key for member operations)."
            )
        token = parts[1]
        name = self.tokens.name_of(token)
        if name is not None:
            return Actor(name)
        if route.handler in SCHEDULED and oidc.looks_like_jwt(token):
            return Actor(f"scheduler:{self.scheduler.verify(token)}")
        if not token.startswith(auth.KEY_PREFIX):
            raise InvalidApiKey("Unknown admin token.")
        ctx: CallContext = auth.check_context(
            self.store.load_call_context(auth.key_hash(token), None), self.clock()
        )
        assert ctx.member is not None and ctx.project is not None
        if ctx.member.role != "lead":
            raise PermissionDenied("Only administrators and project leads may use the admin API.")
        # a lead route names the project it acts on, which must be the key's; the one
        # lead route without a project (/whoami) only tells the caller about themselves
        if not route.lead or params.get("project", ctx.project.id) != ctx.project.id:
            raise PermissionDenied(
                f"A project lead may only manage the members of project '{ctx.project.id}'."
            )
        return Actor(f"lead:{ctx.member.user}@{ctx.project.id}", ctx.project.id, ctx.member.user)


# one per instance and settings (Firestore client, HTTP session, caches)
admin_for: OnePer[Settings, Admin] = OnePer(Admin.from_settings)
