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
# A laptop's browser window, in CSS px: the report's first screen must answer within it.
FIRST_SCREEN = (1400, 900)

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


def load(driver, path: Path, width: int, mobile: bool, height: int = 900) -> None:
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})
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


def test_first_screen_holds_the_question_the_claims_and_the_figure(report, browser):
    """At 1400×900, before any scrolling: the question in one line, then the numbered claims (each linking to
    the section that proves it), then the figure, all inside the viewport, and no horizontal scroll.

    The screenshot of that first screen lands in the report's folder as ``report-first-screen.png``; for a
    real run's report::

        STUDY_REPORT_DIR=reports .venv/bin/python -m pytest tests/test_browser.py -k first_screen
    """
    out, _ = report
    width, height = FIRST_SCREEN
    load(browser, out / "report.html", width, mobile=False, height=height)
    screen = browser.execute_script("""
        const box = e => { const r = e.getBoundingClientRect(); return [r.top, r.bottom, r.left, r.right]; };
        const h1 = document.querySelector('h1'), claims = document.getElementById('answer');
        const figure = claims.nextElementSibling, img = figure.querySelector('img');
        return {h1: box(h1), h1_line: parseFloat(getComputedStyle(h1).lineHeight) || 1.2 * parseFloat(getComputedStyle(h1).fontSize),
                question: h1.textContent, claims: box(claims), tag: claims.tagName,
                items: Array.from(claims.children).map(li => [li.textContent, Array.from(li.querySelectorAll('a')).map(a => a.getAttribute('href'))]),
                figure: box(figure), figure_tag: figure.tagName, loaded: img.complete && img.naturalWidth > 0,
                inner: [window.innerWidth, window.innerHeight], scroll: document.documentElement.scrollWidth,
                before_claims: Array.from(document.querySelector('main').children).indexOf(claims)};""")
    assert screen["inner"] == [width, height]
    top, bottom = screen["h1"][:2]
    assert screen["question"].strip().endswith("?") and bottom - top < 1.6 * screen["h1_line"]  # one line
    assert screen["before_claims"] == 1  # the question, then the claims
    assert screen["tag"] == "OL" and 3 <= len(screen["items"]) <= 4
    for text, hrefs in screen["items"]:
        # The last link goes to the section that proves the claim; the others to the glossary's terms.
        assert hrefs and all(h.startswith("#") for h in hrefs), text
        assert all(browser.execute_script(f"return !!document.getElementById('{h[1:]}')") for h in hrefs), hrefs
    assert screen["figure_tag"] == "FIGURE" and screen["loaded"]
    assert bottom <= screen["claims"][0] and screen["claims"][1] <= screen["figure"][0]
    assert screen["figure"][1] <= height, "the figure ends below the first screen"
    assert screen["scroll"] <= width and screen["figure"][3] <= width
    shot = out / "report-first-screen.png"
    shot.write_bytes(base64.b64decode(browser.get_screenshot_as_base64()))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
