"""What a budget alert says and when one is due: the thresholds a call's cost crossed,
the structured alert and its sentence, the body each webhook format takes, the format a
webhook's host implies, and the backoff between posts. Pure; recording and posting
alerts is ``store/alerts.py``'s.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from urllib.parse import urlsplit

from functions.core.budget import CounterState, Limit
from functions.core.pricing import format_usd

DEFAULT_THRESHOLDS = (50, 80, 100)
FORMATS = ("json", "slack", "google_chat")
RETRY_BASE_S = 60  # the wait after attempt n is RETRY_BASE_S * 2**(n-1), capped
RETRY_CAP_S = 3600
# what the ``json`` format posts (and the sweep rebuilds a body from)
PAYLOAD_KEYS = (
    "project",
    "limit",
    "scope",
    "user",
    "model",
    "period",
    "period_kind",
    "threshold_percent",
    "spent_usd",
    "spent_nano",
    "budget_usd",
    "budget_nano",
    "text",
)
_SLACK_HOSTS = ("hooks.slack.com",)
_CHAT_HOSTS = ("chat.googleapis.com",)


@dataclass(frozen=True)
class AlertConfig:
    webhook: str | None
    format: str = "json"

    @classmethod
    def of(cls, doc: dict[str, Any] | None) -> AlertConfig:
        d = doc or {}
        return cls(d.get("webhook_url") or None, str(d.get("format") or "json"))


def guess_format(url: str | None) -> str:
    """The format a webhook URL's host takes, for a config that names none."""
    host = (urlsplit(url).hostname or "") if url else ""
    if host in _SLACK_HOSTS:
        return "slack"
    if host in _CHAT_HOSTS:
        return "google_chat"
    return "json"


def crossings(
    limits: Sequence[Limit], after: Sequence[CounterState], cost: int, thresholds: Sequence[int]
) -> list[tuple[Limit, int, int]]:
    """(limit, threshold %, spent) for each threshold this call's cost crossed."""
    out = []
    for lim, st in zip(limits, after, strict=True):
        budget = budget_of(lim)
        if budget is None or budget <= 0 or cost <= 0:
            continue
        before = st.spent - cost
        for t in sorted(set(thresholds)):
            line = budget * t  # compare spent*100 with limit*t: no rounding
            if before * 100 < line <= st.spent * 100:
                out.append((lim, t, st.spent))
    return out


# --- what is posted -----------------------------------------------------------------------


def usd_for_people(nano: int) -> str:
    """Dollars as people read them: cents from $1 up ("$1,234.50"), two significant
    digits below ("$0.029", "$0.0012"), never more than 6 decimals."""
    d = Decimal(nano) / 10**9
    places = 2 if d == 0 or abs(d) >= 1 else min(6, max(2, 1 - abs(d).adjusted()))
    r = d.quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP)
    return f"{'-' if r < 0 else ''}${abs(r):,}"


def budget_of(lim: Limit) -> int | None:
    """The budget a limit alerts on: its hard limit, or its soft one (which only alerts)."""
    return lim.limit_nano if lim.limit_nano is not None else lim.soft_nano


def alert_fields(
    project: str, period: str, period_kind: str, lim: Limit, threshold: int, spent: int
) -> dict[str, Any]:
    """The structured alert (exact money, as everywhere in the API) and its sentence."""
    budget = budget_of(lim) or 0
    period, period_kind = lim.period or period, lim.period_kind or period_kind  # a window
    fields: dict[str, Any] = {
        "project": project,
        "limit": lim.label,
        "scope": lim.scope,
        "user": lim.user,
        "model": lim.model,
        "period": period,
        "period_kind": period_kind,
        "threshold_percent": threshold,
        "spent_nano": spent,
        "spent_usd": format_usd(spent),
        "budget_nano": budget,
        "budget_usd": format_usd(budget),
        "soft": lim.soft_nano is not None,
    }
    fields["text"] = sentence(fields)
    return fields


def sentence(f: dict[str, Any]) -> str:
    """E.g. "Tollgate: project 'demo' has spent $8.02 of its $10.00 monthly budget
    (80 % alert threshold crossed), period 2026-12." """
    who = (
        f["limit"]
        if f"project '{f['project']}'" in f["limit"]
        else (f"{f['limit']} in project '{f['project']}'")
    )
    kind = f.get("period_kind") or ""
    when = "" if f["period"] == "total" else f", period {f['period']}"
    return (
        f"Tollgate: {who} has spent {usd_for_people(f['spent_nano'])} of its "
        f"{usd_for_people(f['budget_nano'])} {kind + ' ' if kind else ''}"
        f"{'soft ' if f.get('soft') else ''}budget "
        f"({f['threshold_percent']} % alert threshold crossed){when}."
    )


def _facts(f: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        ("Budget", str(f["limit"])),
        ("Period", str(f["period"])),
        ("Spent", usd_for_people(f["spent_nano"])),
        ("Budget amount", usd_for_people(f["budget_nano"])),
        ("Threshold", f"{f['threshold_percent']} %"),
    ]


def _slack_escape(s: str) -> str:
    # Slack's mrkdwn treats only these three as control characters
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def body_for(fmt: str, f: dict[str, Any]) -> dict[str, Any]:
    """The JSON posted: Slack and Google Chat reject what they do not know, so their
    bodies hold only their own fields; ``json`` is the structured alert plus ``text``."""
    if fmt == "slack":
        text = _slack_escape(f["text"])
        return {
            "text": text,
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": text}},
                {
                    "type": "section",
                    "fields": [
                        {"type": "mrkdwn", "text": f"*{k}*\n{_slack_escape(v)}"}
                        for k, v in _facts(f)
                    ],
                },
            ],
        }
    if fmt == "google_chat":
        return {
            "text": f["text"],
            "cardsV2": [
                {
                    "cardId": "tollgate-budget-alert",
                    "card": {
                        "header": {"title": "Tollgate budget alert", "subtitle": str(f["limit"])},
                        "sections": [
                            {
                                "widgets": [
                                    {"decoratedText": {"topLabel": k, "text": html.escape(v)}}
                                    for k, v in _facts(f)
                                ]
                            }
                        ],
                    },
                }
            ],
        }
    return {k: f.get(k) for k in PAYLOAD_KEYS}


def backoff_s(attempts: int, retry_after_s: float | None = None) -> float:
    wait = float(min(RETRY_CAP_S, RETRY_BASE_S * (1 << max(0, attempts - 1))))
    return max(wait, min(retry_after_s or 0.0, RETRY_CAP_S))
