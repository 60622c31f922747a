"""`--processes N` on the default SQLite index: the processes serving one data directory share it as processes on
PostgreSQL do (what one stores, another lists, sends and announces; racing writers leave one whole winner; a live
recording goes on through another process), and the parent keeps them running (one killed with SIGKILL is replaced,
nothing acknowledged lost) and ends them as one process ends.

Two services started by hand on one data directory, each with --processes 2, are sure to answer through different
processes (one port each): the tests that need "the other process" use them."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from support.appender import Appender, body_of
from support.races import race_writers
from support.rawhttp import request
from support.records import EVENT, files_in, record_url, run_on_index
from support.sse import events_of
from support.waiting import wait_until

UPLOADS_EVENTS_ONLY = ("--analysis-workers", "0")  # no record-analyzed, which comes whenever an analysis ends


def two_services(service, *flags: str) -> list:  # noqa: ANN001
    """Two services on one data directory, on ports of their own, each of two processes."""
    return [service("--processes", "2", *flags) for _ in range(2)]


def children(pid: int) -> set[int]:
    """The processes whose parent is `pid`."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def serving(svc) -> set[int]:  # noqa: ANN001
    """The serving processes of a service (once it has two)."""
    assert wait_until(lambda: len(children(svc.proc.pid)) == 2)
    return children(svc.proc.pid)


def test_what_one_process_stores_the_other_lists_sends_announces_and_deletes(service) -> None:
    a, b = two_services(service, *UPLOADS_EVENTS_ONLY)
    seen_a: list = []
    seen_b: list = []
    expected = 2 * 3 + 1  # upload-started and record-created each, then record-deleted
    readers = [events_of(a.url, expected, seen_a), events_of(b.url, expected, seen_b)]
    bodies = [os.urandom(100_000 * (n + 1)) for n in range(3)]
    for n, body in enumerate(bodies):
        through = (a, b)[n % 2]
        assert request(through.url, "PUT", record_url(start=f"2024-01-01T0{n}:00:00"), body)[0] == 204
    for n, body in enumerate(bodies):
        for svc in (a, b):
            assert body_of(svc.url, record_url(start=f"2024-01-01T0{n}:00:00")) == body
    listed = json.loads(request(b.url, "GET", f"/records/{EVENT}")[2])
    assert [r["size"] for r in listed["records"]] == [len(body) for body in bodies] and listed["count"] == 3
    assert request(b.url, "DELETE", record_url(start="2024-01-01T00:00:00"))[0] == 204
    assert request(a.url, "GET", record_url(start="2024-01-01T00:00:00"))[0] == 404
    for reader in readers:
        reader.join(timeout=20)
    assert len(seen_a) == expected and seen_a == seen_b  # every event of every process, once, in one order
    ids = [event_id for event_id, _ in seen_a]
    assert ids == sorted(set(ids))
    assert [e["type"] for _, e in seen_a] == ["upload-started", "record-created"] * 3 + ["record-deleted"]
    replay: list = []  # Last-Event-ID on the other service replays from the shared table
    reader = events_of(a.url, expected - 3, replay, last_id=ids[2])
    reader.join(timeout=20)
    assert replay == seen_b[3:]


def test_racing_writers_on_two_processes_leave_one_whole_winner(service) -> None:
    a, b = two_services(service)
    bodies = [bytes([n]) * 500_000 for n in range(8)]
    statuses = race_writers(a, b, bodies)
    assert sorted(statuses) == [204] + [412] * (len(bodies) - 1), statuses
    winner = bodies[statuses.index(204)]
    assert body_of(a.url) == winner and body_of(b.url) == winner
    assert len(files_in(a.data_dir / "blobs")) == 1 and files_in(a.data_dir / "tmp") == []


def test_a_live_recording_of_a_killed_process_goes_on_through_another(service) -> None:
    a, b = two_services(service)
    first = Appender(a.url)
    first.send(b"head of the broadcast;")

    def in_its_file() -> bool:  # the piece is listed in the index, and its bytes are in its file (spool.py's lag)
        rows = run_on_index({}, a.data_dir, "SELECT blob FROM appends")
        return len(rows) == 1 and (a.data_dir / "blobs" / rows[0][0]).stat().st_size == 22

    assert wait_until(in_its_file)
    for pid in serving(a):  # the one that has the recording among them
        os.kill(pid, signal.SIGKILL)
    second = Appender(b.url)
    second.send(b" the rest.")
    assert second.end().status == 204
    assert body_of(b.url) == b"head of the broadcast; the rest."
    assert run_on_index({}, a.data_dir, "SELECT count(*) FROM appends") == [(0,)]


def test_a_killed_process_is_replaced_and_nothing_acknowledged_is_lost(service) -> None:
    svc = service("--processes", "2")
    bodies = {f"2024-01-01T00:00:{n:02d}": os.urandom(50_000) for n in range(6)}
    for start, body in bodies.items():
        assert request(svc.url, "PUT", record_url(start=start), body)[0] == 204
    unfinished = Appender(svc.url, record_url(start="2024-01-02T00:00:00"))  # a plain PUT, left unfinished
    unfinished.send(os.urandom(100_000))
    assert wait_until(lambda: sum(p.stat().st_size for p in (svc.data_dir / "tmp").rglob("*.part")) == 100_000)
    before = serving(svc)
    killed = next(iter(before))
    os.kill(killed, signal.SIGKILL)
    assert wait_until(lambda: len(children(svc.proc.pid) - before) == 1 and len(children(svc.proc.pid)) == 2)
    assert f"process {killed} ended (SIGKILL): starting another" in svc.log
    for start, body in bodies.items():
        assert body_of(svc.url, record_url(start=start)) == body
    assert request(svc.url, "PUT", record_url(start="2024-01-03T00:00:00"), b"after")[0] == 204
    unfinished.drop()
    assert request(svc.url, "GET", record_url(start="2024-01-02T00:00:00"))[0] == 404
    assert json.loads(request(svc.url, "GET", f"/records/{EVENT}")[2])["count"] == len(bodies) + 1


def test_sigterm_ends_every_process_as_one_process_ends(service) -> None:
    svc = service("--processes", "2")
    pids = serving(svc)
    assert request(svc.url, "PUT", record_url(), b"kept")[0] == 204
    assert svc.stop() == 0
    assert all(not Path(f"/proc/{pid}").exists() for pid in pids)
    assert svc.log.count("tornado_records: stopped") == 2
    again = service("--processes", "2")
    assert body_of(again.url) == b"kept"


def test_a_process_that_cannot_start_ends_them_all_with_its_error(tmp_path: Path) -> None:
    import subprocess

    from support.service import COMMAND

    data = tmp_path / "data"
    data.mkdir()
    (data / "records.sqlite3").write_bytes(b"not a database" * 100)
    done = subprocess.run(
        [*COMMAND, "--port", "0", "--data-dir", str(data), "--processes", "2"], capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert "is damaged" in done.stderr and "Traceback" not in done.stderr
