"""Resumable uploads across the end of the process: a `kill -9` in the middle of an append, a restart, and the client
resumes from a durable offset; expired uploads are removed at start."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from support.rawhttp import connect, request, request_head
from support.records import EVENT, files_in, record_url, run_on_index
from support.waiting import wait_until

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


def received(url: str) -> list[int]:
    """The offsets that the uploads receiving bytes have reached (GET /uploads): what reached the service."""
    uploads = json.loads(request(url, "GET", "/uploads")[2])["uploads"]
    return [upload["bytes"] for upload in uploads if upload["state"] == "receiving"]


def recorded(engine: dict[str, str], data_dir: Path, location: str) -> int:
    """The durable offset of the upload at `location`, as its row in the index says (what a restart finds)."""
    upload = location.rsplit("/", 1)[1]
    return run_on_index(engine, data_dir, f"SELECT received FROM uploads WHERE id = '{upload}'")[0][0]


def test_kill_9_between_appends_resumes_from_the_durable_offset(service, engine, data_dir) -> None:  # noqa: ANN001
    sync = 1.0  # --resumable-sync-interval: long enough that the last part arrives before the next sync
    proc = service("--resumable-sync-interval", str(sync))
    location = create(proc.url, len(BODY))
    status, headers, _ = request(proc.url, "PATCH", location, BODY[:MB], {**TUS, **CHUNK, "Upload-Offset": "0"})
    assert status == 204 and headers["Upload-Offset"] == str(MB)  # acknowledged: durable
    # an append in progress: part of it is recorded by the periodic sync (every `sync` s), the rest is not, then
    # kill -9
    sock = connect(proc.url)
    sock.sendall(request_head("PATCH", location, {**TUS, **CHUNK, "Upload-Offset": str(MB),
                                                  "Content-Length": str(len(BODY) - MB)}))  # fmt: skip
    sock.sendall(BODY[MB : MB + 500_000])
    assert wait_until(lambda: received(proc.url) == [MB + 500_000])  # the interval counts from before these arrived
    time.sleep(sync + 0.2)
    sock.sendall(BODY[MB + 500_000 : MB + 600_000])  # arrives after the interval: what came so far is recorded
    assert wait_until(lambda: recorded(engine, data_dir, location) >= MB + 500_000)
    sock.sendall(BODY[MB + 600_000 : MB + 800_000])  # not recorded yet
    assert wait_until(lambda: received(proc.url) == [MB + 800_000])
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
