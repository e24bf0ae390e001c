"""The pages in a real headless Chromium (Debian's chromium + chromium-driver, driven
by Selenium) against a real ``jobctl serve`` and PostgreSQL: what an operator sees and
clicks. A screenshot of each page is saved in the test's tmp dir."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser import chrome
from tests.conftest import Cli
from tests.web_pages.conftest import TOKEN_SECRET, Console

ORANGE = "rgba(230, 106, 0, 1)"  # .countdown.soon in console.css
RED = "rgba(198, 40, 40, 1)"  # a failed run


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    with chrome("1200,900") as driver:
        yield driver


@pytest.fixture
def page(browser: webdriver.Chrome, console: Console) -> Iterator[webdriver.Chrome]:
    """The browser, logged out, on this test's server."""
    browser.delete_all_cookies()
    yield browser
    browser.delete_all_cookies()


def open_page(browser: webdriver.Chrome, console: Console, path: str) -> None:
    browser.get(console.url + path)
    # nothing but the console's own stylesheet and script is loaded
    loaded = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert all(name.startswith(console.url + "/static/") for name in loaded), loaded


def log_in(browser: webdriver.Chrome, console: Console) -> None:
    browser.get(console.url + "/login?next=/schedules")
    browser.find_element(By.ID, "token").send_keys(TOKEN_SECRET)
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    WebDriverWait(browser, 10).until(lambda b: b.current_url.endswith("/schedules"))


def shot(browser: webdriver.Chrome, path: Path) -> None:
    assert browser.save_screenshot(str(path))
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000


def rows(browser: webdriver.Chrome, table: str) -> list[list[str]]:
    return [
        [td.text for td in tr.find_elements(By.TAG_NAME, "td")]
        for tr in browser.find_elements(By.CSS_SELECTOR, f"table.{table} tbody tr")
    ]


def schedules(cli: Cli) -> list[dict[str, Any]]:
    listed = cli("schedule", "list", "--json")
    assert listed.code == 0, listed.stderr
    found: list[dict[str, Any]] = json.loads(listed.stdout)
    return found


def cli_error(cli: Cli, *args: str) -> str:
    """The one-line message ``jobctl`` exits 2 with, without its ``jobctl: error:``."""
    result = cli(*args)
    assert result.code == 2, result.stderr
    return result.stderr.strip().removeprefix("jobctl: error: ")


def undated(text: str) -> str:
    return re.sub(r"[\d.]+ ?[a-z]+ ago", "… ago", text)


def test_runs_and_run_pages_list_and_show_seeded_runs(
    page: webdriver.Chrome, console: Console, cli: Cli, tmp_path: Path
) -> None:
    assert cli("run", "sleepy", "-p", "seconds=0").code == 0
    assert cli("run", "boom").code == 1
    open_page(page, console, "/runs")
    assert page.title == "Runs · jobctl"
    found = rows(page, "runs")
    assert [(r[1], r[2]) for r in found] == [("boom", "failed"), ("sleepy", "completed")]
    failed = page.find_element(By.CSS_SELECTOR, "table.runs .s-failed")
    assert failed.value_of_css_property("color") == RED
    shot(page, tmp_path / "runs.png")

    page.find_element(By.LINK_TEXT, found[0][0]).click()
    WebDriverWait(page, 10).until(lambda b: "/runs/" in b.current_url)
    text = page.find_element(By.TAG_NAME, "main").text
    assert "the answer is not 42" in text
    assert (
        "ValueError: the answer is not 42"
        in page.find_element(By.CSS_SELECTOR, "pre.traceback").text
    )
    assert "about to fail" in page.find_element(By.CSS_SELECTOR, "pre.log").text
    shot(page, tmp_path / "run.png")

    open_page(page, console, "/runs?status=completed")
    assert [r[1] for r in rows(page, "runs")] == ["sleepy"]


def test_jobs_and_health_pages_say_what_jobs_list_and_status_say(
    page: webdriver.Chrome, console: Console, cli: Cli, tmp_path: Path
) -> None:
    assert cli("run", "boom").code == 1
    open_page(page, console, "/jobs")
    by_job = {r[0].split("\n")[0]: r for r in rows(page, "jobs")}
    listed = {j["name"]: j for j in json.loads(cli("jobs", "list", "--json").stdout)}
    assert set(listed) <= set(by_job)
    sleepy = by_job["sleepy"]
    assert "At 06:00" in sleepy[2] and "0 6 * * *" in sleepy[2]
    assert len(sleepy[3].split("\n")) == 3  # the next three fire times
    assert "failing" in by_job["boom"][6] and "failed" in by_job["boom"][4]
    shot(page, tmp_path / "jobs.png")

    open_page(page, console, "/health")
    status = {s["job"]: s for s in json.loads(cli("status", "--json").stdout)}
    health = {r[0]: r for r in rows(page, "health")}
    assert set(health) == set(status)
    for job, doc in status.items():  # the same words (ages move on between the two)
        assert health[job][1] == doc["state"]
        assert undated(health[job][4]) == undated(doc["reason"])
    assert "jobctl status exits 1" in page.find_element(By.CSS_SELECTOR, ".verdict").text
    shot(page, tmp_path / "health.png")


def test_the_schedule_form_adds_a_row_in_the_jobs_zone(
    page: webdriver.Chrome, console: Console, cli: Cli, tmp_path: Path
) -> None:
    log_in(page, console)
    job = page.find_element(By.ID, "add-job")
    job.send_keys("boom")
    zone = page.find_element(By.ID, "add-zone")
    WebDriverWait(page, 5).until(lambda _: zone.text == "America/Toronto")
    page.find_element(By.XPATH, "//button[text()='tomorrow 9:00']").click()
    tomorrow = datetime.now(ZoneInfo("America/Toronto")).date() + timedelta(days=1)
    assert page.find_element(By.ID, "add-date").get_attribute("value") == tomorrow.isoformat()
    assert page.find_element(By.ID, "add-time").get_attribute("value") == "09:00"
    page.find_element(By.NAME, "params").send_keys("region=north\nlimit=5")
    page.find_element(By.ID, "add-submit").click()
    WebDriverWait(page, 10).until(lambda b: "added=" in b.current_url)

    [row] = schedules(cli)
    assert row["job"] == "boom" and row["status"] == "pending"
    assert row["params"] == {"region": "north", "limit": "5"}
    assert row["created_by"] == "alice" and row["timezone"] == "America/Toronto"
    assert row["local"].startswith(f"{tomorrow.isoformat()} 09:00 E")  # EST or EDT
    notice = page.find_element(By.CSS_SELECTOR, ".notice").text
    assert notice.startswith(f"schedule {row['id']}: boom at ")
    assert f"schedule-{row['id']}" in page.page_source
    shot(page, tmp_path / "schedules.png")


def countdown_cell(browser: webdriver.Chrome, schedule_id: int) -> WebElement:
    return browser.find_element(By.CSS_SELECTOR, f"#schedule-{schedule_id} .countdown")


def test_the_countdown_is_live_and_orange_under_five_minutes(
    page: webdriver.Chrome, console: Console, cli: Cli
) -> None:
    soon = cli("schedule", "add", "sleepy", "--at", "in 3m")
    later = cli("schedule", "add", "sleepy", "--at", "in 2h")
    assert soon.code == 0 and later.code == 0, soon.stderr + later.stderr
    soon_id, later_id = int(soon.stdout.split("\t")[0]), int(later.stdout.split("\t")[0])
    open_page(page, console, "/schedules")
    cell = countdown_cell(page, soon_id)
    first = cell.text
    assert first.startswith(("2 min", "3 min")), first
    WebDriverWait(page, 2, poll_frequency=0.1).until(lambda _: cell.text != first)
    assert "soon" in (cell.get_attribute("class") or "")
    assert cell.value_of_css_property("color") == ORANGE
    far = countdown_cell(page, later_id)
    assert far.text.startswith(("1h 59min", "2h")) and "soon" not in (
        far.get_attribute("class") or ""
    )
    assert far.value_of_css_property("color") != ORANGE


def test_cancel_button_cancels_the_schedule(
    page: webdriver.Chrome, console: Console, cli: Cli
) -> None:
    added = cli("schedule", "add", "sleepy", "--at", "in 1h")
    assert added.code == 0, added.stderr
    sid = int(added.stdout.split("\t")[0])
    log_in(page, console)
    page.find_element(By.CSS_SELECTOR, f"#schedule-{sid} form.cancel button").click()
    WebDriverWait(page, 10).until(lambda b: "cancelled=" in b.current_url)
    assert [r["status"] for r in schedules(cli)] == ["cancelled"]
    assert page.find_element(By.CSS_SELECTOR, ".notice").text.endswith("cancelled")
    status = page.find_element(By.CSS_SELECTOR, f"#schedule-{sid}").get_attribute("data-status")
    assert status == "cancelled"
    assert page.find_elements(By.CSS_SELECTOR, f"#schedule-{sid} form.cancel") == []


def submit(browser: webdriver.Chrome, job: str, day: str, time: str, params: str = "") -> str:
    """Fill the add form (date and time as a picker would set them) and submit it."""
    field = browser.find_element(By.ID, "add-job")
    field.clear()
    field.send_keys(job)
    for name, value in (("add-date", day), ("add-time", time)):
        element = browser.find_element(By.ID, name)
        browser.execute_script("arguments[0].value = arguments[1]", element, value)
    area = browser.find_element(By.NAME, "params")
    area.clear()
    area.send_keys(params)
    button = browser.find_element(By.ID, "add-submit")
    button.click()
    # The answer is a new page: wait until this one is gone (else the error of the
    # previous submission, or none yet, would be read), then for its message.
    WebDriverWait(browser, 10).until(expected_conditions.staleness_of(button))
    error: WebElement = WebDriverWait(browser, 10).until(
        lambda b: b.find_element(By.CSS_SELECTOR, "p.error")
    )
    return error.text


def test_bad_input_on_the_form_says_what_the_cli_says_and_writes_nothing(
    page: webdriver.Chrome, console: Console, cli: Cli, tmp_path: Path
) -> None:
    log_in(page, console)
    ahead = (datetime.now(UTC) + timedelta(days=2)).strftime("%Y-%m-%d")
    past = (datetime.now(UTC) - timedelta(days=2)).strftime("%Y-%m-%d")
    cases = [
        (("nope", ahead, "10:00", ""), ("nope", f"{ahead} 10:00")),
        (("sleepy", past, "10:00", ""), ("sleepy", f"{past} 10:00")),
        (("sleepy", ahead, "10:00", "seconds"), ("sleepy", f"{ahead} 10:00", "seconds")),
    ]
    for (job, day, time, params), expected in cases:
        said = submit(page, job, day, time, params)
        args = ["schedule", "add", expected[0], "--at", expected[1]]
        if len(expected) > 2:
            args += ["--param", expected[2]]
        assert said == cli_error(cli, *args)
        # the form keeps what was typed
        assert page.find_element(By.ID, "add-job").get_attribute("value") == job
    shot(page, tmp_path / "schedule-error.png")
    assert schedules(cli) == []
