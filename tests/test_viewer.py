"""Who sees what on the log API (``functions/log/viewer.py``): the key's project only,
a member's own calls, a lead's whole project. Pure: the filters a request becomes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from functions.core.errors import InvalidRequest, PermissionDenied
from functions.log.viewer import Viewer, filters_for

BOB = Viewer("bob", "Bob", "demo", "member", None)
ALICE = Viewer("alice", "Alice", "demo", "lead", None)


def test_a_member_sees_their_own_calls_whatever_the_query_says():
    for args in ({}, {"project": "demo"}, {"user": "alice"}, {"member": "bob"}):
        f = filters_for(BOB, args)
        assert (f.project, f.user) == ("demo", "bob"), args


def test_a_lead_sees_the_project_or_one_member_of_it():
    assert (filters_for(ALICE, {}).project, filters_for(ALICE, {}).user) == ("demo", None)
    assert filters_for(ALICE, {"member": "bob"}).user == "bob"
    assert filters_for(ALICE, {"member": "alice", "user": "bob"}).user == "alice"


@pytest.mark.parametrize("viewer", [BOB, ALICE], ids=["member", "lead"])
def test_no_key_sees_another_project(viewer):
    with pytest.raises(PermissionDenied) as e:
        filters_for(viewer, {"project": "other"})
    assert e.value.param == "project"


def test_only_a_lead_names_another_member():
    with pytest.raises(PermissionDenied) as e:
        filters_for(BOB, {"member": "alice"})
    assert e.value.param == "member"


def test_the_other_filters_pass_through_and_bad_times_are_a_400():
    f = filters_for(
        BOB,
        {"model": "gpt-4o-mini", "tag": "nightly", "key": "ci", "after": "2026-12-01T00:00:00Z"},
    )
    assert (f.model, f.tag, f.key) == ("gpt-4o-mini", "nightly", "ci")
    assert f.after == datetime(2026, 12, 1, tzinfo=UTC)
    with pytest.raises(InvalidRequest) as e:
        filters_for(BOB, {"after": "yesterday"})
    assert e.value.param == "after"
