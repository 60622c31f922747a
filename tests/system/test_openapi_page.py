"""The /openapi page, rendered by a real headless Chromium (Selenium, Debian's chromium-driver) with every outside
host unreachable: the reference renders from the bundle the service ships, asks nothing of any other host, and shows
none of the buttons that need Scalar's cloud."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Iterator

import pytest
from selenium import webdriver
from selenium.webdriver.support.ui import WebDriverWait

from support.browser import headless_chromium
from support.components import require
from support.paths import REPO

ARTIFACTS = REPO / "test-artifacts"
OPERATIONS = [
    "List an event's records",
    "Upload a record, or replace it",
    "Download a record",
    "Delete a record",
    "Check that the service is up",
    "Live events of records and uploads",
]
# What Scalar 1.76.0 shows on a page served from localhost with its default configuration, each needing Scalar's
# cloud: the "Ask AI" agent, "Generate SDKs & MCP", the developer toolbar (Configure, Share, Deploy, Generate SDK),
# the "Open API Client" button.
CLOUD_TEXTS = ["Ask AI", "Generate SDK", "MCP", "Developer Tools", "Configure", "Share", "Deploy", "Open API Client"]


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    """A headless Chromium driven by Selenium, for which no host name but 127.0.0.1 resolves."""
    chromium, *flags = headless_chromium(tmp_path / "profile")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in [*flags, "--window-size=1280,1600", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=webdriver.ChromeService(require("chromedriver")), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def page_text(driver: webdriver.Chrome) -> str:
    """The text a reader sees on the page, with the buttons' accessible names and titles (icons have no text)."""
    return driver.execute_script(
        "return document.body.innerText + ' ' + [...document.querySelectorAll('[aria-label], [title]')]"
        ".map(e => (e.getAttribute('aria-label') || '') + ' ' + (e.getAttribute('title') || '')).join(' ')"
    )


def rendered(driver: webdriver.Chrome) -> bool:
    """Whether the reference shows every operation."""
    text = driver.find_element("tag name", "body").text
    return all(operation in text for operation in OPERATIONS)


def requested_urls(driver: webdriver.Chrome) -> set[str]:
    """Every network URL (not Chromium's own chrome:// and data: ones) the browser asked for since the last call,
    from Chromium's performance log."""
    messages = (json.loads(entry["message"])["message"] for entry in driver.get_log("performance"))
    urls = {m["params"]["request"]["url"] for m in messages if m["method"] == "Network.requestWillBeSent"}
    return {url for url in urls if url.split(":", 1)[0] in ("http", "https", "ws", "wss")}


def test_scalar_page_renders_offline_without_the_cloud_buttons(service, browser):
    proc = service()
    browser.get(f"{proc.url}/openapi")
    WebDriverWait(browser, 60).until(rendered)
    # Scalar shows the agent and the toolbar some moments after the operations: let it settle, then look.
    time.sleep(2)
    text = page_text(browser)
    assert [cloud for cloud in CLOUD_TEXTS if cloud in text] == []
    # Everything came from this service: the page, its bundle, the document; nothing else was even asked for.
    urls = requested_urls(browser)
    assert {f"{proc.url}/openapi", f"{proc.url}/openapi/openapi.json"} <= urls
    assert any(url.startswith(f"{proc.url}/openapi/standalone.js?v=") for url in urls)  # the bundle, by its version
    assert {url for url in urls if not url.startswith(proc.url + "/")} == set()
    assert re.search(r"GET /openapi/standalone\.js\?v=[0-9a-f]+ 200", proc.log)

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "openapi.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000

    # The API client that "Test Request" opens (it sends requests to this service) has none of them either.
    test_request = next(b for b in browser.find_elements("tag name", "button") if "Test Request" in b.text)
    browser.execute_script("arguments[0].click()", test_request)
    WebDriverWait(browser, 20).until(lambda d: "Send Request" in d.find_element("tag name", "body").text)
    assert [cloud for cloud in CLOUD_TEXTS if cloud in page_text(browser)] == []
    assert {url for url in requested_urls(browser) if not url.startswith(proc.url + "/")} == set()

    # The control: the same bundle with Scalar's default configuration, on the same page, shows those buttons, so
    # their absence above is the page's configuration at work, not a reference that failed to render them.
    browser.execute_script(
        "document.getElementById('app').remove();"
        "const control = document.createElement('div'); control.id = 'control'; document.body.append(control);"
        "Scalar.createApiReference('#control', {url: '/openapi/openapi.json', withDefaultFonts: false, telemetry: false})"
    )
    WebDriverWait(browser, 60).until(lambda d: all(t in page_text(d) for t in ["Ask AI", "Generate SDK", "Deploy"]))
