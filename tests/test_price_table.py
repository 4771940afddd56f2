"""The shipped OpenAI price table converted from genai-prices: real figures, invariants,
and an exact cross-check against genai-prices' own calculator. Pure, no emulator."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import genai_prices
import pytest
from genai_prices import types as gp
from genai_prices.data import providers

from functions.core import price_table, pricing
from functions.core.price_table import Skipped, TableEntry

NOW = datetime(2026, 11, 23, tzinfo=UTC)
O3_CUT = datetime(2025, 6, 10, tzinfo=UTC)
TIERS_VERIFIED = datetime(2026, 10, 12, tzinfo=UTC)  # genai-prices' flex/priority data start


def r(usd: str) -> int:
    return pricing.usd_per_mtok_to_rate(usd)


@pytest.fixture(scope="module")
def table() -> tuple[list[TableEntry], list[Skipped]]:
    return price_table.openai_price_table(now=NOW)


@pytest.fixture(scope="module")
def by_id(table: tuple[list[TableEntry], list[Skipped]]) -> dict[str, TableEntry]:
    return {e.model: e for e in table[0]}


def current(entry: TableEntry, at: datetime = NOW) -> pricing.Price:
    p = pricing.price_in_force(entry.prices, at)
    assert p is not None, entry.model
    return p


def test_source_names_the_package_version() -> None:
    assert price_table.source() == "genai-prices 0.2.3"
    assert price_table.source().startswith("genai-prices ")


def test_gpt_4o_mini_real_figures(by_id: dict[str, TableEntry]) -> None:
    # $0.15 input, $0.075 cached, $0.60 output per 1M tokens.
    rates = current(by_id["gpt-4o-mini"]).tiers["default"]
    assert (rates.input, rates.cached_input, rates.output) == (150_000, 75_000, 600_000)
    assert rates.cache_write is None  # cache writes are free before GPT-5.6: plain input rate
    assert by_id["gpt-4o-mini"].kind == "chat"
    # A dated snapshot listed as an exact alias carries the same prices.
    assert by_id["gpt-4o-mini-2024-07-18"].prices == by_id["gpt-4o-mini"].prices


def test_gpt_4o_real_figures_and_the_older_snapshot(by_id: dict[str, TableEntry]) -> None:
    rates = current(by_id["gpt-4o"]).tiers["default"]
    assert (rates.input, rates.cached_input, rates.output) == (r("2.50"), r("1.25"), r("10.00"))
    old = current(by_id["gpt-4o-2024-05-13"]).tiers["default"]  # priced on its own: $5 / $15
    assert (old.input, old.cached_input, old.output) == (r("5"), None, r("15"))


def test_embedding_is_input_only(by_id: dict[str, TableEntry]) -> None:
    e = by_id["text-embedding-3-small"]
    assert e.kind == "embedding"
    assert current(e).tiers["default"] == pricing.Rates(input=20_000, output=0)
    assert current(by_id["text-embedding-3-large"]).tiers["default"].input == r("0.13")


def test_zero_output_only_for_embeddings(table: tuple[list[TableEntry], list[Skipped]]) -> None:
    for e in table[0]:
        zero = any(rt.output == 0 for p in e.prices for rt in p.tiers.values())
        assert zero == (e.kind == "embedding"), e.model
        assert (e.kind == "embedding") == ("embedding" in e.model), e.model


def test_o3_price_cut_on_2025_06_10(by_id: dict[str, TableEntry]) -> None:
    history = by_id["o3"].prices
    before = current(by_id["o3"], O3_CUT - timedelta(microseconds=1)).tiers["default"]
    after = current(by_id["o3"], O3_CUT).tiers["default"]
    assert (before.input, before.output) == (r("10"), r("40"))
    # genai-prices lists $0.50 cached before the cut too (notes/prices.md has no figure).
    assert before.cached_input == r("0.50")
    assert (after.input, after.cached_input, after.output) == (r("2.00"), r("0.50"), r("8.00"))
    assert history[0].valid_from == price_table.EARLIEST
    assert history[0].valid_to == O3_CUT == history[1].valid_from


def test_service_tiers_from_genai_price_variants(by_id: dict[str, TableEntry]) -> None:
    o3 = by_id["o3"]
    assert set(current(o3, TIERS_VERIFIED - timedelta(seconds=1)).tiers) == {"default"}
    tiers = current(o3).tiers
    assert set(tiers) == {"default", "flex", "priority"}
    assert tiers["flex"] == pricing.Rates(r("1"), r("4"), cached_input=r("0.25"))
    assert tiers["priority"] == pricing.Rates(r("3.5"), r("14"), cached_input=r("0.875"))
    # gpt-5.5 Fast is 2.5x, not 2x: per-model figures, never a multiplier.
    assert current(by_id["gpt-5.5"]).tiers["priority"].input == r("12.50")
    # o4-mini's flex cached rate is the published rounded 0.138, kept exactly.
    assert current(by_id["o4-mini"]).tiers["flex"].cached_input == r("0.138")
    # Models without a flex price in the data get no flex tier (Tollgate refuses it).
    assert "flex" not in current(by_id["gpt-4o-mini"]).tiers


@pytest.mark.parametrize("model", ["gpt-5.4", "gpt-5.5"])
def test_long_context_whole_request_above_272k(by_id: dict[str, TableEntry], model: str) -> None:
    p = current(by_id[model])
    assert p.long_context_threshold == 272_000
    short, long = p.tiers["default"], p.long_context_tiers["default"]
    assert long.input == 2 * short.input
    assert long.cached_input == 2 * (short.cached_input or 0)
    assert 2 * long.output == 3 * short.output  # 1.5x output
    assert pricing.rates_for(p, None, 272_000) == short
    assert pricing.rates_for(p, None, 272_001) == long
    # No published Fast rate above 272K for these models: refuse rather than guess.
    assert pricing.rates_for(p, "priority", 272_001) is None
    assert pricing.rates_for(p, "flex", 272_001) == p.long_context_tiers["flex"]


def test_gpt_5_6_sol_cache_writes_and_promotion(by_id: dict[str, TableEntry]) -> None:
    sol = by_id["gpt-5.6-sol"]
    assert by_id["gpt-5.6"].prices == sol.prices  # exact alias
    list_price = current(sol, datetime(2026, 8, 20, tzinfo=UTC)).tiers["default"]
    promo = current(sol).tiers["default"]
    assert list_price == pricing.Rates(r("5"), r("30"), r("0.5"), r("6.25"))
    assert promo == pricing.Rates(r("4"), r("20"), r("0.4"), r("5"))
    assert current(sol).long_context_tiers["priority"].cache_write == r("20")


def test_every_history_is_sorted_gap_free_and_has_default(
    table: tuple[list[TableEntry], list[Skipped]],
) -> None:
    entries, _ = table
    assert entries, "no models loaded"
    for e in entries:
        assert e.kind in ("chat", "embedding", "other")
        ps = e.prices
        assert ps[0].valid_from == price_table.EARLIEST and ps[-1].valid_to is None, e.model
        for a, b in zip(ps, ps[1:], strict=False):
            assert a.valid_from < b.valid_from and a.valid_to == b.valid_from, e.model
        for p in ps:
            assert "default" in p.tiers and p.source == price_table.source(), e.model
            assert set(p.long_context_tiers) <= set(p.tiers), e.model
            assert (p.long_context_threshold is None) == (not p.long_context_tiers), e.model
            pricing.price_from_doc(pricing.price_to_doc(p))  # passes Tollgate's validation


def test_ids_are_exact_unique_sorted_and_disjoint_from_skips(
    table: tuple[list[TableEntry], list[Skipped]],
) -> None:
    entries, skipped = table
    ids = [e.model for e in entries]
    assert ids == sorted(ids) and len(ids) == len(set(ids))
    assert not any(c in i for i in ids for c in "^$\\*[")  # regexes are never expanded
    assert not {s.model for s in skipped} & set(ids)
    assert "gpt-5.6-sol-2026-08-21" not in ids  # only matched by regex in genai-prices


def test_skips_have_reasons(table: tuple[list[TableEntry], list[Skipped]]) -> None:
    _, skipped = table
    assert [s.model for s in skipped] == sorted(s.model for s in skipped)
    assert all(s.reason.strip() for s in skipped)
    reasons = {s.model: s.reason for s in skipped}
    assert "input_image_mtok" in reasons["gpt-image-1"]
    assert "audio_hours" in reasons["whisper-1"]
    assert "input_mchars" in reasons["tts-1"]
    assert "pattern" in reasons["ft:gpt-4o"]


def test_several_input_size_tiers_are_refused() -> None:
    two = gp.TieredPrices(
        base=Decimal("1"), tiers=[gp.Tier(200_000, Decimal("2")), gp.Tier(500_000, Decimal("3"))]
    )
    mp = gp.ModelPrice(input_mtok=two, output_mtok=Decimal("4"))
    with pytest.raises(price_table._Unpriceable, match="2 thresholds"):
        price_table._rates(mp, "chat")
    with pytest.raises(price_table._Unpriceable, match="no output token price"):
        price_table._rates(gp.ModelPrice(input_mtok=Decimal("1")), "chat")


def _genai_pico(entry: TableEntry, at: datetime, tier: str, u: pricing.Usage) -> Decimal:
    calc = genai_prices.calc_price(
        genai_prices.Usage(
            input_tokens=u.input_tokens,
            cache_read_tokens=u.cached_tokens,
            cache_write_tokens=u.cache_write_tokens,
            output_tokens=u.output_tokens,
        ),
        entry.model,
        provider_id="openai",
        genai_request_timestamp=at,
        price_context={"service_tier": tier},
    )
    return calc.total_price * 10**12  # USD -> pico-USD


def test_costs_match_genai_prices_exactly(table: tuple[list[TableEntry], list[Skipped]]) -> None:
    checked = 0
    for e in table[0]:
        for p in e.prices:
            for inp in (100_000, 300_000):  # either side of the 272K threshold
                u = pricing.Usage(
                    input_tokens=inp,
                    cached_tokens=40_000,
                    cache_write_tokens=10_000,
                    output_tokens=7_000,
                )
                for tier in p.tiers:
                    rates = pricing.rates_for(p, tier, inp)
                    if rates is None:  # only a tier without published long-context rates
                        assert p.long_context_threshold is not None and inp > 272_000
                        continue
                    assert pricing.cost_pico(rates, u) == _genai_pico(e, p.valid_from, tier, u), (
                        e.model,
                        p.valid_from,
                        tier,
                        inp,
                    )
                    checked += 1
    assert checked > 500


UNDER_BILLED = [
    "gpt-4o-audio-preview",
    "gpt-4o-mini-audio-preview",
    "gpt-audio",
    "gpt-realtime",
    "gpt-4o-realtime-preview",
    "gpt-4o-transcribe",
    "gpt-4o-mini-tts",
    "gpt-4o-search-preview",
    "gpt-4o-mini-search-preview",
    "gpt-5-search-api",
]


def test_audit10_audio_and_search_models_are_left_unpriced(
    table: tuple[list[TableEntry], list[Skipped]],
) -> None:
    entries, skipped = table
    ids = {e.model for e in entries}
    reasons = {s.model: s.reason for s in skipped}
    for model in UNDER_BILLED:
        assert model not in ids, model
        assert "under-bill" in reasons[model], model
    assert "gpt-4o-search-preview-2025-03-11" not in ids  # a skipped model's alias
    assert "search" in reasons["gpt-4o-mini-search-preview"]  # an alias of gpt-4o-mini...
    assert "gpt-4o-mini" in ids  # ...which stays priced
    assert "o3-deep-research" in ids  # "research" is not "search"; its tools are refused
    # No shipped id names a modality billed beyond text tokens.
    words = {w for i in ids for w in re.split(r"[^a-z0-9]+", i)}
    assert not words & {"audio", "realtime", "transcribe", "tts", "search", "image"}


def test_audit10_audio_prices_and_request_fees_are_never_shipped(
    table: tuple[list[TableEntry], list[Skipped]],
) -> None:
    # General, by price key: any audio price, any fee per request or call but tool fees.
    provider = next(p for p in providers if p.id == "openai")
    shipped = {e.model for e in table[0]}
    for model in provider.models:
        sets = (
            [model.prices]
            if isinstance(model.prices, gp.ModelPrice)
            else [c.prices for c in model.prices]
        )
        keys = {
            k
            for mp in [*sets, *(v.prices for v in model.price_variants or ())]
            for k in price_table._keys(mp)
        }
        if any(
            "audio" in k or (k.endswith("_kcount") and k not in price_table._TOOL_FEES)
            for k in keys
        ):
            assert model.id not in shipped, model.id
    for extra in (
        {"input_audio_mtok": Decimal("40")},
        {"output_audio_mtok": Decimal("80")},
        {"requests_kcount": Decimal("25")},
        {"code_executions_kcount": Decimal("3")},
    ):
        info = gp.ModelInfo(
            id="gpt-x",
            match=gp.ClauseEquals("gpt-x"),
            prices=gp.ModelPrice(input_mtok=Decimal("1"), output_mtok=Decimal("2"), **extra),
        )
        with pytest.raises(price_table._Unpriceable, match="under-bill"):
            price_table._check_model(info)
