"""Debian's headless Chromium driven by Selenium, shared by the report and web-page tests."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@contextmanager
def chrome(window: str) -> Iterator[webdriver.Chrome]:
    """A headless Chromium with a ``window`` of ``WIDTH,HEIGHT`` pixels, quit after."""
    assert Path(CHROMIUM).exists() and Path(DRIVER).exists(), (
        "Debian's chromium and chromium-driver are needed (.ci/run installs them)"
    )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", f"--window-size={window}"):
        options.add_argument(arg)
    # An explicit driver path: Selenium Manager would try to download one.
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
