"""What a finished call is booked at (``functions/core/billing.py``): pure functions, no
emulator. The proxy's and the stream relay's tests cover the same rules end to end;
these pin each case of a failed or answered call on its own."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from functions.core import billing, routes
from functions.core.errors import (
    InvalidRequest,
    UpstreamAuthError,
    UpstreamBadResponse,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from functions.core.holds import HoldPlan
from functions.core.pricing import Price, Rates
from functions.core.records import Caller, KeyRecord, MemberRecord, ProjectRecord, UserRecord

NOW = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
# $1 per 1M input tokens, $4 per 1M output (pico-USD per token), cached input at half
RATES = Rates(input=1_000_000, output=4_000_000, cached_input=500_000)
ESTIMATE = 123_456


def _admitted(route: str = routes.CHAT) -> billing.Admitted:
    caller = Caller(
        KeyRecord("h", "lab", "bob", "default"),
        UserRecord("bob"),
        MemberRecord("lab", "bob"),
        ProjectRecord("lab"),
    )
    spec = routes.CallSpec(
        route=route,
        model="m",
        stream=False,
        output_cap=100,
        n=1,
        service_tier=None,
        previous_response_id=None,
        body={},
        modified=False,
    )
    plan = HoldPlan(
        call_id="call_1",
        project="lab",
        user="bob",
        key_name="default",
        model="m",
        route=route,
        budget_period="monthly",
        period_key="2026-12",
        limits=(),
        estimate_nano=ESTIMATE,
        admitted_at=NOW,
        expires_at=NOW + timedelta(minutes=10),
    )
    price = Price(valid_from=NOW - timedelta(days=1), valid_to=None, tiers={"default": RATES})
    return billing.Admitted(caller, spec, plan, price, RATES, input_tokens=10)


@pytest.mark.parametrize("sent", [False, True])
@pytest.mark.parametrize(
    ("err", "status", "http"),
    [
        (UpstreamUnavailable("down"), "upstream_unavailable", 502),
        (UpstreamAuthError("refused"), "upstream_auth_error", 502),
    ],
)
def test_a_call_upstream_never_took_costs_nothing(err, status, http, sent):
    o = billing.from_failure(err, sent=sent, estimate_nano=ESTIMATE)
    assert (o.status, o.cost_nano, o.http_status, o.estimated) == (status, 0, http, False)


@pytest.mark.parametrize(
    ("err", "status", "http"),
    [
        (UpstreamTimeout("slow"), "upstream_timeout", 504),
        (UpstreamBadResponse("garbled"), "upstream_bad_response", 502),
        (RuntimeError("our own bug"), "proxy_error", 500),
        (InvalidRequest("late refusal"), "proxy_error", 500),
    ],
)
def test_a_call_that_went_out_is_booked_at_its_hold(err, status, http):
    o = billing.from_failure(err, sent=True, estimate_nano=ESTIMATE)
    assert (o.status, o.cost_nano, o.http_status, o.estimated) == (status, ESTIMATE, http, True)


def test_a_failure_before_sending_costs_nothing():
    o = billing.from_failure(KeyError("secret"), sent=False, estimate_nano=ESTIMATE)
    assert (o.status, o.cost_nano, o.estimated) == ("proxy_error", 0, False)


def test_an_answer_is_priced_from_its_usage():
    body = {
        "id": "chatcmpl-1",
        "model": "m-2026-01-01",
        "usage": {
            "prompt_tokens": 1000,
            "completion_tokens": 50,
            "prompt_tokens_details": {"cached_tokens": 400},
        },
    }
    o = billing.from_answer(_admitted(), 200, json.dumps(body).encode(), "req_1")
    # 600 input at 1e6 pico, 400 cached at 5e5, 50 output at 4e6 = 1e9 pico = 1e6 nano
    assert (o.status, o.cost_nano, o.estimated) == ("ok", 1_000_000, False)
    assert (o.upstream_model, o.request_id, o.usage.cached_tokens) == ("m-2026-01-01", "req_1", 400)


def test_an_answer_without_usage_books_the_hold():
    o = billing.from_answer(_admitted(), 200, b'{"id": "x"}', None)
    assert (o.status, o.cost_nano, o.estimated) == ("ok", ESTIMATE, True)


def test_an_error_answer_costs_nothing_and_keeps_its_status():
    o = billing.from_answer(_admitted(), 429, b'{"error": {"message": "slow down"}}', "r")
    assert (o.status, o.cost_nano, o.http_status, o.request_id) == ("upstream_error", 0, 429, "r")


@pytest.mark.parametrize("status", [401, 403])
def test_the_organisation_key_refused_is_never_the_members_fault(status):
    with pytest.raises(UpstreamAuthError, match="organisation's key"):
        billing.from_answer(_admitted(), status, b"{}", None)


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'"text"'])
def test_an_answer_that_is_not_a_json_object_is_a_bad_response(body):
    with pytest.raises(UpstreamBadResponse):
        billing.from_answer(_admitted(), 200, body, None)


def test_a_free_route_costs_nothing_even_with_usage():
    body = {"id": "modr-1", "model": "omni-moderation-latest", "results": []}
    o = billing.from_answer(_admitted(routes.MODERATIONS), 200, json.dumps(body).encode(), None)
    assert (o.status, o.cost_nano, o.estimated, o.usage.input_tokens) == ("ok", 0, False, 10)
