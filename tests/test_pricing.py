"""Pricing arithmetic with real figures (rates in pico-USD/token = micro-USD per 1M)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from functions.core import pricing
from functions.core.pricing import Price, Rates, Usage

# gpt-4o-mini: $0.15 input, $0.075 cached, $0.60 output per 1M tokens.
MINI = Rates(input=150_000, output=600_000, cached_input=75_000)
# gpt-5.6-like: $5 input, $0.50 cached, cache write 1.25x input = $6.25, $30 output.
G56 = Rates(input=5_000_000, output=30_000_000, cached_input=500_000, cache_write=6_250_000)
# Long context (>272K input): 2x input-side rates, 1.5x output.
G56_LONG = Rates(10_000_000, 45_000_000, cached_input=1_000_000, cache_write=12_500_000)

T0 = datetime(2025, 1, 1, tzinfo=UTC)
T1 = datetime(2025, 6, 10, tzinfo=UTC)
T2 = datetime(2026, 7, 30, tzinfo=UTC)


def price(start: datetime, end: datetime | None = None, rates: Rates = MINI, **kw) -> Price:
    return Price(valid_from=start, valid_to=end, tiers={"default": rates}, **kw)


G56_PRICE = Price(
    valid_from=T0,
    valid_to=None,
    tiers={
        "default": G56,
        "flex": Rates(2_500_000, 15_000_000, 250_000, 3_125_000),
        "priority": Rates(10_000_000, 60_000_000, 1_000_000, 12_500_000),
    },
    long_context_threshold=272_000,
    long_context_tiers={"default": G56_LONG},
    source="genai-prices 0.2.3",
)


# --- cost -------------------------------------------------------------------------------


def test_gpt_4o_mini_cached_and_reasoning_exact_cost() -> None:
    # 1000 input of which 400 cached, 500 output of which 200 reasoning:
    # 600*150_000 + 400*75_000 + 500*600_000 = 90_000_000 + 30_000_000 + 300_000_000
    # = 420_000_000 pico = 420_000 nano = $0.00042. Reasoning is NOT added again.
    u = Usage(input_tokens=1000, cached_tokens=400, output_tokens=500, reasoning_tokens=200)
    assert pricing.cost_pico(MINI, u) == 420_000_000
    assert pricing.cost_nano(MINI, u) == 420_000
    assert pricing.format_usd(pricing.cost_nano(MINI, u)) == "0.000420000"


def test_model_without_cached_rate_bills_cached_tokens_at_input_rate() -> None:
    # gpt-3.5-turbo-like: $0.50 / $1.50, no cache discount.
    r = Rates(input=500_000, output=1_500_000)
    cached = Usage(input_tokens=1000, cached_tokens=1000, output_tokens=10)
    plain = Usage(input_tokens=1000, output_tokens=10)
    assert pricing.cost_pico(r, cached) == pricing.cost_pico(r, plain) == 515_000_000


def test_cache_write_billed_at_its_own_rate() -> None:
    # 10_000 input: 2_000 cached, 4_000 written, 4_000 plain; 100 output.
    # 4000*5_000_000 + 2000*500_000 + 4000*6_250_000 + 100*30_000_000
    # = 20_000_000_000 + 1_000_000_000 + 25_000_000_000 + 3_000_000_000 = 49e9 pico
    u = Usage(input_tokens=10_000, cached_tokens=2_000, cache_write_tokens=4_000, output_tokens=100)
    assert pricing.cost_nano(G56, u) == 49_000_000
    # Without a cache_write rate, writes cost the plain input rate (older models).
    r = Rates(input=5_000_000, output=30_000_000, cached_input=500_000)
    assert pricing.cost_pico(r, u) == 4000 * 5_000_000 * 2 + 1_000_000_000 + 3_000_000_000


def test_inconsistent_counts_are_clamped_conservatively() -> None:
    # cached > input: never a negative uncached count, never more than input billed.
    u = Usage(input_tokens=100, cached_tokens=500, output_tokens=0)
    assert pricing.cost_pico(MINI, u) == 100 * 75_000
    # cached + write > input: the dearer kind (write) keeps its tokens.
    u = Usage(input_tokens=100, cached_tokens=80, cache_write_tokens=80)
    assert pricing.cost_pico(G56, u) == 80 * 6_250_000 + 20 * 500_000
    assert pricing.cost_pico(MINI, Usage(input_tokens=-5, output_tokens=-5)) == 0


def test_ceil_rounding_once_per_call() -> None:
    one = Rates(input=1, output=1)
    assert pricing.cost_nano(one, Usage(input_tokens=1)) == 1
    assert pricing.cost_nano(one, Usage(input_tokens=1000)) == 1
    assert pricing.cost_nano(one, Usage(input_tokens=1001)) == 2
    assert pricing.cost_nano(one, Usage()) == 0
    assert [pricing.pico_to_nano(p) for p in (0, 1, 999, 1000, 1001, -1, -1000, -1001)] == [
        0,
        1,
        1,
        1,
        2,
        0,
        -1,
        -1,
    ]


# --- tiers and long context -------------------------------------------------------------


def test_long_context_bills_whole_request_above_threshold_only() -> None:
    assert pricing.rates_for(G56_PRICE, None, 272_000) == G56
    assert pricing.rates_for(G56_PRICE, "default", 272_001) == G56_LONG
    u = Usage(input_tokens=272_001, cached_tokens=1, output_tokens=1000)
    # Every token, cached and output included, at the long-context rates.
    rates = pricing.rates_for(G56_PRICE, "auto", u.input_tokens)
    assert rates is not None
    assert pricing.cost_pico(rates, u) == 272_000 * 10_000_000 + 1_000_000 + 1000 * 45_000_000


def test_tier_selection_and_unpriced_tiers() -> None:
    assert pricing.rates_for(G56_PRICE, "flex", 10).input == 2_500_000  # type: ignore[union-attr]
    assert pricing.rates_for(G56_PRICE, "priority", 10).output == 60_000_000  # type: ignore[union-attr]
    assert pricing.rates_for(G56_PRICE, "scale", 10) is None
    assert pricing.rates_for(G56_PRICE, "ultrafast", 10) is None
    # flex is priced, but has no long-context rates: not priced above the threshold.
    assert pricing.rates_for(G56_PRICE, "flex", 300_000) is None
    assert pricing.rates_for(price(T0), "default", 10**7) == MINI  # no threshold: flat


def test_audit9_auto_is_held_at_the_dearest_priced_tier() -> None:
    tiers = ("default", "priority")
    assert pricing.dearest_tier(G56_PRICE, tiers, 1_000, 500) == "priority"
    # above the threshold priority has no price of its own: only default can be held
    assert pricing.dearest_tier(G56_PRICE, tiers, 300_000, 500) == "default"
    assert pricing.dearest_tier(price(T0), tiers, 1_000, 500) == "default"
    assert pricing.dearest_tier(price(T0), ("flex", "priority"), 1_000, 500) is None
    # "dearest" is the worst case of this call, not of one rate
    odd = Price(
        valid_from=T0,
        valid_to=None,
        source="t",
        tiers={"default": Rates(input=1, output=100), "priority": Rates(input=50, output=2)},
    )
    assert pricing.dearest_tier(odd, tiers, 10, 1_000) == "default"
    assert pricing.dearest_tier(odd, tiers, 10_000, 1) == "priority"


# --- estimate ---------------------------------------------------------------------------


def test_estimate_covers_any_usage_within_bounds() -> None:
    rng = random.Random(1234)
    for rates in (MINI, G56, G56_LONG, Rates(input=3, output=7, cached_input=9, cache_write=1)):
        for _ in range(2000):
            inp, cap, n = rng.randint(0, 400_000), rng.randint(0, 50_000), rng.randint(1, 4)
            i = rng.randint(0, inp)
            c, w = rng.randint(0, i), rng.randint(0, i)
            u = Usage(
                input_tokens=i,
                cached_tokens=c,
                cache_write_tokens=w,
                output_tokens=rng.randint(0, cap * n),
            )
            assert pricing.estimate_nano(rates, inp, cap, n) >= pricing.cost_nano(rates, u)


@given(
    st.integers(0, 10**6),
    st.integers(0, 10**5),
    st.integers(1, 8),
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    st.integers(0, 10**6),
)
def test_estimate_is_upper_bound_hypothesis(inp, cap, n, i, c, w, o, k) -> None:
    rates = Rates(input=k % 997, output=k % 991, cached_input=k % 13, cache_write=k % 1009)
    u = Usage(
        input_tokens=min(i, inp),
        cached_tokens=c,
        cache_write_tokens=w,
        output_tokens=min(o, cap * n),
    )
    assert pricing.estimate_nano(rates, inp, cap, n) >= pricing.cost_nano(rates, u)


def test_estimate_exact_figures_and_n() -> None:
    # gpt-4o-mini, 1000 input, max 500 output: 1000*150_000 + 500*600_000 = 450_000_000 pico.
    assert pricing.estimate_nano(MINI, 1000, 500) == 450_000
    # n=3 choices: input once, output cap three times: 150e6 + 1500*600_000 = 1_050_000_000.
    assert pricing.estimate_nano(MINI, 1000, 500, n=3) == 1_050_000
    # Cache writes cost more than input on gpt-5.6: every input token at the write rate.
    assert pricing.estimate_nano(G56, 1000, 0) == 1000 * 6_250_000 // 1000


# --- USD conversions --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "rate"),
    [
        ("0.15", 150_000),
        ("0.0375", 37_500),
        (10, 10_000_000),
        ("10", 10_000_000),
        (Decimal("0.000001"), 1),
        ("0", 0),
        (" 2.50 ", 2_500_000),
        ("1e3", 1_000_000_000),
        (0.15, 150_000),
        (0.0375, 37_500),
        ("1000000", 10**12),
        ("0.150000000000", 150_000),
    ],
)
def test_usd_per_mtok_to_rate_exact(value, rate) -> None:
    assert pricing.usd_per_mtok_to_rate(value) == rate


@pytest.mark.parametrize(
    "value",
    [
        "-0.15",
        -1,
        "NaN",
        "inf",
        Decimal("Infinity"),
        True,
        False,
        "0.0000001",
        "abc",
        "",
        "1000000.000001",
        10**7,
        0.1 + 0.2,
        float("nan"),
        None,
        [1],
        "0." + "1" * 45,
    ],
)
def test_usd_per_mtok_to_rate_rejects(value) -> None:
    with pytest.raises(ValueError):
        pricing.usd_per_mtok_to_rate(value)


def test_rate_to_usd_per_mtok_round_trips() -> None:
    for s in ("0.0375", "0.15", "10", "0", "0.000001", "1000000", "2.5"):
        assert pricing.rate_to_usd_per_mtok(pricing.usd_per_mtok_to_rate(s)) == s
    with pytest.raises(ValueError):
        pricing.rate_to_usd_per_mtok(-1)


def test_format_usd() -> None:
    assert pricing.format_usd(123_450) == "0.000123450"
    assert pricing.format_usd(0) == "0.000000000"
    assert pricing.format_usd(-1) == "-0.000000001"
    assert pricing.format_usd(12_345_000_000_001) == "12345.000000001"
    assert pricing.format_usd(-1_500_000_000) == "-1.500000000"


# --- price history ----------------------------------------------------------------------


def test_price_in_force_half_open_boundaries() -> None:
    history = [price(T0, T1, MINI), price(T1, None, G56)]
    assert pricing.price_in_force(history, T1).tiers["default"] == G56  # type: ignore[union-attr]
    before = T1 - timedelta(microseconds=1)
    assert pricing.price_in_force(history, before).tiers["default"] == MINI  # type: ignore[union-attr]
    assert pricing.price_in_force(history, T0 - timedelta(microseconds=1)) is None
    assert pricing.price_in_force(history, T0) is history[0]
    assert pricing.price_in_force([], T0) is None
    # valid_to is exclusive: a retired model is unpriced from that instant on.
    retired = [price(T0, T1)]
    assert pricing.price_in_force(retired, T1) is None
    assert pricing.price_in_force(retired, T1 - timedelta(microseconds=1)) is retired[0]
    # Other time zones denote the same instant.
    paris = timezone(timedelta(hours=2))
    assert pricing.price_in_force(history, T1.astimezone(paris)) is history[1]
    with pytest.raises(ValueError):
        pricing.price_in_force(history, datetime(2025, 7, 1))


def test_add_price_ends_previous_and_inserts_in_middle() -> None:
    h = pricing.add_price([], price(T0, T1))  # new.valid_to is derived: open-ended
    assert [(p.valid_from, p.valid_to) for p in h] == [(T0, None)]
    h = pricing.add_price(h, price(T2, rates=G56))
    assert [(p.valid_from, p.valid_to) for p in h] == [(T0, T2), (T2, None)]
    h = pricing.add_price(h, price(T1, datetime(2030, 1, 1, tzinfo=UTC), rates=G56_LONG))
    assert [(p.valid_from, p.valid_to) for p in h] == [(T0, T1), (T1, T2), (T2, None)]
    assert [p.tiers["default"] for p in h] == [MINI, G56_LONG, G56]
    # A price older than everything ends where the first one starts.
    earliest = T0 - timedelta(days=1)
    h2 = pricing.add_price(h, price(earliest))
    assert (h2[0].valid_from, h2[0].valid_to) == (earliest, T0)
    assert h2[1:] == h
    # Unsorted input comes back sorted; inputs are not mutated.
    assert pricing.add_price(list(reversed(h)), price(T2 + timedelta(days=1)))[:2] == h[:2]


def test_add_price_rejects_conflicts_and_bad_prices() -> None:
    h = pricing.add_price([], price(T0))
    with pytest.raises(ValueError, match="already starts"):
        pricing.add_price(h, price(T0, rates=G56))
    with pytest.raises(ValueError, match="timezone-aware"):
        pricing.add_price(h, price(datetime(2026, 1, 1)))
    with pytest.raises(ValueError, match="default"):
        pricing.add_price(h, Price(T1, None, tiers={"flex": MINI}))
    with pytest.raises(ValueError):
        pricing.add_price(h, price(T1, rates=Rates(input=-1, output=0)))


# --- usage extraction -------------------------------------------------------------------


def test_usage_from_chat_with_details() -> None:
    u = pricing.usage_from_chat(
        {
            "prompt_tokens": 1000,
            "completion_tokens": 500,
            "total_tokens": 1500,
            "prompt_tokens_details": {"cached_tokens": 400, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 200},
        }
    )
    assert u == Usage(input_tokens=1000, cached_tokens=400, output_tokens=500, reasoning_tokens=200)
    assert pricing.cost_nano(MINI, u) == 420_000  # reasoning not double-billed


@pytest.mark.parametrize(
    "details", [None, {}, {"cached_tokens": None}, {"cached_tokens": "400"}, "garbage", []]
)
def test_usage_from_chat_missing_or_null_details(details) -> None:
    u = pricing.usage_from_chat(
        {
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "prompt_tokens_details": details,
            "completion_tokens_details": details,
        }
    )
    assert u == Usage(input_tokens=10, output_tokens=5)


def test_usage_from_responses() -> None:
    u = pricing.usage_from_responses(
        {
            "input_tokens": 10_000,
            "output_tokens": 100,
            "total_tokens": 10_100,
            "input_tokens_details": {
                "cached_tokens": 2_000,
                "cache_write_tokens": 4_000,
                "cache_write_tokens_details": {"ttl_30m_tokens": 4_000},
            },
            "output_tokens_details": {"reasoning_tokens": 60},
        }
    )
    assert u == Usage(10_000, 2_000, 4_000, 100, 60)
    assert pricing.cost_nano(G56, u) == 49_000_000
    assert pricing.usage_from_responses(
        {"input_tokens": 3, "output_tokens": 4, "input_tokens_details": None}
    ) == Usage(3, 0, 0, 4, 0)


def test_usage_from_chat_cache_write_and_completions_shape() -> None:
    u = pricing.usage_from_chat(
        {
            "prompt_tokens": 7,
            "completion_tokens": 3,
            "prompt_tokens_details": {"cache_write_tokens": 5},
        }
    )
    assert u == Usage(input_tokens=7, cache_write_tokens=5, output_tokens=3)


def test_usage_from_embeddings() -> None:
    u = pricing.usage_from_embeddings({"prompt_tokens": 8, "total_tokens": 8})
    assert u == Usage(input_tokens=8)
    # text-embedding-3-small at $0.02/1M: 8 * 20_000 = 160_000 pico = 160 nano.
    assert pricing.cost_nano(Rates(input=20_000, output=0), u) == 160
    assert pricing.usage_from_embeddings(None) == Usage()


@pytest.mark.parametrize(
    ("raw", "count"),
    [
        (None, 0),
        (True, 0),
        ("12", 12),
        ("x", 0),
        (12.0, 12),
        (12.2, 13),
        (-3, 0),
        (float("inf"), 0),
        ([1], 0),
        ({"a": 1}, 0),
        ("-3", 0),
        (10**400, 10**400),
        ("²", 0),
        ("9" * 5000, 0),
        (" 7 ", 7),
    ],
)
def test_garbage_main_counts_never_crash(raw, count) -> None:
    u = pricing.usage_from_chat({"prompt_tokens": raw, "completion_tokens": raw})
    assert (u.input_tokens, u.output_tokens) == (count, count)
    assert pricing.usage_from_responses({"input_tokens": raw}).input_tokens == count


@pytest.mark.parametrize("u", [None, {}, [], "usage", 5])
def test_usage_missing_entirely(u) -> None:
    assert pricing.usage_from_chat(u) == Usage()
    assert pricing.usage_from_responses(u) == Usage()
    assert pricing.usage_from_embeddings(u) == Usage()


# --- Firestore documents ----------------------------------------------------------------


def test_price_doc_round_trip_exact() -> None:
    p = Price(
        valid_from=datetime(2026, 8, 21, 12, 0, 0, 123456, tzinfo=UTC),
        valid_to=datetime(2026, 11, 21, tzinfo=UTC),
        tiers=G56_PRICE.tiers,
        long_context_threshold=272_000,
        long_context_tiers={"default": G56_LONG},
        source="admin:alice",
    )
    doc = pricing.price_to_doc(p)
    assert doc["tiers"]["default"] == {
        "input": 5_000_000,
        "output": 30_000_000,
        "cached_input": 500_000,
        "cache_write": 6_250_000,
    }
    assert pricing.price_from_doc(doc) == p
    plain = price(T0)  # no cache rates: None fields omitted, not stored as null
    doc = pricing.price_to_doc(plain)
    assert doc["tiers"]["default"] == {"input": 150_000, "output": 600_000, "cached_input": 75_000}
    assert pricing.price_to_doc(price(T0, rates=Rates(1, 2)))["tiers"]["default"] == {
        "input": 1,
        "output": 2,
    }
    assert pricing.price_from_doc(doc) == plain


def test_price_from_doc_accepts_firestore_datetimes() -> None:
    from google.api_core.datetime_helpers import DatetimeWithNanoseconds

    p = price(T1, T2)
    doc = pricing.price_to_doc(p)
    doc["valid_from"] = DatetimeWithNanoseconds(2025, 6, 10, tzinfo=UTC)
    doc["valid_to"] = DatetimeWithNanoseconds(2026, 7, 30, tzinfo=UTC)
    back = pricing.price_from_doc(doc)
    assert back == p and type(back.valid_from) is datetime and type(back.valid_to) is datetime


@pytest.mark.parametrize(
    "patch",
    [
        {"valid_from": datetime(2025, 1, 1)},
        {"valid_from": "2025-01-01"},
        {"tiers": {}},
        {"tiers": {"default": {"input": "1", "output": 2}}},
        {"tiers": {"default": 5}},
        {"tiers": {"default": {"output": 2}}},
        {"long_context_threshold": -1},
        {"valid_to": datetime(2024, 1, 1, tzinfo=UTC)},
    ],
)
def test_price_from_doc_rejects_malformed(patch) -> None:
    doc = {**pricing.price_to_doc(price(T0)), **patch}
    with pytest.raises(ValueError):
        pricing.price_from_doc(doc)


@given(
    st.integers(0, 10**6),
    st.integers(1, 8),
    st.integers(0, 10**7),
    st.integers(1, 10**5),
    st.integers(1, 10**6),
    st.integers(0, 10**6),
)
def test_largest_cap_is_the_last_cap_whose_estimate_fits(inp, n, room, upto, out_rate, in_rate):
    rates = Rates(input=in_rate, output=out_rate)
    cap = pricing.largest_cap(rates, inp, n, room, upto)
    assert 0 <= cap <= upto
    if pricing.estimate_nano(rates, inp, 0, n) > room:
        assert cap == 0  # not even the prompt fits
        return
    assert pricing.estimate_nano(rates, inp, cap, n) <= room
    if cap < upto:
        assert pricing.estimate_nano(rates, inp, cap + 1, n) > room
