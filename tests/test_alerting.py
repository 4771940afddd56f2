"""What a budget alert says and when one is due (``functions/core/alerting.py``): pure,
no emulator, no webhook. Delivery is tested in tests/test_alerts.py."""

from __future__ import annotations

import pytest

from functions.core.alerting import (
    RETRY_BASE_S,
    RETRY_CAP_S,
    alert_fields,
    backoff_s,
    crossings,
    guess_format,
    usd_for_people,
)
from functions.core.budget import CounterState, Limit

PROJECT = Limit("project", "project 'demo'", "p|demo|2026-12", 10_000_000_000, "demo")
SOFT_MEMBER = Limit(
    "member", "member 'bob'", "m|demo|bob|2026-12", None, "demo", user="bob", soft_nano=1000
)


def test_a_threshold_is_crossed_once_by_the_call_that_reaches_it():
    budget = PROJECT.limit_nano or 0
    reach = budget * 80 // 100
    # from just under 80 % to exactly 80 %: crossed; from 80 % on: not again
    assert crossings([PROJECT], [CounterState(spent=reach)], 5, [50, 80, 100]) == [
        (PROJECT, 80, reach)
    ]
    assert crossings([PROJECT], [CounterState(spent=reach + 5)], 5, [50, 80, 100]) == []
    # one call may cross several at once; a free call crosses none
    assert [
        t for _, t, _ in crossings([PROJECT], [CounterState(spent=budget)], budget, [50, 80, 100])
    ] == [50, 80, 100]
    assert crossings([PROJECT], [CounterState(spent=budget)], 0, [100]) == []


def test_a_soft_budget_alerts_and_an_unlimited_one_does_not():
    unlimited = Limit("model", "model 'x'", "x", None, "demo", model="x")
    got = crossings(
        [SOFT_MEMBER, unlimited], [CounterState(spent=1000), CounterState(spent=9)], 600, [50]
    )
    assert got == [(SOFT_MEMBER, 50, 1000)]
    fields = alert_fields("demo", "2026-12", "monthly", SOFT_MEMBER, 50, 1000)
    assert fields["soft"] is True and fields["budget_nano"] == 1000
    assert "soft budget" in fields["text"] and "member 'bob' in project 'demo'" in fields["text"]


def test_the_format_follows_the_webhooks_host():
    assert guess_format("https://hooks.slack.com/services/T/B/x") == "slack"
    assert guess_format("https://chat.googleapis.com/v1/spaces/x/messages?key=k") == "google_chat"
    assert guess_format("https://hooks.slack.com.evil.example/x") == "json"
    assert guess_format(None) == "json"


def test_backoff_doubles_up_to_its_cap_and_honours_a_longer_retry_after():
    assert [backoff_s(n) for n in (1, 2, 3)] == [RETRY_BASE_S, 2 * RETRY_BASE_S, 4 * RETRY_BASE_S]
    assert backoff_s(30) == RETRY_CAP_S
    assert backoff_s(1, retry_after_s=600) == 600
    assert backoff_s(1, retry_after_s=10**9) == RETRY_CAP_S


@pytest.mark.parametrize(
    ("nano", "shown"),
    [
        (0, "$0.00"),
        (8_020_000_000, "$8.02"),
        (10**10, "$10.00"),
        (29_000_000, "$0.029"),
        (28_960_000, "$0.029"),
        (1_234_500_000_000, "$1,234.50"),
        (1_234_567, "$0.0012"),
        (500_000_000, "$0.50"),
        (999_999_999, "$1.00"),
        (123, "$0.000000"),
    ],
)
def test_money_is_rounded_for_people(nano, shown):
    assert usd_for_people(nano) == shown
