"""Burn rate and projected run-out date of a budget, for the log page (``/api/me``).

The rate is the spend per day over a recent window: the last WINDOW_DAYS days, but
never before the start of the current budget period (a daily budget looks at today so
far, a monthly one on the 3rd at the month so far): spend from an earlier period was
paid from another budget. A window shorter than MIN_WINDOW counts as MIN_WINDOW, so the
first calls of a period are not extrapolated from a few seconds.

The run-out date is when ``budget - spent - held`` reaches zero at that rate, in UTC.
It is given only when it falls inside the current period: a periodic budget starts
afresh with the next period, so "runs out after the period ends" means it lasts
(``outlook: "lasts"``); a ``total`` budget projected more than HORIZON_DAYS away lasts
too. Money is integer nano-dollars throughout; the arithmetic is exact integer
division, in microseconds of window.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from google.cloud import firestore

from functions.core.pricing import format_usd
from functions.store.reports import Filters, totals

WINDOW_DAYS = 7
MIN_WINDOW = timedelta(hours=1)
HORIZON_DAYS = 366
_US = timedelta(microseconds=1)
_DAY_US = timedelta(days=1) // _US
# what a budget's outlook can be
NO_BUDGET, EXHAUSTED, IDLE, RUNS_OUT, LASTS = "no_budget", "exhausted", "idle", "runs_out", "lasts"


@dataclass(frozen=True)
class Burn:
    per_day_nano: int  # spend per day over the window, rounded down
    remaining_nano: int | None  # budget - spent - held; None without a budget
    runs_out: date | None  # the UTC day the budget is projected to run out
    outlook: str  # NO_BUDGET, EXHAUSTED, IDLE (nothing spent in the window), RUNS_OUT, LASTS


def period_bounds(period: str, now: datetime) -> tuple[datetime | None, datetime | None]:
    """[start, end) of the UTC budget period around ``now`` (``total``: unbounded).
    The same periods as ``budget.period_key``."""
    day = datetime.combine(now.astimezone(UTC).date(), time(), tzinfo=UTC)
    if period == "daily":
        return day, day + timedelta(days=1)
    if period == "weekly":  # ISO weeks start on Monday
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=7)
    if period == "monthly":
        start = day.replace(day=1)
        return start, (start + timedelta(days=32)).replace(day=1)
    return None, None


def window_start(period: str, now: datetime) -> datetime:
    start, _ = period_bounds(period, now)
    recent = now - timedelta(days=WINDOW_DAYS)
    return recent if start is None else max(recent, start)


def burn(
    *,
    window_spent_nano: int,
    since: datetime,
    now: datetime,
    budget_nano: int | None,
    taken_nano: int,
    period_end: datetime | None,
) -> Burn:
    """The burn rate over [since, now) and where it leads a budget of which
    ``taken_nano`` (spent + held) is used."""
    window_us = max(now - since, MIN_WINDOW) // _US
    spent = max(0, window_spent_nano)
    per_day = spent * _DAY_US // window_us
    if budget_nano is None:
        return Burn(per_day, None, None, NO_BUDGET)
    remaining = budget_nano - taken_nano
    if remaining <= 0:
        return Burn(per_day, remaining, now.astimezone(UTC).date(), EXHAUSTED)
    if spent == 0:
        return Burn(per_day, remaining, None, IDLE)
    left_us = remaining * window_us // spent  # time to spend `remaining` at this rate
    horizon = (period_end - now) if period_end else timedelta(days=HORIZON_DAYS)
    if left_us >= horizon // _US:
        return Burn(per_day, remaining, None, LASTS)
    return Burn(per_day, remaining, (now + left_us * _US).astimezone(UTC).date(), RUNS_OUT)


def burn_json(b: Burn) -> dict[str, Any]:
    return {
        "per_day_usd": format_usd(b.per_day_nano),
        "remaining_usd": None if b.remaining_nano is None else format_usd(b.remaining_nano),
        "runs_out": b.runs_out.isoformat() if b.runs_out else None,
        "outlook": b.outlook,
    }


@dataclass(frozen=True)
class Budget:
    """One budget to project: whose (a user, or None for the project), its limit and
    what its counter has taken this period."""

    user: str | None
    budget_nano: int | None
    spent_nano: int
    held_nano: int


def _window_spend(
    db: firestore.Client, project: str, user: str | None, since: datetime, now: datetime
) -> int:
    return totals(db, Filters(project=project, user=user, after=since, before=now))["cost_nano"]


def window_spend(
    db: firestore.Client, project: str
) -> Callable[[str | None, datetime, datetime], int]:
    """What the project (user None) or one member spent over [since, now)."""
    return lambda user, since, now: _window_spend(db, project, user, since, now)


def burn_report(
    spend: Callable[[str | None, datetime, datetime], int],
    period: str,
    budgets: Iterable[Budget],
    now: datetime,
) -> dict[str, Any]:
    """``{"since", "period_ends", "project": burn, "members": [burn + user, budget,
    spent]}`` for the project budget (user None) and each member budget given;
    ``spend(user, since, now)`` is what the project or one member spent over a window."""
    since = window_start(period, now)
    _, end = period_bounds(period, now)
    todo = list(budgets)
    with ThreadPoolExecutor(max_workers=8) as pool:
        spends = list(pool.map(lambda b: spend(b.user, since, now), todo))
    out: dict[str, Any] = {
        "since": since.isoformat().replace("+00:00", "Z"),
        "window_days": WINDOW_DAYS,
        "period_ends": (end - timedelta(days=1)).date().isoformat() if end else None,
        "project": None,
        "members": [],
    }
    for b, spent in zip(todo, spends, strict=True):
        j = burn_json(
            burn(
                window_spent_nano=spent,
                since=since,
                now=now,
                budget_nano=b.budget_nano,
                taken_nano=b.spent_nano + b.held_nano,
                period_end=end,
            )
        )
        if b.user is None:
            out["project"] = j
        else:
            out["members"].append(
                {
                    "user": b.user,
                    "spent_usd": format_usd(b.spent_nano),
                    "budget_usd": None if b.budget_nano is None else format_usd(b.budget_nano),
                    "window_spent_usd": format_usd(spent),
                    **j,
                }
            )
    return out
