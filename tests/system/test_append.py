"""Append mode (`PUT ...?append=true`) against a real `tornado-records` process, by hand over raw sockets: what
arrived is kept however the request ends, pieces join in the order their first bytes came, readers get one whole
version, and a crash, a shutdown or a full disk lose nothing that reached the service."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest

from support.appender import APPEND, Appender, body_of, receiving
from support.event_schema import conforms
from support.rawhttp import open_event_stream, request, sha256_field
from support.records import EVENT, files_in, record_url, run_on_index, stored_blobs
from support.waiting import wait_until

# --append-join-interval of the tests that wait for a join: what arrives that long after the last join (or the
# request's start) joins the record
JOIN = 0.2


def in_a_file(data: Path, content: bytes) -> bool:
    """Some file in data/blobs holds exactly `content`: an append request's bytes are in its file (what a crash of the
    process keeps)."""
    for path in (data / "blobs").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a file the service removed meanwhile
            if path.read_bytes() == content:
                return True
    return False


def stored_files(data: Path, engine: dict[str, str]) -> tuple[set[str], set[str]]:
    """The blob files on disk, and those the index names."""
    blobs = run_on_index(engine, data, "SELECT blob FROM records")
    named = {part.split(":")[0] for (blob,) in blobs for part in blob.split()}
    assert run_on_index(engine, data, "SELECT count(*) FROM appends") == [(0,)]
    return set(stored_blobs(engine, data)), named


def test_appends_extend_the_record_and_its_validators_cover_the_whole(service, engine) -> None:
    svc = service()
    first = Appender(svc.url)
    first.send(b"hello ")
    answer = first.end()
    assert answer.status == 204 and answer.headers["etag"] == f'"{hashlib.sha256(b"hello ").hexdigest()}"'
    second = Appender(svc.url)
    second.send(b"wor")
    second.send(b"ld")
    answer = second.end()
    assert answer.status == 204 and answer.headers["etag"] == f'"{hashlib.sha256(b"hello world").hexdigest()}"'

    status, headers, body = request(svc.url, "GET", record_url())
    assert status == 200 and body == b"hello world"
    assert headers["ETag"] == answer.headers["etag"]
    assert headers["Repr-Digest"] == sha256_field(b"hello world")
    assert headers["Content-Type"] == "application/octet-stream"
    status, headers, body = request(svc.url, "GET", record_url(), headers={"Range": "bytes=3-7"})
    assert status == 206 and body == b"lo wo" and headers["Content-Range"] == "bytes 3-7/11"  # across the two pieces
    listed = json.loads(request(svc.url, "GET", f"/records/{EVENT}")[2])["records"]
    assert [(r["size"], r["etag"]) for r in listed] == [(11, answer.headers["etag"])]
    on_disk, named = stored_files(svc.data_dir, engine)
    assert on_disk == named and len(on_disk) == 2 and files_in(svc.data_dir / "tmp") == []
    # a plain PUT still replaces the record, whole
    assert request(svc.url, "PUT", record_url() + "?append=false", b"new")[0] == 204
    assert body_of(svc.url) == b"new"
    assert wait_until(lambda: len(stored_blobs(engine, svc.data_dir)) == 1)


def test_an_empty_append_adds_nothing(service, engine) -> None:
    svc = service()
    assert Appender(svc.url).end().status == 204
    assert request(svc.url, "GET", record_url())[0] == 404
    assert request(svc.url, "PUT", APPEND, b"")[0] == 204
    assert request(svc.url, "GET", record_url())[0] == 404 and stored_blobs(engine, svc.data_dir) == {}


def test_bad_append_values_and_digests_in_append_mode_are_refused(service) -> None:
    svc = service()
    status, _, body = request(svc.url, "PUT", record_url() + "?append=yes", b"x")
    assert status == 400 and "append must be true or false" in json.loads(body)["detail"]
    status, _, body = request(svc.url, "PUT", APPEND, b"x", {"Content-Digest": sha256_field(b"x")})
    assert status == 400 and "digest" in json.loads(body)["detail"]
    assert request(svc.url, "GET", record_url())[0] == 404
    assert request(svc.url, "PUT", record_url(), b"old")[0] == 204
    status, _, _ = request(svc.url, "PUT", APPEND, b"x", {"If-None-Match": "*"})
    assert status == 412 and body_of(svc.url) == b"old"


def test_what_arrived_before_the_client_left_is_kept(service, engine) -> None:
    svc = service()
    events = open_event_stream(svc.url)
    for reset in (False, True):
        appender = Appender(svc.url)
        piece = os.urandom(100_000)
        appender.send(piece)
        expected = (body_of(svc.url) or b"") + piece
        assert wait_until(lambda: receiving(svc.url) == [len(piece)])  # the bytes reached the service
        appender.drop(reset)
        assert wait_until(lambda: body_of(svc.url) == expected)
    seen = b""
    while seen.count(b'"upload-interrupted"') < 2:
        seen += events.recv(65536)
    interrupted = [conforms(json.loads(line[6:])) for line in seen.split(b"\n") if b"upload-interrupted" in line]
    assert [(e["data"]["bytes"], e["data"]["reason"]) for e in interrupted] == [(100_000, "client-gone")] * 2
    assert interrupted[-1]["data"]["size"] == 200_000
    on_disk, named = stored_files(svc.data_dir, engine)
    assert on_disk == named


def test_a_stalled_upload_is_ended_by_the_idle_timeout(service) -> None:
    svc = service("--upload-idle-timeout", "1")
    plain = Appender(svc.url, record_url())
    plain.send(b"plain")
    stalled = Appender(svc.url)
    stalled.send(b"kept")
    began = time.monotonic()
    for appender, status, detail in ((plain, 408, "ended as broken"), (stalled, 408, "4 bytes received are kept")):
        answer = appender.answer(timeout=10)
        assert answer.status == status and detail in json.loads(answer.body)["detail"]
        assert answer.headers["connection"] == "close"
    assert time.monotonic() - began < 5
    assert wait_until(lambda: body_of(svc.url) == b"kept")  # the plain upload left nothing


def test_pieces_join_in_the_order_their_first_bytes_came(service) -> None:
    """A connection that died without the service noticing holds the head of the broadcast; the recorder streams on
    a new one. The new one's bytes wait and go after; its answer comes once the old one is found dead."""
    svc = service("--upload-idle-timeout", "2")
    empty = Appender(svc.url)  # Liquidsoap's empty PUT, open from the start: it holds no place
    old = Appender(svc.url)
    old_sent = time.monotonic()  # its last byte: the idle timeout of 2 s counts from a moment after this
    old.send(b"head-of-broadcast;")
    assert wait_until(lambda: 18 in receiving(svc.url))  # it holds the head of the queue
    new = Appender(svc.url)
    new.send(b"after-reconnect;")
    new.send(b"more;")
    new.sock.sendall(b"0\r\n\r\n")
    answer = new.answer(timeout=10)
    assert answer.status == 204
    assert time.monotonic() - old_sent >= 2, "answered before the piece before it had ended"
    assert body_of(svc.url) == b"head-of-broadcast;after-reconnect;more;"
    assert answer.headers["etag"] == f'"{hashlib.sha256(b"head-of-broadcast;after-reconnect;more;").hexdigest()}"'
    assert old.answer().status == 408
    assert empty.answer().status == 408


def test_appends_continue_after_a_replacement_and_a_delete(service, engine) -> None:
    svc = service("--append-join-interval", str(JOIN))
    appender = Appender(svc.url)
    appender.send(b"aaa")
    assert wait_until(lambda: receiving(svc.url) == [3])  # the request has started
    time.sleep(JOIN * 1.5)  # what arrives JOIN after the last join (or the request's start) joins
    appender.send(b"bbb")
    assert wait_until(lambda: body_of(svc.url) == b"aaabbb")
    assert request(svc.url, "PUT", record_url(), b"XYZ")[0] == 204
    appender.send(b"ccc")
    time.sleep(JOIN * 1.5)
    appender.send(b"ddd")
    assert wait_until(lambda: body_of(svc.url) == b"XYZcccddd")
    assert request(svc.url, "DELETE", record_url())[0] == 204
    appender.send(b"eee")
    assert appender.end().status == 204
    assert body_of(svc.url) == b"eee"
    on_disk, named = stored_files(svc.data_dir, engine)
    assert on_disk == named


def test_readers_during_appends_get_one_whole_version(service) -> None:
    svc = service()
    sent = bytearray()
    running = threading.Event()
    running.set()
    wrong: list[str] = []
    reads = [0]

    def read() -> None:
        rng = random.Random()
        while running.is_set():
            ranged = rng.random() < 0.5
            status, headers, body = request(
                svc.url, "GET", record_url(), headers={"Range": "bytes=1000-"} if ranged else {}
            )
            if status == 404:
                continue
            reads[0] += 1
            known = bytes(sent)  # what was sent before the answer was read: the version is a prefix of it
            size = int(headers["Content-Range"].split("/")[1]) if status == 206 else len(body)
            if status == 200 and f'"{hashlib.sha256(body).hexdigest()}"' != headers["ETag"]:
                wrong.append(f"a body of {len(body)} bytes does not have its ETag")
            whole = known[:size]
            if (body != whole[1000:] if status == 206 else body != whole) or size > len(known):
                wrong.append(f"{status} of {size} bytes is not the start of what was sent")

    readers = [threading.Thread(target=read) for _ in range(3)]
    for reader in readers:
        reader.start()
    rng = random.Random(1)
    for _ in range(4):
        appender = Appender(svc.url)
        for _ in range(rng.randint(1, 4)):
            piece = os.urandom(rng.randint(1, 300_000))
            sent += piece
            appender.send(piece)
            time.sleep(rng.random() * 2)
        if rng.random() < 0.5:
            assert appender.end().status == 204
        else:
            assert wait_until(lambda: receiving(svc.url) == [len(appender.sent)])  # all of it reached the service
            appender.drop()
    assert wait_until(lambda: body_of(svc.url) == bytes(sent))
    running.clear()
    for reader in readers:
        reader.join()
    assert not wrong, wrong[:5]
    assert reads[0] > 20


def test_kill_9_during_appends_loses_nothing_that_arrived(service, engine) -> None:
    first = service()  # it makes the data directory (and with a shared index, it is a live process beside the others)
    data = first.data_dir
    if "index" not in engine:  # a service alone on its SQLite index holds the data directory: this one ends
        assert first.stop() == 0
    rng = random.Random(9)
    sent = b""
    for round_ in range(5):
        svc = service(data_dir=data)
        assert body_of(svc.url) == (sent or None)
        appender = Appender(svc.url)
        deadline = time.monotonic() + rng.uniform(0.2, 4)
        while time.monotonic() < deadline:
            piece = os.urandom(rng.randint(1, 64_000))
            appender.send(piece)
            sent += piece
            time.sleep(rng.random() * 0.05)
        assert wait_until(lambda: in_a_file(data, appender.sent))  # the last bytes reached the service's file
        svc.proc.send_signal(signal.SIGKILL)
        svc.proc.wait()
        appender.drop()
    svc = service(data_dir=data)
    assert body_of(svc.url) == sent
    status, headers, _ = request(svc.url, "HEAD", record_url())
    assert headers["ETag"] == f'"{hashlib.sha256(sent).hexdigest()}"'
    # the new process joined what was kept (with a shared index, the live first process may be the one that did)
    assert "joined" in svc.log + (first.log if "index" in engine else "") and "Traceback" not in svc.log
    on_disk, named = stored_files(data, engine)
    assert on_disk == named and files_in(data / "tmp") == []


def test_an_append_cut_off_by_the_shutdown_is_kept(service) -> None:
    svc = service("--shutdown-grace", "1")
    appender = Appender(svc.url)
    appender.send(b"before the stop;")
    assert wait_until(lambda: receiving(svc.url) == [16])  # the bytes reached the service
    svc.proc.send_signal(signal.SIGTERM)
    assert svc.proc.wait(timeout=20) == 0
    appender.drop()
    assert "Traceback" not in svc.log
    again = service(data_dir=svc.data_dir)
    assert body_of(again.url) == b"before the stop;"
    assert "joined" not in again.log  # it joined before the process stopped, not at the next start


def test_a_full_disk_keeps_what_was_written_before_it(small_disk: Path, service) -> None:  # noqa: F811
    data = small_disk / "data"
    svc = service(data_dir=data)
    appender = Appender(svc.url)
    answer = None
    piece = os.urandom(256 * 1024)
    for _ in range(64):  # 16 MiB: twice the disk
        try:
            appender.send(piece)
        except OSError:
            break  # the service answered and stopped reading
    answer = appender.answer()
    assert answer.status == 507, answer.raw[:300]
    body = body_of(svc.url)
    assert body and len(body) > 4 << 20 and appender.sent.startswith(body), len(body or b"")
    assert svc.proc.poll() is None and request(svc.url, "GET", "/ping")[0] == 204
    assert "Traceback" not in svc.log


@pytest.mark.engines("sqlite", "postgresql")  # nginx sends files only (with an object store, the service sends)
def test_nginx_is_handed_only_a_file_that_is_exactly_the_version(service) -> None:
    svc = service("--accel-redirect", "/_blobs/", "--append-join-interval", str(JOIN))
    appender = Appender(svc.url)
    appender.send(b"one")
    assert wait_until(lambda: receiving(svc.url) == [3])  # the request has started
    time.sleep(JOIN * 1.5)  # so "two" arrives JOIN after it and joins
    appender.send(b"two")
    assert wait_until(lambda: request(svc.url, "HEAD", record_url())[0] == 200)
    _, headers, body = request(svc.url, "GET", record_url())  # its file is still being written: sent directly
    assert "X-Accel-Redirect" not in headers and body == b"onetwo"
    assert appender.end().status == 204
    _, headers, body = request(svc.url, "GET", record_url())  # one finished file: nginx may send it
    assert headers["X-Accel-Redirect"].startswith("/_blobs/") and body == b""
    more = Appender(svc.url)
    more.send(b"three")
    assert more.end().status == 204
    _, headers, body = request(svc.url, "GET", record_url())  # two files: sent directly
    assert "X-Accel-Redirect" not in headers and body == b"onetwothree"


OLD_RECORDS_TABLE = (
    "CREATE TABLE records (event TEXT NOT NULL, start TEXT NOT NULL, blob TEXT NOT NULL UNIQUE, type TEXT NOT NULL,"
    " size BIGINT NOT NULL, sha256 TEXT NOT NULL, modified BIGINT NOT NULL, PRIMARY KEY (event, start))"
)


def test_a_record_of_a_hundred_appended_parts_keeps_growing(service, engine) -> None:
    """A record whose content is in many runs (a recorder that reconnected a hundred times) takes every append: its
    list of runs is long (a PostgreSQL index entry holds at most 2704 bytes: no index may be built on it). On
    PostgreSQL, the index is made as versions before this one made it (blob UNIQUE): the service drops that."""
    if "index" in engine:
        run_on_index(engine, Path(), OLD_RECORDS_TABLE)
    svc = service()
    whole = b""
    for index in range(100):
        part = b"%03d-" % index
        status, headers, _ = request(svc.url, "PUT", APPEND, part)
        whole += part
        assert status == 204 and headers["ETag"] == f'"{hashlib.sha256(whole).hexdigest()}"', (index, headers)
    assert body_of(svc.url) == whole
