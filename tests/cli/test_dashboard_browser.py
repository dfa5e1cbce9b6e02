"""The dashboard and the report in a real browser: headless Chromium driven by Selenium.

Starts ``automl dashboard`` on ``conftest.build_finished_study``'s study, opens its trial list,
checks that every trial is listed and that a trial's artifact picture has loaded, then opens the
HTML report from ``automl report``. Screenshots of both go to ``tests/screenshots/`` (ignored by
git). Skipped with a message where Chromium, chromedriver or Selenium is missing (Debian:
``apt-get install chromium chromium-driver``; ``pip install -e ".[test]"``).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import STUDY, build_finished_study

SCREENSHOTS = Path(__file__).resolve().parents[1] / "screenshots"
_BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _chrome() -> tuple[str, str]:
    browser = next((path for name in _BROWSERS if (path := shutil.which(name))), None)
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip(
            "headless browser test needs Chromium and chromedriver on PATH "
            "(Debian: apt-get install -y chromium chromium-driver)"
        )
    return browser, driver


@pytest.fixture(scope="module")
def driver() -> Iterator[object]:
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium")
    from selenium.webdriver.chrome.service import Service

    browser, chromedriver = _chrome()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
    ):
        options.add_argument(argument)
    # An explicit driver path: Selenium Manager would otherwise try to download one.
    chrome = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    chrome.set_page_load_timeout(60)
    try:
        yield chrome
    finally:
        chrome.quit()


@pytest.fixture(scope="module")
def studies(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_finished_study(shared_data, tmp_path_factory.mktemp("finished"))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def dashboard(studies: Path) -> Iterator[tuple[str, int]]:
    """``automl dashboard`` in a subprocess; yields its base URL and the study's id."""
    port = _free_port()
    command = [sys.executable, "-m", "automl.cli", "dashboard", "--study", STUDY]
    command += ["--studies-dir", str(studies), "--port", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        summaries = None
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"{base}/api/studies", timeout=2) as response:
                    summaries = json.load(response)["study_summaries"]
                break
            except OSError:
                if server.poll() is not None:
                    break
                time.sleep(0.5)
        assert summaries, f"the dashboard did not answer: {server.stderr.read()[-2000:]}"
        yield base, summaries[0]["study_id"]
    finally:
        server.terminate()
        out, _ = server.communicate(timeout=10)
    assert f"{base}/dashboard" in out  # the command printed where to look


def _wait(driver, condition, timeout: float = 60.0, what: str = "") -> object:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.25).until(condition, message=what)


def _screenshot(driver, name: str) -> Path:
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / name
    assert driver.save_screenshot(str(path)), path
    print(f"screenshot: {path}")
    return path


def test_the_dashboard_lists_the_trials_and_shows_their_pictures(driver, dashboard) -> None:
    from selenium.webdriver.common.by import By

    base, study_id = dashboard
    driver.get(f"{base}/dashboard/studies/{study_id}/trials")
    _wait(
        driver,
        lambda d: all(f"Trial {n}" in d.find_element(By.TAG_NAME, "body").text for n in range(3)),
        what="the trial list never showed trials 0, 1 and 2",
    )
    # The first trial is selected: its artifacts are <img src="/artifacts/<study>/<trial>/<id>">.
    loaded = (
        "return Array.from(document.images).filter("
        "i => i.src.includes('/artifacts/') && i.complete && i.naturalWidth > 0).length"
    )
    count = _wait(driver, lambda d: d.execute_script(loaded) or None, what="no artifact loaded")
    assert count >= 1
    page = driver.find_element(By.TAG_NAME, "body").text
    assert "learning_curves.png" in page and "augmentation_preview.png" in page
    assert "Trial 0: complete" in page  # the trial's note is rendered
    driver.set_window_size(1400, 2400)  # note, values, attributes and artifacts in one picture
    try:
        driver.execute_script(
            "document.querySelector(\"img[src*='/artifacts/']\").scrollIntoView({block: 'end'})"
        )
        time.sleep(0.5)
        _screenshot(driver, "dashboard_trial.png")
    finally:
        driver.set_window_size(1400, 1000)

    driver.get(f"{base}/dashboard/studies/{study_id}/note")
    _wait(
        driver,
        lambda d: "best single trial" in d.find_element(By.TAG_NAME, "body").text,
        what="the study note about the ensemble never showed",
    )
    _screenshot(driver, "dashboard_study_note.png")

    driver.get(f"{base}/dashboard/studies/{study_id}")
    _wait(
        driver,
        lambda d: "History" in d.find_element(By.TAG_NAME, "body").text,
        what="the study page never showed its history plot",
    )
    time.sleep(1.0)  # let the plots draw
    _screenshot(driver, "dashboard_study.png")


def test_the_report_renders_every_picture(driver, studies: Path) -> None:
    from selenium.webdriver.common.by import By

    report = studies / STUDY / "report" / "report.html"
    driver.get(report.as_uri())
    sizes = driver.execute_script(
        "return Array.from(document.images).map(i => [i.alt, i.complete && i.naturalWidth])"
    )
    expected = 5 if "importances need completed trials" in report.read_text() else 6
    assert len(sizes) == expected and all(width for _, width in sizes), sizes
    headings = [h.text for h in driver.find_elements(By.TAG_NAME, "h2")]
    assert "Leaderboard" in headings and "ROC curves" in headings
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, min(int(height) + 100, 12000))  # the whole page in one picture
    try:
        _screenshot(driver, "report.png")
    finally:
        driver.set_window_size(1400, 1000)
