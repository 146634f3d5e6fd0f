"""The model report in a real browser: headless Chromium, no console errors, every chart loaded.

Chromium and its driver are Debian's (``apt-get install chromium chromium-driver``;
``.ci/run`` installs them when missing), driven with Selenium. The browser runs with
networking features off and a fresh profile; the report is a local file and needs no
network. A screenshot of the top of the report is saved to ``docs/report_screenshot.png``
(the README shows it).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from features.phones import HASH_KEY_ENV
from training.model_report import ModelReport

PROJECT = Path(__file__).resolve().parent.parent
SCREENSHOT = PROJECT / "docs" / "report_screenshot.png"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


def _binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError(f"none of {names} is installed: apt-get install -y chromium chromium-driver (see .ci/run)")


@pytest.fixture(scope="module")
def report_file(trained, tmp_path_factory) -> Path:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(HASH_KEY_ENV, "browser-test-key-0123456789")
        out = tmp_path_factory.mktemp("browser") / "model_report.html"
        return ModelReport(shap_rows=500).write(trained.run_id, out, log_to_run=False)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    options = webdriver.ChromeOptions()
    options.binary_location = _binary("chromium", "chromium-browser")
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.add_argument("--window-size=1360,1800")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(_binary("chromedriver")))
    driver.set_page_load_timeout(120)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def loaded(browser, report_file):
    browser.get(report_file.resolve().as_uri())
    browser.execute_script("window.scrollTo(0, document.body.scrollHeight); window.scrollTo(0, 0);")
    return browser


def test_report_opens_without_console_errors(loaded):
    assert loaded.title.startswith("Model report: persuade-synthetic-voted")
    errors = [entry for entry in loaded.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]
    assert errors == []


def test_every_chart_image_loaded(loaded):
    images = loaded.execute_script(
        "return Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth,"
        " height: i.naturalHeight, src: i.currentSrc.slice(0, 22)}));")
    assert len(images) == 2 + 4 * 4 + 1
    broken = [i for i in images if not (i["complete"] and i["width"] > 0 and i["height"] > 0)]
    assert broken == []
    assert {i["src"] for i in images} == {"data:image/png;base64,"}


def test_sections_are_reachable_from_the_navigation(loaded):
    anchors = loaded.execute_script(
        "return Array.from(document.querySelectorAll('nav a')).map(a => a.getAttribute('href'));")
    assert anchors == ["#card", "#shap", "#data-checks", "#evaluation", "#calibration", "#fairness", "#consent"]
    for anchor in anchors:
        assert loaded.execute_script(f"return document.querySelector('{anchor}') !== null;")
    rows = loaded.execute_script("return document.querySelectorAll('#fairness tbody tr').length;")
    assert rows == 5 * 2  # 4 arms and "any arm", 2 groups of sex


def test_screenshot_is_saved(loaded):
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    assert loaded.save_screenshot(str(SCREENSHOT))
    data = SCREENSHOT.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 50_000
