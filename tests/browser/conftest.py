"""Headless Chromium driven by Selenium against the in-process server (tests/conftest.py).

Uses the system's Chromium and chromedriver (Debian: ``apt-get install chromium
chromium-driver``); never downloads a browser. Skipped with a reason when either is missing,
except in CI, where that fails.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from typing import Iterator

import pytest

from helpers import unavailable

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
except ImportError:  # the tests skip (see test_page.py); the dev extra installs selenium
    webdriver = None

CHROMIUM = os.environ.get("KAFKATAIL_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = (os.environ.get("KAFKATAIL_TEST_CHROMEDRIVER") or shutil.which("chromedriver")
                or "/usr/bin/chromedriver")

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,900",
         # performance.memory with real (not bucketed) numbers, for the buffer-cap test.
         "--enable-precise-memory-info", "--js-flags=--expose-gc")


@pytest.fixture
def browser() -> Iterator["webdriver.Chrome"]:
    if webdriver is None:
        unavailable("selenium not installed (dev extra)")
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        unavailable("chromium and chromedriver not installed (apt-get install chromium chromium-driver)")
    profile = tempfile.mkdtemp(prefix="kt-chromium-")
    opts = Options()
    opts.binary_location = CHROMIUM
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={profile}")
    # Leave alert() dialogs open so a test can see whether one fired.
    opts.set_capability("unhandledPromptBehavior", "ignore")
    service = Service(CHROMEDRIVER, log_output=os.devnull)
    driver = webdriver.Chrome(service=service, options=opts)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
