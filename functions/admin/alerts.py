"""``/projects/{project}/alerts``: where and when a project's budget alerts go (a
webhook, the percentages of the budget that trigger one, the message format) and the
alerts already sent. Sending is the store's (``store/alerts.py``)."""

from __future__ import annotations

from typing import Any

from functions.admin.responses import Resp, ok
from functions.core import validate as v
from functions.core.alerting import DEFAULT_THRESHOLDS, FORMATS, guess_format
from functions.core.errors import InvalidRequest
from functions.store.provision import Provisioner
from functions.store.views import Views


class ProjectAlerts:
    def __init__(self, prov: Provisioner, views: Views) -> None:
        self.prov = prov
        self.views = views

    def show(self, project: str, **_: Any) -> Resp:
        d = self.prov.get("projects", project, "project")
        sent = list(self.views.where("alerts_sent", project=project).values())
        config = {
            "webhook_url": None,
            "thresholds": list(DEFAULT_THRESHOLDS),
            "format": "json",
            **(d.get("alerts") or {}),
        }
        return ok({"config": config, "sent": sorted(sent, key=lambda a: a["ts"], reverse=True)})

    def update(self, actor: Any, body: Any, project: str, **_: Any) -> Resp:
        b = v.body_object(body)
        v.only_fields(b, {"webhook_url", "thresholds", "format"})
        url = v.text(b, "webhook_url", max_len=500)
        if url is not None and not url.startswith(("http://", "https://")):
            raise InvalidRequest("'webhook_url' must be an http(s) URL.", param="webhook_url")
        thresholds = b.get("thresholds", [50, 80, 100])
        if (
            not isinstance(thresholds, list)
            or not thresholds
            or len(thresholds) > 10
            or not all(
                isinstance(t, int) and not isinstance(t, bool) and 0 < t <= 1000 for t in thresholds
            )
        ):
            raise InvalidRequest(
                "'thresholds' must be a list of 1-10 whole percentages (1-1000).",
                param="thresholds",
            )
        # no format given: the one the webhook's host takes (Slack, Google Chat) or json
        fmt = v.one_of(b, "format", FORMATS) or guess_format(url)
        alerts = {"webhook_url": url, "thresholds": sorted(set(thresholds)), "format": fmt}
        self.prov.update_project(project, actor=actor.name, alerts=alerts)
        return self.show(project)
