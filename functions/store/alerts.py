"""Budget alerts: a project's webhook is told when spend crosses a threshold (50, 80
and 100 % of a budget by default), once per threshold, budget and period.

"Once" is a document created per (counter, threshold) - ``create`` fails if it
exists, so of two calls crossing together exactly one posts. The body is shaped for
where it goes (``FORMATS``): every format carries a readable ``text`` sentence, so
Slack and Google Chat show it as it is. The call that crosses posts after its answer
is written (the request is still open, so Cloud Run still gives CPU; no thread may
outlive it), tries at most twice within ~2 s, and leaves an undelivered alert with
``next_attempt_at``; the admin sweep re-posts those with exponential backoff. A post
is retried only when it may succeed later: connection errors, timeouts, 429, 5xx.
Delivery is at least once (a webhook that answers too late is posted again).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import requests
from google.api_core import exceptions as gexc
from google.cloud import firestore

from functions.core.alerting import (
    AlertConfig,
    alert_fields,
    backoff_s,
    body_for,
)
from functions.core.budget import Limit
from functions.core.holds import utcnow
from functions.store import indexes

log = logging.getLogger("tollgate.alerts")
# In the crossing call's request: short timeouts, and a second try only if the first
# failed fast, so the request is held ~2 s at worst (it was ~3 s with one try).
QUICK_TIMEOUT_S = (0.5, 1.0)
QUICK_BACKOFF_S = 0.25
QUICK_ATTEMPTS = 2
QUICK_BUDGET_S = 2.0
# In the sweep: no caller waits, so a slow webhook gets the time it needs.
SWEEP_TIMEOUT_S = (2.0, 5.0)
SWEEP_BATCH = 20
SWEEP_WORKERS = 10
MAX_ATTEMPTS = 6
CLAIM_S = 120  # a poster's hold on an alert: the sweep leaves it alone meanwhile


@dataclass(frozen=True)
class Attempt:
    """One post's result; ``error`` names the failure, never the URL (it is a secret)."""

    ok: bool
    retryable: bool = False
    error: str | None = None
    retry_after_s: float | None = None


@dataclass(frozen=True)
class Pending:
    """A recorded alert still to post."""

    ref: firestore.DocumentReference
    fields: dict[str, Any]


# --- posting --------------------------------------------------------------------------------


def post_once(
    session: requests.Session, url: str, body: dict[str, Any], timeout: tuple[float, float]
) -> Attempt:
    try:
        # a webhook never redirects: a 3xx is a wrong URL, reported, not followed
        r = session.post(url, json=body, timeout=timeout, allow_redirects=False)
    except (
        requests.ConnectionError,
        requests.Timeout,
        requests.exceptions.ChunkedEncodingError,
    ) as e:
        return Attempt(False, True, type(e).__name__)
    except requests.RequestException as e:  # a bad URL: trying again cannot help
        return Attempt(False, False, type(e).__name__)
    if r.status_code < 300:
        return Attempt(True)
    retry = r.status_code == 429 or r.status_code >= 500
    return Attempt(False, retry, f"http {r.status_code}", _retry_after(r))


def _retry_after(r: requests.Response) -> float | None:
    try:
        return max(0.0, float(r.headers.get("retry-after", "")))
    except ValueError:
        return None  # absent, or an HTTP date: the backoff decides


class Alerts:
    def __init__(self, db: firestore.Client, clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.clock = clock
        self.session = requests.Session()
        self.session.trust_env = False

    def notify(
        self,
        *,
        project: str,
        period: str,
        period_kind: str,
        config: AlertConfig,
        crossed: Sequence[tuple[Limit, int, int]],
        now: datetime,
    ) -> int:
        """Record every crossing and post those this call claimed; returns how many."""
        pending = self.record(
            project=project,
            period=period,
            period_kind=period_kind,
            config=config,
            crossed=crossed,
            now=now,
        )
        self.deliver(config, pending)
        return len(pending)

    def record(
        self,
        *,
        project: str,
        period: str,
        period_kind: str,
        config: AlertConfig,
        crossed: Sequence[tuple[Limit, int, int]],
        now: datetime,
    ) -> list[Pending]:
        """Create one document per crossing; those another call created are skipped.

        With a webhook the document is created claimed (``next_attempt_at`` a little
        ahead): should this instance never post, the sweep does."""
        out = []
        for lim, t, spent in crossed:
            fields = alert_fields(project, period, period_kind, lim, t, spent)
            ref = self.db.collection("alerts_sent").document(f"{lim.counter_id}|{t}")
            doc = {
                **fields,
                "ts": now,
                "webhook": bool(config.webhook),
                "delivered": False if config.webhook else None,
                "attempts": 0,
            }
            if config.webhook:
                doc["next_attempt_at"] = now + timedelta(seconds=CLAIM_S)
            try:
                ref.create(doc)
            except gexc.AlreadyExists:
                continue  # another call crossed it first
            out.append(Pending(ref, fields))
        return out

    def deliver(self, config: AlertConfig, pending: Sequence[Pending]) -> None:
        """Post each recorded alert now, within the quick budget, and record the result.
        Never raises: it runs after the answer, where nothing could report an error."""
        if not config.webhook:
            return
        for p in pending:
            try:
                n, res = self._post_quickly(config.webhook, body_for(config.format, p.fields))
                self._record_result(p.ref, n, res)
            except Exception as exc:  # noqa: BLE001 - still claimed: the sweep posts it
                log.warning("budget alert %s delivery failed: %s", p.ref.id, type(exc).__name__)

    def _post_quickly(self, url: str, body: dict[str, Any]) -> tuple[int, Attempt]:
        start, n = time.monotonic(), 1
        res = post_once(self.session, url, body, QUICK_TIMEOUT_S)
        worst_next = QUICK_BACKOFF_S + sum(QUICK_TIMEOUT_S)
        while (
            not res.ok
            and res.retryable
            and n < QUICK_ATTEMPTS
            and (res.retry_after_s or 0) <= QUICK_BACKOFF_S
            and time.monotonic() - start + worst_next <= QUICK_BUDGET_S
        ):
            time.sleep(QUICK_BACKOFF_S)
            n += 1
            res = post_once(self.session, url, body, QUICK_TIMEOUT_S)
        return n, res

    def _record_result(self, ref: firestore.DocumentReference, attempts: int, res: Attempt) -> None:
        now = self.clock()
        update: dict[str, Any] = {"attempts": attempts, "delivered": res.ok}
        if res.ok:
            update |= {
                "delivered_at": now,
                "next_attempt_at": firestore.DELETE_FIELD,
                "last_error": firestore.DELETE_FIELD,
            }
        else:
            update["last_error"] = res.error
            again = res.retryable and attempts < MAX_ATTEMPTS
            update["next_attempt_at"] = (
                now + timedelta(seconds=backoff_s(attempts, res.retry_after_s))
                if again
                else firestore.DELETE_FIELD
            )
            log.warning(
                "budget alert %s not delivered (%s, attempt %d)%s",
                ref.id,
                res.error,
                attempts,
                "" if again else "; giving up",
            )
        try:
            ref.update(update)
        except gexc.GoogleAPICallError:
            log.warning("could not record delivery of alert %s", ref.id)

    # --- the sweep ----------------------------------------------------------------------

    def resend_due(self, now: datetime | None = None) -> int:
        """Post again the undelivered alerts whose ``next_attempt_at`` has passed (at most
        ``SWEEP_BATCH``, in parallel; every thread ends before this returns); returns
        how many were posted."""
        now = now or self.clock()
        snaps = list(
            indexes.query(
                self.db, "alerts_sent", ranges=[("next_attempt_at", "<=", now)], limit=SWEEP_BATCH
            ).stream()
        )
        claimed = [s for s in snaps if self._claim(s, now)]
        if not claimed:
            return 0
        configs = self._configs({str((s.to_dict() or {}).get("project")) for s in claimed})
        with ThreadPoolExecutor(min(SWEEP_WORKERS, len(claimed))) as pool:
            posted = list(pool.map(lambda s: self._resend(s, configs), claimed))
        return sum(posted)

    def _claim(self, snap: firestore.DocumentSnapshot, now: datetime) -> bool:
        """Move the alert's next attempt ahead, if no one else touched it since it was
        read: of two sweeps, one posts."""
        try:
            snap.reference.update(
                {"next_attempt_at": now + timedelta(seconds=CLAIM_S)},
                option=self.db.write_option(last_update_time=snap.update_time),
            )
            return True
        except (gexc.FailedPrecondition, gexc.NotFound):
            return False

    def _configs(self, projects: set[str]) -> dict[str, AlertConfig]:
        """Each project's alert config as it is now: a changed or removed webhook counts."""
        refs = [self.db.collection("projects").document(p) for p in sorted(projects)]
        return {
            s.id: AlertConfig.of((s.to_dict() or {}).get("alerts"))
            for s in self.db.get_all(refs)
            if s.exists
        }

    def _resend(self, snap: firestore.DocumentSnapshot, configs: dict[str, AlertConfig]) -> bool:
        """Post one alert again; False when there is no webhook any more to post to."""
        doc = snap.to_dict() or {}
        attempts = int(doc.get("attempts") or 0) + 1
        config = configs.get(str(doc.get("project")), AlertConfig(None))
        if not config.webhook:
            self._record_result(
                snap.reference, attempts - 1, Attempt(False, False, "no webhook configured")
            )
            return False
        try:
            body = body_for(config.format, doc)
        except (KeyError, TypeError, ValueError) as e:  # a record this code did not write
            self._record_result(
                snap.reference,
                attempts - 1,
                Attempt(False, False, f"unreadable alert ({type(e).__name__})"),
            )
            return False
        self._record_result(
            snap.reference, attempts, post_once(self.session, config.webhook, body, SWEEP_TIMEOUT_S)
        )
        return True
