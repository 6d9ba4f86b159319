"""The web dashboard in a real browser (docs/DASHBOARD.md): headless Debian
Chromium, driven by Selenium through chromedriver, loads the dashboard of a
master started here, takes an admin token, shows a queue the test made with
its depth and a connected worker, and its Requeue button moves a dead task back to its queue, as
the CLI then confirms. A screenshot is saved in the test's directory (its
path is printed). Skips, saying what is missing, without chromium,
chromedriver or python3-selenium (deploy/install-deps.sh installs them)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import Master, wait_for

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
try:
    from selenium import webdriver
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # pragma: no cover - the skip below says so
    webdriver = None

WAIT_S = 30.0

pytestmark = pytest.mark.skipif(
    webdriver is None or CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Debian's chromium, chromium-driver and python3-selenium "
           "(deploy/install-deps.sh installs them)")


@pytest.fixture
def dashboard_master(tmp_path: Path):
    port_file = tmp_path / "http.port"
    m = Master(tmp_path, extra=["--http-listen", "127.0.0.1:0", "--http-port-file",
                                str(port_file)])
    m.start()
    try:
        m.http = wait_for(lambda: port_file.exists() and port_file.read_text().strip(),
                          20, "the master's --http-port-file")
        yield m
    finally:
        m.stop()


@pytest.fixture
def browser(tmp_path: Path):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1280,1100",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER,
                                              log_path=str(tmp_path / "chromedriver.log")),
                              options=options)
    try:
        yield driver
    finally:
        driver.quit()


def cli_ok(master: Master, *args: str) -> str:
    run = master.cli(*args)
    assert run.returncode == 0, f"taskq {' '.join(args)}: {run.stderr}"
    return run.stdout


def make_dead_task(master: Master, queue: str) -> str:
    """Leases a task of `queue` and fails it for good; returns its id."""
    task_id, lease, _payload = cli_ok(master, "get", queue, "--lease").strip().split("\t")
    cli_ok(master, "fail", task_id, "--lease", lease, "--permanent", "--error", "boom")
    return task_id


def text(driver, css: str) -> str:
    found = driver.find_elements(By.CSS_SELECTOR, css)
    return found[0].text if found else ""


def wait_until(driver, what: str, condition, master: Master):
    """WebDriverWait with a failure that shows the page's status line and
    the master's log."""
    try:
        return WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(lambda d: condition(d))
    except TimeoutException:
        pytest.fail(f"timed out after {WAIT_S:.0f} s waiting for {what}; page status: "
                    f"{text(driver, '#status')!r}\nmaster log:\n{master.log()[-3000:]}")


def test_dashboard_shows_a_queue_and_requeues_a_dead_task(dashboard_master, browser, procs,
                                                          tmp_path):
    m = dashboard_master
    # A worker on another queue, so that it leaves jobs' tasks alone.
    procs.cxx_worker(m, ["thumbnails"], name="worker", extra=["--id", "thumbnailer"])
    cli_ok(m, "queue", "create", "jobs")
    cli_ok(m, "put", "jobs", "one", "two", "three")
    dead_id = make_dead_task(m, "jobs")
    admin = cli_ok(m, "credential", "create", "ops", "--role", "admin").strip()

    browser.get(f"http://{m.http}/")
    browser.find_element(By.ID, "token").send_keys(admin)
    browser.find_element(By.ID, "token-save").click()

    row = '#queues tr[data-queue="jobs"]'
    wait_until(browser, "the jobs row with 2 ready and 1 dead",
               lambda d: text(d, f"{row} td.ready") == "2" and text(d, f"{row} td.dead") == "1",
               m)
    wait_until(browser, "the worker in the workers panel, on its queue",
               lambda d: text(d, '#workers tr[data-worker="thumbnailer"] td.queues') == "thumbnails",
               m)
    requeue = f'button[data-requeue="{dead_id}"]'
    wait_until(browser, f"the Requeue button of dead task {dead_id}",
               lambda d: d.find_elements(By.CSS_SELECTOR, requeue), m)
    # The token went to sessionStorage, not into the page's URL.
    assert admin not in browser.current_url
    shot = tmp_path / "dashboard.png"
    assert browser.save_screenshot(str(shot))
    print(f"screenshot: {shot}")

    browser.find_element(By.CSS_SELECTOR, requeue).click()
    wait_until(browser, "the status line to say the task was requeued",
               lambda d: "requeued 1 from jobs" in text(d, "#status"), m)
    wait_until(browser, "the jobs row with 3 ready and 0 dead",
               lambda d: text(d, f"{row} td.ready") == "3" and text(d, f"{row} td.dead") == "0",
               m)

    # The CLI agrees: the task is back on jobs, the dead-letter set is empty.
    stats = json.loads(cli_ok(m, "queue", "stats", "jobs", "--json"))
    assert stats["dead"] == 0 and stats["ready"] == 3, stats
    assert cli_ok(m, "dlq", "list", "jobs", "--json").strip() == ""
    status = json.loads(cli_ok(m, "status", dead_id, "--json"))
    assert status["state"] == "TASK_STATE_READY", status
