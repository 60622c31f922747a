"""Descriptors a client can pile up (issue 28), against a real `tornado-records` process, counted in /proc/<pid>/fd:
unfinished resumable uploads hold none between their requests, their number is capped, and a download of a record
of many append parts holds a few files open at a time, not one per part."""

from __future__ import annotations

import hashlib
import json
import os
import time

import pytest

from support.rawhttp import Download, request
from support.records import files_in, record_url, run_on_index
from support.waiting import wait_until

TUS = {"Tus-Resumable": "1.0.0"}
V8 = {"Upload-Draft-Interop-Version": "8"}
CHUNK = {"Content-Type": "application/offset+octet-stream"}
PARTIAL = {"Content-Type": "application/partial-upload"}
SLACK = 5  # descriptors a process may open or close on its own between two counts (a connection, an index file)


# The descriptors counted are the requests': no analysis runs beside them (it holds the content it reads, and its
# programs' output files, for as long as it takes).
REQUESTS_ONLY = ("--analysis-workers", "0")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def settled_fd_count(pid: int, at_most: int | None = None) -> int:
    """The process's count of descriptors once connections the test closed are closed on its side too (and, given
    `at_most`, once it is that or fewer, if it gets there within a few seconds)."""
    counts = [fd_count(pid)]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (len(counts) < 5 or len(set(counts[-5:])) > 1):
        if at_most is not None and counts[-1] <= at_most:
            break
        time.sleep(0.05)
        counts.append(fd_count(pid))
    return counts[-1]


def start_of(n: int) -> str:
    return f"2024-02-01T{n // 3600:02d}:{n // 60 % 60:02d}:{n % 60:02d}"


def create(url: str, n: int, length: int) -> str:
    """A new resumable upload for the record at start_of(n): tus for even n, the IETF draft for odd n; its path."""
    # (IETF without an interop version: no 104 interim answer, which the standard library's client takes as final)
    headers = {**TUS, "Upload-Length": str(length)} if n % 2 == 0 else {"Upload-Complete": "?0"}
    status, answer, body = request(url, "POST", record_url(start=start_of(n)), b"", headers)
    assert status == 201, body
    return answer["Location"]


def patch(url: str, location: str, n: int, offset: int, data: bytes, last: bool) -> int:
    """Append `data` at `offset` (the last bytes: the upload completes); the Upload-Offset answered."""
    if n % 2 == 0:
        headers = {**TUS, **CHUNK, "Upload-Offset": str(offset)}
    else:
        headers = {**V8, **PARTIAL, "Upload-Offset": str(offset), "Upload-Complete": "?1" if last else "?0"}
    status, answer, body = request(url, "PATCH", location, data, headers)
    assert status == 204, body
    return int(answer["Upload-Offset"])


def offset_of(url: str, location: str, n: int) -> int:
    status, answer, _ = request(url, "HEAD", location, None, TUS if n % 2 == 0 else V8)
    assert status in (200, 204)
    return int(answer["Upload-Offset"])


# -- 1. unfinished resumable uploads hold no descriptor between their requests ------------------------------------


def test_unfinished_resumable_uploads_hold_no_descriptor_between_requests(service) -> None:
    svc = service(*REQUESTS_ONLY)
    pid = svc.proc.pid
    contents = [os.urandom(3000 + n) for n in range(201)]
    # one upload of each protocol made and completed first: what the process opens once (index files, pools) is open
    for n in (199, 200):
        location = create(svc.url, n, len(contents[n]))
        patch(svc.url, location, n, 0, contents[n], last=True)
    before = settled_fd_count(pid)

    locations = []
    for n in range(199):
        locations.append(create(svc.url, n, len(contents[n])))
        assert patch(svc.url, locations[-1], n, 0, contents[n][:1000], last=False) == 1000
        assert patch(svc.url, locations[-1], n, 1000, contents[n][1000:2000], last=False) == 2000
    between = settled_fd_count(pid, at_most=before + SLACK)
    print(f"descriptors: {before} before, {between} with 199 unfinished resumable uploads")
    assert between <= before + SLACK, f"{between - before} more descriptors held by 199 unfinished uploads"

    for n, location in enumerate(locations):  # each resumes where the service says, and completes byte-exact
        offset = offset_of(svc.url, location, n)
        assert offset == 2000
        assert patch(svc.url, location, n, offset, contents[n][offset:], last=True) == len(contents[n])
    for n in range(201):
        status, headers, body = request(svc.url, "GET", record_url(start=start_of(n)))
        assert status == 200 and body == contents[n]
        assert headers["ETag"] == f'"{hashlib.sha256(contents[n]).hexdigest()}"'
    assert files_in(svc.data_dir / "uploads") == []
    assert settled_fd_count(pid, at_most=before + SLACK) <= before + SLACK


# -- 2. a cap on resumable uploads in progress --------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"], indirect=True)
def test_past_the_cap_a_new_resumable_upload_is_refused_507_and_nothing_is_created(service, engine) -> None:
    svc = service("--max-resumable-uploads", "3")
    data = svc.data_dir
    body = os.urandom(5000)
    locations = [create(svc.url, n, len(body)) for n in range(3)]

    def refused(n: int, headers: dict[str, str], content: bytes = b"") -> None:
        status, answer, text = request(svc.url, "POST", record_url(start=start_of(n)), content, headers)
        assert status == 507 and answer["Content-Type"] == "application/json"
        refusal = json.loads(text)
        assert refusal["status_code"] == 507 and "too many resumable uploads in progress" in refusal["detail"]
        assert "Location" not in answer

    refused(3, {**TUS, "Upload-Length": "5000"})
    refused(3, {"Upload-Complete": "?0"})
    refused(3, {**TUS, **CHUNK, "Upload-Length": "5000"}, body)  # creation with upload: none of the body is kept
    refused(3, {"Upload-Complete": "?1", "Content-Type": "audio/ogg"}, body)
    assert len(files_in(data / "uploads")) == 3
    assert run_on_index(engine, data, "SELECT count(*) FROM uploads") == [(3,)]
    assert request(svc.url, "GET", record_url(start=start_of(3)))[0] == 404

    # a completed upload frees its place (its row stays until it expires, to tell a client that it is done)
    assert patch(svc.url, locations[0], 0, 0, body, last=True) == len(body)
    assert request(svc.url, "GET", record_url(start=start_of(0)))[2] == body
    replacement = create(svc.url, 3, len(body))
    refused(4, {**TUS, "Upload-Length": "5000"})
    # and so does a cancelled one
    assert request(svc.url, "DELETE", locations[1], None, V8)[0] == 204
    last = create(svc.url, 5, len(body))
    refused(6, {"Upload-Complete": "?0"})
    for n, location in ((2, locations[2]), (3, replacement), (5, last)):
        assert patch(svc.url, location, n, 0, body, last=True) == len(body)
        assert request(svc.url, "GET", record_url(start=start_of(n)))[2] == body


# -- 3. a download of many append parts opens a few files at a time ------------------------------------------------


@pytest.mark.parametrize(
    "engine, parts, size",
    # 300 parts of 64 KiB: more than the kernel's socket buffers take from a client that does not read. In an object
    # store (and its PostgreSQL index, whose unique index on the blob column takes a version of some 60 runs at most),
    # fewer and larger ones.
    [("sqlite", 300, 64 << 10), ("s3", 50, 512 << 10)],
    indirect=["engine"],
)
def test_a_download_of_many_append_parts_holds_a_few_descriptors(service, engine, parts: int, size: int) -> None:
    svc = service(*REQUESTS_ONLY)
    pid = svc.proc.pid
    path = record_url(start="2024-03-01T00:00:00")
    pieces = [os.urandom(size) for _ in range(parts)]
    for piece in pieces:
        assert request(svc.url, "PUT", path + "?append=true", piece)[0] == 204
    content = b"".join(pieces)
    status, headers, _ = request(svc.url, "HEAD", path)
    assert status == 200 and int(headers["Content-Length"]) == len(content)
    files = "blobs" not in engine
    if files:
        assert len(files_in(svc.data_dir / "blobs")) == parts  # one file a part
    assert request(svc.url, "GET", path)[2] == content  # once whole: what the process opens once is open
    idle = settled_fd_count(pid)

    download = Download(svc.url, path, receive_buffer=64 << 10)
    assert download.status == 200
    counts = []
    while len(download.body) < len(content) // 2:
        download.read_at_least(len(download.body) + (256 << 10))
        time.sleep(0.02)  # the server finds the client's socket full, and waits
        counts.append(fd_count(pid) - 1)  # less the download's own connection
    print(f"descriptors: {idle} idle, at most {max(counts)} while {parts} parts are downloaded slowly")
    assert max(counts) <= idle + SLACK, f"{max(counts) - idle} more descriptors held by one download"
    if files:
        # a download keeps reading the version it began with: the record deleted meanwhile, the rest still comes
        assert request(svc.url, "DELETE", path)[0] == 204
        assert request(svc.url, "GET", path)[0] == 404
    assert download.finish() == content
    if files:
        assert wait_until(lambda: files_in(svc.data_dir / "blobs") == [])  # and its files go once it is done
    assert settled_fd_count(pid, at_most=idle + SLACK) <= idle + SLACK
