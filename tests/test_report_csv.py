"""functions/core/report_csv.py: usage records as JSON (ISO times, money as exact decimal
strings) and as CSV that a spreadsheet opens without running anything in it."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta, timezone

import pytest

from functions.core.report_csv import CSV_COLUMNS, record_json, to_csv

TS = datetime(2026, 12, 3, 8, 30, 5, 250000, tzinfo=timezone(timedelta(hours=1)))
RECORD = {
    "ts": TS,
    "call_id": "call_1",
    "project": "demo",
    "user": "alice",
    "key_name": "laptop",
    "model": "gpt-4o-mini",
    "upstream_model": "gpt-4o-mini-2024-07-18",
    "route": "chat",
    "status": "ok",
    "http_status": 200,
    "input_tokens": 12,
    "cached_tokens": 0,
    "cache_write_tokens": None,
    "output_tokens": 7,
    "reasoning_tokens": 0,
    "cost_nano": 123_450,
    "estimate_nano": 5_000_000_000,
    "latency_ms": 812,
    "streamed": True,
    "cached": False,
    "estimated": False,
    "tag": "nightly",
    "request_id": "req_9",
    "not_a_column": "dropped",
}


def rows_of(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def cell(rec: dict, column: str) -> str:
    header, row = rows_of(to_csv([rec]))
    return row[header.index(column)]


# --------------------------------------------------------------------------- JSON


def test_record_json_times_are_iso_utc_with_z():
    assert record_json({"ts": TS})["ts"] == "2026-12-03T07:30:05.250000Z"
    assert record_json({"ts": datetime(2026, 1, 1, tzinfo=UTC)})["ts"] == "2026-01-01T00:00:00Z"


def test_record_json_adds_usd_beside_every_nano_amount_as_an_exact_decimal_string():
    out = record_json(
        {"cost_nano": 123_450, "estimate_nano": 5 * 10**9, "refund_nano": -1, "unknown_nano": None}
    )
    assert out["cost_usd"] == "0.000123450"
    assert out["estimate_usd"] == "5.000000000"
    assert out["refund_usd"] == "-0.000000001"
    assert out["unknown_usd"] is None
    assert out["cost_nano"] == 123_450  # the integer stays too


def test_record_json_converts_nested_maps_and_lists():
    out = record_json({"details": {"at": TS, "budget_nano": 10**9, "history": [TS, {"when": TS}]}})
    d = out["details"]
    assert d["at"] == "2026-12-03T07:30:05.250000Z" and d["budget_usd"] == "1.000000000"
    assert d["history"] == ["2026-12-03T07:30:05.250000Z", {"when": "2026-12-03T07:30:05.250000Z"}]


def test_record_json_does_not_take_a_boolean_or_a_float_for_money():
    out = record_json({"flag_nano": True, "rough_nano": 1.5})
    assert "flag_usd" not in out and "rough_usd" not in out


def test_record_json_leaves_the_input_alone():
    rec = {"ts": TS, "cost_nano": 1}
    record_json(rec)
    assert rec == {"ts": TS, "cost_nano": 1}


# --------------------------------------------------------------------------- CSV


def test_csv_has_the_header_then_one_line_per_record():
    rows = rows_of(to_csv([RECORD, RECORD]))
    assert rows[0] == list(CSV_COLUMNS)
    assert len(rows) == 3 and rows[1] == rows[2]
    assert rows_of(to_csv([])) == [list(CSV_COLUMNS)]


def test_csv_cells_of_a_record():
    header, row = rows_of(to_csv([RECORD]))
    got = dict(zip(header, row, strict=True))
    assert got["ts"] == "2026-12-03T07:30:05.250000Z"
    assert got["cost_usd"] == "0.000123450" and got["estimate_usd"] == "5.000000000"
    assert got["input_tokens"] == "12" and got["http_status"] == "200"
    assert got["cache_write_tokens"] == ""  # None is an empty cell
    assert (got["streamed"], got["cached"], got["estimated"]) == ("true", "false", "false")
    assert got["model"] == "gpt-4o-mini" and got["upstream_model"] == "gpt-4o-mini-2024-07-18"
    assert "dropped" not in row


def test_csv_of_already_converted_records_is_the_same():
    assert to_csv([record_json(RECORD)]) == to_csv([RECORD])


def test_missing_fields_are_empty_cells():
    header, row = rows_of(to_csv([{"call_id": "c"}]))
    assert row[header.index("call_id")] == "c"
    assert [v for k, v in zip(header, row, strict=True) if k != "call_id"] == [""] * 22


def test_money_keeps_full_precision_and_its_sign():
    assert cell({"cost_nano": 1}, "cost_usd") == "0.000000001"
    assert cell({"cost_nano": -2_500_000_000}, "cost_usd") == "-2.500000000"
    assert cell({"cost_nano": 10**18}, "cost_usd") == "1000000000.000000000"


def test_text_with_commas_quotes_and_newlines_round_trips():
    tag = 'a "quoted", multi\nline tag'
    assert cell({**RECORD, "tag": tag}, "tag") == tag


# --------------------------------------------------------------------------- CSV injection


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("=1+2", "'=1+2"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@SUM(A1:A9)", "'@SUM(A1:A9)"),
        ('=HYPERLINK("http://evil.example","x")', '\'=HYPERLINK("http://evil.example","x")'),
        ("  =1", "'  =1"),
        ("\t=1", "'\t=1"),
        ("\tplain", "'\tplain"),
        ("\rplain", "'\rplain"),
        ("ok;=1+2", "ok;'=1+2"),
        ("ok,+1", "ok,'+1"),
        ("ok|@x", "ok|'@x"),
        ("ok\n-1", "ok\n'-1"),
        ("=1;=2", "'=1;'=2"),
    ],
)
def test_cells_a_spreadsheet_would_run_are_made_text(value, expected):
    for column in ("tag", "model", "user", "key_name", "call_id"):
        assert cell({column: value}, column) == expected


@pytest.mark.parametrize(
    "value",
    ["gpt-4o-mini", "a=b", "e-mail", "x+y", "alice@example.com", "nightly build", "claude 3.5"],
)
def test_ordinary_text_is_left_as_it_is(value):
    assert cell({"tag": value}, "tag") == value


def test_numbers_and_money_are_not_quoted_even_when_negative():
    rec = {"cost_nano": -5, "estimate_nano": -1, "http_status": -1, "latency_ms": -3}
    header, row = rows_of(to_csv([rec]))
    got = dict(zip(header, row, strict=True))
    assert got["cost_usd"] == "-0.000000005" and got["estimate_usd"] == "-0.000000001"
    assert got["http_status"] == "-1" and got["latency_ms"] == "-3"
