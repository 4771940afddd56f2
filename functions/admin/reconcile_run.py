"""Running a reconciliation: read OpenAI's Usage and Costs APIs for some UTC days, read
Tollgate's usage records of the same days, compare them (``reconcile.py``, pure), write
one ``reconciliations`` document per (day, external key), and alert on drift.

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
from datetime import UTC, date, datetime, timedelta
from typing import Any

import requests
from google.cloud import firestore

from functions.admin.usage_api import COMPLETIONS, COSTS, EMBEDDINGS, UsageApi
from functions.core import ids, reconcile
from functions.core.errors import InvalidRequest
from functions.core.holds import utcnow
from functions.core.reconcile import KeyMap
from functions.store import indexes
from functions.store.alerts import SWEEP_TIMEOUT_S, AlertConfig, post_once
from functions.store.provision import Writer
from functions.store.secrets import CachedSecrets

log = logging.getLogger("tollgate.reconcile")
ADMIN_KEY_DOC = ("config", "openai_admin_key")
# Not under tollgate-ext-: the openai function may read those secrets, and this key reads
# the organisation's usage and costs; deploy.sh grants it to the admin function alone.
ADMIN_KEY_SECRET = "tollgate-openai-admin-key"
LOOKBACK_DAYS = 7
RECORD_FIELDS = [
    "model",
    "upstream_model",
    "status",
    "cached",
    "estimated",
    "external_key",
    "input_tokens",
    "cached_tokens",
    "output_tokens",
    "cost_nano",
]


def reconciliation_id(day: str, external_key: str) -> str:
    return ids.reconciliation(day, external_key)


class Reconciler:
    def __init__(
        self,
        db: firestore.Client,
        secrets: CachedSecrets,
        base_url: str,
        threshold_percent: float,
        clock: Callable[[], datetime] = utcnow,
        api: UsageApi | None = None,
    ) -> None:
        self.db = db
        self.secrets = secrets
        self.base_url = base_url
        self.threshold = threshold_percent
        self.clock = clock
        self._api = api
        self.writer = Writer(db)

    def api(self) -> UsageApi:
        if self._api is None:
            snap = self.db.collection(ADMIN_KEY_DOC[0]).document(ADMIN_KEY_DOC[1]).get()
            d = (snap.to_dict() or {}) if snap.exists else {}
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
        keys = {k.external_key for k in self.key_maps()}
        out = []
        for n in range(LOOKBACK_DAYS, 0, -1):
            day = today - timedelta(days=n)
            docs = [
                s.to_dict() or {}
                for s in indexes.query(
                    self.db, "reconciliations", equals={"day": day.isoformat()}
                ).stream()
            ]
            stable = {d.get("external_key") for d in docs if d.get("stable")}
            if not keys or not keys <= stable:
                out.append(day)
        return out

    def key_maps(self) -> list[KeyMap]:
        out = []
        for s in indexes.query(self.db, "external_keys").stream():
            d = s.to_dict() or {}
            if d.get("openai_project_id"):
                out.append(
                    KeyMap(s.id, str(d["openai_project_id"]), d.get("openai_key_id") or None)
                )
        return sorted(out, key=lambda k: k.external_key)

    # --- the run ----------------------------------------------------------------------------

    def run(self, days: Sequence[date], actor: str) -> dict[str, Any]:
        maps = self.key_maps()
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

    def _records(self, key: str, day: date) -> list[dict[str, Any]]:
        """The day's usage records sent with this external key: a record names the key
        it was sent with. Records booked before records named it are taken from the
        projects that use the key now (a project that changed keys that day is then
        attributed to its new key)."""
        s, e = reconcile.day_bounds(day)
        span = [
            ("ts", ">=", datetime.fromtimestamp(s, UTC)),
            ("ts", "<", datetime.fromtimestamp(e, UTC)),
        ]
        by_key = indexes.query(
            self.db,
            "usage",
            equals={"external_key": key},
            ranges=span,
            order=[("ts", indexes.DESC)],
        )
        out = [r.to_dict() or {} for r in by_key.select(RECORD_FIELDS).stream()]
        projects = [
            p.id for p in indexes.query(self.db, "projects", equals={"external_key": key}).stream()
        ]
        for p in projects:
            q = indexes.query(
                self.db, "usage", equals={"project": p}, ranges=span, order=[("ts", indexes.DESC)]
            )
            out += [
                d
                for d in (r.to_dict() or {} for r in q.select(RECORD_FIELDS).stream())
                if not d.get("external_key")
            ]
        return out

    def _day(
        self,
        day: date,
        maps: list[KeyMap],
        usage: list[dict[str, Any]],
        costs: list[dict[str, Any]],
        actor: str,
    ) -> list[dict[str, Any]]:
        records = {k.external_key: self._records(k.external_key, day) for k in maps}
        by_project: dict[str, list[KeyMap]] = {}
        for k in maps:
            by_project.setdefault(k.project_id, []).append(k)
        now = self.clock()
        _, day_end = reconcile.day_bounds(day)
        refs = {
            k.external_key: self.db.collection("reconciliations").document(
                reconciliation_id(day.isoformat(), k.external_key)
            )
            for k in maps
        }
        prev = {s.id: s.to_dict() or {} for s in self.db.get_all(list(refs.values())) if s.exists}
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
            before = prev.get(refs[k.external_key].id, {})
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
        batch = self.db.batch()
        for doc in docs:
            batch.set(refs[doc["external_key"]], doc)
        self.writer.audit(
            batch,
            actor,
            "reconcile.run",
            day.isoformat(),
            {
                "keys": [d["external_key"] for d in docs],
                "over_threshold": [d["external_key"] for d in docs if d["over_threshold"]],
            },
        )
        batch.commit()
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
        for s in indexes.query(self.db, "projects", equals={"external_key": key}).stream():
            cfg = AlertConfig.of((s.to_dict() or {}).get("alerts"))
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
