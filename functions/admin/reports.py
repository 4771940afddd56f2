"""``/usage``, ``/queries``, ``/ratelimits``, ``/audit``: what was spent, grouped or
call by call (also as CSV), the upstream's last rate-limit headers per external key,
and who changed what. Every read is ``store/views.py``'s."""

from __future__ import annotations

from typing import Any

import flask

from functions.admin.responses import Resp, ok
from functions.core.errors import InvalidRequest
from functions.store import reports
from functions.store.views import Views


class Reports:
    def __init__(self, views: Views) -> None:
        self.views = views

    def usage(self, args: Any, **_: Any) -> Resp:
        f = reports.parse_filters(args)
        return ok(
            self.views.aggregate(
                f,
                args.get("group_by") or None,
                limit=int_arg(args, "limit", 50, 200),
                page_token=args.get("page_token"),
            )
        )

    def queries(self, args: Any, **_: Any) -> Resp:
        f = reports.parse_filters(args)
        rows, token = self.views.records(
            f, limit=int_arg(args, "limit", 100, 1000), page_token=args.get("page_token")
        )
        if args.get("format") == "csv":
            return flask.Response(
                reports.to_csv(rows),
                mimetype="text/csv",
                headers={
                    "content-disposition": "attachment; filename=tollgate-usage.csv",
                    **({"x-next-page-token": token} if token else {}),
                },
            )
        return ok({"data": [reports.record_json(r) for r in rows], "next_page_token": token})

    def ratelimits(self, **_: Any) -> Resp:
        docs = self.views.all("ratelimits")
        return ok({"data": sorted(docs, key=lambda d: str(d.get("external_key")))})

    def audit(self, args: Any, **_: Any) -> Resp:
        return ok(
            self.views.audit(
                limit=int_arg(args, "limit", 50, 1000), page_token=args.get("page_token")
            )
        )


def int_arg(args: Any, name: str, default: int, hi: int) -> int:
    raw = args.get(name)
    if raw is None:
        return default
    if not str(raw).isascii() or not str(raw).isdigit() or not 1 <= int(raw) <= hi:
        raise InvalidRequest(f"'{name}' must be an integer from 1 to {hi}.", param=name)
    return int(raw)
