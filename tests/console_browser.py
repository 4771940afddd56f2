"""Shared by the admin console's browser tests (tests/test_console.py and
tests/test_console_roles.py): the headless Chromium, waiting for a view, filling the
console's forms, reading its tables, and seeding usage records.

The browser tests need /usr/bin/chromium and /usr/bin/chromedriver (as tests/test_web.py);
without them they are skipped (``browser_test``), with that reason. The fixtures are
imported into each test module (``*_fixture``, registered under their
fixture names).
"""

import os
import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.chrome import start_chrome
from tests.conftest import ROOT, World, bearer, seed_usage

SIGN_IN = "Sign in with an admin token, or with your proxy key if you lead a project."
BAD_TOKEN = "This token was not accepted"
WAIT_S = 20
XSS = "<img src=x onerror=alert(1)>"


# ---- browser ------------------------------------------------------------------------


@pytest.fixture(scope="module", name="downloads")
def downloads_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("console-downloads")


@pytest.fixture(scope="module", name="browser")
def browser_fixture(
    tmp_path_factory: pytest.TempPathFactory, downloads: Path
) -> Iterator[WebDriver]:
    driver = start_chrome(tmp_path_factory.mktemp("console-profile"), downloads)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(name="driver")
def driver_fixture(browser: WebDriver) -> Iterator[WebDriver]:
    """The shared browser, its console log drained; the token cleared after each test
    (a port may be handed out again, and with it the origin's sessionStorage)."""
    browser.get_log("browser")
    browser.set_window_size(1280, 900)
    yield browser
    try:
        browser.execute_script("try { sessionStorage.clear(); } catch (e) {}")
    finally:
        browser.get("about:blank")


def wait(driver: WebDriver, cond: Callable[[WebDriver], Any], what: str) -> Any:
    return WebDriverWait(
        driver, WAIT_S, ignored_exceptions=(StaleElementReferenceException,)
    ).until(cond, message=f"timed out waiting for {what}")


def by_id(driver: WebDriver, id_: str) -> WebElement:
    return driver.find_element(By.ID, id_)


def message(driver: WebDriver) -> str:
    box = by_id(driver, "message")
    return box.text if box.is_displayed() else ""


def view(driver: WebDriver, name: str) -> None:
    """Wait until the view ``name`` is rendered and nothing is loading."""
    wait(
        driver,
        lambda d: d.execute_script(
            "const r = document.querySelector('#view > .view-root');"
            "return r && r.dataset.view === arguments[0]"
            " && !document.body.classList.contains('busy')",
            name,
        ),
        f"the {name} view",
    )


def go(driver: WebDriver, hash_: str, name: str) -> None:
    driver.execute_script("location.hash = arguments[0]", hash_)
    view(driver, name)


def sign_in(driver: WebDriver, url: str, token: str) -> None:
    driver.get(url)
    wait(driver, lambda d: SIGN_IN in message(d), "the sign-in message")
    by_id(driver, "token").send_keys(token)
    by_id(driver, "sign-in").click()


def accept_confirm(driver: WebDriver) -> str:
    alert = WebDriverWait(driver, WAIT_S).until(expected_conditions.alert_is_present())
    text = alert.text
    alert.accept()
    return str(text)


def fill(form: WebElement, values: dict[str, str]) -> None:
    """Set a console form's fields by name (typing into date inputs is locale-bound)."""
    for name, value in values.items():
        field = form.find_element(By.CSS_SELECTOR, f"[name='{name}']")
        if field.tag_name == "select":
            Select(field).select_by_value(value)
        else:
            field.parent.execute_script("arguments[0].value = arguments[1]", field, value)


def check(form: WebElement, name: str, value: str) -> None:
    box = form.find_element(By.CSS_SELECTOR, f"input[name='{name}'][value='{value}']")
    if not box.is_selected():
        box.click()


def table_rows(driver: WebDriver, id_: str) -> list[list[str]]:
    return list(
        driver.execute_script(
            "const t = document.getElementById(arguments[0]);"
            "return t ? [...t.querySelectorAll('tbody tr')].map(tr => [...tr.cells]"
            ".map(td => td.textContent)) : []",
            id_,
        )
    )


def secret(driver: WebDriver) -> str:
    box = by_id(driver, "secret")
    return str(by_id(driver, "secret-value").text) if box.is_displayed() else ""


def csp_violations(driver: WebDriver) -> list[str]:
    return [
        e["message"] for e in driver.get_log("browser") if "Content Security Policy" in e["message"]
    ]


def chat(proxy_url: str, key: str, tag: str | None = None) -> requests.Response:
    headers = {**bearer(key), **({"x-tollgate-tag": tag} if tag else {})}
    return requests.post(
        proxy_url + "/v1/chat/completions",
        headers=headers,
        timeout=15,
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]},
    )


def money_text(driver: WebDriver, usd: str) -> str:
    return str(driver.execute_script("return money(arguments[0])", usd))


def shoot(driver: WebDriver, tmp_path: Path, name: str, height: int = 900) -> Path:
    """A 1280-wide viewport screenshot; copied to $TOLLGATE_SCREENSHOT_DIR when set."""
    frame = driver.execute_script("return [outerWidth - innerWidth, outerHeight - innerHeight]")
    driver.set_window_size(1280 + frame[0], height + frame[1])
    wait(
        driver,
        lambda d: d.execute_script(
            "return innerWidth === 1280 && innerHeight === arguments[0]", height
        ),
        "the window size",
    )
    driver.execute_script("document.activeElement.blur(); window.scrollTo(0, 0)")
    shot = tmp_path / name
    assert driver.save_screenshot(str(shot))
    if os.environ.get("TOLLGATE_SCREENSHOT_DIR"):
        shutil.copy(shot, ROOT / os.environ["TOLLGATE_SCREENSHOT_DIR"] / name)
    return shot


def seed_team(world: World) -> None:
    """Three projects for the overview: demo near its budget, support over it, lab well
    inside; calls on some of the last 30 days (quiet days between)."""
    prov, members = world.prov, world.members
    for uid, name in (("carol", "Carol"), ("dave", "Dave"), ("erin", "Erin")):
        prov.create_user(uid, name, f"{uid}@example.com")
    prov.create_project(
        "lab",
        name="Research lab",
        external_key="main",
        budget_usd="25",
        allowed_models=["gpt-4o-mini", "text-embedding-3-small"],
        default_max_output_tokens=1024,
        rpm=120,
    )
    prov.create_project(
        "support",
        name="Support bot",
        external_key="main",
        budget_usd="8",
        allowed_models=["gpt-4o-mini"],
    )
    members.add_member("lab", "carol", role="lead")
    members.add_member("lab", "dave", budget_usd="10")
    members.add_member("support", "erin")
    members.add_key("lab", "dave", "ci", datetime.now(UTC) + timedelta(days=30))
    prov.set_limit("lab", "gpt-4o-mini", "dave", budget_nano=6 * 10**9, rpm=30)
    now = datetime.now(UTC)
    noon = now.replace(hour=12, minute=0, second=0, microsecond=0)
    if noon > now:
        noon -= timedelta(days=1)
    month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    n = 0
    # this period: demo at 85 %, support at 105 %, lab at 24 %
    for project, user, total_nano in (
        ("demo", "bob", 8_500_000_000),
        ("support", "erin", 8_400_000_000),
        ("lab", "dave", 4_000_000_000),
        ("lab", "carol", 2_000_000_000),
    ):
        at = max(month + timedelta(hours=1), now - timedelta(hours=3))
        for part in (0.5, 0.3, 0.2):
            n += 1
            seed_usage(
                world,
                f"seed-{n}",
                project=project,
                user=user,
                at=at + timedelta(minutes=n),
                cost_nano=int(total_nano * part),
                model="gpt-4o-mini" if part != 0.2 else "text-embedding-3-small",
            )
    # earlier days, for the chart (outside this period, so no counter moves)
    for days_ago, cost in (
        (5, 4.2),
        (6, 7.5),
        (9, 2.8),
        (12, 9.1),
        (13, 5.9),
        (16, 1.4),
        (20, 6.2),
        (23, 3.1),
        (27, 1.6),
    ):
        at = noon - timedelta(days=days_ago)
        if at >= month:
            continue
        n += 1
        seed_usage(
            world, f"seed-{n}", project="lab", user="dave", at=at, cost_nano=int(cost * 10**9)
        )
