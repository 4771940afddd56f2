"""The admin console in a real headless Chromium, by role and by attack: a lead sees
and manages only their own project; hostile names and tags render as text; a wrong
token and a member's key are refused with a clear message; usage pages on and downloads
as CSV with the token in a header only. Helpers: tests/console_browser.py.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By

from tests.chrome import browser_test
from tests.conftest import ADMIN_TOKEN, World, wait_for_usage
from tests.console_browser import (  # noqa: F401 - *_fixture: fixtures
    BAD_TOKEN,
    SIGN_IN,
    XSS,
    accept_confirm,
    browser_fixture,
    by_id,
    chat,
    csp_violations,
    downloads_fixture,
    driver_fixture,
    fill,
    go,
    message,
    secret,
    seed_usage,
    sign_in,
    table_rows,
    view,
    wait,
)


@browser_test
def test_lead_sees_and_manages_only_their_project(
    driver: WebDriver, world: World, admin_url: str, proxy_url: str
) -> None:
    hidden = "Hidden Project Name"
    world.prov.create_user("zed", "Zed Outsider", "zed@example.com")
    world.prov.create_user("carol", "Carol", "carol@example.com")
    world.prov.create_project(
        "secret-proj",
        name=hidden,
        external_key="main",
        budget_usd="50",
        allowed_models=["gpt-4o-mini"],
    )
    zed = world.members.add_member("secret-proj", "zed", role="lead")
    assert chat(proxy_url, zed, tag="outsider-tag").status_code == 200
    assert chat(proxy_url, world.keys["bob"]).status_code == 200

    sign_in(driver, admin_url + "/console/", world.keys["alice"])
    view(driver, "members")
    assert driver.execute_script("return location.hash") == "#members/demo"
    assert "lead:alice@demo (lead of demo)" in by_id(driver, "who").text
    tabs = driver.execute_script(
        "return [...document.querySelectorAll('#nav a')].filter(a => !a.hidden)"
        ".map(a => a.textContent)"
    )
    assert tabs == ["Members and keys"]
    # the lead's own row carries a "you" badge
    assert [r[0] for r in table_rows(driver, "member-table")] == ["aliceyou", "bob"]

    def nothing_of_the_other_project() -> None:
        text = driver.execute_script("return document.documentElement.outerHTML")
        for other in ("secret-proj", hidden, "zed", "Zed Outsider", "outsider-tag", zed):
            assert other not in text

    nothing_of_the_other_project()
    # a lead adds a member (a user id typed: leads cannot list users); the key shows once
    form = by_id(driver, "add-member")
    assert form.find_elements(By.CSS_SELECTOR, "[name='role']") == []  # members only
    fill(form, {"user": "carol", "budget_usd": "2"})
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(driver, lambda d: secret(d).startswith("tg_"), "carol's key")
    carol = secret(driver)
    assert chat(proxy_url, carol).status_code == 200
    # the lead's own key: the API refuses, and the page says why
    rows = table_rows(driver, "key-table")
    mine = [i for i, r in enumerate(rows) if r[0] == "alice"][0]
    driver.find_elements(By.CSS_SELECTOR, "#key-table tbody tr")[mine].find_element(
        By.XPATH, ".//button[text()='Rotate']"
    ).click()
    accept_confirm(driver)
    wait(
        driver,
        lambda d: "A project lead cannot change their own membership" in message(d),
        "the API's refusal",
    )
    assert chat(proxy_url, world.keys["alice"]).status_code == 200  # unchanged
    # a member's key: rotated by the lead
    bob_row = [i for i, r in enumerate(table_rows(driver, "key-table")) if r[0] == "bob"][0]
    driver.find_elements(By.CSS_SELECTOR, "#key-table tbody tr")[bob_row].find_element(
        By.XPATH, ".//button[text()='Rotate']"
    ).click()
    accept_confirm(driver)
    wait(driver, lambda d: secret(d).startswith("tg_") and secret(d) != carol, "bob's new key")
    assert chat(proxy_url, world.keys["bob"]).status_code == 401
    # no Revoke for a lead (the API keeps revocation to administrators)
    assert driver.find_elements(By.XPATH, "//button[text()='Revoke']") == []

    # admin views typed into the address bar: the API's refusal, nothing of its data
    for hash_, name in (
        ("#overview", "overview"),
        ("#project/secret-proj", "project"),
        ("#usage", "usage"),
        ("#audit", "audit"),
    ):
        driver.execute_script(
            "document.getElementById('message').hidden = true;location.hash = arguments[0]", hash_
        )
        wait(
            driver,
            lambda d: "may only manage the members of project 'demo'" in message(d),
            f"the refusal of {name}",
        )
        nothing_of_the_other_project()
    go(driver, "#members/secret-proj", "members")  # the lead's own project, whatever the hash
    assert [r[0] for r in table_rows(driver, "member-table")] == ["aliceyou", "bob", "carol"]
    nothing_of_the_other_project()
    assert csp_violations(driver) == []


@browser_test
def test_hostile_names_and_tags_render_as_text(
    driver: WebDriver, world: World, admin_url: str, proxy_url: str
) -> None:
    user_name = "<svg onload=alert(2)>Bob"
    tag = "<img src=x onerror=alert(3)>"  # 28 printable ASCII: a valid x-tollgate-tag
    key_name = "<b>k</b>"
    world.prov.update_project("demo", name=XSS)
    world.prov.update_user("bob", {"name": user_name})
    world.members.add_key("demo", "bob", key_name)
    assert chat(proxy_url, world.keys["bob"], tag=tag).status_code == 200
    wait_for_usage(world)

    sign_in(driver, admin_url + "/console/", ADMIN_TOKEN)
    view(driver, "overview")
    assert driver.find_element(
        By.CSS_SELECTOR, ".project[data-project='demo'] .project-name"
    ).text.startswith(XSS)
    go(driver, "#projects", "projects")
    assert table_rows(driver, "project-list")[0][0] == XSS + "demo"
    go(driver, "#project/demo", "project")
    assert driver.find_element(By.CSS_SELECTOR, ".head-row h2").text.startswith(XSS)
    assert key_name in [r[1] for r in table_rows(driver, "key-table")]
    go(driver, "#users", "users")
    assert [r[1] for r in table_rows(driver, "user-list")] == ["Alice", user_name]
    go(driver, "#usage", "usage")
    form = by_id(driver, "usage-filters")
    fill(form, {"group_by": "tag"})
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(
        driver,
        lambda d: [r[0] for r in table_rows(d, "usage-groups")] == [tag],
        "the tag as a group",
    )
    assert table_rows(driver, "calls")[0][5] == tag
    assert "<option" not in driver.execute_script(
        "return document.querySelector('[name=project]').textContent"
    )
    go(driver, "#audit", "audit")
    assert any(XSS in r[4] for r in table_rows(driver, "audit-log"))

    for hash_, name in (
        ("#overview", "overview"),
        ("#project/demo", "project"),
        ("#users", "users"),
        ("#audit", "audit"),
    ):
        go(driver, hash_, name)
        assert driver.find_elements(By.CSS_SELECTOR, "img, b, main svg[onload], [onerror]") == []
    scripts = driver.find_elements(By.TAG_NAME, "script")
    assert [x.get_attribute("src").rsplit("/", 1)[-1] for x in scripts] == [  # ours only
        "shared.js",
        "console.js",
        "views.js",
        "reports.js",
    ]
    time.sleep(0.3)  # give an injected handler the chance to fire
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018 - reading it is what raises
    entries = driver.get_log("browser")
    assert [e["message"] for e in entries if "Content Security Policy" in e["message"]] == []
    assert [e["message"] for e in entries if e["level"] == "SEVERE"] == []


@browser_test
def test_wrong_token_member_key_and_sign_out(
    driver: WebDriver, world: World, admin_url: str
) -> None:
    sign_in(driver, admin_url + "/console", "tga_" + "x" * 30)  # redirected to console/
    wait(driver, lambda d: BAD_TOKEN in message(d), "the refused-token message")
    assert driver.current_url == admin_url + "/console/"
    assert not by_id(driver, "nav").is_displayed() and by_id(driver, "view").text == ""
    assert driver.execute_script("return sessionStorage.length") == 0

    by_id(driver, "token").send_keys(world.keys["bob"])  # a member, not a lead
    by_id(driver, "sign-in").click()
    wait(
        driver,
        lambda d: (
            "This key may not use the admin console: Only administrators and "
            "project leads may use the admin API." in message(d)
        ),
        "the member's refusal",
    )
    assert not by_id(driver, "nav").is_displayed()

    by_id(driver, "token").send_keys(ADMIN_TOKEN)
    by_id(driver, "sign-in").click()
    view(driver, "overview")
    by_id(driver, "sign-out").click()
    wait(driver, lambda d: SIGN_IN in message(d), "the sign-in message")
    assert driver.execute_script("return sessionStorage.length") == 0
    assert by_id(driver, "view").text == "" and not by_id(driver, "nav").is_displayed()
    driver.refresh()
    wait(driver, lambda d: SIGN_IN in message(d), "still signed out after a reload")
    assert csp_violations(driver) == []


@browser_test
def test_usage_calls_page_on_and_download_as_csv(
    driver: WebDriver, world: World, admin_url: str, downloads: Path
) -> None:
    start = datetime.now(UTC) - timedelta(hours=5)
    for i in range(60):
        seed_usage(
            world,
            f"many-{i:03d}",
            project="demo",
            user="bob",
            at=start + timedelta(seconds=i),
            cost_nano=1_000_000 + i,
        )
    sign_in(driver, admin_url + "/console/", ADMIN_TOKEN)
    view(driver, "overview")
    go(driver, "#usage", "usage")
    wait(driver, lambda d: len(table_rows(d, "calls")) == 50, "the first page of calls")
    assert table_rows(driver, "usage-groups") == [
        ["demo", "60", "72,000", "12,000", "18,000", "$0.06", "$0.001"]
    ]
    by_id(driver, "more-calls").click()
    wait(driver, lambda d: len(table_rows(d, "calls")) == 60, "the second page")
    assert not by_id(driver, "more-calls").is_displayed()

    for old in downloads.iterdir():
        old.unlink()
    by_id(driver, "csv").click()
    target = downloads / "tollgate-usage.csv"
    wait(
        driver,
        lambda d: target.exists() and not list(downloads.glob("*.crdownload")),
        "tollgate-usage.csv",
    )
    lines = target.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 61 and lines[0].startswith("ts,")
    # the token went in a header, never in a URL
    fetched = driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert any("format=csv" in u for u in fetched)
    assert not any(ADMIN_TOKEN in u for u in fetched)
    assert csp_violations(driver) == []
