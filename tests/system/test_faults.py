"""Faults against real `tornado-records` processes: clients that vanish mid-upload, `kill -9` at random moments,
racing uploads, downloads during replacement and deletion, slow clients. No record may be lost or mixed, no file or
descriptor left behind, and nobody else slowed down."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import http.client
import json
import os
import random
import re
import socket
import sqlite3
import statistics
import struct
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from support.rawhttp import Download, chunk, connect, open_event_stream, read_to_end, request, request_head, sha256_hex
from support.records import EVENT, files_in, record_url
from support.waiting import wait_until

PIECE = 64 * 1024


def fd_count(pid: int) -> int:
    """How many file descriptors the process holds."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def steady_fd_count(pid: int) -> int:
    """How many file descriptors the process holds once the count stays the same for half a second."""
    counts = [fd_count(pid)]
    while len(counts) < 5 or len(set(counts[-5:])) > 1:
        time.sleep(0.1)
        counts.append(fd_count(pid))
    return counts[-1]


def etag_of(body: bytes) -> str:
    """The ETag the service gives a record with this content."""
    return f'"{sha256_hex(body)}"'


def close_abruptly(sock: socket.socket, reset: bool) -> None:
    """Close the socket: with a FIN, or with a RST (SO_LINGER 0) as a crashed client's kernel does."""
    if reset:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


# -- clients that vanish -----------------------------------------------------------------------------------------

BODY = os.urandom(96 * 1024)
MOMENTS = ("headers", "middle", "end")


def sent_before_vanishing(moment: str, chunked: bool) -> bytes:
    """The part of BODY's framing a client sends before it vanishes: none, half, or all but the very end."""
    if moment == "headers":
        return b""
    if chunked:
        whole = b"".join(chunk(BODY[i : i + PIECE]) for i in range(0, len(BODY), PIECE)) + b"0\r\n"
        return whole[: len(whole) // 2] if moment == "middle" else whole  # "end": the last CRLF is missing
    return BODY[: len(BODY) // 2] if moment == "middle" else BODY[:-1]


def vanish_during_upload(url: str, path: str, moment: str, chunked: bool, reset: bool) -> None:
    """Start an upload, wait for `100 Continue` (the server has begun it), send part of it, then vanish."""
    framing = {"Transfer-Encoding": "chunked"} if chunked else {"Content-Length": str(len(BODY))}
    with connect(url) as sock:
        sock.sendall(request_head("PUT", path, {**framing, "Expect": "100-continue"}))
        assert sock.recv(64).startswith(b"HTTP/1.1 100"), "the upload did not begin"
        sock.sendall(sent_before_vanishing(moment, chunked))
        close_abruptly(sock, reset)


def test_clients_that_vanish_mid_upload_leave_nothing_and_leak_no_descriptor(service) -> None:
    # no audio analysis: its ffprobe's pipes and the file it reads, open for a moment, are not the uploads' to count
    svc = service("--analysis-workers", "0")
    data = svc.data_dir
    earlier = os.urandom(1 << 20)
    replaced, fresh = record_url(), record_url(start="2024-01-02T00:00:00")
    assert request(svc.url, "PUT", replaced, earlier)[0] == 204
    assert request(svc.url, "GET", replaced)[2] == earlier  # every kind of request has run once before counting
    baseline = steady_fd_count(svc.proc.pid)  # the listening socket, the index (SQLite and its WAL), the log...

    for i in range(1000):
        moment, chunked, reset = MOMENTS[i % 3], bool(i // 3 % 2), bool(i // 6 % 2)
        vanish_during_upload(svc.url, replaced if i // 12 % 2 else fresh, moment, chunked, reset)

    settled = wait_until(lambda: fd_count(svc.proc.pid) == baseline, timeout=10)
    print(f"descriptors: {baseline} before, {fd_count(svc.proc.pid)} after 1000 vanished uploads")
    assert settled, f"{fd_count(svc.proc.pid)} descriptors after 1000 vanished uploads, {baseline} before"
    assert wait_until(lambda: files_in(data / "tmp") == [], timeout=5), files_in(data / "tmp")[:5]
    assert len(files_in(data / "blobs")) == 1
    status, headers, body = request(svc.url, "GET", replaced)
    assert status == 200 and body == earlier and headers["ETag"] == etag_of(earlier)
    assert request(svc.url, "GET", fresh)[0] == 404
    assert "Traceback" not in svc.log
    began = time.monotonic()
    assert svc.stop() == 0 and time.monotonic() - began < 5  # no vanished upload is still counted as in flight
    assert "still in flight" not in svc.log


# -- kill -9 -----------------------------------------------------------------------------------------------------

ABSENT = "absent"
KEYS = [f"2024-03-0{day}T20:00:00" for day in range(1, 5)]


@dataclasses.dataclass
class Possible:
    """What one record may be after a crash: its last acknowledged state, or the outcome of the change in flight
    (each a SHA-256 or ABSENT)."""

    acknowledged: str = ABSENT
    in_flight: str | None = None

    def allowed(self) -> set[str]:
        """The versions the record may have after a crash."""
        return {self.acknowledged} | ({self.in_flight} if self.in_flight else set())


def index_rows(data: Path) -> dict[str, tuple[str, str, int]]:
    """The index as it is on disk: start -> (blob, sha256, size)."""
    conn = sqlite3.connect(f"file:{data / 'records.sqlite3'}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT start, blob, sha256, size FROM records WHERE event = ?", (EVENT,)).fetchall()
    finally:
        conn.close()
    return {start: (blob, sha256, size) for start, blob, sha256, size in rows}


def check_after_restart(url: str, data: Path, possible: dict[str, Possible]) -> dict[str, str]:
    """Assert the data directory is whole and each record is one of its possible versions; returns the versions."""
    assert files_in(data / "tmp") == [], "an unfinished upload survived the start"
    rows = index_rows(data)
    assert set(files_in(data / "blobs")) == {blob for blob, _, _ in rows.values()}, "orphan or missing blob"
    for blob, sha256, size in rows.values():
        content = (data / "blobs" / blob).read_bytes()
        assert len(content) == size and sha256_hex(content) == sha256, f"blob {blob} is not what the index says"
    found = {}
    for start, can_be in possible.items():
        status, headers, body = request(url, "GET", record_url(start=start))
        assert status in (200, 404), status
        found[start] = sha256_hex(body) if status == 200 else ABSENT
        if status == 200:
            assert headers["ETag"] == f'"{found[start]}"' == f'"{rows[start][1]}"'
        assert found[start] in can_be.allowed(), f"{start} is neither its acknowledged version nor the one in flight"
    return found


def leftovers_removed(log: str) -> tuple[int, int]:
    """How many unfinished uploads and orphan blobs a service says it removed at start."""
    found = re.search(r"removed (\d+) unfinished upload\(s\) and (\d+) orphan blob\(s\)", log)
    return (int(found.group(1)), int(found.group(2))) if found else (0, 0)


def send_upload(url: str, path: str, body: bytes, chunked: bool) -> int:
    """PUT the body in pieces (chunked or with Content-Length); returns the status."""
    framing = {"Transfer-Encoding": "chunked"} if chunked else {"Content-Length": str(len(body))}
    with connect(url) as sock:
        sock.sendall(request_head("PUT", path, {**framing, "Connection": "close"}))
        for i in range(0, len(body), PIECE):
            piece = body[i : i + PIECE]
            sock.sendall(chunk(piece) if chunked else piece)
        if chunked:
            sock.sendall(b"0\r\n\r\n")
        return int(read_to_end(sock).split(b" ", 2)[1])


def change_until_killed(url: str, start: str, can_be: Possible, rng: random.Random, wrong: list[str]) -> None:
    """Upload, replace and delete one record, one change at a time, noting each outcome, until the server dies;
    an answer other than 204 (or 404 to a delete) is added to `wrong`."""
    while True:
        deleting = rng.random() < 0.3
        body = b"" if deleting else rng.randbytes(rng.choice([0, 1, 1000, 300_000, 2_000_000, 4_000_000]))
        can_be.in_flight = ABSENT if deleting else sha256_hex(body)
        try:
            if deleting:
                status = request(url, "DELETE", record_url(start=start))[0]
            else:
                status = send_upload(url, record_url(start=start), body, chunked=rng.random() < 0.5)
        except (OSError, http.client.HTTPException, IndexError, ValueError):
            return  # the server was killed: this change stays in flight
        if not (status == 204 or (deleting and status == 404)):
            wrong.append(f"{'DELETE' if deleting else 'PUT'} {start}: {status}")
        can_be.acknowledged, can_be.in_flight = can_be.in_flight, None


def kill_during_changes(service, keys: list[str], rounds: int) -> tuple[dict[str, int], list[str]]:  # noqa: ANN001
    """Change each record of `keys` in a thread of its own (upload, replace, delete, one change at a time) and
    kill -9 the service at a random moment, `rounds` times; after each restart every record must be its
    acknowledged version or the one in flight (check_after_restart). Returns how many changes in flight at a kill
    kept the old version and the new one, and the answers that were wrong."""
    seed = int(os.environ.get("RECORDS_TEST_SEED", time.time_ns() % 1_000_000))
    print(f"kill -9 test seed: {seed} (set RECORDS_TEST_SEED to repeat)")
    rng = random.Random(seed)
    possible = {start: Possible() for start in keys}
    outcomes = {"old": 0, "new": 0}
    wrong: list[str] = []
    cleaned = [0, 0]
    for _ in range(rounds):
        svc = service()
        found = check_after_restart(svc.url, svc.data_dir, possible)
        cleaned = [a + b for a, b in zip(cleaned, leftovers_removed(svc.log))]
        for start, can_be in possible.items():
            if can_be.in_flight and can_be.in_flight != can_be.acknowledged:
                outcomes["new" if found[start] == can_be.in_flight else "old"] += 1
            possible[start] = Possible(acknowledged=found[start])
        workers = [
            threading.Thread(
                target=change_until_killed, args=(svc.url, start, can_be, random.Random(rng.random()), wrong)
            )
            for start, can_be in possible.items()
        ]
        for worker in workers:
            worker.start()
        time.sleep(rng.uniform(0.05, 0.8))
        svc.proc.kill()
        svc.proc.wait()
        for worker in workers:
            worker.join(timeout=30)
    svc = service()
    check_after_restart(svc.url, svc.data_dir, possible)
    print(f"changes in flight at a kill: {outcomes['old']} kept the old version, {outcomes['new']} the new one")
    print(f"removed at the restarts: {cleaned[0]} unfinished uploads, {cleaned[1]} orphan blobs")
    return outcomes, wrong


def test_kill_9_at_random_moments_leaves_each_record_whole_old_or_new(service) -> None:
    outcomes, wrong = kill_during_changes(service, KEYS, rounds=25)
    assert wrong == []
    assert outcomes["old"] + outcomes["new"] > 0, "no kill landed during a change"


def test_kill_9_during_many_changes_at_once_keeps_every_acknowledged_one(service) -> None:
    # 40 records changed at once: their commits end together and share index transactions (storage/commits.py),
    # and each 2xx must still mean that its change is on the disk
    keys = [f"2024-04-{day:02d}T{hour:02d}:00:00" for day in range(1, 11) for hour in (6, 12, 18, 23)]
    outcomes, wrong = kill_during_changes(service, keys, rounds=8)
    assert wrong == []
    assert outcomes["old"] + outcomes["new"] > 0, "no kill landed during a change"


# -- racing uploads, downloads during changes --------------------------------------------------------------------


def in_parallel(work: Callable[[int], object], count: int) -> list:
    """Run work(0) ... work(count - 1) in threads released at the same moment; returns their results in order."""
    gate = threading.Barrier(count)
    results: list = [None] * count

    def run(i: int) -> None:
        gate.wait()
        results[i] = work(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def committed_etags(stream: socket.socket, count: int) -> list[str]:
    """The ETags of the next `count` record-created or record-updated events of an /sse stream, in order."""
    received, etags = b"", []
    while len(etags) < count:
        received += stream.recv(65536)
        events = [json.loads(line) for line in re.findall(rb"^data: (.*)$", received, re.MULTILINE)]
        etags = [e["data"]["record"]["etag"] for e in events if e["type"] in ("record-created", "record-updated")]
    return etags


def test_racing_uploads_to_one_record_leave_exactly_one_of_them_whole(service) -> None:
    svc = service()
    stream = open_event_stream(svc.url)
    for _ in range(3):
        bodies = [os.urandom(4 << 20) for _ in range(6)]
        statuses = in_parallel(lambda i: send_upload(svc.url, record_url(), bodies[i], chunked=i % 2 == 0), 6)
        assert statuses == [204] * 6
        status, headers, body = request(svc.url, "GET", record_url())
        assert status == 200 and body in bodies and headers["ETag"] == etag_of(body)
        assert len(files_in(svc.data_dir / "blobs")) == 1 and files_in(svc.data_dir / "tmp") == []
        committed = committed_etags(stream, 6)
        assert sorted(committed) == sorted(map(etag_of, bodies))
        assert committed[-1] == headers["ETag"]  # the last to finish won
    stream.close()


def test_a_download_keeps_its_version_through_a_replacement_and_a_delete(service) -> None:
    svc = service()
    first, second = os.urandom(16 << 20), os.urandom(16 << 20)
    assert request(svc.url, "PUT", record_url(), first)[0] == 204
    before_replacement = Download(svc.url, record_url())
    before_replacement.read_at_least(1 << 20)
    assert request(svc.url, "PUT", record_url(), second)[0] == 204
    before_delete = Download(svc.url, record_url())
    before_delete.read_at_least(1 << 20)
    assert request(svc.url, "DELETE", record_url())[0] == 204
    assert request(svc.url, "GET", record_url())[0] == 404

    assert before_replacement.finish() == first and before_replacement.headers["etag"] == etag_of(first)
    assert before_delete.finish() == second and before_delete.headers["etag"] == etag_of(second)
    assert files_in(svc.data_dir / "blobs") == [] and files_in(svc.data_dir / "tmp") == []


def read_while(url: str, running: threading.Event, versions: set[str], seen: list[str]) -> None:
    """Download the record again and again while `running`; note each answer: its version, 404, or what is wrong."""
    while running.is_set():
        try:
            status, headers, body = request(url, "GET", record_url())
        except (OSError, http.client.HTTPException) as exc:
            seen.append(f"wrong: {exc!r}")
            continue
        if status == 404:
            seen.append(ABSENT)
        elif status != 200 or headers["ETag"] != etag_of(body) or sha256_hex(body) not in versions:
            seen.append(f"wrong: {status}, {len(body)} bytes, ETag {headers['ETag']} but {etag_of(body)}")
        else:
            seen.append(sha256_hex(body))


def test_concurrent_downloads_during_replacements_and_a_delete_each_get_one_whole_version(service) -> None:
    svc = service()
    bodies = [os.urandom(4 << 20) for _ in range(12)]
    versions = {sha256_hex(body) for body in bodies}
    running, seen = threading.Event(), [[] for _ in range(4)]
    running.set()
    assert request(svc.url, "PUT", record_url(), bodies[0])[0] == 204
    readers = [threading.Thread(target=read_while, args=(svc.url, running, versions, answers)) for answers in seen]
    for reader in readers:
        reader.start()
    for body in bodies[1:]:
        assert request(svc.url, "PUT", record_url(), body)[0] == 204
    assert request(svc.url, "DELETE", record_url())[0] == 204
    assert wait_until(lambda: all(ABSENT in answers for answers in seen), timeout=30)  # each reader's next download
    running.clear()
    for reader in readers:
        reader.join(timeout=30)
    answers = [answer for reader in seen for answer in reader]
    print(f"{len(answers)} downloads saw {len(set(answers) - {ABSENT})} versions, then the deletion")
    assert [answer for answer in answers if answer.startswith("wrong")] == []
    assert len(set(answers) - {ABSENT}) >= 2, "no download overlapped a replacement"
    after_deletion = [reader[reader.index(ABSENT) :] for reader in seen]
    assert all(set(answers) == {ABSENT} for answers in after_deletion), "a download after the deletion found the record"


# -- slow clients ------------------------------------------------------------------------------------------------


def latencies(url: str, paths: list[str], until: Callable[[], bool] = lambda: True, least: int = 50) -> list[float]:
    """Seconds that GETs took, cycling through `paths`, each on a new connection, 20 ms apart: at least `least` of
    them, and more until `until()` is true (for 60 s at most)."""
    times: list[float] = []
    deadline = time.monotonic() + 60
    while len(times) < least or not (until() or time.monotonic() > deadline):
        began = time.perf_counter()
        status = request(url, "GET", paths[len(times) % len(paths)])[0]
        times.append(time.perf_counter() - began)
        assert status in (200, 204)
        time.sleep(0.02)
    return times


WORDY_TYPE = "audio/ogg; comment=" + "x" * 900  # every event about the upload carries it: 2.5 KB of events an upload


def upload_while(url: str, running: threading.Event) -> None:
    """Replace a small record again and again while `running`, so that events flow to /sse subscribers."""
    while running.is_set():
        request(url, "PUT", record_url(start="2024-06-01T00:00:00"), os.urandom(100), {"Content-Type": WORDY_TYPE})


def read_slowly(download: Download, running: threading.Event) -> None:
    """Read 4 KiB of the download every 100 ms while `running`."""
    while running.is_set() and download.read(4096):
        time.sleep(0.1)


@contextlib.contextmanager
def in_background(*work: Callable[[threading.Event], None]) -> Iterator[None]:
    """Run each `work(running)` in a thread during the block; then clear `running` and wait for the threads."""
    running = threading.Event()
    running.set()
    threads = [threading.Thread(target=job, args=(running,)) for job in work]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        running.clear()
        for thread in threads:
            thread.join(timeout=30)


def test_a_slow_downloader_and_a_slow_subscriber_do_not_slow_anyone_else(service) -> None:
    svc = service()
    large, small = record_url(start="2024-05-01T00:00:00"), record_url(start="2024-05-02T00:00:00")
    assert send_upload(svc.url, large, os.urandom(1 << 20) * 200, chunked=False) == 204
    assert request(svc.url, "PUT", small, os.urandom(16 * 1024))[0] == 204
    os.sync()  # the disk writes back the 200 MiB now, not while latencies are measured
    events = functools.partial(upload_while, svc.url)
    with in_background(events, events, events):
        baseline = latencies(svc.url, ["/ping", small])

    download = Download(svc.url, large, receive_buffer=4096)
    subscriber = connect(svc.url, receive_buffer=4096)
    subscriber.sendall(request_head("GET", "/sse", {}))  # and never reads
    # The kernel takes up to 4 MiB the subscriber does not read (net.ipv4.tcp_wmem), then the hub queues 1 MiB more
    # before it drops the subscriber: that takes 10 to 30 s.
    dropped = "dropping an event-stream subscriber"
    with in_background(events, events, events, functools.partial(read_slowly, download)):
        slowed = latencies(svc.url, ["/ping", small], until=lambda: dropped in svc.log)

    print(
        f"latency without slow clients: median {statistics.median(baseline) * 1000:.1f} ms, "
        f"max {max(baseline) * 1000:.1f} ms; with them: median {statistics.median(slowed) * 1000:.1f} ms, "
        f"max {max(slowed) * 1000:.1f} ms, {len(slowed)} requests; the slow download got {len(download.body)} bytes"
    )
    assert max(slowed) < 0.5 and statistics.median(slowed) < 0.05
    assert statistics.median(slowed) < 3 * statistics.median(baseline) + 0.005
    assert download.status == 200 and 0 < len(download.body) < 200 << 20  # still downloading
    assert dropped in svc.log, "the subscriber never fell behind by the hub's bound"
    subscriber.close()
    download.sock.close()


def test_a_download_that_stalls_and_resumes_gets_every_byte_in_order(service) -> None:
    """Downloads go out with sendfile, and through Tornado's stream whenever the client's socket is full: a client
    that keeps stalling gets the same bytes as one that reads at once, for a record of several runs and a Range."""
    svc = service()
    path = record_url(start="2024-05-03T00:00:00")
    first, appended = os.urandom(24 << 20), os.urandom(3 << 20)
    assert send_upload(svc.url, path, first, chunked=True) == 204
    assert request(svc.url, "PUT", path + "?append=true", appended)[0] == 204
    content = first + appended
    download = Download(svc.url, path, receive_buffer=64 * 1024)
    while download.read(256 * 1024):
        if len(download.body) < (8 << 20):
            time.sleep(0.002)  # the server finds the socket full, again and again
    assert download.status == 200 and download.body == content
    status, headers, body = request(svc.url, "GET", path, headers={"Range": f"bytes={(24 << 20) - 5}-{(24 << 20) + 4}"})
    assert status == 206 and body == content[(24 << 20) - 5 : (24 << 20) + 5]
