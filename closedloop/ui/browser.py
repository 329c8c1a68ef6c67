"""A real browser on the views: Debian's Chromium driven headless by selenium.

Used by the tests, ``closedloop bench latency --ui`` and ``benchmarks/display_latency.py``.
Chromium and its driver are system packages (``apt-get install chromium chromium-driver``,
which ``.ci/run`` does); selenium is in the ``test`` extra. Nothing is downloaded: the driver
and the browser are named by path, so selenium's own driver manager never runs.
"""

from __future__ import annotations

import os
import shutil

from closedloop.errors import UsageError

#: Where Debian puts them; ``CLOSEDLOOP_CHROMIUM`` / ``CLOSEDLOOP_CHROMEDRIVER`` override.
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
DRIVER_CANDIDATES = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")


def _find(env: str, candidates: tuple[str, ...], name: str) -> str | None:
    given = os.environ.get(env)
    if given:
        return given if os.path.exists(given) else None
    for path in candidates:
        if os.path.exists(path):
            return path
    return shutil.which(name)


def chromium_paths() -> tuple[str, str]:
    """``(browser, driver)`` paths, or a UsageError that says how to install them."""
    browser = _find("CLOSEDLOOP_CHROMIUM", CHROMIUM_CANDIDATES, "chromium")
    driver = _find("CLOSEDLOOP_CHROMEDRIVER", DRIVER_CANDIDATES, "chromedriver")
    if browser is None or driver is None:
        missing = " and ".join(n for n, p in (("chromium", browser), ("chromium-driver", driver)) if p is None)
        raise UsageError(f"{missing} not found; install Debian's packages as root: apt-get update && "
                         "apt-get install -y --no-install-recommends chromium chromium-driver "
                         "(.ci/run does this).")
    return browser, driver


def headless_chromium(*, width: int = 1400, height: int = 1000):
    """A selenium WebDriver on headless Chromium (``--headless=new --no-sandbox``)."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:
        raise UsageError("the browser needs selenium, which is not installed "
                         "(pip install 'closedloop[test]').") from exc
    browser, driver = chromium_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", "--autoplay-policy=no-user-gesture-required",
                "--disable-extensions", "--no-first-run", "--mute-audio"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)
