"""Safe by default (issue 30): with no flags the service listens on 127.0.0.1 only; listening beyond this machine
with no write token is said in one warning line at start and on the listening room's page (`/room/notices.json`,
which the page shows)."""

from __future__ import annotations

import json
import re
import socket
import subprocess

import pytest

from support.ports import free_port
from support.rawhttp import request
from support.service import COMMAND, Service
from support.waiting import wait_until

WARNING = "with no write token: anyone who can reach it may upload and delete recordings"


def listening_sockets(pid: int) -> list[str]:
    """The local addresses (address:port) the process listens on, as `ss` shows them."""
    shown = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    return [line.split()[3] for line in shown.splitlines() if f"pid={pid}," in line]


def answers(port: int) -> bool:
    try:
        return request(f"http://127.0.0.1:{port}", "GET", "/ping")[0] == 204
    except OSError:
        return False


def test_with_no_flags_it_listens_on_127_0_0_1_only(tmp_path) -> None:
    port = free_port()
    proc = subprocess.Popen(COMMAND + ["--port", str(port)], cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: answers(port) or proc.poll() is not None, timeout=20)  # started (signals handled)
        assert listening_sockets(proc.pid) == [f"127.0.0.1:{port}"]
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    finally:
        proc.terminate()
        log = proc.communicate(timeout=30)[1]
    assert f"serving on http://127.0.0.1:{port}" in log
    assert " WARNING " not in log
    assert (tmp_path / "data" / "records.sqlite3").exists()  # ./data, as before


def started(tmp_path, *args: str) -> Service:  # noqa: ANN001
    """A process on the given host flags (the fixture's --host 127.0.0.1 comes first, so these win)."""
    return Service(tmp_path / "data", *args)


def test_listening_on_every_address_without_a_token_warns_once_and_on_the_room(tmp_path) -> None:
    svc = started(tmp_path, "--host", "0.0.0.0")
    try:
        warnings = [line for line in svc.lines if " WARNING " in line]
        assert len(warnings) == 1 and WARNING in warnings[0] and "listening on 0.0.0.0" in warnings[0]
        status, headers, body = request(svc.url, "GET", "/room/notices.json")
        assert status == 200 and headers["Cache-Control"] == "no-store"
        [notice] = json.loads(body)["notices"]
        assert WARNING in notice and "--token-file" in notice
    finally:
        assert svc.stop() == 0


@pytest.mark.parametrize("flags", [["--host", "127.0.0.1"], ["--host", "localhost"], ["--host", "0.0.0.0", "token"]])
def test_no_warning_on_the_loopback_or_with_a_token(tmp_path, flags) -> None:  # noqa: ANN001
    if flags[-1] == "token":
        (tmp_path / "token").write_text("s3cret-token\n")
        flags = [*flags[:-1], "--token-file", str(tmp_path / "token")]
    svc = started(tmp_path, *flags)
    try:
        assert not [line for line in svc.lines if " WARNING " in line], svc.log
        assert json.loads(request(svc.url, "GET", "/room/notices.json")[2]) == {"notices": []}
    finally:
        assert svc.stop() == 0


def test_the_help_says_which_endpoint_variable_wins() -> None:
    shown = subprocess.run([*COMMAND, "--help"], capture_output=True, text=True, check=True).stdout
    text = re.sub(r"\s+", " ", shown)
    assert "empty: AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL, else AWS itself" in text
    assert "default 127.0.0.1" in text


@pytest.mark.parametrize("open_to_writes", [True, False])
def test_the_room_shows_the_warning_only_when_writes_are_open_to_the_network(tmp_path, open_to_writes) -> None:  # noqa: ANN001
    from support.browser import Browser

    svc = started(tmp_path, "--host", "0.0.0.0" if open_to_writes else "127.0.0.1")
    browser = Browser(svc.url, tmp_path / "profile")
    try:
        browser.open("/")
        browser.wait(lambda: browser.js("return document.readyState") == "complete", what="the page")
        browser.wait(lambda: browser.collect() and any(r["url"].endswith("/room/notices.json") for r in browser.requests),
                     what="the page asking for its notices")  # fmt: skip
        if open_to_writes:
            shown = browser.wait(lambda: browser.find("#notices").is_displayed() and browser.text("#notices li"))
            assert WARNING in shown
        else:
            browser.wait(lambda: browser.js("return document.querySelectorAll('#events-body tr, #events-empty:not([hidden])').length > 0"),
                         what="the events list")  # fmt: skip
            assert not browser.find("#notices").is_displayed()
        assert browser.outside_requests() == []
    finally:
        browser.quit()
        assert svc.stop() == 0
