"""The admin in a real browser: headless Chromium (Selenium) against the live server.

An operator logs in, opens the dashboard, filters the failed tasks, opens one, re-enqueues
it, and sees the re-run processed by a running ``atpd`` subprocess. Screenshots go to
``var/screenshots/`` (the README's images in ``docs/`` come from test_console_browser.py).
"""

import os
import shutil
from pathlib import Path

import pytest
from django.contrib.auth.models import User

from atp import tracker
from atp.models import Status, TaskInstance
from tests.support.atpd_process import REPO, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOTS = REPO / "var" / "screenshots"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--window-size=1400,1000",
)


def click_through(browser, element, timeout=30):
    """Click a link or button that loads a new page, and wait until the old page is gone.

    Reading the page right after ``click()`` can still see the previous page.
    """
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    old_page = browser.find_element(By.TAG_NAME, "html")
    element.click()
    WebDriverWait(browser, timeout).until(expected_conditions.staleness_of(old_page))


@pytest.fixture
def browser():
    """A headless Chromium driven through chromedriver (both from Debian's packages)."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("needs Debian's chromium and chromium-driver (scripts/ensure-services)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(5)
    yield driver
    driver.quit()


def screenshot(driver, name: str, readme_copy: str | None = None) -> Path:
    """Save a full-page PNG under var/screenshots (and to docs/ when asked to)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, min(max(height + 200, 600), 3000))  # + browser chrome
    path = SCREENSHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    driver.set_window_size(1400, 1000)
    if readme_copy and os.environ.get("ATP_README_SCREENSHOTS") == "1":
        shutil.copyfile(path, REPO / "docs" / readme_copy)
    return path


def test_operator_reenqueues_a_failed_task_and_atpd_runs_it(
    live_server, browser, daemons, tmp_path
):
    from selenium.webdriver.common.by import By

    User.objects.create_superuser("operator", "op@example.org", "s3cret-pass")
    tracker.register_task_type(
        "reports.render", "tests.support.browser_handlers.flaky", maxrestart=0
    )
    tracker.register_task_type("reports.echo", "tests.support.handlers.echo")
    outage = tmp_path / "outage"
    outage.touch()
    for n in range(1, 4):
        tracker.enqueue_task(
            "reports.render", f"q{n}-2024", {"report": f"Q{n} 2024", "outage_flag": str(outage)}
        )
    for n in range(12):
        tracker.enqueue_task("reports.echo", f"echo-{n}", {"n": n})
    daemons.start("-n", "2")
    wait_until(
        lambda: TaskInstance.objects.terminal().count() == 15, what="the first 15 tasks to end"
    )
    assert TaskInstance.objects.filter(status=Status.FAILED).count() == 3

    # Log in.
    browser.get(live_server.url + "/admin/login/")
    browser.find_element(By.NAME, "username").send_keys("operator")
    browser.find_element(By.NAME, "password").send_keys("s3cret-pass")
    click_through(browser, browser.find_element(By.CSS_SELECTOR, "input[type=submit]"))
    assert "Site administration" in browser.page_source

    # The dashboard, from ATP's app index.
    browser.get(live_server.url + "/admin/atp/")
    click_through(browser, browser.find_element(By.CSS_SELECTOR, "#atp-dashboard-link a"))
    failed_count = browser.find_element(By.CSS_SELECTOR, '[data-status="FAILED"]').text
    assert failed_count == "3"
    assert browser.find_element(By.CSS_SELECTOR, "svg.atp-chart rect")
    assert "15 task(s) ended, 3 failed" in browser.find_element(By.ID, "atp-last-hour").text
    assert browser.find_elements(By.CSS_SELECTOR, "#atp-workers tbody td")  # a live daemon
    screenshot(browser, "1-dashboard")

    # The task list, filtered to the failed tasks with the status filter.
    browser.get(live_server.url + "/admin/atp/taskinstance/")
    click_through(
        browser,
        browser.find_element(By.CSS_SELECTOR, "#changelist-filter").find_element(
            By.LINK_TEXT, "FAILED"
        ),
    )
    rows = browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")
    assert len(rows) == 3
    assert all("FAILED" in row.text for row in rows)
    screenshot(browser, "2-failed-tasks")

    # One failed task: its traceback is on its page.
    click_through(browser, browser.find_element(By.LINK_TEXT, "q1-2024"))
    traceback = browser.find_element(By.CSS_SELECTOR, "pre.atp-traceback").text
    assert "upstream service unavailable while rendering Q1 2024" in traceback
    assert "Traceback" in traceback
    screenshot(browser, "3-task-detail")

    # The outage is over; the operator re-enqueues the task from its page.
    outage.unlink()
    click_through(browser, browser.find_element(By.CSS_SELECTOR, "button.atp-action-reenqueue"))
    message = browser.find_element(By.CSS_SELECTOR, "ul.messagelist").text
    assert "Re-enqueued 1 task(s)" in message and "q1-2024-retry-1" in message
    screenshot(browser, "4-reenqueued")

    rerun = TaskInstance.objects.get(identifier="q1-2024-retry-1")
    wait_until(
        lambda: TaskInstance.objects.get(pk=rerun.pk).status == Status.FINISHED,
        what="atpd to run the re-enqueued task",
    )
    browser.get(f"{live_server.url}/admin/atp/taskinstance/{rerun.pk}/change/")
    assert browser.find_element(By.CSS_SELECTOR, ".atp-status-finished")
    assert (
        "report Q1 2024: 42 rows" in browser.find_element(By.CSS_SELECTOR, "pre.atp-response").text
    )
    assert TaskInstance.objects.get(identifier="q1-2024").status == Status.FAILED
    screenshot(browser, "5-rerun-finished")
