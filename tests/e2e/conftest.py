"""Browser tests: real headless Chromium (Debian's `chromium`, driven by Selenium through Debian's
`chromium-driver`) against the real hub and proxy, over the real control plane and operator.
Screenshots of each step land in test-artifacts/e2e/ (ignored by git)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from tests.integration.conftest import ROOT

ARTIFACTS = ROOT / "test-artifacts" / "e2e"


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.fail(
            "Debian's chromium and chromium-driver are needed: hack/install-system-deps.sh installs them"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900"):
        options.add_argument(flag)
    # Never reach beyond this machine: no proxy auto-detection, no component updates.
    options.add_argument("--no-proxy-server")
    options.add_argument("--disable-component-update")
    # The audit service under test serves TLS with a certificate made for the test run (its Secure cookie needs
    # https); every server here is on this machine.
    options.add_argument("--ignore-certificate-errors")
    session = webdriver.Chrome(options=options, service=Service(driver))
    session.implicitly_wait(0)
    yield session
    session.quit()


@pytest.fixture
def shots(request: pytest.FixtureRequest) -> Iterator[Path]:
    directory = ARTIFACTS / request.node.name
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    yield directory
