"""The member's log page (web/) in a real headless Chromium against the ``log``
function over loopback HTTP: sign in with a key, budgets, totals, chart, calls, CSV,
escaping of hostile names, a refused key, a lead's member filter, and the page
served at the root.

Needs /usr/bin/chromium and /usr/bin/chromedriver (Debian: ``apt-get install -y
chromium chromium-driver``); without them these tests are skipped, with that reason.

Set ``TOLLGATE_SCREENSHOT=docs/log-page.png`` to refresh the screenshot in the docs
(test_member_sees_calls_totals_chart_and_downloads_csv takes it either way).
"""

from __future__ import annotations

import csv
import os
import shutil
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import requests
from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

from functions.store.reports import CSV_COLUMNS
from tests.chrome import browser_test, start_chrome
from tests.conftest import ROOT, World, bearer, seed_usage

pytestmark = browser_test
NO_KEY = "Paste the proxy key your project lead gave you"
BAD_KEY = (
    "This key was not accepted: it may be revoked or expired — ask your project lead for a new one"
)
NO_CALLS = "No calls yet in this range. Make one with curl or the OpenAI SDK, then Refresh"
WAIT_S = 15


# ---- browser ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory, downloads: Path) -> Iterator[WebDriver]:
    driver = start_chrome(tmp_path_factory.mktemp("chrome-profile"), downloads)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def driver(browser: WebDriver) -> Iterator[WebDriver]:
    """The shared browser, its console drained. Each test's log_url is usually a new
    origin (a new port), but the OS may hand a port out again: the stored key is
    cleared after every test, or the next one on that port would open the page signed
    in with a key of a world that no longer exists (a 401 instead of the no-key
    message)."""
    browser.get_log("browser")
    yield browser
    try:
        browser.execute_script("try { localStorage.clear(); } catch (e) {}")
    finally:
        browser.get("about:blank")


def wait(driver: WebDriver, cond: Callable[[WebDriver], Any], what: str) -> Any:
    return WebDriverWait(
        driver, WAIT_S, ignored_exceptions=(StaleElementReferenceException,)
    ).until(cond, message=f"timed out waiting for {what}")


def by_id(driver: WebDriver, id_: str) -> WebElement:
    return driver.find_element(By.ID, id_)


def rows(driver: WebDriver) -> list[list[str]]:
    # One script, so a re-render between two element lookups cannot make them stale.
    return list(
        driver.execute_script(
            "return [...document.querySelectorAll('#call-rows tr')]"
            ".map(tr => [...tr.cells].map(td => td.textContent))"
        )
    )


def wait_rows(driver: WebDriver, n: int) -> list[list[str]]:
    wait(
        driver,
        lambda d: not by_id(d, "view").get_attribute("hidden") and len(rows(d)) == n,
        f"{n} call rows",
    )
    return rows(driver)


def message(driver: WebDriver) -> str:
    box = by_id(driver, "message")
    return box.text if box.is_displayed() else ""


def sign_in(driver: WebDriver, page_url: str, key: str) -> None:
    driver.get(page_url)
    wait(driver, lambda d: NO_KEY in message(d), "the no-key message")
    by_id(driver, "key").send_keys(key)
    by_id(driver, "use-key").click()


def console(driver: WebDriver) -> list[dict[str, Any]]:
    return list(driver.get_log("browser"))


def csp_violations(entries: list[dict[str, Any]]) -> list[str]:
    return [e["message"] for e in entries if "Content Security Policy" in e["message"]]


# ---- data ---------------------------------------------------------------------------


def call_proxy(
    proxy_url: str, key: str, route: str = "chat", tag: str | None = None
) -> dict[str, Any]:
    if route in ("chat", "stream"):
        path, body = (
            "/v1/chat/completions",
            {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": "hello"}],
                "stream": route == "stream",
            },
        )
    else:
        path, body = "/v1/embeddings", {"model": "text-embedding-3-small", "input": "hello"}
    headers = {**bearer(key), **({"x-tollgate-tag": tag} if tag else {})}
    resp = requests.post(proxy_url + path, json=body, headers=headers, timeout=15)
    assert resp.status_code == 200, resp.text
    return {} if route == "stream" else dict(resp.json())


def log_api(log_url: str, key: str, name: str, **params: str) -> Any:
    resp = requests.get(f"{log_url}/log/api/{name}", params=params, headers=bearer(key), timeout=15)
    assert resp.status_code == 200, resp.text
    return resp.json()


def for_people(usd: str) -> str:
    """The page's rounding (web/shared.js money()), independently: $1 and up to the cent,
    below $1 two significant digits, zeros after the cents dropped; half up."""
    n = int(Decimal(usd) * 10**9)
    if n == 0:
        return "$0.00"
    decimals = 2 if n >= 10**9 else min(9, max(2, 11 - len(str(n))))
    unit = 10 ** (9 - decimals)
    rounded = (n + unit // 2) // unit
    if decimals > 2 and rounded >= 100:
        rounded, decimals = rounded // 10, decimals - 1
    whole, frac = divmod(rounded, 10**decimals)
    return f"${whole:,}." + f"{frac:0{decimals}d}".rstrip("0").ljust(2, "0")


def exact(usd: str) -> str:
    """The exact amount a hover shows: "0.029347113" -> "$0.029347113"."""
    whole, frac = usd.split(".")
    return f"${whole}." + frac.rstrip("0").ljust(2, "0")


def cost_cells(driver: WebDriver) -> list[tuple[str, str]]:
    """(text, title) of each call's cost."""
    return [
        tuple(x)
        for x in driver.execute_script(
            "return [...document.querySelectorAll('#call-rows td.cost .money')]"
            ".map(m => [m.textContent, m.title])"
        )
    ]


def chart_days(driver: WebDriver) -> list[dict[str, Any]]:
    return list(
        driver.execute_script(
            "return [...document.querySelectorAll('#chart svg g.day')].map(g => ({"
            "day: g.dataset.day, zero: g.classList.contains('zero'),"
            "title: g.querySelector('title').textContent,"
            "height: Number(g.querySelector('rect.day-bar').getAttribute('height'))}))"
        )
    )


def burn_rows(driver: WebDriver) -> dict[str, dict[str, Any]]:
    return {
        r["who"]: r
        for r in driver.execute_script(
            "return [...document.querySelectorAll('.burn tr.burn-row')].map(tr => ({"
            "who: tr.dataset.who, label: tr.cells[0].textContent,"
            "per_day: tr.cells[1].textContent, per_day_title: tr.cells[1].firstChild.title,"
            "left: tr.cells[2].textContent, outlook: tr.cells[3].dataset.outlook,"
            "runs_out: tr.cells[3].dataset.runsOut || null, text: tr.cells[3].textContent}))"
        )
    }


def day_text(driver: WebDriver, iso: str) -> str:
    return str(
        driver.execute_script(
            "return new Date(arguments[0] + 'T00:00:00Z').toLocaleDateString(undefined, "
            "{timeZone: 'UTC', weekday: 'short', month: 'short', day: 'numeric'})",
            iso,
        )
    )


# ---- tests --------------------------------------------------------------------------


def test_rounding_rule() -> None:
    for usd, want in (
        ("0.029347113", "$0.029"),
        ("0.000000000", "$0.00"),
        ("1234.567890123", "$1,234.57"),
        ("0.099600000", "$0.10"),
        ("0.000004500", "$0.0000045"),
        ("0.000000005", "$0.000000005"),
        ("0.500000000", "$0.50"),
        ("0.001000000", "$0.001"),
        ("9.995000000", "$10.00"),
    ):
        assert for_people(usd) == want, usd


def test_member_sees_calls_totals_chart_and_downloads_csv(
    driver: WebDriver,
    world: World,
    proxy_url: str,
    log_url: str,
    downloads: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bob = world.keys["bob"]
    for route in ("chat", "stream", "embeddings"):
        call_proxy(proxy_url, bob, route, tag="nightly" if route == "stream" else None)
    # earlier days, for the chart: around noon UTC, so a day's seeds share its UTC day
    # whatever time the test runs at
    noon = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    for days_ago, n in ((1, 2), (3, 1), (6, 3)):
        for i in range(n):
            seed_usage(
                world,
                f"seed-{days_ago}-{i}",
                at=noon - timedelta(days=days_ago, hours=i),
                cost_nano=(days_ago + 1) * 1_000_000 + 347_113,
                tag="batch" if days_ago == 6 else None,
                key_name="ci" if days_ago == 6 else "default",
            )
    world.members.add_key("demo", "bob", "ci")  # the key the seeds of six days ago used
    # the log function's clock stops here, so the burn rate the page shows is the one
    # this test reads from the API (a rate over the period so far moves with time)
    frozen = datetime.now(UTC)
    monkeypatch.setattr("functions.log.app.utcnow", lambda: frozen)
    # A budget four times what is spent: the bar must read 25%.
    spent = Decimal(log_api(log_url, bob, "me")["projects"][0]["spent_usd"])
    assert spent > 0
    world.prov.update_project("demo", budget_nano=int(spent * 4 * 10**9))
    # bob's own budget: about two days of his recent pace left, so a date shows
    me = log_api(log_url, bob, "me")["projects"][0]
    per_day = Decimal(me["burn"]["members"][0]["per_day_usd"])
    world.members.update_member(
        "demo", "bob", {"budget_nano": int((Decimal(me["member_spent_usd"]) + 2 * per_day) * 10**9)}
    )
    burn = log_api(log_url, bob, "me")["projects"][0]["burn"]
    calls = log_api(log_url, bob, "calls")["data"]
    daily = log_api(log_url, bob, "daily")["data"]
    assert len(calls) == 9 and len(daily) == 30  # every day of the default range
    assert [d["day"] for d in daily if d["calls"]] == [
        (noon - timedelta(days=n)).date().isoformat() for n in (0, 1, 3, 6)
    ]

    sign_in(driver, log_url + "/log", bob)
    table = wait_rows(driver, 9)

    # the table: newest first like the API, costs rounded for people with the exact
    # amount on hover, local time, key, tag, flags
    assert [r[3] for r in table] == [c["model"] for c in calls]
    assert [r[3] for r in table[:3]] == ["text-embedding-3-small", "gpt-4o-mini", "gpt-4o-mini"]
    assert cost_cells(driver) == [(for_people(c["cost_usd"]), exact(c["cost_usd"])) for c in calls]
    assert ("$0.0073", "$0.007347113") in cost_cells(driver)  # a seed six days ago
    assert all(r[1] == "bob" and r[9] == "ok" for r in table)
    assert [r[2] for r in table] == [c["key_name"] for c in calls]
    assert [r[4] for r in table] == [c["tag"] or "" for c in calls]
    assert table[0][0] == driver.execute_script(
        "return new Date(arguments[0]).toLocaleString()", calls[0]["ts"]
    )
    assert [r[11] for r in table[:3]] == ["", "✓", ""]  # streamed
    assert [r[13] for r in table[3:]] == [""] * 6  # not estimated: blank, not "false"

    # the budget bar: spent against budget, as aria value, width and text
    bar = driver.find_element(By.CSS_SELECTOR, ".project[data-project='demo'] .bar")
    assert bar.get_attribute("aria-valuenow") == "25.0"
    seg = bar.find_element(By.CSS_SELECTOR, ".seg.spent")
    assert abs(seg.rect["width"] / bar.rect["width"] - 0.25) < 0.01
    card = driver.find_element(By.CSS_SELECTOR, ".project[data-project='demo']").text
    assert "demo" in card and "spent" in card and "held of" in card
    assert "0.00000" not in card  # rounded for people, not nine decimals

    # the burn rate: the project's and bob's own (a member sees no one else's)
    shown = burn_rows(driver)
    assert set(shown) == {"project", "bob"} and shown["bob"]["label"] == "You (bob)"
    for who, b in (("project", burn["project"]), ("bob", burn["members"][0])):
        assert shown[who]["per_day"] == for_people(b["per_day_usd"])
        assert shown[who]["per_day_title"] == exact(b["per_day_usd"])
        assert shown[who]["outlook"] == b["outlook"]
        assert shown[who]["runs_out"] == b["runs_out"]
        if b["runs_out"]:
            assert shown[who]["text"] == day_text(driver, b["runs_out"])

    # totals: rounded, exact on hover
    assert by_id(driver, "total-calls").text == "9"
    totals = log_api(log_url, bob, "totals")
    total = by_id(driver, "total-cost").find_element(By.CSS_SELECTOR, ".money")
    assert (total.text, total.get_attribute("title")) == (
        for_people(totals["cost_usd"]),
        exact(totals["cost_usd"]),
    )

    # the chart: every day of the range, oldest first; quiet days as pale stubs
    days = chart_days(driver)
    assert [d["day"] for d in days] == [d["day"] for d in reversed(daily)]
    assert [d["zero"] for d in days] == [d["calls"] == 0 for d in reversed(daily)]
    assert days[-1]["title"].startswith(daily[0]["day"] + ": 3 calls, ")
    assert days[0]["title"] == daily[-1]["day"] + ": no calls"
    busy = [d for d in days if not d["zero"]]
    assert len(busy) == 4 and busy[0]["height"] == max(d["height"] for d in days)
    assert f"(exactly {exact(daily[6]['cost_usd'])})" in busy[0]["title"]
    assert {d["height"] for d in days if d["zero"]} == {2}

    # cost by tag (the default grouping): the untagged calls too, dearest first
    groups = driver.execute_script(
        "return [...document.querySelectorAll('#group-rows tr')]"
        ".map(tr => [tr.cells[0].textContent, tr.cells[1].textContent])"
    )
    assert sorted(groups) == [["(no tag)", "5"], ["batch", "3"], ["nightly", "1"]]
    Select(by_id(driver, "group-by")).select_by_value("key")
    wait(
        driver,
        lambda d: (
            d.execute_script(
                "return [...document.querySelectorAll('#group-rows td.group')].map(td => "
                "td.textContent).sort().join()"
            )
            == "ci,default"
        ),
        "the breakdown by key",
    )
    # a member has no one else to group by
    assert driver.execute_script("return document.getElementById('group-by-member').hidden")

    # the key: in localStorage, never in a URL
    assert driver.execute_script("return localStorage.getItem('tollgate.key')") == bob
    assert bob not in driver.current_url
    fetched = driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert any("/log/api/calls" in u for u in fetched)
    assert not any(bob in u for u in fetched)

    # the model filter is filled from the models seen
    options = [o.text for o in Select(by_id(driver, "model")).options]
    assert options == ["All models", "gpt-4o-mini", "text-embedding-3-small"]
    assert [o.text for o in Select(by_id(driver, "key-name")).options] == [
        "All keys",
        "ci",
        "default",
    ]
    Select(by_id(driver, "group-by")).select_by_value("tag")  # the screenshot's grouping
    wait(
        driver,
        lambda d: (
            d.execute_script("return document.querySelector('#group-head').textContent") == "Tag"
        ),
        "by tag again",
    )
    driver.execute_script("document.activeElement.blur(); window.scrollTo(0, 0)")

    # the screenshot: a 1280x900 viewport (the window adds its frame), chart redrawn
    frame = driver.execute_script("return [outerWidth - innerWidth, outerHeight - innerHeight]")
    driver.set_window_size(1280 + frame[0], 900 + frame[1])
    wait(
        driver,
        lambda d: d.execute_script(
            "return innerWidth === 1280 && innerHeight === 900 && document.querySelector("
            "'#chart svg').getAttribute('width') == Math.max(320, chart.clientWidth - 24)"
        ),
        "the chart redrawn at 1280x900",
    )
    shot = tmp_path / "log-page.png"
    assert driver.save_screenshot(str(shot))
    if os.environ.get("TOLLGATE_SCREENSHOT"):
        shutil.copy(shot, ROOT / os.environ["TOLLGATE_SCREENSHOT"])

    # CSV: fetched with the header, saved through a blob link
    for old in downloads.iterdir():
        old.unlink()
    by_id(driver, "csv").click()
    target = downloads / "tollgate-calls.csv"
    wait(
        driver,
        lambda d: target.exists() and not list(downloads.glob("*.crdownload")),
        "tollgate-calls.csv",
    )
    with target.open(newline="", encoding="utf-8") as fh:
        got = list(csv.reader(fh))
    assert tuple(got[0]) == CSV_COLUMNS
    assert sorted(r[CSV_COLUMNS.index("call_id")] for r in got[1:]) == sorted(
        c["call_id"] for c in calls
    )
    # the CSV keeps every digit
    assert {r[CSV_COLUMNS.index("cost_usd")] for r in got[1:]} == {c["cost_usd"] for c in calls}
    assert "0.007347113" in {r[CSV_COLUMNS.index("cost_usd")] for r in got[1:]}
    assert csp_violations(console(driver)) == []


def test_names_from_data_render_as_text(driver: WebDriver, world: World, log_url: str) -> None:
    project_name = "<img src=x onerror=alert(1)>"
    model = '<script>alert("model")</script>gpt'
    user_name = "<svg onload=alert(2)>Bob"
    tag = "<img src=x onerror=alert(3)>"  # 28 printable ASCII: a valid x-tollgate-tag
    key_name = "<b>k</b>"
    world.prov.update_project("demo", name=project_name)
    world.prov.update_user("bob", {"name": user_name})
    seed_usage(
        world,
        "hostile-1",
        at=datetime.now(UTC) - timedelta(minutes=5),
        model=model,
        tag=tag,
        key_name=key_name,
    )
    world.db.collection("keys").document("hostile-key").set(
        {"project": "demo", "user": "bob", "name": key_name}
    )
    note = "<b>launch</b>"  # a top-up's note, shown on the project card
    world.db.collection("projects").document("demo").update(
        {
            "topups": [
                {
                    "amount_nano": 2 * 10**9,
                    "until": datetime.now(UTC) + timedelta(days=2),
                    "note": note,
                }
            ]
        }
    )

    sign_in(driver, log_url + "/log", world.keys["bob"])
    [row] = wait_rows(driver, 1)
    topup = driver.find_element(By.CSS_SELECTOR, ".project .topup").text
    assert topup.startswith("Project top-up: +$2.00 until ") and topup.endswith(f"({note})")

    assert row[3] == model and row[4] == tag and row[2] == key_name
    # the breakdown by tag and by key shows them as text
    wait(
        driver,
        lambda d: (
            d.execute_script("return document.querySelector('#group-rows td.group').textContent")
            == tag
        ),
        "the tag in the breakdown",
    )
    Select(by_id(driver, "group-by")).select_by_value("key")
    wait(
        driver,
        lambda d: (
            d.execute_script("return document.querySelector('#group-rows td.group').textContent")
            == key_name
        ),
        "the key name in the breakdown",
    )
    assert driver.execute_script(
        "return [...document.querySelectorAll('#tag-options option')].map(o => o.value)"
    ) == [tag]
    assert [o.text for o in Select(by_id(driver, "key-name")).options][1] == key_name
    assert driver.find_elements(By.CSS_SELECTOR, "b") == []
    assert driver.find_element(By.CSS_SELECTOR, ".project-name").text == project_name
    assert driver.find_element(By.CSS_SELECTOR, "#who strong").text == user_name
    assert [o.text for o in Select(by_id(driver, "project")).options][1] == project_name
    assert [o.text for o in Select(by_id(driver, "model")).options][1] == model
    assert driver.find_elements(By.CSS_SELECTOR, "img") == []
    assert driver.find_elements(By.CSS_SELECTOR, "svg[onload], [onerror]") == []
    scripts = driver.find_elements(By.TAG_NAME, "script")
    assert [x.get_attribute("src").rsplit("/", 1)[-1] for x in scripts] == [  # ours only
        "shared.js",
        "app.js",
    ]
    time.sleep(0.3)  # give an injected handler the chance to fire
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018 - reading it is what raises
    entries = console(driver)
    assert csp_violations(entries) == []
    assert [e["message"] for e in entries if e["level"] == "SEVERE"] == []


def test_refused_key_says_what_to_do_and_forget_clears(
    driver: WebDriver, world: World, proxy_url: str, log_url: str
) -> None:
    call_proxy(proxy_url, world.keys["bob"])
    sign_in(driver, log_url + "/log", world.keys["bob"])
    wait_rows(driver, 1)

    bad = "tg_" + "0" * 40
    by_id(driver, "key").send_keys(bad)
    by_id(driver, "use-key").click()
    wait(driver, lambda d: BAD_KEY in message(d), "the refused-key message")
    assert not by_id(driver, "view").is_displayed()
    assert rows(driver) == []  # the previous key's calls are gone from the page
    assert driver.execute_script("return localStorage.getItem('tollgate.key')") == bad

    by_id(driver, "forget-key").click()
    wait(driver, lambda d: NO_KEY in message(d), "the no-key message")
    assert driver.execute_script("return localStorage.getItem('tollgate.key')") is None
    assert driver.execute_script("return localStorage.length") == 0
    assert not by_id(driver, "view").is_displayed()
    assert driver.find_elements(By.CSS_SELECTOR, "#projects *, #call-rows *, #chart *") == []
    driver.refresh()  # and it stays forgotten
    wait(driver, lambda d: NO_KEY in message(d), "the no-key message after a reload")
    assert csp_violations(console(driver)) == []


def test_lead_filters_by_member_and_member_has_no_member_filter(
    driver: WebDriver, world: World, proxy_url: str, log_url: str
) -> None:
    for _ in range(2):
        call_proxy(proxy_url, world.keys["bob"])
    call_proxy(proxy_url, world.keys["alice"], "embeddings")

    sign_in(driver, log_url + "/log", world.keys["alice"])
    table = wait_rows(driver, 3)  # a lead sees everyone in the project they lead
    assert sorted(r[1] for r in table) == ["alice", "bob", "bob"]
    assert by_id(driver, "member-label").is_displayed()
    member = Select(by_id(driver, "member"))
    assert [o.text for o in member.options] == ["Everyone", "alice", "bob"]
    member.select_by_value("bob")
    by_id(driver, "apply").click()
    table = wait_rows(driver, 2)
    assert [r[1] for r in table] == ["bob", "bob"]
    assert by_id(driver, "total-calls").text == "2"

    by_id(driver, "forget-key").click()
    by_id(driver, "key").send_keys(world.keys["bob"])
    by_id(driver, "use-key").click()
    table = wait_rows(driver, 2)
    assert [r[1] for r in table] == ["bob", "bob"]
    assert not by_id(driver, "member-label").is_displayed()
    assert csp_violations(console(driver)) == []


def test_page_works_at_the_root(driver: WebDriver, world: World, log_url: str) -> None:
    sign_in(driver, log_url + "/", world.keys["bob"])
    wait(driver, lambda d: by_id(d, "calls-empty").is_displayed(), "the no-calls message")
    assert NO_CALLS in by_id(driver, "calls-empty").text
    assert by_id(driver, "total-calls").text == "0"
    font = driver.execute_script("return getComputedStyle(document.body).fontFamily")
    assert "system-ui" in font  # the stylesheet loaded too
    assert driver.find_element(By.CSS_SELECTOR, ".project[data-project='demo'] .bar")
    entries = console(driver)
    assert csp_violations(entries) == []
    assert [e["message"] for e in entries if e["level"] == "SEVERE"] == []


def test_date_and_model_filters(driver: WebDriver, world: World, log_url: str) -> None:
    now = datetime.now(UTC)
    # at whole days before now: each lands on local date today-k, whatever the zone
    for days_ago, model in (
        (0, "gpt-4o-mini"),
        (1, "gpt-4o-mini"),
        (3, "text-embedding-3-small"),
        (6, "gpt-4o-mini"),
    ):
        seed_usage(world, f"d{days_ago}", at=now - timedelta(days=days_ago), model=model)
    sign_in(driver, log_url + "/log", world.keys["bob"])
    wait_rows(driver, 4)

    def local_day(days_ago: int) -> str:
        return str(
            driver.execute_script(
                "const d = new Date(Date.now() - arguments[0] * 864e5);"
                "return [d.getFullYear(), String(d.getMonth() + 1).padStart(2, '0'),"
                " String(d.getDate()).padStart(2, '0')].join('-')",
                days_ago,
            )
        )

    def set_date(id_: str, value: str) -> None:  # typing into date inputs is locale-bound
        driver.execute_script(
            "document.getElementById(arguments[0]).value = arguments[1]", id_, value
        )

    set_date("from", local_day(3))
    set_date("to", local_day(1))  # inclusive
    by_id(driver, "apply").click()
    table = wait_rows(driver, 2)
    assert [r[3] for r in table] == ["gpt-4o-mini", "text-embedding-3-small"]
    assert by_id(driver, "total-calls").text == "2"
    # the bounds went out as the viewer's local midnights, in UTC
    after, before = driver.execute_script(
        "const [y, m, d] = arguments[0].split('-').map(Number);"
        "const [y2, m2, d2] = arguments[1].split('-').map(Number);"
        "return [new Date(y, m - 1, d).toISOString(), new Date(y2, m2 - 1, d2 + 1).toISOString()]",
        local_day(3),
        local_day(1),
    )
    sent = [
        u
        for u in driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
        )
        if "/api/calls?" in u and "after=" in u
    ]
    query = unquote(sent[-1])
    assert f"after={after}" in query and f"before={before}" in query

    Select(by_id(driver, "model")).select_by_value("gpt-4o-mini")
    by_id(driver, "apply").click()
    assert [r[3] for r in wait_rows(driver, 1)] == ["gpt-4o-mini"]

    # a filter the API refuses: the message says why and the filters stay to fix it
    set_date("from", local_day(1))
    set_date("to", local_day(3))
    by_id(driver, "apply").click()
    wait(
        driver, lambda d: "'after' must be earlier than 'before'" in message(d), "the API's message"
    )
    assert by_id(driver, "filters").is_displayed()
    assert csp_violations(console(driver)) == []


def test_load_more_follows_the_page_token(driver: WebDriver, world: World, log_url: str) -> None:
    start = datetime.now(UTC) - timedelta(hours=5)
    for i in range(130):
        seed_usage(world, f"many-{i:03d}", at=start + timedelta(seconds=i))
    sign_in(driver, log_url + "/log", world.keys["bob"])
    wait_rows(driver, 100)
    assert by_id(driver, "more").is_displayed()
    assert by_id(driver, "total-calls").text == "130"
    by_id(driver, "more").click()
    table = wait_rows(driver, 130)
    assert not by_id(driver, "more").is_displayed()
    times = [r[0] for r in table]
    assert times[0] == driver.execute_script(
        "return new Date(arguments[0]).toLocaleString()",
        (start + timedelta(seconds=129)).isoformat(),
    )
    assert len(set(times)) == 130  # no call twice, none missing


def test_lead_sees_each_members_run_out_date_and_filters_by_tag_and_key(
    driver: WebDriver, world: World, log_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    monkeypatch.setattr("functions.log.app.utcnow", lambda: now)
    world.members.add_key("demo", "bob", "ci")
    for cid, days_ago, user, cost, tag, key in (
        ("b6", 6, "bob", 2 * 10**9, "nightly", "ci"),
        ("b1", 1, "bob", 1_529_347_113, None, "default"),
        ("b10", 10, "bob", 5 * 10**9, None, "default"),  # this period, not this week
        ("a2", 2, "alice", 500_000_000, "adhoc", "default"),
    ):
        seed_usage(
            world,
            cid,
            at=now - timedelta(days=days_ago),
            user=user,
            cost_nano=cost,
            tag=tag,
            key_name=key,
        )
    world.members.update_member("demo", "bob", {"budget_nano": 12 * 10**9})
    burn = log_api(log_url, world.keys["alice"], "me")["projects"][0]["burn"]
    by_user = {m["user"]: m for m in burn["members"]}
    assert by_user["bob"]["runs_out"] == "2026-11-27"  # $3.47 left at $0.50 a day
    assert burn["project"]["runs_out"] == "2026-11-22"  # $0.97 left at $0.58 a day

    sign_in(driver, log_url + "/log", world.keys["alice"])
    wait_rows(driver, 4)
    shown = burn_rows(driver)
    assert list(shown) == ["project", "alice", "bob"]
    assert shown["alice"]["label"] == "You (alice)" and shown["bob"]["label"] == "bob"
    assert (shown["bob"]["outlook"], shown["bob"]["runs_out"]) == ("runs_out", "2026-11-27")
    assert shown["bob"]["text"] == day_text(driver, "2026-11-27")
    assert shown["bob"]["per_day"] == for_people(by_user["bob"]["per_day_usd"]) == "$0.50"
    assert shown["bob"]["left"] == for_people(by_user["bob"]["remaining_usd"]) == "$3.47"
    assert shown["project"]["runs_out"] == "2026-11-22"
    assert (shown["alice"]["outlook"], shown["alice"]["text"]) == ("no_budget", "project budget")
    # a dollar and more is rounded to the cent, the exact amount on hover
    assert ("$1.53", "$1.529347113") in cost_cells(driver)

    # the chart covers the 30 days up to today (the function's), quiet ones included
    days = chart_days(driver)
    assert len(days) == 30 and days[0]["day"] == "2026-10-22" and days[-1]["day"] == "2026-11-20"
    assert [d["day"] for d in days if not d["zero"]] == [
        "2026-11-10",
        "2026-11-14",
        "2026-11-18",
        "2026-11-19",
    ]

    # a lead may group by member
    Select(by_id(driver, "group-by")).select_by_value("member")
    wait(
        driver,
        lambda d: (
            d.execute_script(
                "return [...document.querySelectorAll('#group-rows td.group')].map(td => "
                "td.textContent).join()"
            )
            == "bob,alice"
        ),
        "the breakdown by member, dearest first",
    )

    # the tag filter: free text, the tags seen offered
    assert driver.execute_script(
        "return [...document.querySelectorAll('#tag-options option')].map(o => o.value)"
    ) == ["adhoc", "nightly"]
    by_id(driver, "tag").send_keys("nightly")
    by_id(driver, "apply").click()
    wait(driver, lambda d: len(rows(d)) == 1 and rows(d)[0][4] == "nightly", "the tagged call")
    assert by_id(driver, "total-calls").text == "1"
    by_id(driver, "tag").clear()
    Select(by_id(driver, "key-name")).select_by_value("default")
    by_id(driver, "apply").click()
    wait(driver, lambda d: len(rows(d)) == 3, "the calls of keys named default")
    assert {r[2] for r in rows(driver)} == {"default"}
    sent = [
        unquote(u)
        for u in driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
        )
        if "/api/calls?" in u
    ]
    assert "tag=nightly" in sent[-2] and "key=default" in sent[-1]
    assert csp_violations(console(driver)) == []
