"""`GET /sse` over real HTTP: headers, retry and keepalive lines, every event type with its payload, replay after a
reconnect, slow subscribers dropped, 500 subscribers, removal on disconnect, shutdown; curl and Chromium as clients."""

from __future__ import annotations

import asyncio
import http.client
import json
import queue
import re
import shutil
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
import yaml

from conftest import COMMAND, EVENT, START, headless_chromium, record_url, require
from tornado_records.config import build_config
from tornado_records.events import EventHub
from tornado_records.handlers.base import ApiError, abort_reason

SPEC = yaml.safe_load((Path(__file__).parents[1] / "records.yaml").read_text())


@pytest.fixture
def settings() -> dict[str, str]:
    # hundreds of subscribers from one address (the test's): above the per-client cap's default of 100
    return {"sse_keepalive": "0.2", "max_client_streams": "1000"}


@pytest.fixture
def port(http_server: Any, http_port: int) -> int:
    """The port of the app under test, listening."""
    return http_port


@pytest.fixture
def hub(app: tornado.web.Application) -> EventHub:
    return app.settings["hub"]


class Listener:
    """A raw HTTP/1.1 client of `/sse`: the response head, then the decoded stream read line by line."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> None:
        self.reader, self.writer = reader, writer
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        self.headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines if h)}
        self.buffer = b""

    @classmethod
    async def open(cls, port: int, path: str = "/sse", headers: dict[str, str] | None = None) -> "Listener":
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in (headers or {}).items())]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        return cls(reader, writer, head[:-4])

    async def _chunk(self) -> bytes:
        size = int((await self.reader.readline()).strip(), 16)
        return (await self.reader.readexactly(size + 2))[:-2]

    async def line(self, timeout: float = 10) -> str | None:
        """The next line of the stream; None at its clean end (the last chunk)."""
        while b"\n" not in self.buffer:
            chunk = await asyncio.wait_for(self._chunk(), timeout)
            if not chunk:
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()

    async def event(self, timeout: float = 10) -> tuple[int, dict]:
        """The next event (its id and JSON), skipping the retry line and keepalive comments."""
        fields: dict[str, str] = {}
        while True:
            line = await self.line(timeout)
            assert line is not None, "the stream ended"
            if line == "" and "data" in fields:
                return int(fields["id"]), json.loads(fields["data"])
            if line and not line.startswith(":"):
                name, _, value = line.partition(": ")
                assert name not in fields, f"two {name} lines in one event"
                fields[name] = value

    async def event_of(self, event_type: str, timeout: float = 10) -> tuple[int, dict]:
        """The next event of that type, skipping others."""
        while True:
            event_id, event = await self.event(timeout)
            if event["type"] == event_type:
                return event_id, event

    def close(self) -> None:
        self.writer.close()


async def listen(port: int, **kwargs: Any) -> Listener:
    """A listener whose subscription has started (its retry line has arrived)."""
    listener = await Listener.open(port, **kwargs)
    assert await listener.line() == "retry: 3000"
    return listener


async def wait_for(condition: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


# -- conformance to records.yaml ---------------------------------------------------------------------------------


def resolve(schema: dict) -> dict:
    return resolve(SPEC["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]) if "$ref" in schema else schema


def check(value: Any, schema: dict, where: str = "event") -> None:
    """A small JSON Schema check (type, const, enum, required, properties, additionalProperties, oneOf by type)."""
    schema = resolve(schema)
    if "oneOf" in schema:
        matching = [s for s in map(resolve, schema["oneOf"]) if s["properties"]["type"]["const"] == value["type"]]
        assert len(matching) == 1, f"{where}: no single schema for {value['type']}"
        return check(value, matching[0], where)
    types = schema.get("type")
    kinds = {"object": dict, "string": str, "integer": int, "array": list, "boolean": bool, "null": type(None)}
    kind = tuple(kinds[t] for t in types) if isinstance(types, list) else kinds.get(types, object)
    assert isinstance(value, kind), f"{where}: {value!r} is not {schema.get('type')}"
    assert schema.get("const", value) == value, f"{where}: {value!r} != {schema['const']!r}"
    assert value in schema.get("enum", [value]), f"{where}: {value!r} not in {schema['enum']}"
    if isinstance(value, dict):
        assert set(schema.get("required", [])) <= value.keys(), f"{where}: missing {schema['required']}"
        if schema.get("additionalProperties") is False:
            assert value.keys() <= schema["properties"].keys(), f"{where}: extra keys in {sorted(value)}"
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                check(value[key], sub, f"{where}.{key}")


def conforms(event: dict) -> dict:
    check(event, SPEC["components"]["schemas"]["Event"])
    return event


@pytest.mark.gen_test
async def test_the_served_openapi_document_describes_the_stream(fetch: Any) -> None:
    document = json.loads((await fetch("/openapi/openapi.json")).body)
    operation = document["paths"]["/sse"]["get"]
    assert {"200", "503"} <= operation["responses"].keys()
    assert "text/event-stream" in operation["responses"]["200"]["content"]
    assert {"Cache-Control", "X-Accel-Buffering"} <= operation["responses"]["200"]["headers"].keys()
    assert any(p["name"] == "Last-Event-ID" and p["in"] == "header" for p in operation["parameters"])
    event_types = {resolve(s)["properties"]["type"]["const"] for s in document["components"]["schemas"]["Event"]["oneOf"]}
    assert event_types == {
        "record-created", "record-updated", "record-deleted", "upload-started", "upload-progress", "upload-aborted",
        "upload-resumed", "upload-completed", "upload-interrupted", "event-updated", "recorder-standby",
        "recorder-takeover",
    }


# -- the stream ---------------------------------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=20)
async def test_headers_then_retry_line_then_keepalive_comments(port: int) -> None:
    began = time.monotonic()  # before the subscription, from which the hub's keepalive timer counts
    listener = await Listener.open(port)
    assert listener.status == 200
    assert listener.headers["content-type"] == "text/event-stream"
    assert listener.headers["cache-control"] == "no-cache"
    assert listener.headers["x-accel-buffering"] == "no"
    assert listener.headers["transfer-encoding"] == "chunked"
    assert await listener.line() == "retry: 3000"
    assert await listener.line() == ""
    for _ in range(3):
        assert await listener.line(timeout=2) == ": keepalive"
        assert await listener.line() == ""
    assert 0.6 <= time.monotonic() - began <= 2.0  # every 0.2 s, as the settings say: the third after 0.6 s
    listener.close()


@pytest.mark.gen_test(timeout=20)
async def test_record_events_with_their_payloads(port: int, fetch: Any) -> None:
    listener = await listen(port)
    # Any case of UUID and a short start: events show the canonical forms, as the API does.
    url = record_url(EVENT.upper(), "2024-01-01T00:00")
    assert (await fetch(url, method="PUT", body=b"first", headers={"Content-Type": "audio/ogg"})).code == 204
    started_id, started = await listener.event()
    created_id, created = await listener.event()
    listing = json.loads((await fetch(f"/records/{EVENT}")).body)
    assert conforms(started)["type"] == "upload-started"
    assert started["data"] == {"event": EVENT, "start": START, "type": "audio/ogg"}
    assert conforms(created)["type"] == "record-created"
    assert created["data"] == {"record": listing["records"][0]}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", created["created_at"])

    assert (await fetch(url, method="PUT", body=b"second, longer", headers={"Content-Type": "audio/flac"})).code == 204
    _, restarted = await listener.event()
    updated_id, updated = await listener.event()
    assert restarted["type"] == "upload-started"
    assert conforms(updated)["type"] == "record-updated"
    assert updated["data"]["record"] == json.loads((await fetch(f"/records/{EVENT}")).body)["records"][0]
    assert updated["data"]["record"]["size"] == len(b"second, longer")

    assert (await fetch(url, method="DELETE")).code == 204
    deleted_id, deleted = await listener.event()
    assert conforms(deleted) == {**deleted, "type": "record-deleted", "data": {"record": {"event": EVENT, "start": START}}}
    assert [created_id, updated_id, deleted_id] == [started_id + 1, started_id + 3, started_id + 4]
    listener.close()


@pytest.mark.gen_test(timeout=20)
async def test_failed_requests_publish_no_record_event(port: int, fetch: Any) -> None:
    listener = await listen(port)
    assert (await fetch(record_url(), method="DELETE")).code == 404
    assert (await fetch(record_url(start="2024-01-01T00:00Z"), method="PUT", body=b"x")).code == 400
    assert (await fetch(record_url(), method="PUT", body=b"x")).code == 204
    # The first event after those failures is the good upload's.
    assert (await listener.event())[1]["type"] == "upload-started"
    assert (await listener.event())[1]["type"] == "record-created"
    listener.close()


async def send_chunked(port: int, path: str, chunks: int, size: int, pause: float) -> socket.socket:
    """A PUT whose chunked body is sent slowly and never finished; the open socket is returned."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(
        f"PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Type: audio/ogg\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
    )
    for _ in range(chunks):
        sock.sendall(b"%x\r\n" % size + b"a" * size + b"\r\n")
        await asyncio.sleep(pause)
    return sock


@pytest.mark.gen_test(timeout=20)
async def test_upload_progress_then_aborted_when_the_client_goes(
    port: int, hub: EventHub, data_dir: Path
) -> None:
    hub.progress_interval = 0.1
    listener = await listen(port)
    began = time.monotonic()
    sock = await send_chunked(port, record_url(), chunks=10, size=1000, pause=0.05)
    await wait_for(lambda: any(p.stat().st_size == 10_000 for p in (data_dir / "tmp").rglob("*.part")))
    sock.close()
    sending = time.monotonic() - began
    _, started = await listener.event()
    assert started["type"] == "upload-started"
    events = []
    while not events or events[-1]["type"] == "upload-progress":
        events.append(conforms((await listener.event())[1]))
    progress = [e["data"]["bytes"] for e in events[:-1]]
    assert 2 <= len(progress) <= sending / 0.1 + 1, progress  # at least 0.5 s of body, at most one every 0.1 s
    assert progress == sorted(progress) and 0 < progress[0] and progress[-1] <= 10_000
    assert events[-1]["type"] == "upload-aborted"
    assert events[-1]["data"] == {"event": EVENT, "start": START, "bytes": 10_000, "reason": "client-gone"}
    listener.close()


@pytest.mark.gen_test(timeout=20)
@pytest.mark.engines("sqlite", "postgresql")  # the failure made here is of blobs/ (test_s3: the object store's)
async def test_upload_aborted_on_a_server_error_and_no_record_event(
    port: int, fetch: Any, data_dir: Path
) -> None:
    listener = await listen(port)
    shutil.rmtree(data_dir / "blobs")  # the commit's rename into blobs/ now fails
    assert (await fetch(record_url(), method="PUT", body=b"12345")).code == 500
    assert (await listener.event())[1]["type"] == "upload-started"
    _, aborted = await listener.event()
    assert conforms(aborted)["data"] == {"event": EVENT, "start": START, "bytes": 5, "reason": "error"}
    (data_dir / "blobs").mkdir()
    assert (await fetch(record_url(), method="PUT", body=b"12345")).code == 204
    assert (await listener.event())[1]["type"] == "upload-started"
    assert (await listener.event())[1]["type"] == "record-created"
    listener.close()


def test_abort_reasons_by_status() -> None:
    """The one mapping from an upload's error to the reason its upload-aborted event gives."""
    assert abort_reason(ApiError(413, "too large"), 413) == "too-large"
    assert abort_reason(ApiError(412, "changed"), 412) == "precondition-failed"
    assert abort_reason(None, 507) == "disk-full"
    assert abort_reason(OSError("boom"), 500) == "error"


@pytest.mark.gen_test(timeout=20)
async def test_replay_after_reconnect_without_gaps_or_duplicates(port: int, fetch: Any) -> None:
    listener = await listen(port)
    await fetch(record_url(start="2024-01-01T01:00:00"), method="PUT", body=b"1")
    seen = [await listener.event(), await listener.event()]
    listener.close()
    last_id = seen[-1][0]
    for hour in (2, 3):  # published while the client is away
        await fetch(record_url(start=f"2024-01-01T0{hour}:00:00"), method="PUT", body=b"2")
    for resumed in (
        await listen(port, headers={"Last-Event-ID": str(last_id)}),
        await listen(port, path=f"/sse?lastEventId={last_id}"),
    ):
        missed = [await resumed.event() for _ in range(4)]
        assert [event_id for event_id, _ in missed] == list(range(last_id + 1, last_id + 5))
        assert [e["type"] for _, e in missed] == ["upload-started", "record-created"] * 2
        assert [e["data"]["record"]["start"] for _, e in missed[1::2]] == ["2024-01-01T02:00:00", "2024-01-01T03:00:00"]
        await fetch(record_url(start="2024-01-02T00:00:00"), method="PUT", body=b"5")  # then the next ids follow
        assert (await resumed.event())[0] == missed[-1][0] + 1
        resumed.close()
    # Without an id (or with one this service never gives) there is no replay: the first event is a live one.
    for fresh in (await listen(port), await listen(port, headers={"Last-Event-ID": "bogus"})):
        await fetch(record_url(start="2024-01-01T04:00:00"), method="PUT", body=b"4")
        assert (await fresh.event())[1]["data"]["start"] == "2024-01-01T04:00:00"
        fresh.close()


@pytest.mark.gen_test(timeout=60)
async def test_a_subscriber_that_stops_reading_is_dropped_while_others_keep_receiving(
    port: int, hub: EventHub
) -> None:
    reader = await listen(port)
    [reading] = hub.subscribers
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", port))
    stalled.sendall(b"GET /sse HTTP/1.1\r\nHost: x\r\n\r\n")
    await wait_for(lambda: len(hub.subscribers) == 2)
    [slow] = hub.subscribers - {reading}
    most_unsent = 0
    for n in range(400):  # up to 25 MB of 64 KB events, each read by the reader before the next is published
        hub.publish("test", {"n": n, "pad": "x" * 65536})
        assert (await reader.event())[1]["data"]["n"] == n
        if slow not in hub.subscribers:
            break
        most_unsent = max(most_unsent, slow.unsent)
    assert slow not in hub.subscribers and len(hub.subscribers) == 1, "the stalled subscriber was never dropped"
    assert most_unsent <= hub.max_unsent  # the server never held more than the bound for it
    # The server closed the stalled connection: reading it to the end reaches EOF (or a reset).
    stalled.settimeout(10)
    with pytest.raises((ConnectionResetError, EOFError)):
        while stalled.recv(1 << 20):
            pass
        raise EOFError
    hub.publish("test", {"after": True})
    assert (await reader.event())[1]["data"] == {"after": True}
    reader.close()


@pytest.mark.gen_test(timeout=60)
async def test_500_subscribers_all_receive_an_event_and_are_gone_after_disconnecting(
    port: int, hub: EventHub, fetch: Any
) -> None:
    hub.keepalive = 600  # no write in the meantime reveals the closed connections: they must be removed at once
    listeners = await asyncio.gather(*(listen(port) for _ in range(500)))
    assert len(hub.subscribers) == 500
    assert (await fetch(record_url(), method="PUT", body=b"x")).code == 204
    events = await asyncio.gather(*(listener.event_of("record-created") for listener in listeners))
    assert len({event_id for event_id, _ in events}) == 1
    assert all(event["data"]["record"]["event"] == EVENT for _, event in events)
    for listener in listeners:
        listener.close()
    await wait_for(lambda: not hub.subscribers, timeout=5)  # removed as each connection closes (on_connection_close)


@pytest.mark.gen_test(timeout=20)
async def test_closing_the_hub_ends_every_stream_cleanly(port: int, hub: EventHub) -> None:
    listeners = [await listen(port) for _ in range(3)]
    began = time.monotonic()
    await hub.close(timeout=5)
    assert time.monotonic() - began < 2  # every stream ended and left the hub without being cut off
    for listener in listeners:
        while (line := await listener.line()) is not None:  # until the last chunk: a clean end, not a cut
            assert line in ("", ": keepalive")
    assert not hub.subscribers  # removed as each response finished (on_finish)
    late = await Listener.open(port)  # a stream asked for after the close ends at once
    assert await late.line() == "retry: 3000"
    assert await late.line() == ""
    assert await late.line() is None


# -- the keepalive setting ---------------------------------------------------------------------------------------


def test_sse_keepalive_setting_from_flag_then_environment_then_default() -> None:
    assert build_config({"sse_keepalive": "0.5"}, {"RECORDS_SSE_KEEPALIVE": "2"}).sse_keepalive == 0.5
    assert build_config({}, {"RECORDS_SSE_KEEPALIVE": "2"}).sse_keepalive == 2.0
    assert build_config({}, {}).sse_keepalive == 15.0


@pytest.mark.parametrize("value", ["0", "-1", "soon", "inf", "nan"])
def test_a_bad_sse_keepalive_fails_at_start_with_one_line(value: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [*COMMAND, "--sse-keepalive", value, "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "--sse-keepalive" in result.stderr, result.stderr


# -- real clients and a real process -----------------------------------------------------------------------------


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
