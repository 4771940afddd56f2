"""The ``log`` function: a member's page (``web/``) and the JSON API behind it
(docs/log-api.md).

The page uses relative URLs that start with ``log/``; depending on where the page
was opened they reach us as ``/app.js`` or ``/log/app.js`` (or ``/log/log/app.js``
after a trailing slash), so leading ``/log`` segments are stripped.

Visibility follows the *key*, not the user (``viewer``): a key sees its own project
only, a member's key their own calls there, a lead's key every member's. The same
holds for the groups of ``/api/usage`` and for the burn rates of ``/api/me``
(``burn.py``): a lead's key projects every member of the project, a member's key only
themselves.
"""

from __future__ import annotations

import functools
import hashlib
import mimetypes
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import flask

from functions.core import auth, ids
from functions.core.budget import Topup, period_key, topped_up
from functions.core.errors import InvalidRequest, NotFound, TollgateError
from functions.core.holds import utcnow
from functions.core.pricing import format_usd
from functions.core.records import topups_of
from functions.core.settings import Settings
from functions.httpio import SECURITY_HEADERS, OnePer, error_response, internal_error, json_response
from functions.log.viewer import Viewer, filters_for
from functions.store import burn, reports
from functions.store.client import Store, make_client
from functions.store.views import Views

WEB = Path(__file__).resolve().parents[2] / "web"
ASSETS = {
    "/": "index.html",
    "/app.js": "app.js",
    "/app.css": "app.css",
    "/shared.js": "shared.js",  # with the admin console
    "/shared.css": "shared.css",  # with the admin console
}
CALL_FIELDS = (
    "ts",
    "call_id",
    "project",
    "user",
    "key_name",
    "model",
    "upstream_model",
    "route",
    "status",
    "input_tokens",
    "cached_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost_usd",
    "latency_ms",
    "streamed",
    "cached",
    "estimated",
    "tag",
)
CSV_MAX_ROWS = 10_000
# the log API's group_by values -> the report's (a log page speaks of members)
LOG_GROUP_BY = {"day": "day", "model": "model", "member": "user", "key": "key", "tag": "tag"}


def strip_log(path: str) -> str:
    while path == "/log" or path.startswith("/log/"):
        path = path[4:] or "/"
    return path or "/"


@functools.cache
def _asset(name: str) -> tuple[bytes, str, str]:
    body = (WEB / name).read_bytes()
    kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return body, f"{kind}; charset=utf-8", '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


class LogApp:
    def __init__(self, store: Store, views: Views | None = None) -> None:
        self.store = store  # the key's configuration (the proxy's reads)
        self.views = views or Views(store.db)  # what the page shows

    @classmethod
    def from_settings(cls, settings: Settings) -> LogApp:
        return cls(Store(make_client(settings)))

    def handle(self, request: flask.Request) -> flask.Response:
        path = strip_log(request.path)
        try:
            if request.method not in ("GET", "HEAD"):
                raise NotFound(f"The log page only answers GET, not {request.method}.")
            if path in ASSETS:
                resp = self._asset(ASSETS[path], request)
            elif path.startswith("/api/"):
                resp = self._api(path[5:], request)
            else:
                raise NotFound(f"Nothing at {path[:200]}; the page is at log/.")
        except TollgateError as err:
            resp = error_response(err)
        except Exception as exc:  # noqa: BLE001 - the last line of defence
            resp = internal_error(exc, "log")
        resp.headers.update(SECURITY_HEADERS)
        if path.startswith("/api/"):
            resp.headers["Cache-Control"] = "no-store"  # answers hold a member's data
        return resp

    def _asset(self, name: str, request: flask.Request) -> flask.Response:
        body, kind, etag = _asset(name)
        if request.headers.get("If-None-Match") == etag:
            return flask.Response(status=304, headers={"ETag": etag})
        return flask.Response(
            body, content_type=kind, headers={"ETag": etag, "Cache-Control": "no-cache"}
        )

    # --- API ---------------------------------------------------------------------

    def _viewer(self, request: flask.Request) -> Viewer:
        key = auth.key_from_header(request.headers.get("Authorization"))
        ctx = auth.check_context(self.store.load_call_context(auth.key_hash(key), None), utcnow())
        return Viewer.of(ctx)

    def _api(self, name: str, request: flask.Request) -> flask.Response:
        viewer = self._viewer(request)
        if name == "me":
            return json_response(self._me(viewer))
        f = filters_for(viewer, request.args)
        if name == "calls":
            return self._calls(f, request.args)
        if name == "daily":
            return json_response({"data": self._daily(f)})
        if name == "usage":
            return json_response(self._usage(f, request.args))
        if name == "totals":
            row = self.views.aggregate(f, None)["data"][0]
            return json_response({k: v for k, v in row.items() if k != "group"})
        raise NotFound(f"No log API '{name[:100]}'.")

    def _me(self, viewer: Viewer) -> dict[str, Any]:
        now = utcnow()
        p = self.views.project(viewer.project)
        out = [self._project(viewer, p, now)] if p is not None and not p.get("archived") else []
        return {"user": {"id": viewer.user, "name": viewer.name}, "projects": out}

    def _project(self, viewer: Viewer, p: dict[str, Any], now: datetime) -> dict[str, Any]:
        project_id = viewer.project
        budget_period = str(p.get("budget_period", "monthly"))
        period = period_key(budget_period, now)
        # whose budgets the page projects: a lead's whole project, a member themselves
        # budgets as enforced now: with their top-ups in force
        members = (
            {
                str(d.get("user")): topped_up(d.get("budget_nano"), topups_of(d), now)
                for d in self.views.members(project_id)
            }
            if viewer.lead
            else {}
        )
        mine = topped_up(viewer.budget_nano, viewer.topups, now)
        members[viewer.user] = mine
        project_budget = topped_up(p.get("budget_nano"), topups_of(p), now)
        pid, mid = (
            ids.project_counter(project_id, period),
            ids.member_counter(project_id, viewer.user, period),
        )
        mids = {u: ids.member_counter(project_id, u, period) for u in members}
        states = self.views.counters(project_id, [pid, mid, *mids.values()])
        pc, mc = states[pid], states[mid]
        entry = {
            "id": project_id,
            "name": p.get("name", project_id),
            "role": viewer.role,
            "period": period,
            "budget_period": p.get("budget_period"),
            "budget_usd": _usd(project_budget),
            "topups": _topups(topups_of(p), None, now) + _topups(viewer.topups, viewer.user, now),
            "spent_usd": format_usd(pc.spent),
            "held_usd": format_usd(pc.held),  # by calls in flight
            # reserved by busy instances (escrow grants): not free either
            "reserved_usd": format_usd(pc.escrow),
            "member_budget_usd": _usd(mine),
            "member_spent_usd": format_usd(mc.spent),
        }
        if viewer.lead:
            entry["members"] = sorted(members)
        budgets = [burn.Budget(None, project_budget, pc.spent, pc.held)] + [
            burn.Budget(
                u, None if b is None else int(b), states[mids[u]].spent, states[mids[u]].held
            )
            for u, b in sorted(members.items())
        ]
        entry["burn"] = self.views.burn(project_id, budget_period, budgets, now)
        return entry

    def _calls(self, f: reports.Filters, args: Any) -> flask.Response:
        if args.get("format") == "csv":
            rows, token = self.views.records(f, limit=1000)
            while token and len(rows) < CSV_MAX_ROWS:
                more, token = self.views.records(f, limit=1000, page_token=token)
                rows += more
            return flask.Response(
                reports.to_csv(rows),
                mimetype="text/csv",
                headers={"Content-Disposition": "attachment; filename=tollgate-calls.csv"},
            )
        limit = reports.parse_limit(args.get("limit"), default=100, maximum=500)
        rows, token = self.views.records(f, limit=limit, page_token=args.get("page_token"))
        calls = [{k: r.get(k) for k in CALL_FIELDS} for r in map(reports.record_json, rows)]
        return json_response({"data": calls, "next_page_token": token})

    def _daily(self, f: reports.Filters) -> list[dict[str, Any]]:
        """Every UTC day of the range, newest first, days without calls included (the
        page's chart shows quiet days as such, not as a gap that closes up)."""
        now = utcnow()
        _, days = reports.day_window(f, now)
        seen: dict[str, dict[str, Any]] = {}
        token = None
        while True:
            page = self.views.aggregate(f, "day", limit=200, page_token=token, now=now)
            seen.update((r["group"], r) for r in page["data"])
            token = page["next_page_token"]
            if not token:
                break
        zero = {"calls": 0, "cost_usd": format_usd(0)}
        return [
            {"day": d, **{k: seen.get(d, zero)[k] for k in ("calls", "cost_usd")}} for d in days
        ]

    def _usage(self, f: reports.Filters, args: Any) -> dict[str, Any]:
        """Aggregates grouped by ``group_by`` (``member`` is the admin API's ``user``)."""
        group_by = args.get("group_by") or None
        if group_by not in (None, *LOG_GROUP_BY):
            raise InvalidRequest(
                f"'group_by' must be one of {', '.join(LOG_GROUP_BY)}.", param="group_by"
            )
        limit = reports.parse_limit(args.get("limit"), default=50, maximum=200)
        return self.views.aggregate(
            f,
            LOG_GROUP_BY.get(group_by or "", group_by),
            limit=limit,
            page_token=args.get("page_token"),
        )


def _usd(nano: Any) -> str | None:
    return None if nano is None else format_usd(int(nano))


# one per instance and settings (Firestore client, HTTP session, caches)
log_for: OnePer[Settings, LogApp] = OnePer(LogApp.from_settings)


def _topups(topups: Iterable[Topup], user: str | None, now: datetime) -> list[dict[str, Any]]:
    """Top-ups in force, for the page: who gets them, how much, until when, why."""
    return [
        {
            "user": user,
            "amount_usd": format_usd(t.amount_nano),
            "until": t.until.isoformat(),
            "note": t.note,
        }
        for t in topups
        if t.until > now
    ]
