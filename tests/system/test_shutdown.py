"""SIGTERM and SIGINT with uploads, downloads and event streams open, against a real `tornado-records` process.

Uploads in flight finish within `--shutdown-grace`, event streams end at once, the process exits 0; an upload still
running when the grace ends is cut off and leaves nothing; a second signal exits at once (status 1).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import sqlite3
import time
from pathlib import Path

import pytest

from support.rawhttp import (
    Answer,
    Download,
    chunk,
    connect,
    open_event_stream,
    read_to_end,
    read_until,
    request,
    request_head,
)
from support.components import require
from support.records import files_in, record_url
from support.service import Service
from support.waiting import wait_until

FIRST, SECOND = record_url(start="2024-07-01T06:00:00"), record_url(start="2024-07-01T07:00:00")
BIG_INDEX = 20 * 365 * 24


def start_upload(url: str, path: str, framing: dict[str, str], part: bytes) -> socket.socket:
    """An upload that has sent its head and `part` of its body (already framed), and goes on when the test says."""
    sock = connect(url)
    sock.sendall(request_head("PUT", path, {**framing, "Connection": "close"}) + part)
    return sock


def uploads_in_flight(data_dir: Path) -> int:
    """How many uploads have a file in the data directory's tmp/."""
    return len(files_in(data_dir / "tmp"))


def test_sigterm_lets_uploads_and_downloads_finish_ends_event_streams_and_exits_0(service) -> None:
    svc = service("--shutdown-grace", "10")
    first, second, third = (os.urandom(1 << 20) for _ in range(3))
    assert request(svc.url, "PUT", record_url(), third)[0] == 204
    streams = [open_event_stream(svc.url) for _ in range(2)]
    chunked = start_upload(svc.url, FIRST, {"Transfer-Encoding": "chunked"}, chunk(first[:1000]))
    sized = start_upload(svc.url, SECOND, {"Content-Length": str(len(second))}, second[:1000])
    download = Download(svc.url, record_url(), receive_buffer=64 * 1024)
    assert wait_until(lambda: uploads_in_flight(svc.data_dir) == 2)

    svc.proc.send_signal(signal.SIGTERM)
    for stream in streams:  # each stream ends at once, cleanly: with the last chunk of its chunked body
        assert read_until(stream, b"\r\n0\r\n\r\n", timeout=3).endswith(b"\r\n0\r\n\r\n")
    with pytest.raises(OSError):
        connect(svc.url).close()  # no new connections
    time.sleep(1)
    assert svc.proc.poll() is None  # still waiting for the uploads

    chunked.sendall(chunk(first[1000:]) + b"0\r\n\r\n")
    sized.sendall(second[1000:])
    assert Answer(read_to_end(chunked)).status == 204 and Answer(read_to_end(sized)).status == 204
    assert download.finish() == third
    assert svc.proc.wait(timeout=10) == 0
    assert "stopped" in svc.log and "still in flight" not in svc.log

    again = service()
    assert request(again.url, "GET", FIRST)[2] == first and request(again.url, "GET", SECOND)[2] == second


def test_an_upload_still_running_when_the_grace_ends_is_cut_off_and_leaves_nothing(service) -> None:
    svc = service("--shutdown-grace", "1")
    earlier = os.urandom(1 << 20)
    assert request(svc.url, "PUT", FIRST, earlier)[0] == 204
    upload = start_upload(svc.url, FIRST, {"Transfer-Encoding": "chunked"}, chunk(b"x" * 1000))
    assert wait_until(lambda: uploads_in_flight(svc.data_dir) == 1)

    began = time.monotonic()
    svc.proc.send_signal(signal.SIGTERM)
    try:
        while svc.proc.poll() is None:  # the client keeps sending, slowly
            upload.sendall(chunk(b"x" * 1000))
            time.sleep(0.1)
        answer = read_to_end(upload)
    except (BrokenPipeError, ConnectionResetError):  # cut off
        answer = b""
    assert svc.proc.wait(timeout=10) == 0
    assert 1 <= time.monotonic() - began < 5
    assert b" 204 " not in answer
    assert "closing 1 request(s) still in flight after 1 s" in svc.log
    assert uploads_in_flight(svc.data_dir) == 0  # removed when it was cut off

    again = service()
    status, _, body = request(again.url, "GET", FIRST)
    assert status == 200 and body == earlier
    assert len(files_in(again.data_dir / "blobs")) == 1


def test_a_second_signal_exits_at_once(service) -> None:
    svc = service()  # the default grace: 30 s
    upload = start_upload(svc.url, FIRST, {"Content-Length": "2000"}, b"x" * 1000)
    assert wait_until(lambda: uploads_in_flight(svc.data_dir) == 1)
    svc.proc.send_signal(signal.SIGTERM)
    assert wait_until(lambda: "SIGTERM: shutting down" in svc.log)

    began = time.monotonic()
    svc.proc.send_signal(signal.SIGINT)
    assert svc.proc.wait(timeout=5) == 1
    assert time.monotonic() - began < 2
    assert "second SIGINT: exiting at once" in svc.log

    again = service()  # like a crash: the unfinished upload is removed at start
    assert "removed 1 unfinished upload(s)" in again.log and uploads_in_flight(again.data_dir) == 0
    upload.close()
    assert request(again.url, "GET", FIRST)[0] == 404


def test_a_request_on_a_kept_alive_connection_after_sigterm_is_refused(service) -> None:
    # nginx keeps idle connections to the service open (deploy/nginx.conf: keepalive 32) and sends new requests on
    # them: once stopping, the service must not start new uploads on them, only to cut them off at the grace's end.
    svc = service("--shutdown-grace", "10")
    kept = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=10)
    kept.request("GET", "/ping")
    ping = kept.getresponse()
    assert ping.status == 204 and ping.read() == b""
    upload = start_upload(svc.url, FIRST, {"Content-Length": "2000"}, b"x" * 1000)
    assert wait_until(lambda: uploads_in_flight(svc.data_dir) == 1)
    svc.proc.send_signal(signal.SIGTERM)
    assert wait_until(lambda: "SIGTERM: shutting down" in svc.log)

    kept.request("PUT", SECOND, body=b"a new recording")
    response = kept.getresponse()
    assert response.status == 503 and response.getheader("Connection") == "close"
    assert json.loads(response.read())["status_code"] == 503
    assert uploads_in_flight(svc.data_dir) == 1  # the new upload was not begun

    upload.sendall(b"x" * 1000)
    assert Answer(read_to_end(upload)).status == 204
    assert svc.proc.wait(timeout=10) == 0
    again = service()
    assert request(again.url, "GET", FIRST)[2] == b"x" * 2000 and request(again.url, "GET", SECOND)[0] == 404


def test_a_stop_as_it_starts_ends_the_look_for_records_to_analyse_before_closing_the_index(tmp_path: Path) -> None:
    """At start the analyses look, in a thread, for the records without one; a SIGTERM while that reads a big index
    stops the service once the look has ended (it closed the SQLite index under the look: killed by SIGSEGV)."""
    require("ffmpeg")  # the look happens only where ffmpeg is there to analyse what it finds
    first = Service(tmp_path / "data")
    assert request(first.url, "PUT", FIRST, b"not audio")[0] == 204
    assert first.stop() == 0
    with contextlib.closing(sqlite3.connect(tmp_path / "data" / "records.sqlite3")) as index, index:
        row = index.execute("SELECT event, type, size, sha256, modified, blob FROM records").fetchone()
        # twenty years of hourly broadcasts, each naming the one file (as rows of a restored index may)
        index.executemany(
            "INSERT INTO records (event, start, type, size, sha256, modified, blob) VALUES (?, ?, ?, ?, ?, ?, ?)",
            ((row[0], f"1990-01-01T00:00:00.{n:06d}", *row[1:]) for n in range(BIG_INDEX)),
        )
    for _ in range(3):
        svc = Service(tmp_path / "data")  # its look has begun: it starts before the line that says it serves
        assert svc.stop() == 0
        assert "Fatal Python error" not in svc.log and "Traceback" not in svc.log
    again = Service(tmp_path / "data")
    assert request(again.url, "GET", FIRST)[2] == b"not audio"  # the record as it was
    assert again.stop() == 0
