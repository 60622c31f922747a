"""`--processes N`: the parent keeps its processes running (one killed with SIGKILL is replaced, nothing acknowledged
lost) and ends them as one process ends. What the processes do together on one SQLite index, test_scale_out.py's
tests check as they do on PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from support.appender import Appender, body_of
from support.rawhttp import connect, open_event_stream, read_until, request
from support.service import COMMAND
from support.records import EVENT, record_url
from support.waiting import wait_until
from support.processes import children_of, kill_9


def two_serving(svc) -> set[int]:  # noqa: ANN001
    """The serving processes of a service of --processes 2 (once it has two)."""
    assert wait_until(lambda: len(children_of(svc.proc.pid)) == 2)
    return children_of(svc.proc.pid)


def test_a_killed_process_is_replaced_and_nothing_acknowledged_is_lost(service) -> None:
    svc = service("--processes", "2")
    bodies = {f"2024-01-01T00:00:{n:02d}": os.urandom(50_000) for n in range(6)}
    for start, body in bodies.items():
        assert request(svc.url, "PUT", record_url(start=start), body)[0] == 204
    unfinished = Appender(svc.url, record_url(start="2024-01-02T00:00:00"))  # a plain PUT, left unfinished
    unfinished.send(os.urandom(100_000))
    assert wait_until(lambda: sum(p.stat().st_size for p in (svc.data_dir / "tmp").rglob("*.part")) == 100_000)
    before = two_serving(svc)
    killed = next(iter(before))
    os.kill(killed, signal.SIGKILL)
    assert wait_until(lambda: len(children_of(svc.proc.pid) - before) == 1 and len(children_of(svc.proc.pid)) == 2)
    assert f"process {killed} ended (SIGKILL): starting another" in svc.log
    for start, body in bodies.items():
        assert body_of(svc.url, record_url(start=start)) == body
    assert request(svc.url, "PUT", record_url(start="2024-01-03T00:00:00"), b"after")[0] == 204
    unfinished.drop()
    assert request(svc.url, "GET", record_url(start="2024-01-02T00:00:00"))[0] == 404
    assert json.loads(request(svc.url, "GET", f"/records/{EVENT}")[2])["count"] == len(bodies) + 1


def test_sigterm_ends_every_process_as_one_process_ends(service) -> None:
    svc = service("--processes", "2")
    pids = two_serving(svc)
    assert request(svc.url, "PUT", record_url(), b"kept")[0] == 204
    assert svc.stop() == 0
    assert all(not Path(f"/proc/{pid}").exists() for pid in pids)
    assert svc.log.count("tornado_records: stopped") == 2
    again = service("--processes", "2")
    assert body_of(again.url) == b"kept"


def test_a_process_that_cannot_start_ends_them_all_with_its_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "records.sqlite3").write_bytes(b"not a database" * 100)
    done = subprocess.run(
        [*COMMAND, "--port", "0", "--data-dir", str(data), "--processes", "2"], capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert "is damaged" in done.stderr and "Traceback" not in done.stderr


def test_a_data_directory_goes_from_one_process_to_several_and_back(service) -> None:
    """What a service of one kind leaves (uploads in flight cut off by a SIGKILL) the other kind tidies at its start,
    and serves the same records."""
    for flags in (("--processes", "2"), (), ("--processes", "2")):
        svc = service(*flags)
        assert request(svc.url, "PUT", record_url(start=f"2024-01-01T00:00:0{len(flags)}"), b"kept")[0] == 204
        unfinished = Appender(svc.url, record_url(start="2024-01-02T00:00:00"))
        unfinished.send(os.urandom(100_000))
        tmp = svc.data_dir / "tmp"
        assert wait_until(lambda: sum(p.stat().st_size for p in tmp.rglob("*.part")) == 100_000)
        kill_9(svc)
    last = service("--processes", "2")
    assert not list((last.data_dir / "tmp").rglob("*.part"))
    assert json.loads(request(last.url, "GET", f"/records/{EVENT}")[2])["count"] == 2


def test_sigterm_lets_an_upload_finish_refuses_new_connections_and_a_second_signal_kills_at_once(service) -> None:
    svc = service("--processes", "2")
    streams = [open_event_stream(svc.url) for _ in range(4)]  # on either process
    body = os.urandom(1 << 20)
    upload = Appender(svc.url, record_url())  # a plain PUT, chunked
    upload.send(body[:1000])
    assert wait_until(lambda: len(list((svc.data_dir / "tmp").rglob("*.part"))) == 1)
    svc.proc.send_signal(signal.SIGTERM)
    for stream in streams:  # each ends at once, cleanly (the last chunk), as with one process
        assert read_until(stream, b"0\r\n\r\n", timeout=3).endswith(b"0\r\n\r\n")
    assert wait_until(lambda: refused(svc.url), timeout=3)  # neither the processes nor the parent listen
    assert svc.proc.poll() is None  # waiting for the upload
    upload.send(body[1000:])
    assert upload.end().status == 204
    assert svc.proc.wait(timeout=10) == 0 and svc.log.count("tornado_records: stopped") == 2

    again = service("--processes", "2")
    assert body_of(again.url) == body
    stalled = Appender(again.url, record_url(start="2024-01-02T00:00:00"))
    stalled.send(b"x" * 1000)
    assert wait_until(lambda: len(list((again.data_dir / "tmp").rglob("*.part"))) == 1)
    pids = two_serving(again)
    again.proc.send_signal(signal.SIGTERM)
    assert wait_until(lambda: "SIGTERM: ending the 2 process(es)" in again.log)
    began = time.monotonic()
    again.proc.send_signal(signal.SIGINT)
    assert again.proc.wait(timeout=5) == 1 and time.monotonic() - began < 2
    assert "second SIGINT: killing the" in again.log  # the one still waiting for its upload (the other may be done)
    assert wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in pids))


def refused(url: str) -> bool:
    try:
        connect(url).close()
    except OSError:
        return True
    return False


def test_a_data_directory_served_alone_is_not_served_by_another_and_the_other_way(service, tmp_path: Path) -> None:
    """A process alone takes what it finds in tmp/ at its start for a crash's leftovers: while one serves a data
    directory, another kind of service on it is refused at its start, and the one serving keeps its upload."""

    def start(data: Path, *flags: str) -> subprocess.CompletedProcess:
        command = [*COMMAND, "--port", "0", "--data-dir", str(data), *flags]
        return subprocess.run(command, capture_output=True, text=True, timeout=60)

    for flags, other in (((), ("--processes", "2")), (("--processes", "2"), ()), ((), ())):
        svc = service(*flags, data_dir=tmp_path / f"data{len(flags)}{len(other)}")
        unfinished = Appender(svc.url, record_url())
        unfinished.send(b"x" * 100_000)
        tmp = svc.data_dir / "tmp"
        assert wait_until(lambda: sum(p.stat().st_size for p in tmp.rglob("*.part")) == 100_000)
        refused_start = start(svc.data_dir, *other)
        assert refused_start.returncode == 1
        assert f"another tornado-records serves the data directory {svc.data_dir.absolute()}" in refused_start.stderr
        assert "Traceback" not in refused_start.stderr
        unfinished.send(b"y" * 1000)
        assert unfinished.end().status == 204
        assert body_of(svc.url, record_url()) == b"x" * 100_000 + b"y" * 1000
