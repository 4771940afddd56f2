"""The admin console (web/admin/, served by the ``admin`` function): its static files
and headers, the ``/whoami`` route it signs in with, and in a real headless Chromium
against the live functions on loopback: an administrator creates a project, adds a
member, sees the member's call on the overview and in usage, rotates the key and finds
every step in the audit log; the overview flags budgets and charts every day.
tests/test_console_roles.py has the lead's view, hostile names, refused tokens, paging
and CSV; tests/console_browser.py the browser and its helpers.

Set ``TOLLGATE_SCREENSHOT_DIR=docs`` to refresh docs/console-overview.png and
docs/console-project.png (the screenshot test takes them either way, into tmp).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from functions.httpio import CSP
from tests.chrome import browser_test
from tests.conftest import ADMIN_TOKEN, World, admin_auth, bearer, wait_for_usage
from tests.console_browser import (  # noqa: F401 - *_fixture: fixtures
    accept_confirm,
    browser_fixture,
    by_id,
    chat,
    check,
    csp_violations,
    downloads_fixture,
    driver_fixture,
    fill,
    go,
    message,
    money_text,
    secret,
    seed_team,
    shoot,
    sign_in,
    table_rows,
    view,
    wait,
)

# ---- the static files and /whoami (no browser) --------------------------------------


def test_console_files_are_served_without_a_token_with_csp(admin_client: Any) -> None:
    for path, kind in (
        ("/console/", "text/html"),
        ("/admin/console/", "text/html"),
        ("/console/console.js", "text/javascript"),
        ("/admin/console/views.js", "text/javascript"),
        ("/admin/admin/console/reports.js", "text/javascript"),
        ("/console/console.css", "text/css"),
        ("/console/shared.css", "text/css"),
    ):
        r = admin_client.get(path)
        assert r.status_code == 200, path
        assert r.mimetype == kind, path
        assert r.headers["Content-Security-Policy"] == CSP
        assert "default-src 'none'" in CSP and "script-src 'self'" in CSP
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["Referrer-Policy"] == "no-referrer"
        again = admin_client.get(path, headers={"If-None-Match": r.headers["ETag"]})
        assert again.status_code == 304
    page = admin_client.get("/console/").get_data(as_text=True)
    # nothing inline: every script and style is a file of ours, referenced relatively
    assert "<style" not in page and " style=" not in page and "onclick" not in page
    assert page.count("<script") == 4 and 'src="console.js"' in page
    assert "http" not in page.replace("http-equiv", "")
    # the folder without its slash: sent to it, so relative URLs resolve
    r = admin_client.get("/admin/console")
    assert r.status_code == 302 and r.headers["Location"] == "console/"
    # the function's root stays the API's 404, pointing at the console
    r = admin_client.get("/")
    assert r.status_code == 404 and r.mimetype == "application/json"
    assert "console/" in r.get_json()["error"]["message"]
    assert admin_client.get("/console/secrets.json").status_code == 404
    assert admin_client.get("/console/../functions/admin/app.py").status_code == 404
    assert admin_client.post("/console/").status_code == 405


def test_whoami_names_the_caller_and_refuses_members(admin_client: Any, world: World) -> None:
    r = admin_client.get("/whoami", headers=admin_auth())
    assert r.status_code == 200
    assert r.get_json() == {"actor": "root", "kind": "admin", "project": None, "user": None}
    r = admin_client.get("/admin/whoami", headers=bearer(world.keys["alice"]))
    assert r.get_json() == {
        "actor": "lead:alice@demo",
        "kind": "lead",
        "project": "demo",
        "user": "alice",
    }
    # a plain member's key is no admin credential, on /whoami as everywhere
    r = admin_client.get("/whoami", headers=bearer(world.keys["bob"]))
    assert r.status_code == 403
    assert admin_client.get("/whoami", headers=bearer("tg_" + "0" * 40)).status_code == 401
    assert admin_client.get("/whoami").status_code == 401
    # the lead route without a project opens nothing else: other projects stay closed
    world.prov.create_project("other", external_key="main", budget_usd="5")
    for path in (
        "/projects/other/members",
        "/projects",
        "/projects/demo",
        "/usage",
        "/audit",
        "/users",
    ):
        assert admin_client.get(path, headers=bearer(world.keys["alice"])).status_code == 403
    assert (
        admin_client.get("/projects/demo/members", headers=bearer(world.keys["alice"])).status_code
        == 200
    )


# ---- browser tests ------------------------------------------------------------------


@browser_test
def test_admin_creates_project_adds_member_sees_the_call_rotates_and_audits(
    driver: WebDriver, world: World, admin_url: str, proxy_url: str, tmp_path: Path
) -> None:
    sign_in(driver, admin_url + "/console/", ADMIN_TOKEN)
    view(driver, "overview")
    assert "signed in as root (administrator)" in by_id(driver, "who").text
    # the token: in sessionStorage only, never in a URL
    assert (
        driver.execute_script("return sessionStorage.getItem('tollgate.admin.token')")
        == ADMIN_TOKEN
    )
    assert driver.execute_script("return localStorage.length") == 0

    # a user, then a project
    go(driver, "#users", "users")
    form = by_id(driver, "create-user")
    fill(form, {"id": "carol", "name": "Carol", "email": "carol@example.com"})
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(driver, lambda d: "User 'carol' created" in message(d), "the user created")
    wait(
        driver,
        lambda d: any(r[0] == "carol" for r in table_rows(d, "user-list") or []),
        "carol in the list",
    )

    go(driver, "#projects", "projects")
    form = by_id(driver, "create-project")
    fill(
        form,
        {
            "id": "lab",
            "name": "Research lab",
            "budget_usd": "20",
            "budget_period": "weekly",
            "default_max_output_tokens": "300",
        },
    )
    check(form, "allowed_models", "gpt-4o-mini")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    view(driver, "project")
    assert "Project 'lab' created." in message(driver)
    assert driver.execute_script("return location.hash") == "#project/lab"
    lab = requests.get(admin_url + "/projects/lab", headers=admin_auth(), timeout=10).json()
    assert (
        lab["name"],
        lab["budget_usd"],
        lab["budget_period"],
        lab["allowed_models"],
        lab["default_max_output_tokens"],
    ) == ("Research lab", "20.000000000", "weekly", ["gpt-4o-mini"], 300)

    # a setting changed: only what changed is sent
    form = by_id(driver, "project-settings")
    fill(form, {"budget_usd": "30"})
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(driver, lambda d: "Project 'lab' saved: budget_usd." in message(d), "the settings saved")
    view(driver, "project")
    lab = requests.get(admin_url + "/projects/lab", headers=admin_auth(), timeout=10).json()
    assert (lab["budget_usd"], lab["budget_period"]) == ("30.000000000", "weekly")

    # a member: the key shown once, with its warning
    form = by_id(driver, "add-member")
    fill(form, {"user": "carol", "budget_usd": "5"})
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(driver, lambda d: secret(d).startswith("tg_"), "the new key")
    key = secret(driver)
    box = by_id(driver, "secret").text
    assert "you will not see it again" in box and "carol in lab" in box
    assert [r[0] for r in table_rows(driver, "member-table")] == ["carol"]
    by_id(driver, "copy-secret").click()  # the clipboard, or a selection to copy by hand
    wait(
        driver,
        lambda d: (
            by_id(d, "copied").text
            in ("Copied to the clipboard.", "Selected: press Ctrl-C (⌘-C) to copy.")
        ),
        "the copy",
    )
    assert table_rows(driver, "key-table")[0][2] == "…" + key[-4:]

    # the key works; its call shows on the overview and in usage
    answer = chat(proxy_url, key)
    assert answer.status_code == 200, answer.text
    wait_for_usage(world)  # booked once the answer is closed
    [call] = requests.get(
        admin_url + "/queries", params={"project": "lab"}, headers=admin_auth(), timeout=10
    ).json()["data"]
    go(driver, "#overview", "overview")
    # navigating away wiped the key from the page
    assert not by_id(driver, "secret").is_displayed()
    assert driver.execute_script("return document.getElementById('secret-value').textContent") == ""
    assert key not in driver.page_source
    card = driver.find_element(By.CSS_SELECTOR, ".project[data-project='lab']")
    cost = money_text(driver, call["cost_usd"])
    assert f"Today 1 call, {cost}" in card.text
    assert f"This period ({lab['spend']['period']}) 1 call, {cost}" in card.text
    assert "Research lab" in card.text
    go(driver, "#usage", "usage")
    form = by_id(driver, "usage-filters")
    fill(form, {"project": "lab", "group_by": "user"})
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(
        driver,
        lambda d: table_rows(d, "usage-groups") and table_rows(d, "usage-groups")[0][0] == "carol",
        "the usage grouped by member",
    )
    assert table_rows(driver, "usage-groups")[0][1] == "1"
    assert table_rows(driver, "usage-groups")[0][5] == cost
    [row] = table_rows(driver, "calls")
    assert row[1:5] == ["lab", "carol", "default", "gpt-4o-mini"] and row[8] == cost

    # rotate: the old key stops at once, the new one is shown once
    go(driver, "#project/lab", "project")
    rotate = driver.find_element(
        By.XPATH, "//table[ancestor::*[@id='key-table']]//button[text()='Rotate']"
    )
    rotate.click()
    assert "The old key stops working at once" in accept_confirm(driver)
    wait(driver, lambda d: secret(d).startswith("tg_") and secret(d) != key, "the rotated key")
    new_key = secret(driver)
    assert chat(proxy_url, key).status_code == 401
    assert chat(proxy_url, new_key).status_code == 200
    by_id(driver, "dismiss-secret").click()
    assert not by_id(driver, "secret").is_displayed() and new_key not in driver.page_source

    # the audit log has every step, newest first, by this admin
    go(driver, "#audit", "audit")
    entries = table_rows(driver, "audit-log")
    steps = [(r[1], r[2], r[3]) for r in entries]
    assert steps[:5] == [
        ("root", "key.rotate", "lab|carol|default"),
        ("root", "member.add", "lab|carol"),
        ("root", "project.update", "lab"),
        ("root", "project.create", "lab"),
        ("root", "user.create", "carol"),
    ]
    # the filters: the world's seeding added members too, as another actor
    Select(by_id(driver, "audit-action")).select_by_value("member.add")
    wait(driver, lambda d: len(table_rows(d, "audit-log")) == 3, "the audit by action")
    Select(by_id(driver, "audit-actor")).select_by_value("root")
    wait(
        driver,
        lambda d: [r[3] for r in table_rows(d, "audit-log")] == ["lab|carol"],
        "the audit by action and actor",
    )
    assert not any(new_key in r[4] or key in r[4] for r in entries)
    assert csp_violations(driver) == []


@browser_test
def test_overview_flags_budgets_and_charts_every_day_screenshots(
    driver: WebDriver, world: World, admin_url: str, tmp_path: Path
) -> None:
    seed_team(world)
    sign_in(driver, admin_url + "/admin/console/", ADMIN_TOKEN)
    view(driver, "overview")
    cards = {
        c["id"]: c
        for c in driver.execute_script(
            "return [...document.querySelectorAll('#project-cards .project')].map(c => ({"
            "id: c.dataset.project, cls: c.className, text: c.textContent}))"
        )
    }
    assert set(cards) == {"demo", "lab", "support"}
    assert "near" in cards["demo"]["cls"].split() and "85 % used" in cards["demo"]["text"]
    assert "over" in cards["support"]["cls"].split() and "over budget" in cards["support"]["text"]
    assert not {"near", "over"} & set(cards["lab"]["cls"].split())
    assert "$8.50 spent + $0.00 held of $10.00" in cards["demo"]["text"]
    tiles = driver.execute_script(
        "return [...document.querySelectorAll('#tiles .tile')].map(t => t.textContent)"
    )
    assert "Projects near or over budget2" in tiles
    days = driver.execute_script(
        "return [...document.querySelectorAll('#chart g.day')].map(g => ({day: g.dataset.day,"
        " zero: g.classList.contains('zero')}))"
    )
    today = datetime.now(UTC).date()
    assert [d["day"] for d in days] == [
        (today - timedelta(days=29 - i)).isoformat() for i in range(30)
    ]
    assert any(d["zero"] for d in days) and any(not d["zero"] for d in days)
    top = table_rows(driver, "top-members")
    assert [r[0] for r in top][:2] == ["dave", "bob"]
    shoot(driver, tmp_path, "console-overview.png")
    # readable on a phone: nothing wider than the screen but the tables' own scroll boxes
    driver.set_window_size(400, 900)
    wait(driver, lambda d: d.execute_script("return innerWidth") <= 400, "a phone's width")
    assert driver.execute_script("return document.documentElement.scrollWidth <= innerWidth")
    driver.set_window_size(1280, 900)

    driver.find_element(By.CSS_SELECTOR, ".project[data-project='lab']").click()
    view(driver, "project")
    assert [r[0] for r in table_rows(driver, "member-table")] == ["carol", "dave"]
    keys = table_rows(driver, "key-table")
    assert [(r[0], r[1]) for r in keys] == [
        ("carol", "default"),
        ("dave", "ci"),
        ("dave", "default"),
    ]
    shoot(driver, tmp_path, "console-project.png", height=1100)
    driver.set_window_size(400, 900)
    wait(driver, lambda d: d.execute_script("return innerWidth") <= 400, "a phone's width")
    assert driver.execute_script("return document.documentElement.scrollWidth <= innerWidth")
    assert csp_violations(driver) == []
