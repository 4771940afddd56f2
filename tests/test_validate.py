"""functions/core/validate.py: the admin API's field readers return a clean value or refuse
with a 400 (InvalidRequest) whose ``param`` names the field at fault."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from functions.core import validate as v
from functions.core.errors import InvalidRequest


def refused(call, *args, **kw) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        call(*args, **kw)
    err = info.value
    assert err.status == 400 and err.code == "invalid_request"
    return err


# --------------------------------------------------------------------------- every refusal

REFUSALS = [
    ("ident", lambda: v.ident({"id": "-starts-with-dash"}, "id"), "id"),
    ("ident missing", lambda: v.ident({}, "project"), "project"),
    ("path_id", lambda: v.path_id("a/b", "user"), "user"),
    ("text type", lambda: v.text({"name": 5}, "name"), "name"),
    ("text required", lambda: v.text({}, "name", required=True), "name"),
    ("email", lambda: v.email({"email": "no-at-sign"}), "email"),
    ("email other field", lambda: v.email({"cc": "a b@c"}, "cc"), "cc"),
    ("boolean", lambda: v.boolean({"active": "true"}, "active"), "active"),
    ("integer", lambda: v.integer({"n": 11}, "n", lo=1, hi=10), "n"),
    ("usd_nano", lambda: v.usd_nano({"budget_usd": "1.0000000001"}), "budget_usd"),
    ("timestamp", lambda: v.timestamp("2026-11-23T10:00:00", "since"), "since"),
    ("one_of", lambda: v.one_of({"period": "hourly"}, "period", ("daily",)), "period"),
    ("string_list", lambda: v.string_list({"models": "gpt-4o"}, "models"), "models"),
    ("only_fields", lambda: v.only_fields({"name": "x", "bogus": 1}, {"name"}), "bogus"),
    ("usd_per_mtok missing", lambda: v.usd_per_mtok({}, "input", required=True), "input"),
    (
        "usd_per_mtok bad",
        lambda: v.usd_per_mtok({"input": "cheap"}, "input", required=True),
        "input",
    ),
    ("windows", lambda: v.windows({"windows": {}}, "monthly", ("daily", "monthly")), "windows"),
]


@pytest.mark.parametrize(("what", "call", "param"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_every_refusal_is_a_400_naming_the_field(what, call, param):
    err = refused(call)
    assert err.param == param
    assert f"'{param}" in err.message  # the message names it too


def test_body_must_be_an_object():
    assert v.body_object({"a": 1}) == {"a": 1}
    for body in ([], "x", None, 3):
        refused(v.body_object, body)


# --------------------------------------------------------------------------- ident


@pytest.mark.parametrize("good", ["a", "demo", "Proj-1.a_b@c", "9lives", "x" * 128])
def test_ident_accepts(good):
    assert v.ident({"id": good}, "id") == good
    assert v.path_id(good, "id") == good


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "-a",
        ".a",
        "_a",
        "@a",
        "a b",
        "a/b",
        "é",
        "x" * 129,
        5,
        None,
        ["a"],
        "abc\n",
        "abc\r",
        "a\nb",
        "\nabc",
    ],
)
def test_ident_refuses(bad):
    assert refused(v.ident, {"id": bad}, "id").param == "id"


def test_a_path_id_with_a_trailing_newline_is_refused():
    # %0A at the end of a URL path: "alice\n" must not name a second, look-alike user
    assert refused(v.path_id, "alice\n", "user").param == "user"


def test_an_optional_ident_may_be_absent_but_not_empty():
    assert v.ident({}, "id", required=False) is None
    assert refused(v.ident, {"id": ""}, "id", required=False).param == "id"


# --------------------------------------------------------------------------- text, email


def test_text_bounds_and_defaults():
    assert v.text({"note": "x" * 200}, "note") == "x" * 200
    assert refused(v.text, {"note": "x" * 201}, "note").param == "note"
    assert v.text({"note": "x" * 300}, "note", max_len=300) == "x" * 300
    assert v.text({}, "note") is None
    assert v.text({}, "note", default="none") == "none"
    assert v.text({"note": None}, "note") is None
    assert "at most 50 characters" in refused(v.text, {"n": "x" * 51}, "n", max_len=50).message


@pytest.mark.parametrize("good", ["alice@example.com", "a.b+c@sub.example.org", "x@y"])
def test_email_accepts(good):
    assert v.email({"email": good}) == good


@pytest.mark.parametrize(
    "bad",
    [
        "alice",
        "a@b@c",
        "a @b.c",
        "a@b c",
        "@b.c",
        "a@",
        "alice@example.com\n",
        "x" * 65 + "@b.c",
        "a@" + "b" * 256,
        42,
    ],
)
def test_email_refuses(bad):
    assert refused(v.email, {"email": bad}).param == "email"


def test_email_may_be_absent():
    assert v.email({}) is None


# --------------------------------------------------------------------------- boolean, integer


def test_boolean_takes_only_json_booleans():
    assert v.boolean({"a": True}, "a") is True
    assert v.boolean({"a": False}, "a") is False
    assert v.boolean({}, "a") is None
    for bad in ("true", 1, 0, "yes", [], {}):
        assert refused(v.boolean, {"a": bad}, "a").param == "a"


def test_integer_bounds_are_inclusive():
    assert v.integer({"n": 1}, "n", lo=1, hi=10) == 1
    assert v.integer({"n": 10}, "n", lo=1, hi=10) == 10
    assert v.integer({}, "n") is None
    assert v.integer({"n": 2**31}, "n") == 2**31
    for bad in (0, 11, -1):
        err = refused(v.integer, {"n": bad}, "n", lo=1, hi=10)
        assert "between 1 and 10" in err.message


@pytest.mark.parametrize("bad", [True, False, 1.0, 2.5, "5", object(), [1]])
def test_integer_refuses_what_is_not_an_integer(bad):
    assert refused(v.integer, {"n": bad}, "n").param == "n"


def test_integer_default_bounds_refuse_negatives_and_huge():
    refused(v.integer, {"n": -1}, "n")
    refused(v.integer, {"n": 2**31 + 1}, "n")


# --------------------------------------------------------------------------- usd_nano

NANO = 1_000_000_000


@pytest.mark.parametrize(
    ("value", "nano"),
    [
        ("12.50", 12_500_000_000),
        ("0", 0),
        (0, 0),
        (12, 12 * NANO),
        (" 7 ", 7 * NANO),
        ("0.000000001", 1),
        ("1.123456789", 1_123_456_789),
        ("1.500000000000", 1_500_000_000),  # trailing zeros are not decimals
        (0.1, 100_000_000),  # the JSON number 0.1 is 10 cents, not 0.1000000000000000055…
        (19.99, 19_990_000_000),
        ("1e3", 1000 * NANO),
        ("1000000000", 1_000_000_000 * NANO),  # the maximum
    ],
)
def test_usd_nano_reads_dollars_exactly(value, nano):
    got = v.usd_nano({"budget_usd": value})
    assert got == nano and type(got) is int


@pytest.mark.parametrize(
    "bad",
    [
        "0.0000000001",  # 10 decimals
        "1.1234567891",
        0.30000000000000004,  # 0.1 + 0.2 as a float: 17 decimals
        1e-10,
        "-1",
        -0.5,
        "1000000000.000000001",
        1e10,
        "NaN",
        "Infinity",
        "-Infinity",
        "sNaN",
        "twelve",
        "",
        "12,50",
        "$5",
        True,
        False,
        [],
        {"usd": 1},
        object(),
    ],
)
def test_usd_nano_refuses(bad):
    assert refused(v.usd_nano, {"budget_usd": bad}).param == "budget_usd"


@pytest.mark.parametrize("bad", ["1e999999", "1E+999999999", 1e300, "1e-999999999", "1e-1000"])
def test_usd_nano_refuses_extreme_exponents_with_a_400(bad):
    # not a 500 from decimal.Overflow, and not a tiny amount silently rounded to 0
    assert refused(v.usd_nano, {"budget_usd": bad}).param == "budget_usd"


def test_usd_nano_absent_and_named_fields():
    assert v.usd_nano({}) is None
    assert v.usd_nano({"amount_usd": "3"}, "amount_usd") == 3 * NANO
    assert refused(v.usd_nano, {"amount_usd": "x"}, "amount_usd").param == "amount_usd"


# --------------------------------------------------------------------------- timestamp


def test_timestamp_with_a_zone():
    assert v.timestamp("2026-11-23T10:00:00Z", "t") == datetime(2026, 11, 23, 10, tzinfo=UTC)
    assert v.timestamp("2026-11-23T10:00:00z", "t") == datetime(2026, 11, 23, 10, tzinfo=UTC)
    plus1 = v.timestamp("2026-11-23T11:00:00+01:00", "t")
    assert plus1 == datetime(2026, 11, 23, 10, tzinfo=UTC)
    assert plus1.utcoffset() == timedelta(hours=1)
    assert v.timestamp(" 2026-11-23T10:00:00.250-05:30 ", "t").tzinfo == timezone(
        -timedelta(hours=5, minutes=30)
    )


@pytest.mark.parametrize("bad", ["2026-11-23T10:00:00", "2026-11-23", "2026-11-23 10:00"])
def test_timestamp_without_a_zone_is_refused_with_a_hint(bad):
    err = refused(v.timestamp, bad, "since")
    assert err.param == "since" and "zone" in err.message


@pytest.mark.parametrize(
    "bad",
    [
        "yesterday",
        "",
        "2026-13-01T00:00:00Z",
        1700000000,
        None,
        "1969-12-31T23:59:59Z",
        "9001-01-01T00:00:00Z",
    ],
)
def test_timestamp_refuses(bad):
    assert refused(v.timestamp, bad, "until").param == "until"


def test_timestamp_message_does_not_echo_a_long_input():
    err = refused(v.timestamp, "x" * 5000, "since")
    assert len(err.message) < 200


# --------------------------------------------------------------------------- one_of, lists


def test_one_of():
    assert v.one_of({"p": "daily"}, "p", ("daily", "monthly")) == "daily"
    assert v.one_of({}, "p", ("daily", "monthly")) is None
    assert v.one_of({}, "p", ("daily", "monthly"), default="monthly") == "monthly"
    err = refused(v.one_of, {"p": "Daily"}, "p", ("daily", "monthly"))
    assert "daily, monthly" in err.message
    refused(v.one_of, {"p": ["daily"]}, "p", ("daily",))


def test_string_list_keeps_order_and_drops_repeats():
    body = {"models": ["gpt-4o", "gpt-4o-mini", "gpt-4o"]}
    assert v.string_list(body, "models") == ["gpt-4o", "gpt-4o-mini"]
    assert v.string_list({"models": []}, "models") == []
    assert v.string_list({}, "models") is None


@pytest.mark.parametrize(
    "bad", ["gpt-4o", ["ok", ""], ["ok", 5], ["x" * 257], [None], {"a": 1}, ["a"] * 501]
)
def test_string_list_refuses(bad):
    assert refused(v.string_list, {"models": bad}, "models").param == "models"


def test_string_list_bounds():
    assert v.string_list({"m": ["x" * 256]}, "m") == ["x" * 256]
    assert len(v.string_list({"m": [str(i) for i in range(500)]}, "m") or []) == 500
    refused(v.string_list, {"m": ["a", "b", "c"]}, "m", max_items=2)


def test_only_fields_names_the_first_unknown_field():
    v.only_fields({"name": 1, "email": 2}, {"name", "email", "active"})
    v.only_fields({}, set())
    err = refused(v.only_fields, {"name": 1, "zeta": 2, "alpha": 3}, {"name"})
    assert err.param == "alpha" and "'alpha'" in err.message


# --------------------------------------------------------------------------- windows

PERIODS = ("daily", "weekly", "monthly")


def test_windows_read_as_nano_dollars():
    body = {
        "windows": [{"period": "daily", "budget_usd": "5"}, {"period": "weekly", "budget_usd": 20}]
    }
    assert v.windows(body, "monthly", PERIODS) == [
        {"period": "daily", "budget_nano": 5 * NANO},
        {"period": "weekly", "budget_nano": 20 * NANO},
    ]
    assert v.windows({"windows": []}, "monthly", PERIODS) == []
    assert v.windows({}, "monthly", PERIODS) is None


@pytest.mark.parametrize(
    ("windows", "param"),
    [
        ([{"period": "monthly", "budget_usd": "5"}], "windows[0].period"),  # the main period
        ([{"period": "hourly", "budget_usd": "5"}], "windows[0].period"),
        ([{"period": "daily"}], "windows[0]"),
        ([{"period": "daily", "budget_usd": "5", "extra": 1}], "windows[0]"),
        ([{"period": "daily", "budget_usd": None}], "windows[0]"),
        (
            [{"period": "daily", "budget_usd": "5"}, {"period": "daily", "budget_usd": "6"}],
            "windows[1]",
        ),
        (["daily"], "windows[0]"),
        ([{"period": "daily", "budget_usd": "-1"}], "budget_usd"),
    ],
)
def test_windows_refusals_point_at_the_window(windows, param):
    assert refused(v.windows, {"windows": windows}, "monthly", PERIODS).param == param


# --------------------------------------------------------------------------- is_name


def test_is_name():
    assert v.is_name("gpt-4o-mini") and v.is_name("x" * 256)
    assert not v.is_name("") and not v.is_name("x" * 257)
    assert not v.is_name("modèle") and not v.is_name("a\nb")
