"""`tornado-records check` as an operator runs it, on a stopped and on a live data directory, and what a download of
a damaged record answers: real processes, real files."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path

from support.appender import Appender
from support.commands import check, fill, index_rows, listing, run
from support.rawhttp import request
from support.records import EVENT, record_url
from support.waiting import wait_until

OLD = time.time() - 3600  # an hour ago: older than check's grace for files that are not named yet


def file_of(data: Path, start: str) -> Path:
    """The (first) blob file of the record of EVENT at start."""
    (blob,) = index_rows(data, f"SELECT blob FROM records WHERE start = '{start}'")[0]
    return data / "blobs" / blob.split(":")[0]


def replace_file(path: Path, content: bytes) -> None:
    """Give a blob file other content, as a disk's damage would (a new inode: the backup tests' links stay whole)."""
    path.unlink(missing_ok=True)
    path.write_bytes(content)


def test_check_finds_each_kind_of_damage_and_changes_nothing(service, tmp_path: Path) -> None:
    svc = service()
    contents = fill(svc)
    assert len(index_rows(svc.data_dir, "SELECT blob FROM records WHERE blob LIKE '% %'")) == 1  # several runs
    assert svc.stop() == 0
    data = svc.data_dir

    before = listing(data)
    result = check(data)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [result.stdout.strip()]  # the summary only
    size = sum(map(len, contents.values()))
    assert result.stdout.startswith("checked 3 records and 4 files in ") and f"read {size} bytes" in result.stdout
    assert "0 missing, 0 truncated, 0 damaged, 0 orphaned, 0 unreadable: healthy" in result.stdout
    assert listing(data) == before  # nothing written, not even SQLite's -wal and -shm beside the index
    assert result.stderr == ""

    def damaged(kind: str, *mentions: str) -> None:
        result = check(data)
        assert result.returncode == 1, result.stdout + result.stderr
        problems, summary = result.stdout.splitlines()[:-1], result.stdout.splitlines()[-1]
        assert len(problems) == 1 and problems[0].startswith(f"{kind}: "), result.stdout
        for text in mentions:
            assert text in problems[0]
        assert f"1 {kind}" in summary and summary.endswith(": problems")
        assert "Traceback" not in result.stdout + result.stderr

    plain = file_of(data, "2024-01-02T00:00:00")
    original = plain.read_bytes()
    replace_file(plain, original[:-1])
    damaged("truncated", record_url(start="2024-01-02T00:00:00"), f"blobs/{plain.name} is {len(original) - 1} bytes")
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0x10
    replace_file(plain, bytes(flipped))
    damaged("damaged", record_url(start="2024-01-02T00:00:00"), "SHA-256", hashlib.sha256(original).hexdigest())
    replace_file(plain, original)

    run_file = file_of(data, "2024-01-03T00:00:00")  # the first run of the appended record
    kept = run_file.read_bytes()
    run_file.unlink()
    damaged("missing", record_url(start="2024-01-03T00:00:00"), f"blobs/{run_file.name} does not exist")
    replace_file(run_file, kept[:-10])
    damaged("truncated", record_url(start="2024-01-03T00:00:00"), f"blobs/{run_file.name}")
    replace_file(run_file, kept + b"more")  # a run's file may be longer than the runs: an append writes on
    assert check(data).returncode == 0
    replace_file(run_file, kept)

    orphan = data / "blobs" / "0123456789abcdef0123456789abcdef"
    orphan.write_bytes(b"left behind")
    assert check(data).returncode == 0  # just written: it may be an upload being committed
    os.utime(orphan, (OLD, OLD))
    damaged("orphaned", f"blobs/{orphan.name}", "11 bytes")
    orphan.unlink()

    before = listing(data)
    assert check(data).returncode == 0
    assert listing(data) == before
    svc = service()  # and the service still serves the directory as it was
    for start, content in contents.items():
        assert request(svc.url, "GET", record_url(start=start))[2] == content


def test_check_beside_a_live_service_reports_nothing_and_disturbs_nothing(service) -> None:
    svc = service()
    fill(svc)
    for day in range(4, 12):  # 4 to 7 are replaced, 11 deleted and made again, while check runs; 8 to 10 stay
        size = (3 << 20) if 8 <= day <= 10 else (1 << 20)
        assert request(svc.url, "PUT", record_url(start=f"2024-01-{day:02}T00:00:00"), os.urandom(size))[0] == 204
    stop = threading.Event()
    failures: list[str] = []
    counts = {"replaced": 0, "deleted": 0, "read": 0}

    def replace_and_delete() -> None:  # old versions' files are removed under the check
        while not stop.is_set():
            for day in range(4, 8):
                status = request(svc.url, "PUT", record_url(start=f"2024-01-{day:02}T00:00:00"), os.urandom(1 << 20))[0]
                counts["replaced"] += 1
                if status != 204:
                    failures.append(f"PUT {status}")
            status = request(svc.url, "DELETE", record_url(start="2024-01-11T00:00:00"))[0]
            request(svc.url, "PUT", record_url(start="2024-01-11T00:00:00"), os.urandom(1 << 20))
            counts["deleted"] += 1

    def read() -> None:
        while not stop.is_set():
            for path in ("/ping", record_url(start="2024-01-08T00:00:00"), f"/records/{EVENT}"):
                status = request(svc.url, "GET", path)[0]
                counts["read"] += 1
                if status not in (200, 204):
                    failures.append(f"GET {path} {status}")

    appender = Appender(svc.url, record_url(start="2024-01-03T00:00:00") + "?append=true")  # a live recording

    def record() -> None:
        while not stop.is_set():
            appender.send(os.urandom(64 * 1024))
            time.sleep(0.05)

    workers = [threading.Thread(target=work) for work in (replace_and_delete, read, record)]
    for worker in workers:
        worker.start()
    try:
        assert wait_until(lambda: counts["replaced"] and counts["deleted"] and counts["read"])  # changes under way
        result = check(svc.data_dir, "--rate", "2M")  # 10 MiB at least: seconds of changes beside it
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    assert appender.end().status == 204
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("0 missing, 0 truncated, 0 damaged, 0 orphaned, 0 unreadable: healthy")
    seconds = float(result.stdout.split(" in ")[1].split(" s:")[0])
    assert seconds > 4  # the reading was paced
    assert failures == [] and counts["replaced"] > 4 and counts["read"] > 20
    assert svc.proc.poll() is None
    assert "ERROR" not in svc.log and "Traceback" not in svc.log


def test_check_of_what_is_not_a_data_directory_fails_with_one_line(tmp_path: Path) -> None:
    for target, says in [(tmp_path / "nothing", "is not a directory"), (tmp_path, "is not a data directory: it has no records.sqlite3")]:
        result = check(target)
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [f"tornado-records check: error: {target} {says}"]
    (tmp_path / "records.sqlite3").write_bytes(b"not a database at all, but long enough to look like one" * 100)
    result = check(tmp_path)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "records.sqlite3" in result.stderr and "Traceback" not in result.stderr
    result = run("check", "--rate", "fast")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1 and "--rate" in result.stderr


def test_a_download_of_a_damaged_record_is_a_500_that_the_log_explains(service) -> None:
    svc = service()
    fill(svc)
    for start, cut in [("2024-01-01T00:00:00", 1000), ("2024-01-03T00:00:00", 5)]:
        path = file_of(svc.data_dir, start)
        size = path.stat().st_size
        os.truncate(path, size - cut)
        status, headers, body = request(svc.url, "GET", record_url(start=start))
        assert status == 500 and headers["Content-Type"] == "application/json"
        assert json.loads(body) == {"status_code": 500, "detail": "Internal server error"}
        # the log is read by a thread of the test: its line may come a moment after the answer
        line = wait_until(lambda: next((l for l in svc.lines if "is damaged" in l and start in l), None))  # noqa: E741
        assert line, "no log line explains the 500"
        assert f"event {EVENT} starting at {start}" in line and f"blobs/{path.name} is {size - cut} bytes" in line
        assert "ERROR" in line
    (file_of(svc.data_dir, "2024-01-02T00:00:00")).unlink()
    assert request(svc.url, "GET", record_url(start="2024-01-02T00:00:00"))[0] == 500
    assert wait_until(
        lambda: any("2024-01-02T00:00:00 is damaged: its file blobs/" in line and "is missing" in line for line in svc.lines)
    )
    assert "Traceback" not in svc.log
    assert svc.proc.poll() is None and request(svc.url, "GET", "/ping")[0] == 204
