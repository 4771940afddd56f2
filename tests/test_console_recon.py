"""The admin console's Reconciliation view in a real headless Chromium against the live
functions and tests/fake_usage_api.py's fake of OpenAI's Usage and Costs APIs: an
administrator stores the OpenAI admin key (only its last 4 characters ever shown), maps
an external key to its OpenAI ids, reconciles a day and reads the drift per model; a
refused key shows the API's message and nothing is listed; a lead never sees the view.
Helpers: tests/console_browser.py; the ``book`` helper: tests/test_reconcile.py.

Set ``TOLLGATE_SCREENSHOT_DIR=docs`` to refresh docs/console-reconciliation.png (the
test takes it either way, into tmp).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

from tests.chrome import browser_test
from tests.conftest import ADMIN_TOKEN, World, admin_auth
from tests.console_browser import (  # noqa: F401 - *_fixture: fixtures
    XSS,
    accept_confirm,
    browser_fixture,
    by_id,
    csp_violations,
    downloads_fixture,
    driver_fixture,
    fill,
    go,
    message,
    shoot,
    sign_in,
    table_rows,
    view,
    wait,
)
from tests.fake_usage_api import ADMIN_KEY, FakeUsageApi
from tests.test_reconcile import SNAP, book

WRONG_KEY = "sk-admin-wrong-key-98765"
EMB = "text-embedding-3-small"
EMB_PRICES = ("0.02", None, "0")


@pytest.fixture(scope="module", name="fake_api")
def fake_api_fixture() -> Iterator[FakeUsageApi]:
    with FakeUsageApi() as fake:
        yield fake


@pytest.fixture(name="usage_api")
def usage_api_fixture(fake_api: FakeUsageApi, world: World) -> Iterator[FakeUsageApi]:
    """The fake, emptied, and the admin function pointed at it (it reads its settings
    per request; conftest restores the environment after the test)."""
    fake_api.reset()
    os.environ["TOLLGATE_USAGE_API_BASE_URL"] = fake_api.base_url
    yield fake_api
    fake_api.reset()


def a_day() -> tuple[str, int]:
    """A complete UTC day two days ago, and its noon in unix seconds."""
    day = (datetime.now(UTC) - timedelta(days=2)).date()
    return day.isoformat(), int(datetime(day.year, day.month, day.day, 12, tzinfo=UTC).timestamp())


def submit(form: WebElement) -> None:
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()


def reconcile(driver: WebDriver, day: str, expect: str) -> None:
    driver.execute_script("document.getElementById('message').hidden = true")
    form = by_id(driver, "reconcile-form")
    fill(form, {"day": day})
    submit(form)
    wait(driver, lambda d: expect in message(d), f"'{expect}'")
    view(driver, "reconciliation")


def block(driver: WebDriver, day: str, key: str = "main") -> dict[str, Any]:
    """One stored reconciliation as shown: its classes, text and both tables' rows, with
    the highlighted (over-threshold) rows."""
    return dict(
        driver.execute_script(
            "const b = document.querySelector("
            "`#reconciliations .recon[data-day='${arguments[0]}'][data-key='${arguments[1]}']`);"
            "if (!b) return {};"
            "const rows = (cls) => [...b.querySelectorAll(`table.${cls} tbody tr`)];"
            "const cells = (tr) => [...tr.cells].map(td => td.textContent);"
            "return {cls: b.className, text: b.textContent,"
            " models: rows('recon-models').map(cells), costs: rows('recon-costs').map(cells),"
            " over: rows('recon-models').filter(tr => tr.classList.contains('over'))"
            ".map(tr => tr.cells[0].textContent)}",
            day,
            key,
        )
        or {}
    )


def listed(driver: WebDriver) -> list[str]:
    return list(
        driver.execute_script(
            "return [...document.querySelectorAll('#reconciliations .recon')]"
            ".map(b => b.dataset.day + '|' + b.dataset.key)"
        )
    )


def map_ids(driver: WebDriver, key: str, project_id: str, key_id: str) -> None:
    form = driver.find_element(By.CSS_SELECTOR, f"#openai-id-list form[data-key='{key}']")
    form.find_element(By.XPATH, "preceding-sibling::summary").click()
    fill(form, {"openai_project_id": project_id, "openai_key_id": key_id})
    submit(form)
    wait(driver, lambda d: f"OpenAI ids of external key '{key}' saved." in message(d), "the ids")
    view(driver, "reconciliation")


def key_status(driver: WebDriver) -> str:
    return str(by_id(driver, "admin-key-status").text)


@browser_test
def test_admin_sets_the_key_maps_reconciles_and_reads_the_drift(
    driver: WebDriver, world: World, admin_url: str, usage_api: FakeUsageApi, tmp_path: Path
) -> None:
    day, noon = a_day()
    # three calls OpenAI counted, and Tollgate booked the same three
    usage_api.add_call(
        noon, "proj_1", "key_a", SNAP, input_tokens=2000, output_tokens=1000, times=3
    )
    for _ in range(3):
        book(world, "demo", noon, 2000, out=1000)
    usage_api.add_call(
        noon, "proj_1", "key_a", EMB, input_tokens=500, prices=EMB_PRICES, endpoint="embeddings"
    )
    book(world, "demo", noon, 500, prices=EMB_PRICES, model=EMB, upstream_model=EMB)

    sign_in(driver, admin_url + "/console/", ADMIN_TOKEN)
    view(driver, "overview")
    by_id(driver, "nav").find_element(By.LINK_TEXT, "Reconciliation").click()
    view(driver, "reconciliation")
    assert "lags by minutes to hours" in by_id(driver, "view").text
    assert "No admin key" in key_status(driver)
    [main] = table_rows(driver, "openai-id-list")
    assert main[0] == "main" and "not reconciled until mapped" in main[4]
    assert "No reconciliation stored yet" in by_id(driver, "reconciliations").text

    # a key OpenAI refuses: the API's message, nothing stored, the field emptied
    form = by_id(driver, "admin-key-form")
    form.find_element(By.CSS_SELECTOR, "input[name='secret']").send_keys(WRONG_KEY)
    submit(form)
    wait(driver, lambda d: "refused the admin key" in message(d), "the refusal")
    assert "HTTP 400" in message(driver) and WRONG_KEY not in message(driver)
    assert (
        by_id(driver, "admin-key-form").find_element(By.CSS_SELECTOR, "input").get_property("value")
        == ""
    )
    assert "No admin key" in key_status(driver)

    # the right one: checked, stored, shown by its last 4 only
    form = by_id(driver, "admin-key-form")
    form.find_element(By.CSS_SELECTOR, "input[name='secret']").send_keys(ADMIN_KEY)
    submit(form)
    wait(driver, lambda d: "OpenAI admin key checked and saved" in message(d), "the key saved")
    view(driver, "reconciliation")
    assert "…" + ADMIN_KEY[-4:] in key_status(driver) and "by root" in key_status(driver)
    assert ADMIN_KEY not in driver.page_source and ADMIN_KEY[:-4] not in driver.page_source
    assert by_id(driver, "admin-key-form").find_element(By.CSS_SELECTOR, "input").get_property(
        "value"
    ) in ("", None)

    # nothing mapped yet: nothing to reconcile, said so
    reconcile(driver, day, "No external key is mapped to an OpenAI project")
    assert listed(driver) == []

    map_ids(driver, "main", "proj_1", "key_a")
    [main] = table_rows(driver, "openai-id-list")
    assert main[2:5] == ["proj_1", "key_a", "per key"]
    assert (
        requests.get(admin_url + "/external-keys", headers=admin_auth(), timeout=10).json()["data"][
            0
        ]["openai_key_id"]
        == "key_a"
    )

    # an exact day: no drift, nothing highlighted
    reconcile(driver, day, f"Reconciled {day}: 1 reconciliation, 0 over the drift threshold.")
    assert listed(driver) == [f"{day}|main"]
    b = block(driver, day)
    assert "within the threshold" in b["text"] and "1 run" in b["text"]
    assert "OpenAI project proj_1 / key key_a" in b["text"]
    row, emb = b["models"]
    assert row[0] == SNAP and emb[0] == EMB
    assert row[1] == "3 / 3drift 0 (0.00 %)" and row[4].endswith("drift 0 (0.00 %)")
    assert emb[1] == "1 / 1drift 0 (0.00 %)" and emb[2].endswith("drift 0 (0.00 %)")
    assert row[5] == "0" and b["over"] == []
    assert [(c[0], c[3], c[4]) for c in b["costs"]] == [
        (SNAP, "$0.00", "0.00 %"),
        (EMB, "$0.00", "0.00 %"),
    ]

    # a call OpenAI saw that Tollgate never booked: drift, unbooked, highlighted
    usage_api.add_call(noon + 60, "proj_1", "key_a", SNAP, input_tokens=2000, output_tokens=1000)
    reconcile(driver, day, f"Reconciled {day}: 1 reconciliation, 1 over the drift threshold.")
    b = block(driver, day)
    assert "over" in b["cls"].split() and "drift over 2.0 %" in b["text"] and "2 runs" in b["text"]
    assert f"{SNAP} requests" in b["text"] and "1 unbooked" in b["text"]
    row, emb = b["models"]
    assert row[1] == "4 / 3drift +1 (25.00 %)" and row[5] == "1"
    assert emb[1] == "1 / 1drift 0 (0.00 %)" and emb[5] == "0"
    assert b["over"] == [SNAP]
    assert by_id(driver, "reconciliations").find_elements(By.CSS_SELECTOR, "span.drift.over")
    shoot(driver, tmp_path, "console-reconciliation.png", height=1300)
    # readable on a phone: nothing wider than the screen but the tables' own scroll boxes
    driver.set_window_size(400, 900)
    wait(driver, lambda d: d.execute_script("return innerWidth") <= 400, "a phone's width")
    assert driver.execute_script("return document.documentElement.scrollWidth <= innerWidth")
    driver.set_window_size(1280, 900)

    # a model name from OpenAI's answer is text, never markup
    usage_api.add_call(noon, "proj_1", "key_a", XSS, input_tokens=10, output_tokens=1)
    reconcile(driver, day, f"Reconciled {day}: 1 reconciliation")
    b = block(driver, day)
    assert XSS in [r[0] for r in b["models"]] and XSS in [r[0] for r in b["costs"]]
    assert XSS in b["over"]
    assert by_id(driver, "view").find_elements(By.TAG_NAME, "img") == []
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018 - raises when no alert() ran

    # the filters: another day lists nothing; the key lists the day
    form = by_id(driver, "reconciliation-filters")
    fill(form, {"day": (datetime.now(UTC) - timedelta(days=5)).date().isoformat()})
    submit(form)
    wait(driver, lambda d: "No reconciliation matches" in by_id(d, "reconciliations").text, "none")
    fill(form, {"day": "", "external_key": "main"})
    submit(form)
    wait(driver, lambda d: listed(d) == [f"{day}|main"], "the key's reconciliations")

    # deleted: reconciliation is refused with the API's message
    by_id(driver, "delete-admin-key").click()
    assert "Reconciliation stops" in accept_confirm(driver)
    wait(driver, lambda d: "OpenAI admin key deleted" in message(d), "the key deleted")
    view(driver, "reconciliation")
    assert "No admin key" in key_status(driver)
    reconcile(driver, day, "Refused: No OpenAI admin key is set")
    assert "HTTP 400" in message(driver)
    assert csp_violations(driver) == []


@browser_test
def test_a_refused_admin_key_lists_nothing_and_a_lead_never_sees_the_view(
    driver: WebDriver, world: World, admin_url: str, usage_api: FakeUsageApi
) -> None:
    day, noon = a_day()
    for method, path, body in (
        ("PUT", "/openai-admin-key", {"secret": ADMIN_KEY}),
        ("PATCH", "/external-keys/main", {"openai_project_id": "proj_1"}),
    ):
        r = requests.request(method, admin_url + path, headers=admin_auth(), json=body, timeout=10)
        assert r.status_code == 200, r.text
    usage_api.add_call(noon, "proj_1", "key_a", SNAP, input_tokens=100, output_tokens=10)
    book(world, "demo", noon, 100, out=10)
    usage_api.admin_keys = {"sk-admin-another"}  # the stored key revoked at OpenAI

    sign_in(driver, admin_url + "/console/", ADMIN_TOKEN)
    view(driver, "overview")
    go(driver, "#reconciliation", "reconciliation")
    [main] = table_rows(driver, "openai-id-list")
    assert main[2:5] == ["proj_1", "–", "whole OpenAI project"]
    reconcile(driver, day, "refused the admin key")
    assert message(driver).startswith("Refused: ") and "HTTP 400" in message(driver)
    assert listed(driver) == []
    assert "No reconciliation stored yet" in by_id(driver, "reconciliations").text
    assert (
        requests.get(admin_url + "/reconciliations", headers=admin_auth(), timeout=10).json()[
            "data"
        ]
        == []
    )
    by_id(driver, "sign-out").click()

    # a lead: no tab, and the hash typed in gets the API's refusal and nothing of it
    sign_in(driver, admin_url + "/console/", world.keys["alice"])
    view(driver, "members")
    tabs = driver.execute_script(
        "return [...document.querySelectorAll('#nav a')].filter(a => !a.hidden)"
        ".map(a => a.textContent)"
    )
    assert tabs == ["Members and keys"]
    driver.execute_script("location.hash = '#reconciliation'")
    wait(
        driver,
        lambda d: "may only manage the members of project 'demo'" in message(d),
        "the refusal",
    )
    page = driver.execute_script("return document.getElementById('view').textContent")
    assert "admin key" not in page and "proj_1" not in page and ADMIN_KEY[-4:] not in page
    assert csp_violations(driver) == []
