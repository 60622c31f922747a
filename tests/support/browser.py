"""A real headless Chromium (Debian's, with its chromedriver) driven by Selenium, for the listening room's tests.

No name but 127.0.0.1 resolves, and every request the page makes is read back from Chrome's performance log (the
DevTools Network events), so a test can assert that nothing left the machine and see the headers of each request.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from selenium import webdriver
from selenium.webdriver.chrome.service import Service as DriverService
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

from support.components import require
from support.paths import REPO

ARTIFACTS = REPO / "test-artifacts"


def headless_chromium(profile: Path) -> list[str]:
    """The command line start of a headless Chromium as root on a machine with no internet: a fresh profile, and
    none of the background connections that a closed network refuses."""
    return [
        require("chromium"),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
    ]


LOCAL_SCHEMES = {"data", "blob", "about", "chrome", "chrome-untrusted"}  # the browser's own, no network


class Browser:
    """One Chromium window on the service at `origin`; `requests` holds every request the page has made so far."""

    def __init__(self, origin: str, profile: Path, width: int = 1280, height: int = 1000) -> None:
        chromium, *flags = headless_chromium(profile)
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for flag in [
            *flags,
            "--autoplay-policy=no-user-gesture-required",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            f"--window-size={width},{height}",
        ]:
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
        self.driver = webdriver.Chrome(service=DriverService(require("chromedriver")), options=options)
        self.origin = origin
        self.requests: list[dict[str, Any]] = []
        self._by_id: dict[str, dict[str, Any]] = {}

    def quit(self) -> None:
        self.driver.quit()

    def open(self, path: str) -> None:
        """Load the page at `path` of the service (a real navigation)."""
        self.driver.get(self.origin + path)

    def js(self, script: str, *args: Any) -> Any:
        """The value of `script` (a function body: use `return`) run in the page."""
        return self.driver.execute_script(script, *args)

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def text(self, css: str) -> str:
        """The visible text of the elements matching `css`, one line each ('' if none)."""
        return "\n".join(element.text for element in self.find_all(css))

    def wait(self, condition: Callable[[], Any], timeout: float = 10.0, what: str = "the condition") -> Any:
        """Poll `condition()` every 20 ms until it is true; its value, or an AssertionError after `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = condition()
            except Exception:  # noqa: BLE001 - an element not there yet, or replaced while read
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} did not happen within {timeout} s\nconsole: {self.console()}")
            time.sleep(0.02)

    def screenshot(self, name: str) -> Path:
        """A PNG of the window in test-artifacts/."""
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / name
        self.driver.save_screenshot(str(path))
        return path

    def console(self) -> list[str]:
        """The page's console messages since the last call."""
        return [entry["message"] for entry in self.driver.get_log("browser")]

    def collect(self) -> list[dict[str, Any]]:
        """Read the performance log so far into `requests` ({"url", "method", "headers"}: the headers as finally sent,
        names in lower case)."""
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            params = message.get("params", {})
            if message["method"] == "Network.requestWillBeSent":
                request = params["request"]
                seen = {"url": request["url"], "method": request["method"], "headers": lower(request["headers"])}
                self.requests.append(seen)
                seen["headers"].update(self._by_id.pop(params["requestId"], {}).get("headers", {}))
                self._by_id[params["requestId"]] = seen
            elif message["method"] == "Network.requestWillBeSentExtraInfo":  # may come first
                self._by_id.setdefault(params["requestId"], {"headers": {}})["headers"].update(lower(params["headers"]))
        return self.requests

    def outside_requests(self) -> list[str]:
        """The addresses of the requests that went anywhere but the service (none, if the page behaves)."""
        service = urlsplit(self.origin)
        outside = []
        for request in self.collect():
            url = urlsplit(request["url"])
            if url.scheme in LOCAL_SCHEMES:
                continue
            if url.scheme not in ("http", "https", "ws", "wss") or url.netloc != service.netloc:
                outside.append(request["url"])
        return outside


def lower(headers: dict[str, str]) -> dict[str, str]:
    """Header fields with their names in lower case."""
    return {name.lower(): value for name, value in headers.items()}
