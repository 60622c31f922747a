"""`GET /sse` to real clients and processes: a bad keepalive stops the start; curl --no-buffer, a shutdown, Chromium's
EventSource and an HTTP/1.0 client."""

from __future__ import annotations

import http.client
import json
import queue
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import tornado.web

from support.browser import headless_chromium
from support.components import require
from support.records import EVENT, record_url
from support.service import COMMAND
from support.waiting import wait_for
from tornado_records.events import EventHub


@pytest.fixture
def settings() -> dict[str, str]:
    # hundreds of subscribers from one address (the test's): above the per-client cap's default of 100
    return {"sse_keepalive": "0.2", "max_client_streams": "1000"}


@pytest.mark.parametrize("value", ["0", "-1", "soon", "inf", "nan"])
def test_a_bad_sse_keepalive_fails_at_start_with_one_line(value: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [*COMMAND, "--sse-keepalive", value, "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "--sse-keepalive" in result.stderr, result.stderr


def test_curl_no_buffer_shows_events_as_they_happen(service: Any) -> None:
    curl = require("curl")
    server = service(env={"RECORDS_SSE_KEEPALIVE": "0.2"})
    proc = subprocess.Popen(
        [curl, "--request", "GET", "--no-buffer", "--silent", "--show-error", server.url + "/sse"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        out = LineReader(proc)
        assert out.until(".") == "retry: 3000"
        assert out.until(":") == ": keepalive"
        upload = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        upload.putrequest("PUT", record_url())
        upload.putheader("Content-Type", "audio/ogg")
        upload.putheader("Transfer-Encoding", "chunked")
        upload.endheaders()
        upload.send(b"5\r\nhello\r\n")
        # The upload is still open: curl shows it has started.
        started = json.loads(out.until("^data: ").removeprefix("data: "))
        assert started["type"] == "upload-started"
        upload.send(b"0\r\n\r\n")
        assert upload.getresponse().status == 204
        created = json.loads(out.until("^data: ").removeprefix("data: "))
        assert created["type"] == "record-created" and created["data"]["record"]["size"] == 5
    finally:
        proc.kill()
        proc.wait()


def test_shutdown_ends_streams_at_once_and_exits_zero(service: Any) -> None:
    curl = require("curl")
    server = service()
    proc = subprocess.Popen(
        [curl, "--no-buffer", "--silent", "--show-error", server.url + "/sse"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert LineReader(proc).until(".") == "retry: 3000"
        began = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=10) == 0
        assert time.monotonic() - began < 5  # the open stream did not hold the shutdown for the grace period
        assert proc.wait(timeout=10) == 0  # curl saw the stream end properly (a cut chunked body is exit 18)
    finally:
        proc.kill()
        proc.wait()


PAGE = b"""<!doctype html>
<title>events</title>
<pre id="event">waiting</pre>
<script>
  const source = new EventSource("/sse");
  source.onmessage = (message) => {
    const event = JSON.parse(message.data);
    if (event.type !== "record-created") return;
    document.getElementById("event").textContent = message.data;
    fetch("/test/report", {method: "POST", body: JSON.stringify({id: message.lastEventId, event})});
    source.close();
  };
</script>
"""


class PageHandler(tornado.web.RequestHandler):
    """Test only: the page that opens an EventSource on /sse."""

    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.write(PAGE)


class ReportHandler(tornado.web.RequestHandler):
    """Test only: where the page reports the event it received."""

    def initialize(self, reports: list) -> None:
        self.reports = reports

    def post(self) -> None:
        self.reports.append(json.loads(self.request.body))


@pytest.mark.gen_test(timeout=60)
async def test_chromium_event_source_receives_record_created(
    app: tornado.web.Application, port: int, hub: EventHub, fetch: Any, tmp_path: Path
) -> None:
    reports: list[dict] = []
    app.add_handlers(r".*", [(r"/test/page", PageHandler), (r"/test/report", ReportHandler, {"reports": reports})])
    browser = subprocess.Popen(
        [
            *headless_chromium(tmp_path / "chromium"),
            "--remote-debugging-port=0",  # keeps the headless browser running after the page has loaded
            f"http://127.0.0.1:{port}/test/page",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await wait_for(lambda: len(hub.subscribers) == 1, timeout=30)
        assert (await fetch(record_url(), method="PUT", body=b"browser", headers={"Content-Type": "audio/ogg"})).code == 204
        await wait_for(lambda: reports, timeout=20)
    finally:
        browser.terminate()
        browser.wait(timeout=20)
    [report] = reports
    assert report["event"]["type"] == "record-created"
    assert report["event"]["data"]["record"]["event"] == EVENT
    assert report["event"]["data"]["record"]["size"] == len(b"browser")
    assert int(report["id"]) == hub.last_id


def test_an_http_1_0_client_gets_the_events_unframed(service: Any) -> None:
    """An HTTP/1.0 answer is not chunked: the events come as they are, and the stream ends at the close."""
    proc = service()
    with socket.create_connection(("127.0.0.1", proc.port), timeout=10) as sock:
        sock.sendall(b"GET /sse HTTP/1.0\r\n\r\n")
        received = b""
        while b"retry:" not in received:
            received += sock.recv(4096)
        put = urllib.request.Request(f"{proc.url}{record_url()}", data=b"abc", method="PUT")
        assert urllib.request.urlopen(put).status == 204
        while b'"record-created"' not in received:
            received += sock.recv(4096)
    head, _, body = received.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding" not in head
    assert body.startswith(b"retry: 3000\n\nid: ")
    assert b"\ndata: {" in body and b"\r\n" not in body


class LineReader:
    """The lines a process writes to its stdout, collected by a thread."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def until(self, pattern: str, timeout: float = 10) -> str:
        """The next line matching the pattern (lines before it are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            if re.search(pattern, line):
                return line
