"""A full disk (ENOSPC) against a real `tornado-records` process: 507, nothing stored, the service keeps serving.

The disk is a small tmpfs the test mounts, so the test that fills it needs root; CI runs as root (.ci/run) and sets
RECORDS_TEST_REQUIRE_ALL, which turns a skip into a failure. A full index (SQLite) at commit is made without root.
"""

from __future__ import annotations

import json
import os
import select
from pathlib import Path

from support.rawhttp import connect, read_to_end, request, request_head
from support.records import files_in, record_url
from support.waiting import wait_until

EARLIER = os.urandom(1 << 20)


def upload_until_answered(url: str, path: str, total: int) -> bytes:
    """A chunked upload of up to `total` bytes, 256 KiB at a time, that stops sending as soon as the server answers
    (as curl does); returns the answer."""
    piece = os.urandom(256 * 1024)
    with connect(url) as sock:
        sock.sendall(request_head("PUT", path, {"Transfer-Encoding": "chunked", "Connection": "close"}))
        for _ in range(total // len(piece)):
            if select.select([sock], [], [], 0.1)[0]:
                break
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        else:
            sock.sendall(b"0\r\n\r\n")
        return read_to_end(sock)


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def test_disk_full(small_disk: Path, service) -> None:
    data = small_disk / "data"
    svc = service(data_dir=data)
    assert request(svc.url, "PUT", record_url(start="2024-01-01T00:00:00"), EARLIER)[0] == 204

    # A Content-Length over the free space is refused at once: no 100 Continue, no body read.
    with connect(svc.url) as sock:
        headers = {"Content-Length": str(9 << 20), "Expect": "100-continue", "Connection": "close"}
        sock.sendall(request_head("PUT", record_url(start="2024-01-02T00:00:00"), headers))
        answer = read_to_end(sock)
    assert answer.startswith(b"HTTP/1.1 507"), answer[:200]
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["status_code"] == 507

    # A chunked upload fills the disk: 507, and nothing of it is left.
    answer = upload_until_answered(svc.url, record_url(start="2024-01-03T00:00:00"), 16 << 20)
    assert status_of(answer) == 507, answer[:300]
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["status_code"] == 507
    assert files_in(data / "tmp") == []
    assert request(svc.url, "GET", record_url(start="2024-01-03T00:00:00"))[0] == 404

    # The service keeps serving, the earlier record is whole, and the space is back.
    assert svc.proc.poll() is None
    assert request(svc.url, "GET", "/ping")[0] == 204
    status, _, body = request(svc.url, "GET", record_url(start="2024-01-01T00:00:00"))
    assert status == 200 and body == EARLIER
    later = os.urandom(2 << 20)
    assert request(svc.url, "PUT", record_url(start="2024-01-04T00:00:00"), later)[0] == 204
    assert request(svc.url, "GET", record_url(start="2024-01-04T00:00:00"))[2] == later
    assert "Traceback" not in svc.log


def test_content_length_over_the_free_space_is_507_up_front(service) -> None:
    # No root needed: no disk has a pebibyte free, and the body limit is raised above that.
    svc = service("--max-body-size", "4096T")
    with connect(svc.url) as sock:
        sock.sendall(request_head("PUT", record_url(), {"Content-Length": str(1 << 50), "Connection": "close"}))
        answer = read_to_end(sock)
    assert status_of(answer) == 507
    assert b"100 Continue" not in answer
    assert request(svc.url, "GET", record_url())[0] == 404


def free_bytes(path: Path) -> int:
    """Bytes still free for an unprivileged writer on the disk holding path."""
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def index_bytes(data: Path) -> int:
    """Bytes the index's files take on the disk (they grow as the event log keeps the stream's events)."""
    return sum(path.stat().st_blocks * 512 for path in data.glob("records.sqlite3*"))


def test_a_replacement_that_fills_the_disk_keeps_the_earlier_version_and_gives_the_space_back(
    small_disk: Path, service
) -> None:
    data = small_disk / "data"
    svc = service(data_dir=data)
    status, stored, _ = request(svc.url, "PUT", record_url(), EARLIER)
    assert status == 204
    free = free_bytes(small_disk) + index_bytes(data)  # the space of all but the index

    answer = upload_until_answered(svc.url, record_url(), 16 << 20)
    assert status_of(answer) == 507, answer[:300]
    status, headers, body = request(svc.url, "GET", record_url())
    assert status == 200 and body == EARLIER and headers["ETag"] == stored["ETag"]
    assert files_in(data / "tmp") == [] and len(files_in(data / "blobs")) == 1
    assert wait_until(lambda: free_bytes(small_disk) + index_bytes(data) == free), (
        free_bytes(small_disk), index_bytes(data), free
    )

    smaller = os.urandom(3 << 20)  # fits only once the refused upload's space is back
    assert request(svc.url, "PUT", record_url(), smaller)[0] == 204
    assert request(svc.url, "GET", record_url())[2] == smaller
