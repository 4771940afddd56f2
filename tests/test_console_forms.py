"""The admin console's other forms in a real headless Chromium: the price table and a
dated price, external keys (checked upstream, refused with the API's message, deleted
when unused), per-member model limits, and disabling a user. Helpers:
tests/console_browser.py.
"""

from __future__ import annotations

import requests
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By

from tests.chrome import browser_test
from tests.conftest import ADMIN_TOKEN, UPSTREAM_SECRET, World, admin_auth
from tests.console_browser import (  # noqa: F401 - *_fixture: fixtures
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
    sign_in,
    table_rows,
    view,
    wait,
)


def submit(driver: WebDriver, form_id: str, values: dict[str, str]) -> None:
    form = by_id(driver, form_id)
    fill(form, values)
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()


def row_button(driver: WebDriver, table_id: str, first_cell: str, label: str) -> None:
    """Click the button ``label`` in the row of ``table_id`` whose first cell is given."""
    for tr in driver.find_elements(By.CSS_SELECTOR, f"#{table_id} tbody tr"):
        if tr.find_elements(By.TAG_NAME, "td")[0].text == first_cell:
            tr.find_element(By.XPATH, f".//button[text()='{label}']").click()
            return
    raise AssertionError(f"no row {first_cell!r} in {table_id}")


@browser_test
def test_prices_external_keys_limits_and_users(
    driver: WebDriver, world: World, admin_url: str, proxy_url: str
) -> None:
    sign_in(driver, admin_url + "/console/", ADMIN_TOKEN)
    view(driver, "overview")

    # a dated price: the history shows both, the old one ending where the new starts
    go(driver, "#models/gpt-4o-mini", "models")
    submit(
        driver,
        "add-price",
        {
            "model": "gpt-4o-mini",
            "valid_from": "2030-01-01T00:00",
            "input": "0.2",
            "cached_input": "0.1",
            "output": "0.8",
        },
    )
    wait(driver, lambda d: len(table_rows(d, "price-history")) == 2, "the price history")
    newest, oldest = table_rows(driver, "price-history")
    assert newest[1:5] == ["in force", "$0.2", "$0.1", "$0.8"] and newest[6] == "admin:root"
    assert oldest[1] == newest[0]  # the previous price ends where the new one starts
    # the shipped table: loaded, and the summary says what happened
    driver.find_element(By.XPATH, "//button[text()='Load the shipped price table']").click()
    wait(driver, lambda d: "prices loaded" in message(d), "the price table loaded")
    assert message(driver).startswith("genai-prices")
    view(driver, "models")
    assert len(table_rows(driver, "model-list")) > 20

    # external keys: a refused secret shows the API's reason and stores nothing
    go(driver, "#external-keys", "external-keys")
    submit(driver, "add-external-key", {"id": "spare", "secret": "sk-wrong-0000"})
    wait(driver, lambda d: "The key was not stored" in message(d), "the refusal")
    assert "sk-wrong-0000" not in driver.page_source
    submit(driver, "add-external-key", {"id": "spare", "secret": UPSTREAM_SECRET})
    wait(driver, lambda d: "External key 'spare' checked and added." in message(d), "added")
    view(driver, "external-keys")
    rows = {r[0]: r for r in table_rows(driver, "external-key-list")}
    assert rows["spare"][1] == "…" + UPSTREAM_SECRET[-4:] and rows["main"][5] == "demo"
    assert UPSTREAM_SECRET not in driver.page_source
    main_delete = [
        b for b in driver.find_elements(By.XPATH, "//button[text()='Delete']") if not b.is_enabled()
    ]
    assert len(main_delete) == 1  # main is used by demo: its Delete is disabled
    row_button(driver, "external-key-list", "spare", "Delete")
    assert accept_confirm(driver) == "Delete external key 'spare'?"
    wait(driver, lambda d: "External key 'spare' deleted." in message(d), "deleted")

    # a limit for one member on one model, then removed
    go(driver, "#limits/demo", "limits")
    submit(driver, "set-limit", {"model": "gpt-4o-mini", "user": "bob", "rpm": "7"})
    wait(
        driver,
        lambda d: (
            [r[:5] for r in table_rows(d, "limit-list")] == [["gpt-4o-mini", "bob", "–", "7", "–"]]
        ),
        "the limit",
    )
    limits = requests.get(
        admin_url + "/projects/demo/limits", headers=admin_auth(), timeout=10
    ).json()["data"]
    assert [(x["model"], x["user"], x["rpm"]) for x in limits] == [("gpt-4o-mini", "bob", 7)]
    row_button(driver, "limit-list", "gpt-4o-mini", "Remove")
    accept_confirm(driver)
    wait(driver, lambda d: table_rows(d, "limit-list") == [], "the limit removed")

    # disabling a user stops their keys at once
    go(driver, "#users", "users")
    row_button(driver, "user-list", "bob", "Disable")
    assert "stops at once" in accept_confirm(driver)
    wait(driver, lambda d: "User 'bob' disabled" in message(d), "bob disabled")
    assert chat(proxy_url, world.keys["bob"]).status_code == 401
    assert csp_violations(driver) == []
