"""The web console in a real browser: Debian's Chromium (/usr/bin/chromium) driven by
Selenium through Debian's ChromeDriver (/usr/bin/chromedriver), both installed by
.ci/run, at a phone's size, against the stack that tests/e2e starts. (Selenium speaks
plain HTTP to ChromeDriver, which works in the eventlet-patched test process.) Every
request a page makes is recorded from Chromium's own network log, as are pages' errors
and refusals by the content security policy. Screenshots go to var/screenshots/."""
import base64
import json
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.ui import WebDriverWait

from tests.support import PATIENCE

ROOT = Path(__file__).resolve().parents[3]
SCREENSHOTS = ROOT / "var" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# Headless, and none of Chromium's own traffic to Google's hosts (there is no network).
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                  "--lang=zh-CN", "--window-size=390,844"]
PHONE = {"width": 390, "height": 844, "pixelRatio": 1}
# The station's own place: the volunteer's browser is there when it checks in.
HERE = {"latitude": 19.79, "longitude": 110.49, "accuracy": 10}
WAIT_SECONDS = 10 * PATIENCE


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Tells a test's fixtures, at teardown, whether the test itself passed."""
    report = yield
    if report.when == "call":
        item.passed = report.passed
    return report


@pytest.fixture(scope="package")
def browser_ready():
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists():
            pytest.fail(f"{path} is missing: apt-get install chromium chromium-driver (.ci/run does)")


class Person:
    """One person's browser (a Chromium of its own: its own storage, so its own sign-in
    and language) at a phone's size, with its location granted and every request and
    page error recorded."""

    def __init__(self, base, name, downloads):
        self.base = base
        self.name = name
        self.home = urlsplit(base).netloc
        self.downloads = downloads
        self.requests, self.problems = [], []
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_experimental_option("mobileEmulation", {"deviceMetrics": PHONE})
        options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        self.driver.execute_cdp_cmd("Browser.grantPermissions", {"permissions": ["geolocation"]})
        self.driver.execute_cdp_cmd("Emulation.setGeolocationOverride", HERE)
        self.driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow",
                                                                     "downloadPath": str(downloads)})

    # ---- what the browser did

    def record(self):
        """Reads the browser's logs so far: every URL requested, every page error."""
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                self.requests.append(message["params"]["request"]["url"])
        for entry in self.driver.get_log("browser"):
            text = entry["message"]
            if "Content Security Policy" in text or "Uncaught" in text or "Refused to" in text:
                self.problems.append(text)

    def outside(self):
        """Requests to anything but the gateway (data: and blob: URLs stay in the page)."""
        self.record()
        return [url for url in self.requests
                if urlsplit(url).scheme not in ("data", "blob") and urlsplit(url).netloc != self.home]

    # ---- finding and doing

    def open(self, view=""):
        self.driver.get(f"{self.base}/console#/{view}")

    @staticmethod
    def by(test_id, **attributes):
        """A CSS selector: the element with this data-testid (and these data-* values)."""
        return f'[data-testid="{test_id}"]' + "".join(
            f'[data-{key.replace("_", "-")}="{value}"]' for key, value in attributes.items())

    def until(self, condition, message):
        def attempt(_driver):
            try:
                return condition()
            except (StaleElementReferenceException, WebDriverException):
                return None

        return WebDriverWait(self.driver, WAIT_SECONDS, poll_frequency=0.1).until(attempt, message)

    def visible(self, css):
        """Waits for an element to be shown, and returns it."""
        def shown():
            found = [e for e in self.driver.find_elements(By.CSS_SELECTOR, css) if e.is_displayed()]
            return found[0] if found else None

        return self.until(shown, f"{self.name}: {css} is not shown")

    def gone(self, css):
        self.until(lambda: not self.driver.find_elements(By.CSS_SELECTOR, css) or None, f"{self.name}: {css} stays")

    def elements(self, css):
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def count(self, css):
        return len(self.elements(css))

    def click(self, css):
        self.until(lambda: (lambda e: e.is_enabled() and (e.click() or True))(self.visible(css)),
                   f"{self.name}: cannot click {css}")

    def fill(self, css, text):
        element = self.visible(css)
        if element.get_attribute("type") in ("time", "date"):
            self.driver.execute_script("arguments[0].value = arguments[1]", element, text)
        else:
            element.clear()
            element.send_keys(text)

    def choose(self, css, value):
        self.until(lambda: Select(self.visible(css)).select_by_value(value) or True,
                   f"{self.name}: no {value} in {css}")

    def check(self, css):
        element = self.visible(css)
        if not element.is_selected():
            element.click()

    def read(self, css, what):
        """``what(element)`` of the shown element, read again if the page re-renders it meanwhile."""
        return self.until(lambda: (what(self.visible(css)),), f"{self.name}: cannot read {css}")[0]

    def text(self, css):
        return self.read(css, lambda element: element.text)

    def value(self, css):
        return self.attribute(css, "value")

    def attribute(self, css, name):
        return self.read(css, lambda element: element.get_attribute(name))

    def wait_text(self, css, expected):
        """Waits until the element's text contains ``expected``."""
        return self.until(lambda: expected in self.visible(css).text or None,
                          f"{self.name}: {css} does not say {expected!r}")

    def evaluate(self, script, *arguments):
        return self.driver.execute_script(script, *arguments)

    def url(self):
        return self.driver.current_url

    def download(self, suffix):
        """Waits for a finished download with this suffix, and returns its path."""
        return self.until(lambda: next(iter(sorted(self.downloads.glob(f"*{suffix}"))), None),
                          f"{self.name}: no {suffix} downloaded")

    def shot(self, step):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.driver.execute_script("window.scrollTo(0, 0)")  # the sticky header at the top of the picture
        time.sleep(0.2)  # the last render settles
        image = self.driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        (SCREENSHOTS / f"{step}-{self.name}.png").write_bytes(base64.b64decode(image["data"]))

    def close(self):
        self.driver.quit()
