"""Resumable uploads across the end of the process: a `kill -9` in the middle of an append, a restart, and the client
resumes from a durable offset; expired uploads are removed at start."""

from __future__ import annotations

import os
import signal
import time

from conftest import EVENT, files_in, record_url
from rawhttp import connect, request, request_head

TUS = {"Tus-Resumable": "1.0.0"}
CHUNK = {"Content-Type": "application/offset+octet-stream"}
BODY = os.urandom(3_000_000)
MB = 1_000_000


def create(url: str, length: int) -> str:
    status, headers, _ = request(url, "POST", record_url(), b"", {**TUS, "Upload-Length": str(length)})
    assert status == 201
    return headers["Location"]


def offset_of(url: str, location: str) -> int | None:
    status, headers, _ = request(url, "HEAD", location, headers=TUS)
    return int(headers["Upload-Offset"]) if status == 200 else None


def test_kill_9_between_appends_resumes_from_the_durable_offset(service, data_dir) -> None:  # noqa: ANN001
    proc = service()
    location = create(proc.url, len(BODY))
    status, headers, _ = request(proc.url, "PATCH", location, BODY[:MB], {**TUS, **CHUNK, "Upload-Offset": "0"})
    assert status == 204 and headers["Upload-Offset"] == str(MB)  # acknowledged: durable
    # an append in progress: part of it is recorded by the periodic sync (every 3 s), the rest is not, then kill -9
    sock = connect(proc.url)
    sock.sendall(request_head("PATCH", location, {**TUS, **CHUNK, "Upload-Offset": str(MB),
                                                  "Content-Length": str(len(BODY) - MB)}))  # fmt: skip
    sock.sendall(BODY[MB : MB + 500_000])
    time.sleep(4)
    sock.sendall(BODY[MB + 500_000 : MB + 600_000])  # arrives after the interval: what came so far is recorded
    time.sleep(0.5)
    sock.sendall(BODY[MB + 600_000 : MB + 800_000])  # not recorded yet
    time.sleep(0.3)
    proc.proc.send_signal(signal.SIGKILL)
    proc.proc.wait()
    sock.close()

    again = service()
    offset = offset_of(again.url, location)
    assert MB + 500_000 <= offset <= MB + 800_000, offset
    assert (data_dir / "uploads" / location.rsplit("/", 1)[1]).stat().st_size == offset  # cut back to it
    status, headers, _ = request(again.url, "PATCH", location, BODY[offset:],
                                 {**TUS, **CHUNK, "Upload-Offset": str(offset)})  # fmt: skip
    assert status == 204 and headers["Upload-Offset"] == str(len(BODY))
    status, _, body = request(again.url, "GET", record_url())
    assert status == 200 and body == BODY
    assert "Traceback" not in proc.log + again.log


def test_uploads_past_their_expiry_are_removed_at_start(service, data_dir) -> None:  # noqa: ANN001
    proc = service("--upload-expiry", "1s")
    location = create(proc.url, 10)
    request(proc.url, "PATCH", location, b"12345", {**TUS, **CHUNK, "Upload-Offset": "0"})
    assert proc.stop() == 0
    assert len(files_in(data_dir / "uploads")) == 1
    time.sleep(2.1)  # an expiry falls on a whole second, one to two seconds after the last use
    again = service("--upload-expiry", "1s")
    assert files_in(data_dir / "uploads") == []
    assert offset_of(again.url, location) is None
    assert "removed 1 expired or unfinished resumable upload" in again.log
    assert request(again.url, "GET", f"/records/{EVENT}/2024-01-01T00:00:00")[0] == 404
