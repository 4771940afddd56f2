"""Usage aggregates, records, CSV and the audit list against the real Firestore emulator.

Expected aggregates come from a plain-Python reference over the same seeded records,
so every filter combination is checked against an independent computation."""

from __future__ import annotations

import base64
import csv
import io
import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.cloud import firestore

from functions.core.errors import InvalidRequest
from functions.core.pricing import format_usd
from functions.store import reports
from functions.store.reports import Filters

T = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
# (id, ts, project, user, model, input, cached, output, cost_nano)
ROWS: list[tuple[str, datetime, str, str, str, int, int, int, int]] = [
    ("c1", T, "demo", "alice", "m1", 100, 10, 50, 1000),
    (
        "c2",
        datetime(2026, 11, 20, 23, 59, 59, 999999, tzinfo=UTC),
        "demo",
        "bob",
        "m1",
        200,
        0,
        20,
        2001,
    ),
    ("c3", datetime(2026, 11, 21, tzinfo=UTC), "demo", "alice", "m2", 300, 30, 30, 3),
    ("c4", datetime(2026, 11, 21, 12, tzinfo=UTC), "other", "alice", "m1", 400, 0, 40, 4000),
    ("c5", datetime(2026, 11, 22, 9, 30, tzinfo=UTC), "other", "bob", "m2", 500, 50, 5, 5),
    ("c6", datetime(2026, 11, 22, 9, 30, tzinfo=UTC), "demo", "alice", "m1", 600, 0, 60, 6),
]
# x-tollgate-tag and key name of each row (None: sent without a tag)
TAGS = {
    "c1": "nightly",
    "c2": "nightly",
    "c3": None,
    "c4": "<img src=x onerror=1>",
    "c5": None,
    "c6": "adhoc",
}
KEYS = {"c1": "default", "c2": "ci", "c3": "laptop", "c4": "default", "c5": "default", "c6": "ci"}


def usage_doc(
    cid: str,
    ts: datetime,
    project: str,
    user: str,
    model: str,
    inp: int,
    cached: int,
    out: int,
    cost: int,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "call_id": cid,
        "ts": ts,
        "settled_at": ts + timedelta(seconds=1),
        "project": project,
        "user": user,
        "key_name": "default",
        "model": model,
        "upstream_model": model + "-2026",
        "route": "chat",
        "status": "ok",
        "http_status": 200,
        "input_tokens": inp,
        "cached_tokens": cached,
        "cache_write_tokens": 0,
        "output_tokens": out,
        "reasoning_tokens": 0,
        "cost_nano": cost,
        "estimate_nano": cost + 7,
        "latency_ms": 12,
        "streamed": False,
        "cached": False,
        "estimated": False,
        "tag": None,
        "request_id": "req_" + cid,
        "usage": {"prompt_tokens": inp},
        **extra,
    }


@pytest.fixture
def seeded(db: firestore.Client) -> firestore.Client:
    for uid in ("alice", "bob", "carol"):
        db.collection("users").document(uid).set({"id": uid})
    for pid in ("demo", "other", "empty"):
        db.collection("projects").document(pid).set({"id": pid})
    for mid in ("m1", "m2", "m3"):
        db.collection("models").document(mid).set({"id": mid})
    for p, u in (("demo", "alice"), ("demo", "bob"), ("other", "alice")):
        db.collection("members").document(f"{p}|{u}").set({"project": p, "user": u})
        db.collection("keys").document(f"h-{p}-{u}").set(
            {"project": p, "user": u, "name": "default"}
        )
    # bob was removed from "other": no member document, but his revoked key remains.
    db.collection("keys").document("h-other-bob").set(
        {"project": "other", "user": "bob", "revoked_at": NOW}
    )
    for p, u, name in (
        ("demo", "alice", "laptop"),
        ("demo", "alice", "ci"),
        ("demo", "bob", "ci"),
        ("demo", "bob", "spare"),
    ):  # spare: no calls
        db.collection("keys").document(f"h-{p}-{u}-{name}").set(
            {"project": p, "user": u, "name": name}
        )
    for r in ROWS:
        db.collection("usage").document(r[0]).set(
            usage_doc(*r, tag=TAGS[r[0]], key_name=KEYS[r[0]])
        )
    return db


# group_by -> the reference's group of a row
GROUP_OF: dict[str, Callable[[tuple], Any]] = {
    "project": lambda r: r[2],
    "user": lambda r: r[3],
    "model": lambda r: r[4],
    "tag": lambda r: TAGS[r[0]],
    "key": lambda r: KEYS[r[0]],
    "day": lambda r: r[1].date().isoformat(),
}


def matches(f: Filters, r: tuple) -> bool:
    _, ts, project, user, model = r[:5]
    tag = TAGS[r[0]]
    return not (
        (f.user and user != f.user)
        or (f.project and project != f.project)
        or (f.model and model != f.model)
        or (f.after and ts < f.after)
        or (f.before and ts >= f.before)
        or (f.key and KEYS[r[0]] != f.key)
        or (f.tag is not None and tag != (f.tag or None))
    )


def expected(f: Filters, key: int | str | None = None, day: bool = False) -> dict[Any, dict]:
    """Reference aggregation: group by column index (2 project, 3 user, 4 model) or by
    a group_by name."""
    out: dict[Any, dict] = {}
    for r in ROWS:
        _, ts, project, user, model, inp, cached, outp, cost = r
        if not matches(f, r):
            continue
        if day or isinstance(key, str):
            g = GROUP_OF["day" if day else str(key)](r)
        else:
            g = r[key] if key is not None else None
        a = out.setdefault(
            g, {"calls": 0, "input_tokens": 0, "cached_tokens": 0, "output_tokens": 0, "cost": 0}
        )
        for k, v in (
            ("calls", 1),
            ("input_tokens", inp),
            ("cached_tokens", cached),
            ("output_tokens", outp),
            ("cost", cost),
        ):
            a[k] += v
    return {
        g: {
            "group": g,
            "calls": a["calls"],
            "input_tokens": a["input_tokens"],
            "cached_tokens": a["cached_tokens"],
            "output_tokens": a["output_tokens"],
            "cost_usd": format_usd(a["cost"]),
            "avg_cost_usd": format_usd((2 * a["cost"] + a["calls"]) // (2 * a["calls"])),
        }
        for g, a in out.items()
    }


def walk(db: firestore.Client, f: Filters, group_by: str, limit: int) -> list[dict]:
    rows, token, pages = [], None, 0
    while True:
        page = reports.aggregate(db, f, group_by, limit=limit, page_token=token, now=NOW)
        assert len(page["data"]) <= limit
        rows += page["data"]
        token, pages = page["next_page_token"], pages + 1
        assert pages < 100
        if token is None:
            return rows


def test_totals_without_group(seeded: firestore.Client) -> None:
    res = reports.aggregate(seeded, Filters(), None)
    assert res == {
        "next_page_token": None,
        "data": [
            {
                "group": None,
                "calls": 6,
                "input_tokens": 2100,
                "cached_tokens": 90,
                "output_tokens": 205,
                "cost_usd": "0.000007015",
                "avg_cost_usd": "0.000001169",
            }
        ],
    }


def test_totals_of_nothing_are_zero(seeded: firestore.Client) -> None:
    row = reports.aggregate(seeded, Filters(user="carol"), None)["data"][0]
    assert row["calls"] == 0 and row["cost_usd"] == row["avg_cost_usd"] == "0.000000000"


def test_group_by_user_project_model(seeded: firestore.Client) -> None:
    by_user = reports.aggregate(seeded, Filters(), "user")
    assert [r["group"] for r in by_user["data"]] == ["alice", "bob"]  # carol: no calls
    assert by_user["data"][1] == {
        "group": "bob",
        "calls": 2,
        "input_tokens": 700,
        "cached_tokens": 50,
        "output_tokens": 25,
        "cost_usd": "0.000002006",
        "avg_cost_usd": "0.000001003",
    }
    by_project = reports.aggregate(seeded, Filters(), "project")["data"]
    # other: 4005 / 2 = 2002.5 rounds half up to 2003
    assert [(r["group"], r["cost_usd"], r["avg_cost_usd"]) for r in by_project] == [
        ("demo", "0.000003010", "0.000000753"),
        ("other", "0.000004005", "0.000002003"),
    ]
    by_model = reports.aggregate(seeded, Filters(), "model")["data"]
    assert by_model == list(expected(Filters(), key=4).values())


def test_group_by_day_newest_first(seeded: firestore.Client) -> None:
    f = Filters(after=datetime(2026, 11, 19, tzinfo=UTC))
    rows = reports.aggregate(seeded, f, "day", now=NOW)["data"]
    assert [r["group"] for r in rows] == ["2026-11-22", "2026-11-21", "2026-11-20"]
    assert rows == [expected(f, day=True)[g] for g in ("2026-11-22", "2026-11-21", "2026-11-20")]
    # Default window: the 30 UTC days ending with the day of `before` (or now).
    old = reports.aggregate(seeded, Filters(before=datetime(2026, 12, 20, 1, tzinfo=UTC)), "day")[
        "data"
    ]
    assert [r["group"] for r in old] == ["2026-11-22", "2026-11-21"]  # 11-20 is outside
    with pytest.raises(InvalidRequest) as e:
        reports.aggregate(seeded, Filters(after=datetime(2025, 1, 1, tzinfo=UTC)), "day", now=NOW)
    assert e.value.param == "after" and "366" in e.value.message


def page_order(rows: dict[Any, dict]) -> list[dict]:
    """Groups ascending, the untagged (None) group last."""
    return [rows[g] for g in sorted(rows, key=lambda g: (g is None, g or ""))]


def test_every_filter_combination_matches_reference(seeded: firestore.Client) -> None:
    bounds = [(None, None), (ROWS[2][1], None), (None, ROWS[4][1]), (T, ROWS[3][1])]
    for (user, project, model, tag, key), (after, before) in itertools.product(
        itertools.product(
            (None, "alice"), (None, "demo"), (None, "m1"), (None, "nightly"), (None, "default")
        ),
        bounds,
    ):
        if (tag or key) and (after or before) and (after, before) != bounds[-1]:
            continue  # tag and key with one set of bounds: the shapes are the same
        f = Filters(
            user=user, project=project, model=model, after=after, before=before, tag=tag, key=key
        )
        total = reports.aggregate(seeded, f, None)["data"][0]
        assert total["calls"] == sum(r["calls"] for r in expected(f).values())
        for group_by, col in (
            ("user", 3),
            ("project", 2),
            ("model", 4),
            ("tag", "tag"),
            ("key", "key"),
        ):
            got = reports.aggregate(seeded, f, group_by)["data"]
            assert got == page_order(expected(f, key=col)), (f, group_by)


def test_group_by_tag_and_key(seeded: firestore.Client) -> None:
    by_tag = reports.aggregate(seeded, Filters(), "tag")["data"]
    # tags ascending (as Firestore orders strings), then the calls without a tag
    assert [(r["group"], r["calls"]) for r in by_tag] == [
        ("<img src=x onerror=1>", 1),
        ("adhoc", 1),
        ("nightly", 2),
        (None, 2),
    ]
    assert by_tag == page_order(expected(Filters(), key="tag"))
    assert sum(r["calls"] for r in by_tag) == len(ROWS)  # every call in exactly one group
    # filtered on the grouped field: one group; a tag nobody used: none
    one = reports.aggregate(seeded, Filters(tag="nightly"), "tag")["data"]
    assert [(r["group"], r["cost_usd"]) for r in one] == [("nightly", format_usd(1000 + 2001))]
    assert reports.aggregate(seeded, Filters(tag="nope"), "tag")["data"] == []
    # the untagged calls as a filter (internal: the group's narrowing)
    recs, _ = reports.records(seeded, Filters(tag=reports.UNTAGGED))
    assert [r["call_id"] for r in recs] == ["c5", "c3"]
    # tags are read under the report's equality filters: bob in demo used one tag
    assert [
        r["group"]
        for r in reports.aggregate(seeded, Filters(user="bob", project="demo"), "tag")["data"]
    ] == ["nightly"]

    by_key = reports.aggregate(seeded, Filters(), "key")["data"]
    assert [(r["group"], r["calls"]) for r in by_key] == [
        ("ci", 2),
        ("default", 3),
        ("laptop", 1),
    ]  # "spare" made no call
    assert by_key == page_order(expected(Filters(), key="key"))
    demo_bob = reports.aggregate(seeded, Filters(project="demo", user="bob"), "key")["data"]
    assert [(r["group"], r["calls"]) for r in demo_bob] == [("ci", 1)]
    recs, _ = reports.records(seeded, Filters(key="ci", tag="adhoc"))
    assert [r["call_id"] for r in recs] == ["c6"]
    # a key filter with another grouping
    by_user = reports.aggregate(seeded, Filters(key="default"), "user")["data"]
    assert [(r["group"], r["calls"]) for r in by_user] == [("alice", 2), ("bob", 1)]


def test_after_inclusive_before_exclusive(seeded: firestore.Client) -> None:
    at = ROWS[2][1]  # c3, exactly midnight
    assert (
        reports.aggregate(seeded, Filters(after=at, before=at + timedelta(microseconds=1)), None)[
            "data"
        ][0]["calls"]
        == 1
    )
    assert reports.aggregate(seeded, Filters(before=at), None)["data"][0]["calls"] == 2
    ids = [r["call_id"] for r in reports.records(seeded, Filters(after=at))[0]]
    assert "c3" in ids and "c2" not in ids
    # c2 at 23:59:59.999999 is the last instant of the 20th, c3 the first of the 21st.
    days = reports.aggregate(seeded, Filters(after=T, before=at + timedelta(hours=1)), "day")
    assert [(r["group"], r["calls"]) for r in days["data"]] == [
        ("2026-11-21", 1),
        ("2026-11-20", 2),
    ]


def test_parse_filters() -> None:
    f = reports.parse_filters(
        {
            "user": "alice",
            "after": "2026-11-20T09:00:00+01:00",
            "before": "2026-11-21T00:00:00Z",
            "project": "",
        }
    )
    assert f == Filters(user="alice", after=T, before=datetime(2026, 11, 21, tzinfo=UTC))
    for args, param in (
        ({"after": "2026-11-20T08:00:00"}, "after"),
        ({"after": "2026-11-20"}, "after"),
        ({"before": "yesterday"}, "before"),
        ({"after": "2026-11-21T00:00:00Z", "before": "2026-11-21T00:00Z"}, "after"),
    ):
        with pytest.raises(InvalidRequest) as e:
            reports.parse_filters(args)
        assert e.value.param == param and e.value.status == 400
    f = reports.parse_filters({"tag": "nightly run #3", "key": "ci", "model": ""})
    assert f == Filters(tag="nightly run #3", key="ci")
    for args, param in (
        ({"tag": "x" * 65}, "tag"),
        ({"tag": "caf\u00e9"}, "tag"),
        ({"tag": "a\nb"}, "tag"),
        ({"key": "k" * 257}, "key"),
        ({"key": "\x00"}, "key"),
    ):
        with pytest.raises(InvalidRequest) as e:
            reports.parse_filters(args)
        assert e.value.param == param and e.value.status == 400
    assert reports.parse_filters({"tag": "x" * 64}).tag == "x" * 64
    assert reports.parse_limit(None, default=50, maximum=200) == 50
    for bad in ("0", "201", "x"):
        with pytest.raises(InvalidRequest) as e:
            reports.parse_limit(bad, default=50, maximum=200)
        assert e.value.param == "limit"


def test_bad_group_by_and_limits(seeded: firestore.Client) -> None:
    for kwargs, param in (
        ({"group_by": "week"}, "group_by"),
        ({"group_by": "user", "limit": 0}, "limit"),
        ({"group_by": "user", "limit": 201}, "limit"),
        ({"group_by": "user", "page_token": "garbage!"}, "page_token"),
    ):
        with pytest.raises(InvalidRequest) as e:
            reports.aggregate(seeded, Filters(), **kwargs)
        assert e.value.param == param
    for limit in (0, 1001):
        with pytest.raises(InvalidRequest) as e:
            reports.records(seeded, Filters(), limit=limit)
        assert e.value.param == "limit"


def test_group_pagination_walks_every_group_once(seeded: firestore.Client) -> None:
    for group_by in ("user", "project", "model", "day", "tag", "key"):
        whole = reports.aggregate(seeded, Filters(), group_by, limit=200, now=NOW)
        assert whole["next_page_token"] is None
        assert walk(seeded, Filters(), group_by, 1) == whole["data"]
        assert walk(seeded, Filters(), group_by, 2) == whole["data"]
    page = reports.aggregate(seeded, Filters(), "user", limit=1)
    token = page["next_page_token"]
    assert token and "alice" not in token and "{" not in token  # opaque
    with pytest.raises(InvalidRequest) as e:  # a token from another grouping
        reports.aggregate(seeded, Filters(), "project", page_token=token)
    assert e.value.param == "page_token"
    # The last full page has no token when nothing with calls follows (carol, m3).
    assert reports.aggregate(seeded, Filters(), "user", limit=2)["next_page_token"] is None
    # The untagged group is last, so no token names it: one that does is forged.
    forged = base64.urlsafe_b64encode(b'{"k":"g:tag","v":null}').decode().rstrip("=")
    with pytest.raises(InvalidRequest) as e:
        reports.aggregate(seeded, Filters(), "tag", page_token=forged)
    assert e.value.param == "page_token"
    # A tag page continues after the last tag shown, past ones used since it was made.
    first = reports.aggregate(seeded, Filters(), "tag", limit=2)
    assert [r["group"] for r in first["data"]] == ["<img src=x onerror=1>", "adhoc"]
    seeded.collection("usage").document("c8").set(
        usage_doc("c8", T, "demo", "bob", "m1", 1, 0, 1, 1, tag="aardvark", key_name="ci")
    )
    rest = reports.aggregate(seeded, Filters(), "tag", limit=2, page_token=first["next_page_token"])
    assert [r["group"] for r in rest["data"]] == ["nightly", None]
    assert rest["next_page_token"] is None


def test_removed_member_still_grouped_by_project(seeded: firestore.Client) -> None:
    rows = reports.aggregate(seeded, Filters(project="other"), "user")["data"]
    assert [(r["group"], r["calls"]) for r in rows] == [("alice", 1), ("bob", 1)]
    rows = reports.aggregate(seeded, Filters(user="bob"), "project")["data"]
    assert [(r["group"], r["calls"]) for r in rows] == [("demo", 1), ("other", 1)]


def test_records_newest_first_with_ties(seeded: firestore.Client) -> None:
    recs, token = reports.records(seeded, Filters())
    assert token is None
    assert [r["call_id"] for r in recs] == ["c6", "c5", "c4", "c3", "c2", "c1"]
    recs, _ = reports.records(seeded, Filters(user="alice", model="m1"))
    assert [r["call_id"] for r in recs] == ["c6", "c4", "c1"]


def test_record_pagination_is_stable_under_inserts(seeded: firestore.Client) -> None:
    seen: list[str] = []
    recs, token = reports.records(seeded, Filters(), limit=2)
    seen += [r["call_id"] for r in recs]
    n = 0
    while token:
        # New calls land between pages (newer than everything): with offsets they
        # would push already-seen records into the next page.
        for _ in range(2):
            n += 1
            seeded.collection("usage").document(f"new{n}").set(
                usage_doc(f"new{n}", NOW + timedelta(minutes=n), "demo", "bob", "m1", 1, 0, 1, 1)
            )
        recs, token = reports.records(seeded, Filters(), limit=2, page_token=token)
        seen += [r["call_id"] for r in recs]
    assert seen == ["c6", "c5", "c4", "c3", "c2", "c1"]
    # A tie on ts split across pages: c6 | c5 share a timestamp.
    first, token = reports.records(seeded, Filters(before=NOW), limit=1)
    second, _ = reports.records(seeded, Filters(before=NOW), limit=1, page_token=token)
    assert [first[0]["call_id"], second[0]["call_id"]] == ["c6", "c5"]


def test_record_json_and_csv(seeded: firestore.Client) -> None:
    seeded.collection("usage").document("c7").set(
        usage_doc(
            "c7",
            NOW,
            "demo",
            "bob",
            "-m1",
            1,
            0,
            2,
            123_450,
            tag='=HYPERLINK("http://evil","x")',
            request_id="@req",
            status="ok",
        )
    )
    recs, _ = reports.records(seeded, Filters(after=NOW))
    j = reports.record_json(recs[0])
    assert j["ts"] == "2026-11-23T12:00:00Z" and j["settled_at"] == "2026-11-23T12:00:01Z"
    assert j["cost_usd"] == "0.000123450" and j["estimate_usd"] == "0.000123457"
    assert j["cost_nano"] == 123_450 and j["usage"] == {"prompt_tokens": 1}

    text = reports.to_csv(recs + reports.records(seeded, Filters(user="alice"))[0])
    rows = list(csv.reader(io.StringIO(text)))
    assert tuple(rows[0]) == reports.CSV_COLUMNS
    assert len(rows) == 1 + 1 + 4
    row = dict(zip(rows[0], rows[1], strict=True))
    assert row["tag"] == '\'=HYPERLINK("http://evil","x")'
    assert row["model"] == "'-m1" and row["request_id"] == "'@req"
    assert row["cost_usd"] == "0.000123450" and row["estimate_usd"] == "0.000123457"
    assert row["input_tokens"] == "1" and row["streamed"] == "false"
    assert row["ts"] == "2026-11-23T12:00:00Z"
    alice = dict(zip(rows[0], rows[2], strict=True))
    assert alice["call_id"] == "c6" and alice["tag"] == "adhoc" and alice["model"] == "m1"
    untagged = dict(zip(rows[0], rows[4], strict=True))
    assert untagged["call_id"] == "c3" and untagged["tag"] == ""
    assert untagged["key_name"] == "laptop"


def test_audit_list_order_and_pagination(db: firestore.Client) -> None:
    for i in range(5):
        # two entries share a timestamp: the id breaks the tie
        db.collection("audit").document(f"a{i}").set(
            {
                "ts": T + timedelta(minutes=min(i, 3)),
                "actor": "root",
                "action": f"act{i}",
                "target": "demo",
                "details": {"budget_nano": 10**9 * i},
            }
        )
    whole = reports.audit_list(db)
    assert [r["id"] for r in whole["data"]] == ["a4", "a3", "a2", "a1", "a0"]
    assert whole["next_page_token"] is None
    assert whole["data"][0]["ts"] == "2026-11-20T08:03:00Z"
    assert whole["data"][0]["details"] == {"budget_nano": 4 * 10**9, "budget_usd": "4.000000000"}
    ids, token = [], None
    while True:
        page = reports.audit_list(db, limit=2, page_token=token)
        ids += [r["id"] for r in page["data"]]
        token = page["next_page_token"]
        if not token:
            break
    assert ids == ["a4", "a3", "a2", "a1", "a0"]
    usage_token = base64.urlsafe_b64encode(b'{"k":"usage","v":["2026-11-20T08:00:00Z","a1"]}')
    with pytest.raises(InvalidRequest) as e:  # a records token is not an audit token
        reports.audit_list(db, page_token=usage_token.decode())
    assert e.value.param == "page_token"


def test_every_usage_record_carries_the_summed_fields(db: firestore.Client) -> None:
    # One aggregation query with several fields only sees documents holding ALL of
    # them (null counts as held): a record missing cached_tokens drops out of calls
    # and cost alike. So every record the ledger writes must carry the four fields.
    db.collection("usage").document("x").set({"ts": T, "cost_nano": 2})
    assert reports.aggregate(db, Filters(), None)["data"][0]["calls"] == 0
    from functions.core.holds import HoldPlan, Outcome, usage_record

    plan = HoldPlan(
        call_id="c",
        project="p",
        user="u",
        key_name="k",
        model="m",
        route="chat",
        budget_period="total",
        period_key="total",
        limits=(),
        estimate_nano=5,
        admitted_at=T,
        expires_at=T,
    )
    for outcome in (
        Outcome(status="ok", cost_nano=1),
        Outcome(status="orphaned", cost_nano=5, http_status=0, estimated=True),
    ):
        rec = usage_record(plan, outcome, T)
        assert all(type(rec[k]) is int for k in reports.SUMS), rec


@pytest.mark.parametrize(
    ("value", "want"),
    [
        ("a;=1+2", "a;'=1+2"),  # a sheet that splits on ";" sees a second cell "=1+2"
        ("x|-2", "x|'-2"),
        ("ok, @SUM(A1)", "ok,' @SUM(A1)"),
        ("a\n+cmd", "a\n'+cmd"),
        ("\tlead", "'\tlead"),
        (" =1", "' =1"),
        ("gpt-4o-mini", "gpt-4o-mini"),
        ("a-b;c", "a-b;c"),
        ("", ""),
    ],
)
def test_audit14_csv_guards_every_cell_a_spreadsheet_could_split_off(value: str, want: str) -> None:
    text = reports.to_csv([{"call_id": "c1", "tag": value, "model": value}])
    row = dict(zip(*list(csv.reader(io.StringIO(text))), strict=True))
    assert row["tag"] == want and row["model"] == want


# --- through the admin API, with calls made through the proxy ---------------------------

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def test_admin_usage_and_queries_by_tag_and_key(client: Any, admin_client: Any, world: Any) -> None:
    from tests.conftest import admin_auth, bearer

    ci = world.members.add_key("demo", "bob", "ci")
    for key, tag in (
        (world.keys["bob"], "nightly"),
        (ci, "nightly"),
        (ci, None),
        (world.keys["alice"], "<b>adhoc</b>"),
    ):
        headers = {**bearer(key), **({"x-tollgate-tag": tag} if tag else {})}
        assert client.post("/v1/chat/completions", json=CHAT, headers=headers).status_code == 200

    def get(path: str, status: int = 200, **args: str) -> Any:
        r = admin_client.get(path, query_string=args, headers=admin_auth())
        assert r.status_code == status, r.get_data(True)
        return r

    rows = get("/usage", group_by="tag").get_json()["data"]
    assert [(r["group"], r["calls"]) for r in rows] == [
        ("<b>adhoc</b>", 1),
        ("nightly", 2),
        (None, 1),
    ]
    rows = get("/usage", group_by="key", project="demo").get_json()["data"]
    assert [(r["group"], r["calls"]) for r in rows] == [("ci", 2), ("default", 2)]
    rows = get("/usage", group_by="user", tag="nightly").get_json()["data"]
    assert [(r["group"], r["calls"]) for r in rows] == [("bob", 2)]
    recs = get("/queries", key="ci", tag="nightly").get_json()["data"]
    assert [(r["user"], r["key_name"], r["tag"]) for r in recs] == [("bob", "ci", "nightly")]
    text = get("/queries", key="default", format="csv").get_data(True)
    assert {r["key_name"] for r in csv.DictReader(io.StringIO(text))} == {"default"}
    total = get("/usage", key="ci").get_json()["data"][0]
    assert total["calls"] == 2 and total["group"] is None
    for args, param in (
        ({"tag": "t" * 65}, "tag"),
        ({"key": "\t"}, "key"),
        ({"group_by": "tags"}, "group_by"),
    ):
        for path in ("/usage", "/queries"):
            if path == "/queries" and "group_by" in args:
                continue
            e = get(path, 400, **args).get_json()["error"]
            assert e["param"] == param and e["type"] == "invalid_request_error"


def test_cli_usage_and_queries_by_tag_and_key(
    world: Any,
    proxy_url: str,
    admin_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import json

    import requests

    from tests.conftest import ADMIN_TOKEN, SERVED, bearer
    from tollgate_cli import cli

    monkeypatch.setenv("TOLLGATE_ADMIN_URL", admin_url)
    monkeypatch.setenv("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN)
    ci = world.members.add_key("demo", "bob", "ci")
    for key, tag in ((ci, "nightly"), (ci, None), (world.keys["bob"], "nightly")):
        r = requests.post(
            proxy_url + "/v1/chat/completions",
            json=CHAT,
            timeout=30,
            headers={**bearer(key), **({"x-tollgate-tag": tag} if tag else {})},
        )
        assert r.status_code == 200, r.text
    SERVED.wait_idle()

    def run(*argv: str) -> str:
        capsys.readouterr()
        assert cli.main(list(argv)) == 0
        return capsys.readouterr().out

    lines = run("usage", "--project", "demo", "--group-by", "tag").splitlines()
    assert [line.split()[:2] for line in lines[1:]] == [["nightly", "2"], ["(no", "tag)"]]
    out = json.loads(run("--json", "usage", "--group-by", "key"))
    assert [(g["group"], g["calls"]) for g in out["data"]] == [("ci", 2), ("default", 1)]
    out = json.loads(run("--json", "usage", "--key", "ci", "--tag", "nightly"))
    assert out["data"][0]["calls"] == 1
    rows = list(csv.DictReader(io.StringIO(run("queries", "--key", "ci", "--csv"))))
    assert sorted(r["tag"] for r in rows) == ["", "nightly"]
    table = run("queries", "--tag", "nightly").splitlines()
    assert table[0].split()[:6] == ["ts", "user", "project", "key", "model", "tag"]
    assert len(table) == 3 and all("nightly" in line for line in table[1:])
    assert "tag" in run("usage", "--help") and "key" in run("queries", "--help")
