"""Request parsing shared by the functions: JSON that every parser reads one way."""

from __future__ import annotations

import pytest

from functions.core.errors import InvalidRequest
from functions.httpio import parse_json


@pytest.mark.parametrize(
    "raw, named",
    [
        (b'{"model": "gpt-4o", "model": "gpt-4o-mini"}', '"model"'),
        (b'{"model": "m", "max_tokens": 5, "max_tokens": 50000}', '"max_tokens"'),
        (b'{"model": "m", "mod\\u0065l": "x"}', '"model"'),  # the same key, spelled escaped
        (b'{"messages": [{"role": "user", "n": 1, "n": 2}]}', '"n"'),  # at any depth
        (b'[{"a": {"b": [{"c": 1, "c": 1}]}}]', '"c"'),  # even with equal values
    ],
)
def test_audit8_duplicate_keys_are_refused_naming_the_key(raw: bytes, named: str) -> None:
    with pytest.raises(InvalidRequest) as e:
        parse_json(raw)
    assert e.value.status == 400 and e.value.code == "invalid_request"
    assert named in e.value.message and "repeats" in e.value.message


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e999"])
def test_audit8_nan_infinity_and_overflowing_numbers_are_refused(literal: bytes) -> None:
    with pytest.raises(InvalidRequest) as e:
        parse_json(b'{"model": "m", "temperature": ' + literal + b"}")
    assert literal.lstrip(b"-").decode()[:3] in e.value.message


def test_ordinary_json_still_parses() -> None:
    assert parse_json(b'{"a": 1.5, "b": [1e-400, -0, {"a": 2}], "c": {"a": "a"}}') == {
        "a": 1.5,
        "b": [0.0, 0, {"a": 2}],
        "c": {"a": "a"},
    }
    for bad in (b"", b"{not json", b'{"a": "\\ud800"}'):
        with pytest.raises(InvalidRequest):
            parse_json(bad)


def test_one_app_object_per_settings_however_many_requests_arrive_at_once():
    """A cold instance's first burst builds the proxy (a Firestore client, its channel)
    once, not once per request (functools.cache would)."""
    import threading
    import time

    from functions.httpio import OnePer

    built: list[str] = []

    def make(key: str) -> object:
        built.append(key)
        time.sleep(0.05)  # a client takes a while to build: the burst overlaps it
        return object()

    get = OnePer(make)
    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(get("s"))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert built == ["s"] and len({id(g) for g in got}) == 1
    assert get("other") is not got[0] and built == ["s", "other"]
    get.cache_clear()
    assert get("s") is not got[0]
