"""The web page in a real browser: Debian's headless Chromium, driven by selenium through Debian's
chromedriver, against a real simulated daemon and its web process.

Skipped, with the reason, where chromium, chromedriver or selenium is missing (``.ci/run``
installs them). With ``$OPENSCAN_PI_SCREENSHOTS`` set to a folder, the pages' screenshots are
saved there (the README's come from here).
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ..daemon.conftest import WAIT_S
from .conftest import WebDaemon

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

webdriver = pytest.importorskip("selenium.webdriver",
                                reason="selenium is not installed (pip install selenium)")
if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    pytest.skip("Debian's chromium and chromium-driver are not installed "
                "(apt install chromium chromium-driver)", allow_module_level=True)

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

SHOTS = os.environ.get("OPENSCAN_PI_SCREENSHOTS")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module's tests."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1200,1000", "--use-angle=swiftshader",
                "--enable-unsafe-swiftshader", "--disable-gpu-sandbox"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def page(browser: Any) -> Any:
    """The browser, on a blank page and with its console read: what an earlier test's page
    (of a daemon now gone) said is not this test's."""
    browser.get("about:blank")
    console_errors(browser)
    return browser


def console_errors(driver: Any) -> list[str]:
    """What the page said at level error since the last look."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def until(driver: Any, check: Callable[[Any], Any], timeout: float = WAIT_S) -> Any:
    """Wait (the browser polled) until ``check(driver)`` is truthy; returns it."""
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(check)


def text(driver: Any, element_id: str) -> str:
    return str(driver.execute_script(f"return document.getElementById('{element_id}')"
                                     ".textContent"))


def shot(driver: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(SHOTS) / name))


def test_the_pages_load_without_errors_and_the_preview_refreshes(web: WebDaemon, page: Any
                                                                  ) -> None:
    browser = page
    browser.get(web.url + "/")
    assert until(browser, lambda d: text(d, "state") == "idle")
    first = int(until(browser, lambda d: d.find_element(By.ID, "preview").get_attribute(
        "data-seq")))
    until(browser, lambda d: int(d.find_element(By.ID, "preview").get_attribute("data-seq"))
          > first + 2)  # successive frames, a few a second
    assert text(browser, "focus").startswith("focus ")
    shot(browser, "web-scanner.png")
    browser.get(web.url + "/jobs")
    assert "Jobs" in browser.title
    assert console_errors(browser) == []


def test_a_scan_from_the_page_shows_live_progress_and_pauses_continues_cancels(
        web: WebDaemon, page: Any) -> None:
    browser = page
    browser.get(web.url + "/")
    until(browser, lambda d: text(d, "state") == "idle")
    form = browser.find_element(By.ID, "scan")
    positions = form.find_element(By.NAME, "positions")
    positions.clear()
    positions.send_keys("40")
    form.find_element(By.TAG_NAME, "button").click()
    until(browser, lambda d: text(d, "job-state") == "scanning")
    counts = set()

    def advanced(d: Any) -> bool:
        counts.add(text(d, "count"))
        return len(counts) >= 3

    until(browser, advanced)  # pushed by the events: the page asks for nothing
    shot(browser, "web-scanning.png")
    browser.find_element(By.CSS_SELECTOR, "button[data-action=pause]").click()
    until(browser, lambda d: text(d, "job-state") == "paused")
    browser.find_element(By.CSS_SELECTOR, "button[data-action=continue]").click()
    until(browser, lambda d: text(d, "job-state") == "scanning")
    job_id = text(browser, "job")
    browser.find_element(By.CSS_SELECTOR, "button[data-action=cancel]").click()
    until(browser, lambda d: "cancel: done" in text(d, "message"))
    assert web.daemon.call("job", {"job": job_id})["state"] == "cancelled"
    assert console_errors(browser) == []


def test_a_scan_of_passes_and_focus_stacks_from_the_page(web: WebDaemon, page: Any) -> None:
    """The form's passes and focus stack reach the job; between passes the page says which pass
    comes next, and its Continue starts it."""
    browser = page
    browser.get(web.url + "/")
    until(browser, lambda d: text(d, "state") == "idle")
    form = browser.find_element(By.ID, "scan")
    for name, value in (("positions", "3"), ("passes", "2"), ("focus_stack", "3")):
        field = form.find_element(By.NAME, name)
        field.clear()
        field.send_keys(value)
    form.find_element(By.TAG_NAME, "button").click()
    until(browser, lambda d: text(d, "job-state") == "waiting")
    assert text(browser, "pass") == "2 of 2"
    job = web.daemon.call("job", {"job": text(browser, "job")})
    assert (job["focus_stack"], job["passes"], job["positions"]) == (3, 2, 6)
    browser.find_element(By.CSS_SELECTOR, "button[data-action=continue]").click()
    until(browser, lambda d: text(d, "job-state") == "done")
    folder = web.daemon.data / "jobs" / job["id"] / "images"
    assert len(list(folder.glob("pos*_*.jpg"))) == 6 * 3
    browser.get(f"{web.url}/jobs/{job['id']}")
    facts = browser.find_element(By.TAG_NAME, "dl").text
    assert "Pass\n2 of 2" in facts and "Focus stack\n3 photos a position" in facts, facts
    assert console_errors(browser) == []


def test_the_model_turns_in_the_page(web: WebDaemon, page: Any) -> None:
    browser = page
    s = web.session()
    s.page()
    job = s.act("scan", {"positions": 6}).json()["result"]
    web.daemon.wait_job(job["id"], {"done"})
    browser.get(f"{web.url}/jobs/{job['id']}")
    canvas = browser.find_element(By.ID, "viewer")
    assert until(browser, lambda d: canvas.get_attribute("data-loaded")) == "yes"
    from PIL import Image

    def drawn(_: Any) -> float:
        with Image.open(io.BytesIO(canvas.screenshot_as_png)) as image:
            rgb = image.convert("RGB").tobytes()
        background = (0x20, 0x25, 0x2B)
        count = len(rgb) // 3
        far = sum(1 for i in range(0, len(rgb), 3)
                  if abs(rgb[i] - background[0]) + abs(rgb[i + 1] - background[1])
                  + abs(rgb[i + 2] - background[2]) > 40)
        return far / count if far / count > 0.05 else 0.0

    assert until(browser, drawn, 30) > 0.05  # the model covers part of the canvas
    thumbs = browser.find_elements(By.CSS_SELECTOR, ".thumbs img")
    assert len(thumbs) == 6
    until(browser, lambda d: all(d.execute_script("return arguments[0].naturalWidth", t) > 0
                                 for t in thumbs))
    shot(browser, "web-job.png")
    assert console_errors(browser) == []
