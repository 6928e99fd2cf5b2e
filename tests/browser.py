"""Real-browser tests: a headless Chromium driven by Selenium against pytest-django's live server.

`make browser` (a dependency of `make test`) installs Debian's chromium and chromium-driver when they are missing; the
driver is always the system one, named explicitly, so Selenium Manager never looks for (or downloads) anything. Every
browser gets a fresh profile and the flags that keep Chromium from phoning home (on a closed network its background
connections are refused, which slows or breaks start-up).

Fixtures (registered in tests/conftest.py): `browser` (one `Browser` on the live server, logged in as nobody) and
`browser_factory` (more of them, e.g. a steward and a consumer side by side). Waits are explicit (`WebDriverWait`), never
sleeps. When a test fails, each of its browsers leaves a screenshot and the page's HTML under the run's temporary directory
(`<basetemp>/browser-failures/`, or `GRIDTWIN_BROWSER_ARTIFACTS`), named in the failure report.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.urls import reverse
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-proxy-server",
                  "--window-size=1280,1024"]
WAIT_S = 10  # the longest a page may take to show what a test waits for (a local server: normally milliseconds)
# One round trip for a whole change list: the cells of each row by their `field-<name>` class.
RESULT_LIST_SCRIPT = """
return Array.from(document.querySelectorAll('#result_list tbody tr')).map(row => Object.fromEntries(
  Array.from(row.querySelectorAll('td, th')).flatMap(cell => {
    const name = Array.from(cell.classList).find(c => c.startsWith('field-'));
    const icon = cell.querySelector('img[alt]');
    return name ? [[name.slice(6), cell.innerText.trim() || (icon ? icon.alt : '')]] : [];
  })));
"""
BROWSERS = pytest.StashKey[list]()
ARTIFACTS = pytest.StashKey[Path]()


def chromium(profile_dir: Path):
    """A headless Chromium with a fresh profile in `profile_dir`, driven by the system chromedriver (nothing downloaded)."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            pytest.fail(f"{path} is missing: `make browser` installs Debian's chromium and chromium-driver", pytrace=False)
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager, should anything ever call it: no downloads, no statistics
    os.environ["SE_AVOID_STATS"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT_S * 3)
    return driver


class Browser:
    """One browser on the live server, with the steps tests take: open a page, log in, wait for what a person would see."""

    def __init__(self, driver, base_url: str, name: str = "browser"):
        self.driver, self.base_url, self.name = driver, base_url.rstrip("/"), name

    # pages and waits
    def open(self, path: str) -> None:
        """Load `path` of the live server (returns once the page has loaded)."""
        self.driver.get(self.base_url + path)

    @property
    def path(self) -> str:
        """The current URL without the live server's origin."""
        return self.driver.current_url.removeprefix(self.base_url)

    def wait(self, condition, what: str, timeout: float = WAIT_S):
        """Wait until `condition(driver)` is truthy; on a timeout, fail with what was awaited and the page's text."""
        try:
            return WebDriverWait(self.driver, timeout).until(condition)
        except TimeoutException:
            page = self.text()[:3000]
            raise AssertionError(f"{self.name}: waited {timeout} s for {what} at {self.path}; the page says:\n{page}") from None

    def element(self, css: str, timeout: float = WAIT_S):
        """The first visible element matching `css`, once there is one."""
        return self.wait(ec.visibility_of_element_located(("css selector", css)), f"an element {css!r}", timeout)

    def elements(self, css: str) -> list:
        """Every element matching `css` on the current page (no wait: for pages already shown)."""
        return self.driver.find_elements("css selector", css)

    def wait_for_text(self, text: str, css: str = "body", timeout: float = WAIT_S):
        """The element matching `css`, once its visible text contains `text`."""
        self.wait(ec.text_to_be_present_in_element(("css selector", css), text), f"{text!r} in {css!r}", timeout)
        return self.driver.find_element("css selector", css)

    def text(self, css: str = "body") -> str:
        """The visible text of the element matching `css` (the whole page by default)."""
        found = self.elements(css)
        return found[0].text if found else ""

    def submit(self, button, *, then: str, css: str = "body") -> None:
        """Click a submit button and wait until the next page has replaced this one and shows `then`."""
        page = self.driver.find_element("tag name", "html")
        button.click()
        self.wait(ec.staleness_of(page), "the next page")
        self.wait_for_text(then, css)

    def link(self, text: str, within: str = "body"):
        """The visible link whose text is `text` inside the element matching `within`, once there is one."""
        def found(driver):
            links = [a for a in driver.find_elements("css selector", f"{within} a") if a.text.strip() == text and a.is_displayed()]
            return links[0] if links else False

        return self.wait(found, f"a link {text!r} in {within!r}")

    def follow(self, link) -> None:
        """Click a link and wait until the page it leads to has replaced this one."""
        page = self.driver.find_element("tag name", "html")
        link.click()
        self.wait(ec.staleness_of(page), "the next page")

    def fill(self, fields: dict[str, str]) -> None:
        """Type values into the inputs named by the keys (their `name` attribute)."""
        for name, value in fields.items():
            box = self.element(f"[name={name!r}]")
            box.clear()
            box.send_keys(value)

    # logging in
    def admin_login(self, username: str, password: str) -> None:
        """Log in on the admin's login page as a person does; waits for the admin's index."""
        self.open(reverse("admin:login"))
        self.fill({"username": username, "password": password})
        self.submit(self.element("#login-form [type=submit]"), then="Site administration")

    def api_login(self, username: str, password: str) -> None:
        """Log in for the browsable API on DRF's login page (`/api-auth/login/`), landing on the agreements list."""
        login = reverse("rest_framework:login")
        self.open(f"{login}?next=/api/v1/sharing/agreements")
        self.fill({"username": username, "password": password})
        self.submit(self.element("form [type=submit]"), then=username, css=".navbar")

    # the browsable API and the admin
    def api_response(self) -> tuple[int, dict | list]:
        """The status and JSON body the browsable API shows on the current page (read from the page, not the network)."""
        shown = self.element(".response-info pre").text
        head, _, body = shown.partition("\n\n")
        status = re.match(r"HTTP (\d{3})", head)
        assert status, f"not a browsable API response: {shown[:300]}"
        return int(status.group(1)), json.loads(body)

    def admin_action(self, action: str, *pks: int, then: str) -> None:
        """On an admin change list: tick the rows `pks`, choose `action`, press Go, and wait for the message `then`."""
        for pk in pks:
            box = self.element(f"input.action-select[value='{pk}']")
            if not box.is_selected():
                box.click()
        Select(self.element("select[name=action]")).select_by_value(action)
        self.submit(self.element("button[name=index]"), then=then, css=".messagelist")

    def result_list(self) -> list[dict[str, str]]:
        """The rows of an admin change list as shown: column (the `field-<name>` of its cells) → visible text, or the
        icon's alt text ("True", "False") for a boolean column."""
        return self.driver.execute_script(RESULT_LIST_SCRIPT)

    def save_artifacts(self, directory: Path, stem: str) -> list[Path]:
        """A screenshot and the HTML of the current page, for a failed test's report."""
        directory.mkdir(parents=True, exist_ok=True)
        png, html = directory / f"{stem}-{self.name}.png", directory / f"{stem}-{self.name}.html"
        self.driver.save_screenshot(str(png))
        html.write_text(self.driver.page_source, encoding="utf-8")
        return [png, html]


@pytest.fixture
def browser_factory(live_server, tmp_path_factory, request) -> Iterator[Callable[[str], Browser]]:
    """Open browsers on the live server (each with a fresh profile); all of them are closed after the test."""
    opened: list[Browser] = []
    request.node.stash[BROWSERS] = opened
    artifacts = os.environ.get("GRIDTWIN_BROWSER_ARTIFACTS")
    request.node.stash[ARTIFACTS] = Path(artifacts) if artifacts else tmp_path_factory.getbasetemp() / "browser-failures"

    profiles: list[Path] = []

    def open_browser(name: str = "browser") -> Browser:
        profiles.append(tmp_path_factory.mktemp(f"chromium-{name}"))
        browser = Browser(chromium(profiles[-1]), live_server.url, name)
        opened.append(browser)
        return browser

    yield open_browser
    for browser in opened:
        browser.driver.quit()
    for profile in profiles:
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def browser(browser_factory) -> Browser:
    """One headless Chromium on the live server."""
    return browser_factory("browser")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """When a test that drives browsers fails, keep each browser's screenshot and HTML and name them in the report."""
    report = yield
    opened = item.stash.get(BROWSERS, [])
    if report.failed and report.when == "call" and opened:
        stem = re.sub(r"[^\w.-]+", "_", item.name)[:100]
        saved = []
        for browser in opened:
            try:
                saved += browser.save_artifacts(item.stash[ARTIFACTS], stem)
            except Exception as exc:  # a dead browser must not hide the test's own failure
                saved.append(f"{browser.name}: no screenshot ({exc.__class__.__name__})")
        report.sections.append(("browser screenshots", "\n".join(str(path) for path in saved)))
    return report
