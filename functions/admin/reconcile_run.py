"""Running a reconciliation: read OpenAI's Usage and Costs APIs for some UTC days, read
Tollgate's usage records of the same days, compare them (``core/reconcile.py``, pure),
write one ``reconciliations`` document per (day, external key), and alert on drift.
What it reads and writes in Firestore is ``store/reconciliations.py``.

Everything is fetched from OpenAI before anything is written, so a refused admin key
or an unreachable API leaves the books as they were. The documents of one day are
written in one batch with their audit record.

OpenAI's usage data lags minutes to hours: a day is reconciled again on later runs
until two runs after its end saw the same figures from OpenAI (``stable``). By default
a run takes the seven complete days before today and skips those already stable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta
from typing import Any

import requests

from functions.admin.usage_api import COMPLETIONS, COSTS, EMBEDDINGS, UsageApi
from functions.core import reconcile
from functions.core.alerting import AlertConfig
from functions.core.errors import InvalidRequest
from functions.core.holds import utcnow
from functions.core.reconcile import KeyMap
from functions.store.alerts import SWEEP_TIMEOUT_S, post_once
from functions.store.reconciliations import ReconcileBooks
from functions.store.secrets import CachedSecrets

log = logging.getLogger("tollgate.reconcile")
LOOKBACK_DAYS = 7


class Reconciler:
    def __init__(
        self,
        books: ReconcileBooks,
        secrets: CachedSecrets,
        base_url: str,
        threshold_percent: float,
        clock: Callable[[], datetime] = utcnow,
        api: UsageApi | None = None,
    ) -> None:
        self.books = books
        self.secrets = secrets
        self.base_url = base_url
        self.threshold = threshold_percent
        self.clock = clock
        self._api = api

    def api(self) -> UsageApi:
        if self._api is None:
            d = self.books.admin_key()
            if not d.get("secret_name"):
                raise InvalidRequest(
                    "No OpenAI admin key is set: store one with PUT "
                    "/openai-admin-key (tollgate openai-admin-key set)."
                )
            secret = self.secrets.get(
                str(d["secret_name"]), str(d.get("secret_version") or "latest")
            )
            self._api = UsageApi(secret, self.base_url)
        return self._api

    # --- which days ---------------------------------------------------------------------

    def default_days(self) -> list[date]:
        """The complete days of the last week not yet stable for every mapped key."""
        today = self.clock().date()
        keys = {k.external_key for k in self.books.key_maps()}
        out = []
        for n in range(LOOKBACK_DAYS, 0, -1):
            day = today - timedelta(days=n)
            if not keys or not keys <= self.books.stable_keys(day):
                out.append(day)
        return out

    # --- the run ----------------------------------------------------------------------------

    def run(self, days: Sequence[date], actor: str) -> dict[str, Any]:
        maps = self.books.key_maps()
        if not days or not maps:
            return {"days": [d.isoformat() for d in days], "data": [], "unmapped": not maps}
        api = self.api()
        start, _ = reconcile.day_bounds(min(days))
        _, end = reconcile.day_bounds(max(days))
        usage: dict[int, list[dict[str, Any]]] = {}
        costs: dict[int, list[dict[str, Any]]] = {}
        for endpoint in (COMPLETIONS, EMBEDDINGS):
            for b in api.buckets(endpoint, start, end, ("project_id", "api_key_id", "model")):
                usage.setdefault(b.start_time, []).extend(b.results)
        for b in api.buckets(COSTS, start, end, ("project_id", "line_item")):
            costs.setdefault(b.start_time, []).extend(b.results)
        out = []
        for day in sorted(days):
            s, _ = reconcile.day_bounds(day)
            out += self._day(day, maps, usage.get(s, []), costs.get(s, []), actor)
        return {"days": [d.isoformat() for d in sorted(days)], "data": out, "unmapped": False}

    def _day(
        self,
        day: date,
        maps: list[KeyMap],
        usage: list[dict[str, Any]],
        costs: list[dict[str, Any]],
        actor: str,
    ) -> list[dict[str, Any]]:
        records = {k.external_key: self.books.records(k.external_key, day) for k in maps}
        by_project: dict[str, list[KeyMap]] = {}
        for k in maps:
            by_project.setdefault(k.project_id, []).append(k)
        now = self.clock()
        _, day_end = reconcile.day_bounds(day)
        prev = self.books.previous(day, [k.external_key for k in maps])
        docs = []
        for k in maps:
            cost_models, other = reconcile.openai_costs(costs, k.project_id)
            known = set(cost_models) | {
                str(r.get("model")) for r in usage if r.get("project_id") == k.project_id
            }
            project_cost: dict[str, tuple[int, int]] = {}
            for sibling in by_project[k.project_id]:
                for name, (nano, calls) in reconcile.cost_per_row(
                    records[sibling.external_key], known
                ).items():
                    was = project_cost.get(name, (0, 0))
                    project_cost[name] = (was[0] + nano, was[1] + calls)
            doc = reconcile.compare_key(
                day,
                k,
                usage,
                records[k.external_key],
                cost_models,
                other,
                project_cost,
                [x.external_key for x in by_project[k.project_id] if x is not k],
                self.threshold,
            )
            before = prev.get(k.external_key, {})
            after_day = now.timestamp() >= day_end
            doc.update(
                ran_at=now,
                runs=int(before.get("runs") or 0) + 1,
                threshold_percent=str(self.threshold),
                # stable: a second run after the day ended saw the same figures
                stable=bool(
                    after_day
                    and before.get("complete")
                    and before.get("openai_digest") == doc["openai_digest"]
                ),
                complete=after_day,
                alerted_digest=before.get("alerted_digest"),
            )
            docs.append(doc)
        self._alert(docs)
        self.books.write_day(day, docs, actor=actor)
        return docs

    # --- alerts ---------------------------------------------------------------------------

    def _alert(self, docs: list[dict[str, Any]]) -> None:
        """Post once per (day, key) and OpenAI figures: a day that drifts is not posted
        again on every run, only when OpenAI's figures change. A failed post is tried
        again on the next run."""
        for doc in docs:
            if not doc["over_threshold"] or doc.get("alerted_digest") == doc["openai_digest"]:
                continue
            hooks = self._webhooks(doc["external_key"])
            posted = [self._post(cfg, doc) for cfg in hooks]
            if posted and all(posted):
                doc["alerted_digest"] = doc["openai_digest"]
            doc["alerted"] = bool(posted) and all(posted)

    def _webhooks(self, key: str) -> list[AlertConfig]:
        cfgs = {}
        for project in self.books.projects_of(key).values():
            cfg = AlertConfig.of(project.get("alerts"))
            if cfg.webhook:
                cfgs[cfg.webhook] = cfg  # one post per webhook, however many projects
        return list(cfgs.values())

    def _post(self, cfg: AlertConfig, doc: dict[str, Any]) -> bool:
        text = alert_text(doc)
        body: dict[str, Any] = {"text": text}  # Slack and Google Chat: text alone
        if cfg.format == "json":
            body = {
                "type": "reconciliation_drift",
                "day": doc["day"],
                "external_key": doc["external_key"],
                "over_threshold": doc["over_threshold"],
                "max_drift_percent": doc["max_drift_percent"],
                "unbooked_requests": doc["unbooked_requests"],
                "threshold_percent": doc["threshold_percent"],
                "text": text,
            }
        session = requests.Session()
        session.trust_env = False
        res = post_once(session, str(cfg.webhook), body, SWEEP_TIMEOUT_S)
        if not res.ok:
            log.warning(
                "reconciliation alert for %s not delivered (%s)", doc["external_key"], res.error
            )
        return res.ok


def alert_text(doc: dict[str, Any]) -> str:
    what = ", ".join(doc["over_threshold"][:5]) + (" …" if len(doc["over_threshold"]) > 5 else "")
    worst = doc["max_drift_percent"]
    return (
        f"Tollgate: OpenAI's usage for external key '{doc['external_key']}' on "
        f"{doc['day']} differs from Tollgate's books by more than "
        f"{doc['threshold_percent']} % ({what}; largest drift "
        f"{'unbounded' if worst is None else worst + ' %'}; "
        f"{doc['unbooked_requests']} request(s) upstream that Tollgate did not book)."
    )
