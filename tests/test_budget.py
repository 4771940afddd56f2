"""Limit arithmetic: periods, counters, breaches, the refusal message."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from functions.core import ids
from functions.core.budget import (
    CounterState,
    first_breach,
    limits_for,
    period_key,
    refusal_message,
    remaining_nano,
    soft_crossed,
)

T = datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC)


def test_periods_are_utc_calendar_periods():
    assert period_key("monthly", T) == "2026-11"
    assert period_key("daily", T) == "2026-11-30"
    assert period_key("total", T) == "total"
    # 00:30 on Dec 1 in UTC+1 is still Nov 30 in UTC
    plus_one = datetime(2026, 12, 1, 0, 30, tzinfo=timezone(timedelta(hours=1)))
    assert period_key("monthly", plus_one) == "2026-11"
    assert period_key("monthly", T + timedelta(seconds=1)) == "2026-12"
    with pytest.raises(ValueError, match="weekly"):
        period_key("fortnightly", T)


def test_weekly_periods_are_iso_weeks_in_utc():
    # Monday 00:00 UTC starts a week; Sunday 23:59:59 still ends the previous one
    assert period_key("weekly", datetime(2026, 11, 30, 0, 0, tzinfo=UTC)) == "2026-W49"
    assert period_key("weekly", datetime(2026, 11, 29, 23, 59, 59, tzinfo=UTC)) == "2026-W48"
    # the ISO year: the days around New Year belong to one week, one counter
    assert period_key("weekly", datetime(2026, 12, 31, tzinfo=UTC)) == "2026-W53"
    assert period_key("weekly", datetime(2027, 1, 3, 23, 0, tzinfo=UTC)) == "2026-W53"
    assert period_key("weekly", datetime(2027, 1, 4, tzinfo=UTC)) == "2027-W01"
    # 00:30 Monday in UTC+1 is still Sunday in UTC
    plus_one = datetime(2026, 11, 30, 0, 30, tzinfo=timezone(timedelta(hours=1)))
    assert period_key("weekly", plus_one) == "2026-W48"


def _limits(**kw):
    base = dict(
        project="demo",
        user="bob",
        model="m",
        period="2026-11",
        project_limit=100,
        member_limit=None,
        model_limit=None,
        member_model_limit=None,
    )
    base.update(kw)
    return limits_for(**base)


def test_model_counters_exist_only_while_a_limit_is_set():
    assert [lim.scope for lim in _limits()] == ["project", "member"]
    scopes = [lim.scope for lim in _limits(model_limit=5, member_model_limit=3)]
    assert scopes == ["project", "member", "model", "member_model"]


def test_breach_is_spent_plus_held_over_the_limit():
    limits = _limits(member_limit=50)
    assert first_breach(limits, [CounterState(60, 40, 2), CounterState(10, 40, 1)]) is None
    hit = first_breach(limits, [CounterState(60, 41, 2), CounterState(0, 0, 0)])
    assert hit is not None and hit[0].scope == "project"
    hit = first_breach(limits, [CounterState(0, 0, 0), CounterState(25, 26, 1)])
    assert hit is not None and hit[0].scope == "member"


def test_unlimited_counters_never_breach_and_have_no_remaining():
    limits = _limits(project_limit=None)
    assert first_breach(limits, [CounterState(10**15, 0, 0), CounterState(0, 0, 0)]) is None
    assert remaining_nano(limits, [CounterState(1, 1, 0), CounterState(0, 0, 0)]) is None


def test_remaining_is_the_smallest_headroom():
    limits = _limits(member_limit=50)
    assert remaining_nano(limits, [CounterState(10, 5, 0), CounterState(30, 5, 0)]) == 15


def test_refusal_names_limit_spent_held_in_flight_and_figures_before_this_call():
    lim = _limits()[0]
    msg = refusal_message(
        lim,
        CounterState(spent=90_000_000, held=30_000_000, inflight=3),
        estimate=20_000_000,
        period="monthly",
        period_label="2026-11",
    )
    assert "project 'demo'" in msg
    assert "spent $0.090000000" in msg
    assert "held $0.010000000 by 2 call(s) in flight" in msg
    assert "limit $0.000000100" in msg and "up to $0.020000000" in msg


def test_a_soft_budget_tracks_without_refusing():
    lims = limits_for(
        project="p",
        user="u",
        model="m",
        period="2026-12",
        project_limit=100,
        member_limit=50,
        model_limit=30,
        member_model_limit=None,
        soft=frozenset({"member", "model"}),
    )
    project, member, model = lims
    assert project.limit_nano == 100 and project.soft_nano is None
    assert (member.limit_nano, member.soft_nano) == (None, 50)
    assert (model.limit_nano, model.soft_nano) == (None, 30)
    # nothing soft ever refuses: only the project's hard limit does
    over = [CounterState(spent=60), CounterState(spent=60), CounterState(spent=60)]
    assert first_breach(lims, over) is None
    assert soft_crossed(lims, [60, 49, None], cost=2) == ["member 'u'"]
    assert soft_crossed(lims, [60, 40, 29], cost=1) == []
    assert soft_crossed(lims, [60, 40, 29], cost=2) == ["model 'm' in project 'p'"]


def test_a_scope_may_carry_several_windows_each_with_its_own_counter():
    lims = limits_for(
        project="p",
        user="u",
        model="m",
        period="2026-12",
        project_limit=100,
        member_limit=None,
        model_limit=None,
        member_model_limit=None,
        project_windows=[
            ("daily", "2026-12-03", 10),
            ("weekly", "2026-W49", 40),
            ("monthly", "2026-12", 999),
        ],  # the main: skipped
        member_windows=[("daily", "2026-12-03", 5)],
    )
    assert [(lim.counter_id, lim.limit_nano, lim.period) for lim in lims] == [
        (ids.project_counter("p", "2026-12"), 100, None),
        (ids.member_counter("p", "u", "2026-12"), None, None),
        (ids.project_counter("p", "2026-12-03"), 10, "2026-12-03"),
        (ids.project_counter("p", "2026-W49"), 40, "2026-W49"),
        (ids.member_counter("p", "u", "2026-12-03"), 5, "2026-12-03"),
    ]
    daily = lims[2]
    assert first_breach(
        lims, [CounterState(spent=50)] * 2 + [CounterState(spent=11)] + [CounterState()] * 2
    ) == (daily, CounterState(spent=11))
    msg = refusal_message(
        daily, CounterState(spent=11, held=1, inflight=1), 1, "monthly", "2026-12"
    )
    assert "project 'p' (daily) (daily budget, period 2026-12-03)" in msg
