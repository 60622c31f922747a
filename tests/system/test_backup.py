"""`tornado-records backup DEST` of a live data directory, while plain uploads and appends run, and a service on the
copy: every record of the copy is a version that existed, whole, with its ETag. Real processes and filesystems."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from support.appender import Appender
from support.commands import check, fill, index_rows, listing, run
from support.rawhttp import request
from support.records import EVENT, files_in, record_url
from support.service import COMMAND
from support.waiting import wait_until


def backup(data: Path, dest: Path):  # noqa: ANN201
    return run("backup", str(dest), "--data-dir", str(data))


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator:
    """`tmpfs(size)` mounts a tmpfs of that size (such as "64m") under tmp_path (root only); unmounted at the end."""
    if os.geteuid() != 0:
        message = "mounting a tmpfs needs root"
        if os.environ.get("RECORDS_TEST_REQUIRE_ALL"):
            pytest.fail(message + " and RECORDS_TEST_REQUIRE_ALL is set")
        pytest.skip(message)
    mounts: list[Path] = []

    def mount(size: str) -> Path:
        mounts.append(tmp_path / f"tmpfs{len(mounts)}")
        mounts[-1].mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mounts[-1])], check=True)
        return mounts[-1]

    yield mount
    for path in mounts:
        if subprocess.run(["umount", str(path)]).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=True)


def records_of(url: str) -> dict[str, tuple[bytes, str]]:
    """Every record of EVENT that the service at url serves: start -> (content, ETag)."""
    listed = json.loads(request(url, "GET", f"/records/{EVENT}?limit=1000")[2])["records"]
    served = {}
    for record in listed:
        status, headers, body = request(url, "GET", record_url(start=record["start"]))
        assert status == 200
        assert headers["ETag"] == record["etag"] == f'"{hashlib.sha256(body).hexdigest()}"'  # whole, its own ETag
        served[record["start"]] = (body, headers["ETag"])
    return served


def joined_appends(url: str) -> list[dict]:
    """The append requests in flight (GET /uploads) whose bytes have joined their record at least once."""
    uploads = json.loads(request(url, "GET", "/uploads")[2])["uploads"]
    return [u for u in uploads if u["mode"] == "append" and u["state"] == "receiving" and u["size"] is not None]


def grown(before: dict[str, tuple[int, int]], now: dict[str, tuple[int, int]]) -> bool:
    """Whether a file of the listing `before` is larger in the listing `now` (see test_check.listing)."""
    return any(name in now and now[name][0] > size for name, (size, _) in before.items())


def named_sizes(data: Path) -> dict[str, int]:
    """The size that the index of `data` gives each file it names: a whole file's record size, or its last run's end."""
    sizes: dict[str, int] = {}
    for blob, size in index_rows(data, "SELECT blob, size FROM records"):
        if ":" not in blob:
            sizes[blob] = size
        for run_ in blob.split() if ":" in blob else []:
            name, offset, length = run_.split(":")
            sizes[name] = max(sizes.get(name, 0), int(offset) + int(length))
    return sizes


class Traffic:
    """Plain uploads replacing records, and appends streaming into others (one broken off and resumed), until stop."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.uploaded: dict[str, set[str]] = {}  # start -> ETags of every body PUT to it
        self.sent: dict[str, bytes] = {}  # start -> every byte the append requests sent
        self.stopping = threading.Event()
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self.upload)]
        self.threads += [threading.Thread(target=self.append, args=(f"2024-03-0{n}T00:00:00",)) for n in (1, 2)]
        for thread in self.threads:
            thread.start()

    def upload(self) -> None:
        while not self.stopping.is_set():
            for day in range(1, 5):
                start, body = f"2024-02-0{day}T00:00:00", os.urandom(200_000 * day)
                self.uploaded.setdefault(start, set()).add(f'"{hashlib.sha256(body).hexdigest()}"')
                if (status := request(self.url, "PUT", record_url(start=start), body)[0]) != 204:
                    self.failures.append(f"PUT {status}")

    def append(self, start: str) -> None:
        self.sent[start] = b""
        while not self.stopping.is_set():
            appender = Appender(self.url, record_url(start=start) + "?append=true")
            until = time.monotonic() + 6  # joins its record every 3 s while it streams
            while not self.stopping.is_set() and time.monotonic() < until:
                data = os.urandom(32 * 1024)
                appender.send(data)
                self.sent[start] += data
                time.sleep(0.02)
            if (status := appender.end().status) != 204:
                self.failures.append(f"append {status}")

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join()


def test_a_backup_of_a_live_directory_is_served_as_it_was(service, tmp_path: Path) -> None:
    svc = service()
    seeded = fill(svc)
    traffic = Traffic(svc.url)
    dest = tmp_path / "backup"
    try:
        assert wait_until(lambda: len(joined_appends(svc.url)) == 2)  # appends have joined their records, and stream on
        result = backup(svc.data_dir, dest)
        copied, source = listing(dest), listing(svc.data_dir / "blobs")
        assert wait_until(lambda: grown(source, listing(svc.data_dir / "blobs")))  # the appends' files grow on
    finally:
        traffic.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == "" and len(result.stdout.splitlines()) == 1
    assert result.stdout.startswith("backed up ") and " files linked, " in result.stdout
    assert traffic.failures == []
    assert listing(dest) == copied  # what the service still does to its own directory is not in the copy
    assert index_rows(dest, "SELECT count(*) FROM appends") == [(0,)]
    assert sorted(path.name for path in dest.iterdir()) == ["blobs", "records.sqlite3", "tmp"]

    blobs, source_blobs = dest / "blobs", svc.data_dir / "blobs"
    named = named_sizes(dest)
    assert sorted(named) == sorted(path.name for path in blobs.iterdir())  # exactly the files the copy names
    for name, size in named.items():
        assert (blobs / name).stat().st_size == size  # not one byte more: nginx may send a file as it is
    linked = {name for name in named if (source_blobs / name).exists() and (source_blobs / name).samefile(blobs / name)}
    for start in seeded:  # records that did not change: their files are hard links, not copies
        (blob,) = index_rows(dest, f"SELECT blob FROM records WHERE start = '{start}'")[0]
        assert all(run_.split(":")[0] in linked for run_ in blob.split())
    copied_files = {name for name in named if (source_blobs / name).exists()} - linked
    assert len(copied_files) == 2  # the files still written by the two appends: copied, up to what the copy names
    assert ", 2 copied (" in result.stdout
    assert list((dest / "tmp").iterdir()) == []
    assert check(dest).returncode == 0

    expected = {start: (content, f'"{hashlib.sha256(content).hexdigest()}"') for start, content in seeded.items()}
    copy = service(data_dir=dest)
    served = records_of(copy.url)
    assert {start: served[start] for start in seeded} == expected
    for start, (body, etag) in served.items():
        if start in traffic.uploaded:
            assert etag in traffic.uploaded[start]  # one whole version that was uploaded
        elif start in traffic.sent:
            assert body and traffic.sent[start].startswith(body)  # what had joined by then, in order
        else:
            assert start in seeded
    assert set(traffic.sent) <= set(served) and len(served) >= len(seeded) + 2
    assert "Traceback" not in copy.log and "removed" not in copy.log  # nothing to tidy in the copy


def test_a_backup_to_another_filesystem_copies_the_files(tmpfs, service, tmp_path: Path) -> None:
    svc = service("--append-join-interval", "0.5")
    seeded = fill(svc)
    appender = Appender(svc.url, record_url(start="2024-03-01T00:00:00") + "?append=true")
    deadline = time.monotonic() + 30
    while not joined_appends(svc.url) and time.monotonic() < deadline:  # until what arrived has joined the record
        appender.send(b"live ")  # (0.5 s after the request began), and its file is still being written
        time.sleep(0.2)
    assert joined_appends(svc.url)
    dest = tmpfs("64m") / "backup"
    result = backup(svc.data_dir, dest)
    appender.send(b"and more")
    assert appender.end().status == 204
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 files linked, 5 copied " in result.stdout
    for path in (dest / "blobs").iterdir():
        assert path.stat().st_nlink == 1 and path.stat().st_dev != (svc.data_dir / "blobs").stat().st_dev
    for start in ("2024-01-01T00:00:00", "2024-01-02T00:00:00"):  # nginx sends the file's mtime as Last-Modified
        (name,) = index_rows(dest, f"SELECT blob FROM records WHERE start = '{start}'")[0]
        assert (dest / "blobs" / name).stat().st_mtime == (svc.data_dir / "blobs" / name).stat().st_mtime
    copy = service(data_dir=dest)
    served = {start: body for start, (body, _) in records_of(copy.url).items()}
    live = served.pop("2024-03-01T00:00:00")
    assert served == seeded and live and appender.sent.startswith(live) and set(live.split(b"live ")) == {b""}

    # a DEST too small for the copies: one line, and nothing is left of the attempt
    small = tmpfs("1m") / "backup"
    result = backup(svc.data_dir, small)
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tornado-records backup: error: the backup failed: No space left")
    assert not small.exists()


def test_a_bad_destination_or_source_fails_with_one_line(service, tmp_path: Path) -> None:
    svc = service()
    fill(svc)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep").write_text("mine")
    (tmp_path / "file").write_text("a file")
    cases = [
        (svc.data_dir, tmp_path / "full", "is not a new or empty directory"),
        (svc.data_dir, tmp_path / "file", "is not a new or empty directory"),
        (svc.data_dir, svc.data_dir / "copy", "is inside the data directory"),
        (svc.data_dir, tmp_path / "no" / "such" / "dir", "cannot make"),
        (tmp_path / "nothing", tmp_path / "new", "is not a directory"),
        (tmp_path / "full", tmp_path / "new", "is not a data directory"),
    ]
    for data, dest, says in cases:
        before = listing(tmp_path)
        result = backup(data, dest)
        assert result.returncode == 1, (dest, result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("tornado-records backup: error: ") and says in lines[0], lines
        assert "Traceback" not in result.stderr
        assert {k: v for k, v in listing(tmp_path).items() if "records.sqlite3-" not in k} == {
            k: v for k, v in before.items() if "records.sqlite3-" not in k
        }
    assert (tmp_path / "full" / "keep").read_text() == "mine"
    result = run("backup")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1 and "DEST" in result.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    assert backup(svc.data_dir, empty).returncode == 0  # an empty directory will do
    assert svc.proc.poll() is None


def test_records_replaced_and_deleted_while_a_paced_backup_copies_are_taken_again(tmpfs, service) -> None:
    svc = service()
    starts = [f"2024-04-{day:02}T00:00:00" for day in range(1, 21)]
    bodies = {start: os.urandom(256 * 1024) for start in starts}
    for start, body in bodies.items():
        assert request(svc.url, "PUT", record_url(start=start), body)[0] == 204
    dest = tmpfs("64m") / "backup"
    command = [*COMMAND, "backup", str(dest), "--data-dir", str(svc.data_dir), "--rate", "1M"]  # 5 MiB: 5 s
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        # the backup has taken its snapshot of the index once it copies the first record's file: the first records
        # are copied, in the order of their starts, and the later ones wait (a fixed 0.5 s was too short for the
        # command's start on a busy machine)
        assert wait_until(lambda: files_in(dest / "blobs"), timeout=30)
        for start in starts[10:15]:
            bodies[start] = os.urandom(256 * 1024)
            assert request(svc.url, "PUT", record_url(start=start), bodies[start])[0] == 204
        for start in starts[15:17]:
            assert request(svc.url, "DELETE", record_url(start=start))[0] == 204
            del bodies[start]
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and err == "", out + err
    assert "(2 snapshots of the index: records changed meanwhile)" in out  # the files of the first had gone
    assert check(dest).returncode == 0
    copy = service(data_dir=dest)
    served = records_of(copy.url)
    assert {start: body for start, (body, _) in served.items()} == bodies
