"""The CLI (``tollgate``) in-process against the real admin function over
loopback HTTP, and once as a real subprocess; the issue's flow end to end: create a
user and a project, add the member, call the proxy with the printed key, report."""

from __future__ import annotations

import argparse
import csv
import io
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
import requests

from functions.core import pricing
from tests.conftest import ADMIN_TOKEN, ROOT, UPSTREAM_SECRET, admin_auth, bearer, wait_for_usage
from tests.emulator import free_port
from tollgate_cli import cli

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
COMMANDS = [
    [],
    ["user"],
    ["user", "create"],
    ["user", "list"],
    ["user", "disable"],
    ["user", "update"],
    ["key"],
    ["key", "add-external"],
    ["key", "list-external"],
    ["key", "rotate-external"],
    ["key", "delete-external"],
    ["key", "add"],
    ["key", "list"],
    ["key", "limits"],
    ["key", "revoke"],
    ["model"],
    ["model", "add"],
    ["model", "cost"],
    ["model", "show"],
    ["model", "list"],
    ["prices"],
    ["prices", "load"],
    ["project"],
    ["project", "create"],
    ["project", "list"],
    ["project", "show"],
    ["project", "alerts"],
    ["project", "flush-cache"],
    ["project", "update"],
    ["project", "archive"],
    ["topup"],
    ["topup", "add"],
    ["topup", "list"],
    ["member"],
    ["member", "add"],
    ["member", "list"],
    ["member", "budget"],
    ["member", "remove"],
    ["member", "rotate"],
    ["limit"],
    ["limit", "set"],
    ["limit", "clear"],
    ["limit", "list"],
    ["usage"],
    ["queries"],
    ["ratelimits"],
    ["sweep"],
    ["audit"],
    ["key", "openai-ids"],
    ["openai-admin-key"],
    ["openai-admin-key", "set"],
    ["openai-admin-key", "show"],
    ["openai-admin-key", "delete"],
    ["reconcile"],
    ["reconciliations"],
]
Run = Callable[..., str]


@pytest.fixture
def run(admin_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Run:
    """``run("user", "list")`` → stdout; with ``code=1`` → stderr. The URL and token come
    from the environment, as for a user who exported them once."""
    monkeypatch.setenv("TOLLGATE_ADMIN_URL", admin_url)
    monkeypatch.setenv("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN)

    def go(*argv: str, code: int = 0, stdin: str | None = None) -> str:
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        capsys.readouterr()
        rc = cli.main(list(argv))
        out, err = capsys.readouterr()
        assert rc == code, out + err
        assert "Traceback" not in out + err
        return out if code == 0 else err

    return go


def get(admin_url: str, path: str) -> dict:
    r = requests.get(admin_url + path, headers=admin_auth(), timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def key_from(out: str) -> str:
    lines = [ln for ln in out.splitlines() if ln.startswith("key: ")]
    assert len(lines) == 1, out
    return lines[0].removeprefix("key: ")


# --- help, configuration, errors (no emulator needed for help) ----------------------------


def _subcommands(p: argparse.ArgumentParser, prefix: list[str]) -> Iterator[list[str]]:
    yield prefix
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _subcommands(sub, [*prefix, name])


def test_the_help_list_covers_every_command():
    assert sorted(_subcommands(cli.build_parser(), [])) == sorted(COMMANDS)


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: " ".join(a) or "top")
def test_help_on_every_command(argv, capsys):
    assert cli.main([*argv, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: tollgate") and " ".join(argv) in out


def test_module_entry_runs_as_a_subprocess():
    out = subprocess.run(
        [sys.executable, "-m", "tollgate_cli", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "member" in out.stdout and "TOLLGATE_ADMIN_URL" in out.stdout


def test_missing_url_or_token_is_exit_2_naming_the_variable(capsys, monkeypatch):
    monkeypatch.delenv("TOLLGATE_ADMIN_URL", raising=False)
    monkeypatch.delenv("TOLLGATE_ADMIN_TOKEN", raising=False)
    assert cli.main(["user", "list"]) == 2
    err = capsys.readouterr().err
    assert "--url" in err and "TOLLGATE_ADMIN_URL" in err and len(err.splitlines()) == 1
    assert cli.main(["--url", "http://127.0.0.1:1", "user", "list"]) == 2
    assert "TOLLGATE_ADMIN_TOKEN" in capsys.readouterr().err
    assert cli.main(["user", "nope"]) == 2  # argparse's own usage errors
    assert cli.main(["key", "add-external", "k"]) == 2  # neither --secret-stdin nor --secret
    assert cli.main(["key", "add-external", "k", "--secret-stdin", "--secret", "s"]) == 2


def test_unreachable_url_is_one_line(capsys):
    url = f"http://127.0.0.1:{free_port()}"
    assert cli.main(["--url", url, "--token", "t", "user", "list"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot reach {url}") and len(err.splitlines()) == 1


def test_bad_token_and_api_errors_are_one_line_exit_1(run, world):
    err = run("user", "list", "--token", "wrong", code=1)
    assert err == "error: Unknown admin token. (invalid_api_key)\n"
    assert run("member", "add", "demo", "ghost", code=1) == "error: No user 'ghost'. (not_found)\n"
    err = run(
        "model",
        "cost",
        "gpt-4o-mini",
        "--from",
        "2026-01-01T00:00:00",
        "--input",
        "1",
        "--output",
        "1",
        code=1,
    )
    assert "zone" in err and len(err.splitlines()) == 1


def test_table_pads_and_right_aligns_numbers():
    assert cli.table(
        ["name", "n", "usd", "id"], [["a", 1, "0.5", "0001"], ["bbb", 100, None, "7"]]
    ) == ("name    n  usd  id\na       1  0.5  0001\nbbb   100    -  7")


# --- the flow ---------------------------------------------------------------------


def test_create_user_project_member_call_and_report(run, world, admin_url, proxy_url):
    assert run("user", "create", "carol", "--name", "Carol") == "created user carol\n"
    out = run(
        "project",
        "create",
        "lab",
        "--external-key",
        "main",
        "--budget",
        "5",
        "--models",
        "gpt-4o-mini",
    )
    assert "created project lab" in out and "budget_usd: 5.000000000" in out
    out = run("member", "add", "lab", "carol")
    assert "shown only once" in out
    key = key_from(out)
    assert key.startswith("tg_")

    r = requests.post(
        proxy_url + "/v1/chat/completions", json=CHAT, headers=bearer(key), timeout=30
    )
    assert r.status_code == 200, r.text
    [rec] = [u for u in wait_for_usage(world) if u["project"] == "lab"]
    cost = pricing.format_usd(rec["cost_nano"])
    assert rec["cost_nano"] > 0

    lines = run("usage", "--project", "lab", "--group-by", "user").splitlines()
    assert lines[0].split() == [
        "group",
        "calls",
        "input",
        "cached",
        "output",
        "cost",
        "$",
        "avg",
        "$/call",
    ]
    assert len(lines) == 2
    assert lines[1].split() == [
        "carol",
        "1",
        str(rec["input_tokens"]),
        str(rec.get("cached_tokens", 0)),
        str(rec["output_tokens"]),
        cost,
        cost,
    ]

    rows = list(csv.DictReader(io.StringIO(run("queries", "--project", "lab", "--csv"))))
    assert [(x["user"], x["model"], x["cost_usd"]) for x in rows] == [
        ("carol", "gpt-4o-mini", cost)
    ]
    table = run("queries", "--project", "lab").splitlines()
    assert len(table) == 2 and "carol" in table[1] and cost in table[1]

    shown = run("project", "show", "lab")
    assert f"spent_usd: {cost}" in shown and "period:" in shown
    assert "lab" in run("project", "list")
    members = run("member", "list", "lab")
    assert "carol" in members and f"default(...{key[-4:]})" in members


def test_csv_and_usage_follow_every_page(run, world, proxy_url, admin_url, monkeypatch):
    for _ in range(3):
        for who in ("alice", "bob"):
            r = requests.post(
                proxy_url + "/v1/chat/completions",
                json=CHAT,
                headers=bearer(world.keys[who]),
                timeout=30,
            )
            assert r.status_code == 200
    calls: list[str] = []
    real = cli.Api.call

    def small_pages(self, method, path, body=None, **params):
        calls.append(path)
        if params.get("limit"):
            params["limit"] = 1 if path == "/usage" else 2  # force several pages
        return real(self, method, path, body, **params)

    monkeypatch.setattr(cli.Api, "call", small_pages)
    text = run("queries", "--project", "demo", "--csv")
    assert text.count("ts,call_id,") == 1 and len(text.strip().splitlines()) == 7
    assert calls.count("/queries") == 3
    out = json.loads(run("--json", "usage", "--group-by", "user"))
    assert [(g["group"], g["calls"]) for g in out["data"]] == [("alice", 3), ("bob", 3)]
    total = run("usage", "--user", "bob").splitlines()[1].split()
    assert total[:2] == ["(all)", "3"]


# --- prices and models ------------------------------------------------------------------------


def test_prices_load_and_model_show(run, world):
    out = run("prices", "load", "--model", "gpt-4o")
    assert out.startswith("source: genai-prices ") and "loaded: 1\n" in out
    again = run("prices", "load", "--model", "gpt-4o")
    assert "loaded: 0\n" in again and "unchanged: 1" in again
    header, row = run("model", "show", "gpt-4o").splitlines()[1:3]
    assert header.split()[:6] == [
        "valid_from",
        "valid_to",
        "input",
        "cached",
        "output",
        "cache_write",
    ]
    assert row.split()[2:5] == ["2.5", "1.25", "10"]
    assert "genai-prices" in row


def test_model_add_and_dated_costs(run, world):
    assert "added model gpt-x" in run("model", "add", "gpt-x")
    run(
        "model",
        "cost",
        "gpt-x",
        "--from",
        "2026-01-01T00:00:00Z",
        "--input",
        "1",
        "--cached-input",
        "0.1",
        "--output",
        "4",
    )
    out = run(
        "model",
        "cost",
        "gpt-x",
        "--from",
        "2026-06-01T00:00:00Z",
        "--input",
        "0.5",
        "--output",
        "2",
        "--cache-write",
        "0.6",
    )
    first, second = out.splitlines()[2:4]
    assert first.split()[:5] == ["2026-01-01T00:00:00Z", "2026-06-01T00:00:00Z", "1", "0.1", "4"]
    assert second.split()[:6] == ["2026-06-01T00:00:00Z", "-", "0.5", "-", "2", "0.6"]
    data = json.loads(run("model", "show", "gpt-x", "--json"))
    assert data["price"]["tiers"]["default"]["cache_write"] == "0.6"


# --- users and external keys ------------------------------------------------------------------


def test_users_list_and_disable(run, world, admin_url):
    run("user", "create", "dave", "--email", "d@example.com")
    lines = run("user", "list").splitlines()
    assert [ln.split()[0] for ln in lines] == ["id", "alice", "bob", "dave"]
    assert "their keys no longer work" in run("user", "disable", "bob")
    assert get(admin_url, "/users/bob")["disabled"] is True


def test_external_key_from_stdin_never_shown(run, world):
    out = run(
        "key",
        "add-external",
        "second",
        "--secret-stdin",
        "--base-url",
        world.upstream.base_url,
        stdin=UPSTREAM_SECRET + "\n",
    )
    assert f"(...{UPSTREAM_SECRET[-4:]})" in out
    err = run(
        "key",
        "add-external",
        "bad",
        "--secret",
        "sk-wrong-key-123456",
        "--base-url",
        world.upstream.base_url,
        code=1,
    )
    assert "401" in err and "sk-wrong-key-123456" not in err
    listed = run("key", "list-external")
    assert UPSTREAM_SECRET not in listed
    rows = {ln.split()[0]: ln.split() for ln in listed.splitlines()[1:]}
    assert rows["main"][1:4] == ["..." + UPSTREAM_SECRET[-4:], "-", "demo"]
    assert "second" in rows and "bad" not in rows


# --- members and limits --------------------------------------------------------------------


def test_member_rotate_budget_and_remove(run, world, admin_url, proxy_url):
    old = world.keys["bob"]
    new = key_from(run("member", "rotate", "demo", "bob"))
    assert new != old and new.startswith("tg_")
    for key, status in ((old, 401), (new, 200)):
        r = requests.post(
            proxy_url + "/v1/chat/completions", json=CHAT, headers=bearer(key), timeout=30
        )
        assert r.status_code == status

    assert "budget 2.500000000" in run("member", "budget", "demo", "bob", "2.50")
    bob = next(m for m in get(admin_url, "/projects/demo/members")["data"] if m["user"] == "bob")
    assert bob["budget_usd"] == "2.500000000"
    assert "none" in run("member", "budget", "demo", "bob", "none")

    # a lead uses their own proxy key as the token for their project's members
    alice = world.keys["alice"]
    run("user", "create", "carol")
    out = run("member", "add", "demo", "carol", "--budget", "1", "--token", alice)
    assert key_from(out).startswith("tg_")
    assert "(permission_denied)" in run(
        "member", "add", "demo", "dave", "--role", "lead", "--token", alice, code=1
    )
    assert "permission" in run("user", "list", "--token", alice, code=1).lower()
    assert run("member", "remove", "demo", "carol") == (
        "removed carol from demo; 1 key(s) revoked\n"
    )
    assert "carol" not in run("member", "list", "demo")


def test_limits_set_list_clear(run, world, admin_url):
    out = run("limit", "set", "demo", "gpt-4o-mini", "--budget", "0.5", "--rpm", "10")
    assert "rpm: 10" in out and "budget_usd: 0.500000000" in out
    run("limit", "set", "demo", "gpt-4o-mini", "--user", "bob", "--tpm", "1000")
    lines = run("limit", "list", "demo").splitlines()
    assert [ln.split() for ln in lines[1:]] == [
        ["gpt-4o-mini", "(all)", "0.500000000", "10", "-"],
        ["gpt-4o-mini", "bob", "-", "-", "1000"],
    ]
    limits = get(admin_url, "/projects/demo/limits")["data"]
    assert [(x["user"], x["rpm"], x["tpm"]) for x in limits] == [
        (None, 10, None),
        ("bob", None, 1000),
    ]
    run("limit", "clear", "demo", "gpt-4o-mini", "--user", "bob")
    assert len(get(admin_url, "/projects/demo/limits")["data"]) == 1


def test_alerts_cache_flush_and_ratelimits(run, world, admin_url, proxy_url):
    out = run("project", "alerts", "demo")
    assert "webhook: (none" in out and "50 %, 80 %, 100 %" in out and "no alert sent" in out
    out = run(
        "project",
        "alerts",
        "demo",
        "--webhook",
        "https://hooks.example.com/t",
        "--thresholds",
        "80,100",
    )
    assert "webhook: https://hooks.example.com/t" in out and "thresholds: 80 %, 100 %" in out
    assert get(admin_url, "/projects/demo/alerts")["config"] == {
        "webhook_url": "https://hooks.example.com/t",
        "thresholds": [80, 100],
        "format": "json",
    }
    assert "whole percentages" in run("project", "alerts", "demo", "--thresholds", "lots", code=1)
    world.db.collection("alerts_sent").document("x|80").set(
        {
            "project": "demo",
            "limit": "project 'demo'",
            "threshold_percent": 80,
            "spent_usd": "4.000000000",
            "budget_usd": "5.000000000",
            "period": "2026-12",
            "ts": datetime.now(UTC),
            "delivered": True,
        }
    )
    row = run("project", "alerts", "demo").splitlines()[-1].split()
    assert row[-5:] == ["80", "4.000000000", "5.000000000", "2026-12", "yes"]

    for i in range(3):
        world.db.collection("cache_entries").document(f"c{i}").set({"project": "demo"})
    assert run("project", "flush-cache", "demo") == "flushed 3 cached answer(s) of demo\n"
    assert "(not_found)" in run("project", "flush-cache", "nope", code=1)

    r = requests.post(
        proxy_url + "/v1/chat/completions", json=CHAT, headers=bearer(world.keys["bob"]), timeout=30
    )
    assert r.status_code == 200
    lines = run("ratelimits").splitlines()
    assert lines[0].split()[:3] == ["external", "key", "seen"]
    assert any(ln.split()[-2:] == ["remaining-requests", "9999"] for ln in lines[1:])


# --- sweep and audit ------------------------------------------------------------------------


@pytest.mark.leaves_holds
def test_sweep_books_expired_holds(run, world):
    from datetime import UTC, datetime, timedelta

    from functions.store.ledger import Ledger
    from tests.plans import hold_plan

    past = datetime.now(UTC) - timedelta(hours=2)
    period = past.strftime("%Y-%m")
    plan = hold_plan(
        777,
        limit=None,
        at=past,
        ttl_s=5 * 60,
        period=period,
        call_id="call_dead",
        model="gpt-4o-mini",
    )
    Ledger(world.db, clock=lambda: past).reserve(plan)
    assert run("sweep") == "swept 1 expired hold(s)\n"
    assert run("sweep") == "swept 0 expired hold(s)\n"


def test_audit_lists_newest_first(run, world):
    run("user", "create", "erin")
    run("member", "add", "demo", "erin")
    lines = run("audit", "--limit", "2").splitlines()
    assert lines[0].split() == ["ts", "actor", "action", "target"]
    assert [ln.split()[1:] for ln in lines[1:]] == [
        ["root", "member.add", "demo|erin"],
        ["root", "user.create", "erin"],
    ]
    data = json.loads(run("--json", "audit", "--limit", "1"))
    assert len(data["data"]) == 1 and data["next_page_token"]


def test_pip_install_gives_a_tollgate_command_without_the_functions(tmp_path, admin_url, world):
    """``pip install .`` in a fresh venv: a ``tollgate`` command that works against the
    live admin function, and no ``functions`` package (the deployed code) with it."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert pip.returncode == 0, pip.stderr[-2000:]
    tollgate = str(venv / "bin" / "tollgate")
    env = {
        "PATH": str(venv / "bin"),
        "TOLLGATE_ADMIN_URL": admin_url,
        "TOLLGATE_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    out = subprocess.run(
        [tollgate, "--help"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and out.stdout.startswith("usage: tollgate"), out.stderr
    out = subprocess.run(
        [tollgate, "user", "list"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "alice" in out.stdout and "bob" in out.stdout
    bad = subprocess.run(
        [tollgate, "member", "add", "nope", "carol"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1 and "nope" in bad.stderr  # the API said no: exit code 1
    alone = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import functions"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert alone.returncode != 0 and "No module named 'functions'" in alone.stderr


def test_manage_commands_change_projects_keys_users_and_top_ups(run, admin_url, proxy_url, world):
    out = run(
        "project",
        "update",
        "demo",
        "--budget",
        "0.000001",
        "--soft",
        "on",
        "--rpm",
        "100",
        "--cors-origins",
        "https://app.example.com",
    )
    assert "budget_usd: 0.000001000" in out and "budget_soft: yes" in out
    p = get(admin_url, "/projects/demo")
    assert (p["rpm"], p["cors_origins"], p["budget_soft"]) == (
        100,
        ["https://app.example.com"],
        True,
    )
    run("project", "update", "demo", "--soft", "off", "--budget", "none")
    assert get(admin_url, "/projects/demo")["budget_nano"] is None

    key = key_from(run("key", "add", "demo", "bob", "ci", "--rpm", "5", "--models", "gpt-4o-mini"))
    r = requests.post(
        proxy_url + "/v1/chat/completions", json=CHAT, headers=bearer(key), timeout=30
    )
    assert r.status_code == 200, r.text
    listed = run("key", "list", "demo", "bob")
    assert "ci" in listed and "..." + key[-4:] in listed and key not in listed
    assert "budget_usd: 0.000000001" in run(
        "key", "limits", "demo", "bob", "ci", "--budget", "0.000000001"
    )
    r = requests.post(
        proxy_url + "/v1/chat/completions", json=CHAT, headers=bearer(key), timeout=30
    )
    assert r.status_code == 429  # the key's own budget
    assert "revoked" in run("key", "revoke", "demo", "bob", "ci")
    r = requests.post(
        proxy_url + "/v1/chat/completions", json=CHAT, headers=bearer(key), timeout=30
    )
    assert r.status_code == 401

    run("project", "update", "demo", "--budget", "0.000001")
    until = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    err = run("topup", "add", "demo", "1", "--until", until, code=1)
    assert "until" in err  # not in the future: refused, exit code 1
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert "topped up demo by $1.000000000" in run(
        "topup", "add", "demo", "1", "--until", later, "--note", "launch"
    )
    assert "launch" in run("topup", "list", "demo")
    assert "carol" not in run("user", "list")
    assert "email: b@example.org" in run("user", "update", "bob", "--email", "b@example.org")
    assert "gpt-4o-mini" in run("model", "list")
    assert "archived project demo" in run("project", "archive", "demo")
    r = requests.post(
        proxy_url + "/v1/chat/completions", json=CHAT, headers=bearer(world.keys["bob"]), timeout=30
    )
    assert r.status_code in (401, 403)
