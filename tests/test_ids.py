"""Document ids (``functions/core/ids.py``): the stored format is pinned here, since a
change would orphan every counter, membership and limit already written."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from functions.core import ids


def test_the_stored_formats():
    assert ids.project_counter("demo", "2026-12") == "p|demo|2026-12"
    assert ids.member_counter("demo", "bob", "2026-W49") == "m|demo|bob|2026-W49"
    assert ids.model_counter("demo", "gpt-4o", "total") == "pm|demo|gpt-4o|total"
    assert ids.member_model_counter("demo", "bob", "gpt-4o", "2026-12-03") == (
        "pum|demo|bob|gpt-4o|2026-12-03"
    )
    assert ids.key_counter("demo", "bob", "ci", "2026-12") == "k|demo|bob|ci|2026-12"
    assert ids.project_window("demo", "202612031405") == "rl|demo|202612031405"
    assert ids.model_window("demo", "gpt-4o", "m") == "rl|demo|gpt-4o|m"
    assert ids.member_model_window("demo", "bob", "gpt-4o", "m") == "rl|demo|bob|gpt-4o|m"
    assert ids.key_window("demo", "bob", "ci", "m") == "rlk|demo|bob|ci|m"
    assert ids.member("demo", "bob") == "demo|bob"
    assert ids.limit("demo", "gpt-4o") == "demo|gpt-4o"
    assert ids.limit("demo", "gpt-4o", "bob") == "demo|bob|gpt-4o"
    assert ids.model("gpt-4o-mini") == "gpt-4o-mini"
    assert ids.reconciliation("2026-12-01", "main") == "2026-12-01|main"


def test_model_names_with_slashes_and_bars_stay_one_part():
    assert "/" not in ids.model_counter("proj", "org/model:ft", "2026-11")
    assert ids.doc_id("a|b") != ids.doc_id("a", "b")
    assert ids.limit("p", "u|m") != ids.limit("p", "m", "u")


def test_firestores_reserved_forms_cannot_be_built():
    for name in (".", "..", "__x__", "_"):
        made = ids.model(name)
        assert made not in (".", "..") and not made.startswith(("_", "."))


@given(st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=5))
def test_any_names_give_a_valid_id_and_different_names_different_ids(parts):
    made = ids.doc_id(*parts)
    assert "/" not in made and not made.startswith(("_", ".")) and made not in (".", "..")
    assert made.count("|") == len(parts) - 1
    if len(parts) > 1:
        assert made != ids.doc_id("|".join(parts))
