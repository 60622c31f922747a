"""Webhooks of real `tornado-records` processes: a restart (SIGTERM, or kill -9) between a refused delivery and its
acceptance loses nothing and sends again nothing that was acknowledged; with two processes on one PostgreSQL index
(or the processes of --processes 2 on SQLite), each event reaches the receiver once, and when the process that delivers is killed the other takes over. The receiver
verifies every delivery with the `standardwebhooks` library; so does the example receiver of docs/operations.md, run
as written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator

import pytest

from support.paths import REPO
from support.processes import children_of
from support.ports import free_port, is_free
from support.records import record_url, run_on_index
from support.rawhttp import request
from support.waiting import wait_until
from support.metrics import scrape_process as scrape
from support.webhooks import Receiver, new_secret, sample


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver(new_secret())
    yield receiver
    receiver.close()


@pytest.fixture
def flags(tmp_path: Path, receiver: Receiver) -> list[str]:
    """The service's flags: the receiver's URL and its secret."""
    secret = tmp_path / "webhook-secret"
    secret.write_text(receiver.secret + "\n")
    return ["--webhook", receiver.url, "--webhook-secret-file", str(secret), "--analysis-workers", "0"]


def put(url: str, start: str) -> None:
    assert request(url, "PUT", record_url(start=start), b"audio", {"Content-Type": "audio/ogg"})[0] == 204


def logged_ids(engine: dict[str, str], data_dir: Path) -> list[int]:
    """The ids of the events in the service's event log (behind its back)."""
    return [row[0] for row in run_on_index(engine, data_dir, "SELECT id FROM events ORDER BY id")]


def delivered_up_to(engine: dict[str, str], data_dir: Path, receiver: Receiver) -> bool:
    """Whether the URL's position in the index has reached the newest event the receiver accepted."""
    rows = run_on_index(engine, data_dir, "SELECT last_id FROM event_readers")
    return bool(receiver.accepted) and rows == [(receiver.ids()[-1],)]


def restart_between_a_refusal_and_the_acceptance(service, engine, receiver, flags, signum) -> None:  # noqa: ANN001
    first = service(*flags)
    put(first.url, "2024-01-01T00:00:00")
    assert wait_until(lambda: len(receiver.accepted) == 2, timeout=20)
    acknowledged = receiver.ids()
    receiver.answer(503)
    put(first.url, "2024-01-01T01:00:00")
    assert wait_until(lambda: receiver.attempts[-1].status == 503 and len(logged_ids(engine, first.data_dir)) == 4)
    refused = receiver.attempts[-1].id
    if signum == signal.SIGTERM:
        assert first.stop() == 0
    else:
        first.proc.send_signal(signum)
        first.proc.wait()
    receiver.answer(204)
    second = service(*flags)
    assert wait_until(lambda: len(receiver.accepted) == 4, timeout=20)
    assert all(d.verified for d in receiver.attempts)
    ids = receiver.ids()
    assert ids[:2] == acknowledged and str(ids[2]) == refused  # the refused event, with the same webhook-id
    assert ids == logged_ids(engine, first.data_dir)  # every event, once, in order
    assert receiver.types() == ["upload-started", "record-created"] * 2
    assert wait_until(lambda: delivered_up_to(engine, first.data_dir, receiver))
    samples = scrape(second.url)
    assert sample(samples, "webhook_deliveries_total", url=receiver.url) == 2  # the second process's
    assert sample(samples, "webhook_oldest_undelivered_age_seconds", url=receiver.url) == 0
    assert second.stop() == 0


def test_a_restart_between_a_refusal_and_the_acceptance_loses_nothing(service, engine, receiver, flags) -> None:
    restart_between_a_refusal_and_the_acceptance(service, engine, receiver, flags, signal.SIGTERM)


@pytest.mark.engines("sqlite", "postgresql")
def test_kill_9_between_a_refusal_and_the_acceptance_loses_nothing(service, engine, receiver, flags) -> None:
    restart_between_a_refusal_and_the_acceptance(service, engine, receiver, flags, signal.SIGKILL)


@pytest.mark.engines("postgresql")
def test_two_processes_on_one_index_deliver_each_event_once(service, engine, receiver, flags) -> None:
    a, b = service(*flags), service(*flags)
    for n in range(6):  # through both, in turn
        put((a, b)[n % 2].url, f"2024-01-01T0{n}:00:00")
    assert request(b.url, "DELETE", record_url(start="2024-01-01T00:00:00"))[0] == 204
    assert wait_until(lambda: len(receiver.accepted) >= 13, timeout=20)
    assert wait_until(lambda: delivered_up_to(engine, a.data_dir, receiver))
    ids = receiver.ids()
    assert ids == logged_ids(engine, a.data_dir) and len(ids) == 13  # each event once, in the log's order
    assert all(d.verified for d in receiver.attempts)
    counts = {proc: sample(scrape(proc.url), "webhook_deliveries_total", url=receiver.url) for proc in (a, b)}
    assert sorted(counts.values()) == [0, 13]  # one process delivers to the URL
    # The process that delivers dies: the other takes over, from where it was, and nothing comes twice.
    holder, other = (a, b) if counts[a] else (b, a)
    holder.proc.send_signal(signal.SIGKILL)
    holder.proc.wait()
    put(other.url, "2024-01-02T00:00:00")
    assert wait_until(lambda: len(receiver.accepted) == 15, timeout=30)
    assert receiver.ids() == logged_ids(engine, a.data_dir)
    assert receiver.types()[-2:] == ["upload-started", "record-created"]
    assert sample(scrape(other.url), "webhook_deliveries_total", url=receiver.url) == 2


@pytest.mark.engines("sqlite")
def test_the_processes_of_a_service_on_sqlite_deliver_each_event_once(service, engine, receiver, flags) -> None:
    svc = service("--processes", "2", *flags)
    for n in range(6):  # each on a connection of its own: to either process
        put(svc.url, f"2024-01-01T0{n}:00:00")
    assert wait_until(lambda: len(receiver.accepted) >= 12, timeout=20)
    assert wait_until(lambda: delivered_up_to(engine, svc.data_dir, receiver))
    assert receiver.ids() == logged_ids(engine, svc.data_dir) and len(receiver.ids()) == 12
    # Both are killed, the one that delivers among them: those that replace them go on from where it was.
    killed = children_of(svc.proc.pid)
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: len(children_of(svc.proc.pid) - killed) == 2), svc.log
    put(svc.url, "2024-01-02T00:00:00")
    assert wait_until(lambda: len(receiver.accepted) == 14, timeout=30)
    assert receiver.ids() == logged_ids(engine, svc.data_dir) and all(d.verified for d in receiver.attempts)


@pytest.mark.engines("sqlite")
def test_the_receiver_of_operations_md_verifies_and_prints_each_event(service, receiver, tmp_path: Path) -> None:
    page = (REPO / "docs" / "operations.md").read_text()
    code = page.split("## Webhooks", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    port = free_port()
    secret = tmp_path / "webhook-secret"
    secret.write_text(receiver.secret + "\n")
    code = code.replace('"/etc/tornado-records/webhook-secret"', repr(str(secret))).replace("PORT = 8000", f"PORT = {port}")
    script = tmp_path / "receiver.py"
    script.write_text(code)
    printed: list[str] = []
    with subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True) as documented:
        threading.Thread(target=lambda: printed.extend(documented.stdout), daemon=True).start()
        try:
            assert wait_until(lambda: not is_free(port))
            svc = service("--webhook", f"http://127.0.0.1:{port}/", "--webhook-secret-file", str(secret),
                          "--analysis-workers", "0")  # fmt: skip
            put(svc.url, "2024-01-01T00:00:00")
            assert wait_until(lambda: len(printed) == 2, timeout=20)
            assert [line.split()[0] for line in printed] == ["upload-started", "record-created"]
            assert json.loads(printed[1].split(" ", 1)[1])["record"]["start"] == "2024-01-01T00:00:00"
            samples = scrape(svc.url)
            assert sample(samples, "webhook_deliveries_total", url=f"http://127.0.0.1:{port}/") == 2
            assert sum(sample(samples, "webhook_failures_total", url=f"http://127.0.0.1:{port}/", reason=reason)
                       for reason in ("refused", "timeout", "status")) == 0  # fmt: skip
        finally:
            documented.kill()
