"""Proxy keys: the Authorization header forms and who may use a key."""

from datetime import UTC, datetime, timedelta

import pytest

from functions.core import auth
from functions.core.errors import InvalidApiKey
from functions.core.records import CallContext, KeyRecord, MemberRecord, ProjectRecord, UserRecord

KEY = auth.new_key()
NOW = datetime(2026, 11, 23, tzinfo=UTC)


def test_new_keys_are_long_random_base62_with_prefix():
    keys = {auth.new_key() for _ in range(50)}
    assert len(keys) == 50
    for k in keys:
        assert k.startswith("tg_") and len(k) == 43 and k[3:].isalnum()


def test_digest_is_sha256_hex_and_not_the_key():
    h = auth.key_hash(KEY)
    assert len(h) == 64 and KEY not in h and h == auth.key_hash(KEY)


@pytest.mark.parametrize(
    "header",
    [f"Bearer {KEY}", f"alice {KEY}", f"UserName {KEY}", f"bearer   {KEY}", KEY],
    # the key is random: ids by form keep the collection the same in every xdist worker
    ids=["bearer", "user-name-alice", "user-name", "spaces", "bare"],
)
def test_accepted_header_forms(header):
    assert auth.key_from_header(header) == KEY


@pytest.mark.parametrize(
    "header", [None, "", "   ", "alice", "UserName alice", "Bearer", "a b c", "alice sk-not-ours"]
)
def test_a_name_or_nothing_gets_the_key_needed_message(header):
    with pytest.raises(InvalidApiKey) as e:
        auth.key_from_header(header)
    assert e.value.status == 401 and e.value.code == "invalid_api_key"
    assert "proxy key is needed" in e.value.message


def test_a_malformed_bearer_token_is_an_incorrect_key_and_is_not_echoed():
    with pytest.raises(InvalidApiKey) as e:
        auth.key_from_header("Bearer sk-proj-abcdefghijklmnopqrstuvwxyz")
    assert "Incorrect" in e.value.message and "sk-proj" not in e.value.message


def _ctx(**over):
    base = dict(
        key=KeyRecord("h", "demo", "bob", "laptop"),
        user=UserRecord("bob"),
        member=MemberRecord("demo", "bob"),
        project=ProjectRecord("demo"),
    )
    base.update(over)
    return CallContext(**base)


def test_a_valid_context_passes():
    assert auth.check_context(_ctx(), NOW).user.id == "bob"


@pytest.mark.parametrize(
    "over, words",
    [
        (dict(key=KeyRecord("h", "demo", "bob", "x", revoked_at=NOW)), "revoked"),
        (dict(key=KeyRecord("h", "demo", "bob", "x", expires_at=NOW)), "expired"),
        (dict(user=UserRecord("bob", disabled=True)), "disabled"),
        (dict(user=None), "disabled"),
        (dict(member=None), "no longer"),
        (dict(project=ProjectRecord("demo", archived=True)), "no longer"),
    ],
)
def test_revoked_expired_disabled_or_removed_is_401(over, words):
    with pytest.raises(InvalidApiKey, match=words):
        auth.check_context(_ctx(**over), NOW)


def test_unknown_key_is_401_and_future_expiry_passes():
    with pytest.raises(InvalidApiKey):
        auth.check_context(None, NOW)
    later = KeyRecord("h", "demo", "bob", "x", expires_at=NOW + timedelta(seconds=1))
    assert auth.check_context(_ctx(key=later), NOW)
