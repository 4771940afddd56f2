"""Budget arithmetic: periods, counters, limit checks. Pure functions, no I/O.

A budget is enforced by *increment-then-verify* (see ``ledger.py``): every
applicable counter is incremented by the call's estimate in one atomic write,
then the post-increment values are checked here. Because each accepted call saw
``spent + held <= limit`` right after its own increment, with every earlier
increment already counted, spend can only exceed a limit by the difference
between estimates and actual costs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from functions.core import ids
from functions.core.pricing import format_usd

PERIODS = ("total", "monthly", "weekly", "daily")


def period_key(period: str, at: datetime) -> str:
    """The UTC calendar period a call at ``at`` is booked in: ``total``, ``2026-11``,
    ``2026-W48`` (ISO week, Monday to Sunday) or ``2026-11-23``. A new period is a new
    counter, so nothing has to reset it."""
    at = at.astimezone(UTC)
    if period == "total":
        return "total"
    if period == "monthly":
        return at.strftime("%Y-%m")
    if period == "weekly":
        # the ISO year, not the calendar year: 2026-12-31 is in week 2026-W53, and
        # 2027-01-01 too (a week is never split across two counters)
        year, week, _ = at.isocalendar()
        return f"{year}-W{week:02d}"
    if period == "daily":
        return at.strftime("%Y-%m-%d")
    raise ValueError(f"unknown budget period {period!r}; use one of {', '.join(PERIODS)}")


@dataclass(frozen=True)
class Limit:
    """One counter a call is booked against, with its limit (None = tracked, unlimited)."""

    scope: str  # project | member | model | member_model
    label: str  # for people: "project 'demo'", "member 'alice'", ...
    counter_id: str
    limit_nano: int | None
    project: str
    user: str | None = None
    model: str | None = None
    # a soft budget: crossing it alerts and marks the calls, never refuses one (so
    # ``limit_nano`` is None and the counter only tracks)
    soft_nano: int | None = None
    # an extra window of its scope (a daily budget inside a monthly one): its own period
    # kind and key; None for the scope's main budget, in the call's period
    period_kind: str | None = None
    period: str | None = None


def _limit(
    scope: str,
    label: str,
    counter_id: str,
    value: int | None,
    soft: bool,
    project: str,
    user: str | None = None,
    model: str | None = None,
    period_kind: str | None = None,
    period: str | None = None,
) -> Limit:
    if soft and value is not None:
        return Limit(
            scope,
            label,
            counter_id,
            None,
            project,
            user,
            model,
            soft_nano=value,
            period_kind=period_kind,
            period=period,
        )
    return Limit(
        scope,
        label,
        counter_id,
        value,
        project,
        user,
        model,
        period_kind=period_kind,
        period=period,
    )


Window = tuple[str, str, int]  # (period kind, period key now, budget in nano-dollars)


class Topup(NamedTuple):
    """+``amount_nano`` on a main budget until ``until`` (exclusive)."""

    amount_nano: int
    until: datetime
    note: str = ""


def topped_up(base: int | None, topups: Iterable[Topup], now: datetime) -> int | None:
    """A main budget with the top-ups in force at ``now`` added: a top-up ends at its
    ``until`` by itself, nothing has to remove it. No budget stays no budget."""
    if base is None:
        return None
    return base + sum(t.amount_nano for t in topups if t.until > now)


def limits_for(
    *,
    project: str,
    user: str,
    model: str,
    period: str,
    project_limit: int | None,
    member_limit: int | None,
    model_limit: int | None,
    member_model_limit: int | None,
    key_name: str = "",
    key_limit: int | None = None,
    soft: frozenset[str] = frozenset(),
    project_windows: Sequence[Window] = (),
    member_windows: Sequence[Window] = (),
) -> list[Limit]:
    """Counters a call touches. Project and member counters are always written (they
    feed the spend pages); per-model counters only exist while a limit is set, so a
    model limit counts spend from the moment it was set. ``soft`` names the scopes
    whose budget is soft."""
    out = [
        _limit(
            "project",
            f"project '{project}'",
            ids.project_counter(project, period),
            project_limit,
            "project" in soft,
            project,
        ),
        _limit(
            "member",
            f"member '{user}'",
            ids.member_counter(project, user, period),
            member_limit,
            "member" in soft,
            project,
            user,
        ),
    ]
    # Several windows of one scope (a daily budget inside a monthly one): each is a
    # counter of its own period, checked in the same increment as every other limit.
    for kind, key, nano in project_windows:
        if key != period:
            out.append(
                _limit(
                    "project",
                    f"project '{project}' ({kind})",
                    ids.project_counter(project, key),
                    nano,
                    "project" in soft,
                    project,
                    period_kind=kind,
                    period=key,
                )
            )
    for kind, key, nano in member_windows:
        if key != period:
            out.append(
                _limit(
                    "member",
                    f"member '{user}' ({kind})",
                    ids.member_counter(project, user, key),
                    nano,
                    "member" in soft,
                    project,
                    user,
                    period_kind=kind,
                    period=key,
                )
            )
    if model_limit is not None:
        out.append(
            _limit(
                "model",
                f"model '{model}' in project '{project}'",
                ids.model_counter(project, model, period),
                model_limit,
                "model" in soft,
                project,
                None,
                model,
            )
        )
    if member_model_limit is not None:
        out.append(
            _limit(
                "member_model",
                f"member '{user}' on model '{model}'",
                ids.member_model_counter(project, user, model, period),
                member_model_limit,
                "member_model" in soft,
                project,
                user,
                model,
            )
        )
    if key_limit is not None:
        out.append(
            _limit(
                "key",
                f"key '{key_name}' of member '{user}'",
                ids.key_counter(project, user, key_name, period),
                key_limit,
                "key" in soft,
                project,
                user,
            )
        )
    return out


def soft_crossed(
    limits: Sequence[Limit], spent_before: Sequence[int | None], cost: int
) -> list[str]:
    """Labels of the soft budgets a call of ``cost`` leaves overspent, given each
    counter's spend as last seen before it (None: not seen, counted as 0)."""
    return [
        lim.label
        for lim, seen in zip(limits, spent_before, strict=True)
        if lim.soft_nano is not None and (seen or 0) + cost > lim.soft_nano
    ]


@dataclass(frozen=True)
class CounterState:
    spent: int = 0
    held: int = 0  # estimates of calls in flight that hold budget one by one
    inflight: int = 0
    escrow: int = 0  # budget reserved by instances' grants (escrow.py)

    @property
    def taken(self) -> int:
        """What is not free: spent, held by calls, or reserved by grants."""
        return self.spent + self.held + self.escrow

    def with_call(self, estimate: int) -> CounterState:
        """This counter with one more call holding ``estimate`` (what a reservation of
        it would leave, or would have left)."""
        return CounterState(
            spent=self.spent,
            held=self.held + estimate,
            inflight=self.inflight + 1,
            escrow=self.escrow,
        )

    @classmethod
    def of(cls, doc: dict[str, Any] | None) -> CounterState:
        d = doc or {}
        return cls(
            spent=int(d.get("spent", 0)),
            held=int(d.get("held", 0)),
            inflight=int(d.get("inflight", 0)),
            escrow=int(d.get("escrow", 0)),
        )


def first_breach(
    limits: Sequence[Limit], after: Sequence[CounterState]
) -> tuple[Limit, CounterState] | None:
    """The first limit whose post-increment ``spent + held + escrow`` is over it, or None."""
    for limit, state in zip(limits, after, strict=True):
        if limit.limit_nano is not None and state.taken > limit.limit_nano:
            return limit, state
    return None


def remaining_nano(limits: Iterable[Limit], states: Iterable[CounterState]) -> int | None:
    """Smallest ``limit - spent - held - escrow`` over the limited counters (None if
    unlimited)."""
    values = [
        lim.limit_nano - st.taken
        for lim, st in zip(limits, states, strict=True)
        if lim.limit_nano is not None
    ]
    return min(values) if values else None


def refusal_message(
    limit: Limit, after: CounterState, estimate: int, period: str, period_label: str
) -> str:
    """Explain a budget refusal with the figures as they were *before* this call."""
    assert limit.limit_nano is not None
    period, period_label = limit.period_kind or period, limit.period or period_label
    held_by_others = after.held - estimate
    in_flight = max(0, after.inflight - 1)
    reserved = f", reserved ${format_usd(after.escrow)} by busy instances" if after.escrow else ""
    return (
        f"Budget exceeded for {limit.label} ({period} budget, period {period_label}): "
        f"spent ${format_usd(after.spent)}, held ${format_usd(held_by_others)} by "
        f"{in_flight} call(s) in flight{reserved}, limit ${format_usd(limit.limit_nano)}; "
        f"this call could cost up to ${format_usd(estimate)}. "
        "Lower max_tokens, or ask a project lead to raise the budget."
    )


# --- requests and tokens per minute ---------------------------------------------------
#
# Fixed one-minute UTC windows, one counter document per scope and minute
# (``rl|scope...|202611231405``), incremented in the same atomic write as the budget
# hold. A refused call takes its increment back, so only admitted calls count: at
# most ``rpm`` calls are admitted in any calendar minute. Like every fixed window, a
# burst straddling a minute boundary can see up to 2 × rpm within 60 seconds.


@dataclass(frozen=True)
class RateLimit:
    label: str
    counter_id: str
    rpm: int | None
    tpm: int | None


def minute_key(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y%m%d%H%M")


def rate_limits_for(
    *,
    project: str,
    user: str,
    model: str,
    at: datetime,
    project_limits: tuple[int | None, int | None],
    model_limits: tuple[int | None, int | None],
    member_model_limits: tuple[int | None, int | None],
    key_name: str = "",
    key_rpm: int | None = None,
) -> list[RateLimit]:
    """The (project), (project, model) and (project, user, model) windows that have
    an rpm or tpm limit; no counter is written for a scope without one."""
    minute = minute_key(at)
    scopes = [
        (f"project '{project}'", ids.project_window(project, minute), project_limits),
        (
            f"model '{model}' in project '{project}'",
            ids.model_window(project, model, minute),
            model_limits,
        ),
        (
            f"member '{user}' on model '{model}'",
            ids.member_model_window(project, user, model, minute),
            member_model_limits,
        ),
        (
            f"key '{key_name}' of member '{user}'",
            ids.key_window(project, user, key_name, minute),
            (key_rpm, None),
        ),
    ]
    return [
        RateLimit(label, cid, rpm, tpm)
        for label, cid, (rpm, tpm) in scopes
        if rpm is not None or tpm is not None
    ]


@dataclass(frozen=True)
class WindowState:
    requests: int = 0
    tokens: int = 0


def rate_breach(
    limits: Sequence[RateLimit], after: Sequence[WindowState]
) -> tuple[RateLimit, str, int] | None:
    """The first window over its limit after this call's increment: (limit, what, value)."""
    for lim, st in zip(limits, after, strict=True):
        if lim.rpm is not None and st.requests > lim.rpm:
            return lim, "requests", lim.rpm
        if lim.tpm is not None and st.tokens > lim.tpm:
            return lim, "tokens", lim.tpm
    return None


def rate_refusal(breach: tuple[RateLimit, str, int], at: datetime) -> tuple[str, int]:
    """The message of a call refused by a rate limit, and its ``Retry-After`` in s."""
    lim, what, value = breach
    wait = retry_after_s(at)
    unit = "requests" if what == "requests" else "tokens (estimated at admission)"
    return (
        f"Rate limit reached for {lim.label}: {value} {unit} per minute. Retry in {wait} s."
    ), wait


def retry_after_s(at: datetime) -> int:
    """Whole seconds until the current minute window ends (at least 1)."""
    at = at.astimezone(UTC)
    return max(1, 60 - at.second - (1 if at.microsecond else 0))
