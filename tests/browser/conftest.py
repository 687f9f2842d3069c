"""Browser tests: Debian's Chromium driven by Playwright's Python package.

Playwright cannot download its own browser build here (the network reaches package
registries only), so the tests drive ``/usr/bin/chromium`` from Debian. The
``chromium`` fixture installs it with apt when it is missing and fails the test,
loudly, when that does not work: a browser test is never skipped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")

# A closed network: nothing may leave the machine, and nothing may wait for it.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

INSTALL_TIMEOUT = 900  # seconds; a first install downloads about 100 MB of packages


def _apt(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["apt-get", *args],
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        check=False,
    )


def install_chromium() -> None:
    """``apt-get install -y chromium``, refreshing the package lists once if it fails."""
    if shutil.which("apt-get") is None:
        pytest.fail(f"{CHROMIUM} is missing and apt-get is not available to install it.")
    result = _apt("install", "-y", "--no-install-recommends", "chromium")
    if result.returncode != 0:  # stale or missing package lists on a fresh machine
        update = _apt("update")
        result = _apt("install", "-y", "--no-install-recommends", "chromium")
        if result.returncode != 0:
            pytest.fail(
                f"Could not install Debian's chromium for the browser tests "
                f"(apt-get update exited {update.returncode}, install exited "
                f"{result.returncode}):\n{update.stderr[-2000:]}\n{result.stdout[-2000:]}\n"
                f"{result.stderr[-2000:]}"
            )
    if not CHROMIUM.exists():
        pytest.fail(f"apt-get installed chromium, but {CHROMIUM} does not exist.")


@pytest.fixture(scope="session")
def chromium() -> Path:
    """The Chromium executable, installed on first use."""
    if not CHROMIUM.exists():
        install_chromium()
    return CHROMIUM


@pytest.fixture
def browser_page(chromium):
    """``with browser_page() as page``: a fresh page in headless Chromium.

    A context manager rather than a plain fixture because Playwright's sync API runs an
    event loop in this thread while it is open, and Django refuses ORM calls from a
    thread with a running loop: a test prepares its rows before opening the browser
    and checks them after closing it.
    """
    from playwright.sync_api import sync_playwright

    @contextlib.contextmanager
    def open_page(viewport: dict[str, int] | None = None) -> Iterator:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS
            )
            try:
                page = browser.new_page(viewport=viewport or {"width": 1600, "height": 900})
                page.set_default_timeout(15_000)
                yield page
            finally:
                browser.close()

    return open_page
