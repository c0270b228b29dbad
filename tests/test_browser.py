"""report.html in a real headless Chromium: images decode, no console errors, every section, phone width.

Needs Chromium, its chromedriver and selenium (``.ci/run`` installs Debian's
``chromium`` and ``chromium-driver``): skipped where they are missing, failed instead
under ``REQUIRE_BROWSER=1`` (the ``browser`` marker, ``tests/conftest.py``). Selenium
is pointed at the system's chromedriver, so it never downloads a browser or driver.
"""

import base64
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from report_data import synthetic_study

from conftest import chromium_binary
from study.report.write import write_all
from study.report.topics.overview import model_anchor

pytestmark = pytest.mark.browser

PHONE_WIDTH = 390  # CSS px: a common phone's viewport width

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """``(folder, model names)`` of the report to check.

    By default a synthetic study (every kind of section: trusted, untrusted, failed)
    written by the real output path; ``STUDY_REPORT_DIR=reports`` checks a real run's
    report instead (the screenshots land next to it).
    """
    given = os.environ.get("STUDY_REPORT_DIR")
    if given:
        out = Path(given)
        return out, list(json.loads((out / "results.json").read_text())["models"])
    out = tmp_path_factory.mktemp("browser")
    write_all(synthetic_study(), out)
    return out, ["gauss_ok", "nuts_bad", "broken_model"]


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium_binary()
    for flag in FLAGS + [f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def load(driver, path: Path, width: int, mobile: bool) -> None:
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": mobile})
    driver.get_log("browser")  # drain: what follows is this page's log
    driver.get(path.resolve().as_uri())


def full_page_screenshot(driver, path: Path) -> None:
    width, height = driver.execute_script(
        "return [document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}})
    path.write_bytes(base64.b64decode(shot["data"]))


def test_report_in_chromium(report, browser):
    out, models = report
    load(browser, out / "report.html", 1100, mobile=False)
    assert browser.title.startswith("Is the mean-field")
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])")
    assert len(images) == (out / "report.html").read_text(encoding="utf-8").count("<img ") >= 1
    undecoded = [alt for alt, complete, width in images if not (complete and width > 0)]
    assert undecoded == []
    ids = set(browser.execute_script("return Array.from(document.querySelectorAll('section')).map(s => s.id)"))
    for name in models:
        assert f"{model_anchor(name)}-section" in ids
        assert browser.execute_script(f"return !!document.getElementById('{model_anchor(name)}')")
    assert browser.execute_script("return !!document.getElementById('answer')")
    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == []
    shot = out / "report-screenshot.png"
    full_page_screenshot(browser, shot)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


def test_report_fits_a_phone_screen(report, browser):
    out, _ = report
    load(browser, out / "report.html", PHONE_WIDTH, mobile=True)
    inner, scroll = browser.execute_script(
        "return [window.innerWidth, document.documentElement.scrollWidth]")
    assert inner == PHONE_WIDTH
    # Wide tables scroll inside their wrapper; nothing else may widen the page.
    offenders = browser.execute_script("""
        const w = window.innerWidth;
        return Array.from(document.querySelectorAll('body *'))
            .filter(e => !e.closest('.table-wrap') && !e.closest('pre') && e.getBoundingClientRect().right > w + 0.5)
            .slice(0, 5).map(e => e.tagName + ': ' + (e.textContent || '').slice(0, 40));""")
    assert scroll <= inner, offenders
    assert offenders == []
    widths = browser.execute_script("return Array.from(document.images).map(i => i.getBoundingClientRect().width)")
    assert max(widths) <= PHONE_WIDTH
    full_page_screenshot(browser, out / "report-screenshot-phone.png")
