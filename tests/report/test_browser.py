"""The HTML report in a real headless Chromium (Debian's chromium + chromium-driver,
driven by Selenium): it renders, loads nothing from outside, and shows the figures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from tests.browser import chrome
from tests.conftest import Cli
from tests.report.test_report import configure, seed_week


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    with chrome("1000,1400") as driver:
        yield driver


def test_the_html_report_renders_in_chromium_with_the_seeded_figures(
    project: Path, cli: Cli, psql: psycopg.Connection[Any], browser: webdriver.Chrome
) -> None:
    configure(
        project,
        """
[report]
title = "Ops weekly"
[[report.sections]]
title = "Cellar <totals>"
sql = "SELECT 'Barolo 2016' AS wine, 6 AS bottles UNION ALL SELECT '<b>Rioja</b>', 12"
""",
    )
    assert cli("db", "upgrade").code == 0
    seed_week(psql)
    out = project / "report.html"
    result = cli("report", "--date", "2026-11-26", "--output", str(out))
    assert result.code == 0, result.stderr

    browser.get(out.as_uri())
    assert browser.title == "Ops weekly"
    text = browser.find_element(By.TAG_NAME, "body").text
    assert "week 2026-W48 (2026-11-23 to 2026-11-29)" in text
    assert "Cellar <totals>" in text and "<b>Rioja</b>" in text  # shown as text, not markup
    assert browser.find_elements(By.TAG_NAME, "b") == []
    rows = {
        tuple(td.text for td in tr.find_elements(By.TAG_NAME, "td"))
        for tr in browser.find_elements(By.CSS_SELECTOR, "table.data tbody tr")
    }
    # the seeded week: sync ran 6 times (4 completed, 1 failed, 1 skipped); the 5 that
    # worked took 1, 2, 3, 4 and 10 s: p50 3 s, p95 4 + 0.8 * 6 = 8.8 s
    assert ("sync", "6", "4", "1", "1", "0", "3.0s", "8.8s", "1") in rows
    assert ("sync", "108", "14", "2", "0") in {r[:5] for r in rows if len(r) == 6}
    assert ("cleanup", "2", "0", "1", "0", "1", "250 ms", "250 ms", "3") in rows
    assert ("Barolo 2016", "6") in rows and ("<b>Rioja</b>", "12") in rows
    # nothing loaded from anywhere: no stylesheet, font, image or script
    resources = browser.execute_script("return performance.getEntriesByType('resource').length")
    assert resources == 0
    # the numbers are right-aligned, as the inline styles say
    cell = browser.find_element(By.XPATH, "//td[text()='108']")
    assert cell.value_of_css_property("text-align") == "right"
    shot = project / "report.png"
    assert browser.save_screenshot(str(shot))
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
