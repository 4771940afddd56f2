"""Hold plans as the proxy makes them, and a clock a test can move, for the tests of
the ledger and of what runs around it (one plan builder instead of one per file)."""

from __future__ import annotations

import dataclasses
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from functions.core.budget import limits_for
from functions.core.holds import HoldPlan

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def hold_plan(
    estimate: int,
    *,
    limit: int | None = 1000,
    member_limit: int | None = None,
    at: datetime = NOW,
    ttl_s: int = 60,
    period: str = "2026-11",
    **fields: Any,
) -> HoldPlan:
    """bob's call of model ``m`` in project ``demo``, held at ``estimate`` against a
    project budget of ``limit`` (and a member one of ``member_limit``); ``fields``
    replace any other field of the plan."""
    plan = HoldPlan(
        call_id="call_" + secrets.token_hex(8),
        project="demo",
        user="bob",
        key_name="k",
        model="m",
        route="chat",
        budget_period="monthly",
        period_key=period,
        limits=limits_for(
            project="demo",
            user="bob",
            model="m",
            period=period,
            project_limit=limit,
            member_limit=member_limit,
            model_limit=None,
            member_model_limit=None,
        ),
        estimate_nano=estimate,
        admitted_at=at,
        expires_at=at + timedelta(seconds=ttl_s),
    )
    return dataclasses.replace(plan, **fields)
