"""Replay that outlives the process: the event log in records.sqlite3 behind the hub, its bounds (count and age),
and Last-Event-ID across real restarts of `tornado-records` (SIGTERM and kill -9), in order and without duplicates."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import EVENT, record_url, run_on_index, wait_until
from test_events import Client
from tornado_records.eventlog import EventLog
from tornado_records.events import EventHub


@pytest.fixture
def index(tmp_path: Path) -> Path:
    return tmp_path / "records.sqlite3"


def restarted(index: Path, **kwargs: Any) -> EventHub:
    """A hub as a new process makes it: fed by a new log on the same database."""
    return EventHub(log=EventLog(index, **kwargs))


@pytest.mark.gen_test
async def test_a_new_hub_replays_what_the_last_one_published_and_continues_its_ids(index: Path) -> None:
    hub = EventHub(first_id=1, log=EventLog(index))
    for n in range(6):
        hub.publish("test", {"n": n})
    hub.log.close()
    # The clock of the new process is behind (first_id=1): ids still continue after the last one kept.
    again = EventHub(first_id=1, log=EventLog(index))
    resumed = Client(again, last_id=3)
    again.publish("test", {"n": 6})
    assert resumed.ids() == [4, 5, 6, 7]
    assert [body["data"]["n"] for _, body in resumed.events()] == [3, 4, 5, 6]
    again.log.close()


@pytest.mark.gen_test
async def test_the_log_keeps_the_newest_max_events(index: Path) -> None:
    hub = EventHub(first_id=1, log=EventLog(index, max_events=5))
    for _ in range(12):
        hub.publish("test", {})
    assert hub.replay_ids() == [8, 9, 10, 11, 12]
    hub.log.close()
    again = restarted(index, max_events=5)
    assert again.replay_ids() == [8, 9, 10, 11, 12]
    assert Client(again, last_id=2).ids() == [8, 9, 10, 11, 12]  # older than the log: what is left
    again.log.close()
    # A larger bound at the next start does not bring back what was trimmed.
    assert restarted(index, max_events=100).replay_ids() == [8, 9, 10, 11, 12]


@pytest.mark.gen_test
async def test_events_older_than_max_age_are_not_replayed_before_or_after_a_restart(index: Path) -> None:
    # The new events must be replayed within max_age of their publication, the old ones after it: a few seconds, so
    # that a slow machine's restart stays within it.
    hub = EventHub(first_id=1, log=EventLog(index, max_age=2))
    for _ in range(3):
        hub.publish("old", {})
    time.sleep(2.1)
    for _ in range(2):
        hub.publish("new", {})
    assert Client(hub, last_id=0).ids() == [4, 5]
    hub.log.close()
    again = restarted(index, max_age=2)
    assert again.replay_ids() == [4, 5]
    assert [body["type"] for _, body in Client(again, last_id=0).events()] == ["new", "new"]
    again.log.close()


@pytest.mark.gen_test
async def test_close_writes_what_is_queued(index: Path) -> None:
    log = EventLog(index, flush_delay=60)  # nothing would be written for a minute but for close()
    hub = EventHub(first_id=1, log=log)
    for _ in range(3):
        hub.publish("test", {})
    log.close()
    log.close()  # twice is harmless
    assert restarted(index).replay_ids() == [1, 2, 3]


# -- a real process, restarted ----------------------------------------------------------------------------------


def put(service: Any, start: str, body: bytes = b"audio") -> None:
    conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=30)
    conn.request("PUT", record_url(start=start), body=body)
    assert conn.getresponse().status == 204
    conn.close()


class Stream:
    """An /sse subscription over HTTP/1.0 (the events come unframed), read event by event."""

    def __init__(self, service: Any, last_id: int | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", service.port), timeout=10)
        header = "" if last_id is None else f"Last-Event-ID: {last_id}\r\n"
        self.sock.sendall(f"GET /sse HTTP/1.0\r\n{header}\r\n".encode())
        self.buffer = b""
        head = self._until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 200") or head.startswith(b"HTTP/1.1 200"), head
        assert self._until(b"\n\n") == b"retry: 3000"

    def _until(self, separator: bytes) -> bytes:
        while separator not in self.buffer:
            data = self.sock.recv(65536)
            assert data, "the stream ended"
            self.buffer += data
        part, self.buffer = self.buffer.split(separator, 1)
        return part

    def event(self) -> tuple[int, dict]:
        """The next event: its id and JSON (keepalive comments skipped)."""
        while True:
            block = self._until(b"\n\n").decode()
            if not block.startswith(":"):
                fields = dict(line.split(": ", 1) for line in block.split("\n"))
                assert fields.keys() == {"id", "data"}, block
                return int(fields["id"]), json.loads(fields["data"])

    def events(self, count: int) -> list[tuple[int, dict]]:
        return [self.event() for _ in range(count)]

    def close(self) -> None:
        self.sock.close()


def summary(events: list[tuple[int, dict]]) -> list[tuple[str, str]]:
    """(type, start) of each event."""
    return [(e["type"], e["data"].get("start") or e["data"]["record"]["start"]) for _, e in events]


@pytest.mark.parametrize("stop", ["SIGTERM", "kill -9"])
def test_a_dashboard_reconnecting_after_a_restart_gets_what_it_missed_in_order_without_duplicates(
    service: Any, engine: dict[str, str], stop: str
) -> None:
    first = service()
    dashboard = Stream(first)
    put(first, "2024-01-01T01:00:00")
    seen = dashboard.events(2)
    dashboard.close()  # the dashboard goes away; what follows it misses
    put(first, "2024-01-01T02:00:00")
    if stop == "SIGTERM":
        first.proc.send_signal(signal.SIGTERM)
        assert first.proc.wait(timeout=30) == 0
    else:
        # the durability bound the README states, FLUSH_DELAY plus an fsync: the events it missed are in the log
        missed = f"SELECT count(*) FROM events WHERE id > {seen[-1][0]}"
        assert wait_until(lambda: run_on_index(engine, first.data_dir, missed)[0][0] >= 2)
        first.proc.kill()
        first.proc.wait()
    second = service()
    put(second, "2024-01-01T03:00:00")  # published by the new process while the dashboard is still away

    resumed = Stream(second, last_id=seen[-1][0])
    missed = resumed.events(4)
    assert summary(missed) == [
        ("upload-started", "2024-01-01T02:00:00"),
        ("record-created", "2024-01-01T02:00:00"),
        ("upload-started", "2024-01-01T03:00:00"),
        ("record-created", "2024-01-01T03:00:00"),
    ]
    ids = [seen[-1][0]] + [event_id for event_id, _ in missed]
    assert ids == sorted(set(ids))  # increasing across the restart, none twice
    # Then the live ones, and nothing else in between: the replay held no duplicate.
    put(second, "2024-01-01T04:00:00")
    live = resumed.events(2)
    assert summary(live) == [("upload-started", "2024-01-01T04:00:00"), ("record-created", "2024-01-01T04:00:00")]
    assert live[0][0] > missed[-1][0]
    resumed.close()
    # A dashboard that saw everything before the restart gets only what came after it.
    caught_up = Stream(second, last_id=missed[1][0])
    assert summary(caught_up.events(4)) == summary(missed[2:] + live)
    caught_up.close()


def test_the_log_of_a_real_process_is_bounded_to_the_newest_1000_events(service: Any) -> None:
    server = service()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    for n in range(510):  # 1020 events: upload-started and record-created each
        conn.request("PUT", f"/records/{EVENT}/2024-01-01T00:00:{n % 60:02d}.{n:06d}", body=b"x")
        assert conn.getresponse().read() == b""
    conn.close()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=30) == 0
    again = service()
    replay = Stream(again, last_id=0)
    events = replay.events(1000)
    assert [e["data"].get("start") or e["data"]["record"]["start"] for _, e in events[:2]] == [
        "2024-01-01T00:00:10.000010"
    ] * 2  # the first 10 uploads' events (20) were trimmed
    assert [event_id for event_id, _ in events] == sorted({event_id for event_id, _ in events})
    put(again, "2025-01-01T00:00:00")
    assert summary([replay.event()]) == [("upload-started", "2025-01-01T00:00:00")]  # nothing more was kept
    replay.close()
