"""The event log's readers (what webhooks are): each has its position in the index; the log keeps the events a reader
has not read past its count bound (up to max_held, and max_age), forgets a reader gone for max_age, and tells who
listens when events are in the table."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tornado_records import eventlog
from tornado_records.eventlog import EventLog
from tornado_records.events import EventHub
from tornado_records.storage.sqldb import Database


@pytest.fixture
def index(tmp_path: Path) -> Path:
    return tmp_path / "records.sqlite3"


def ids(conn: Database) -> list[int]:
    return [event_id for event_id, _, _ in eventlog.events_after(conn, 0, 10_000)]


@pytest.mark.gen_test
async def test_the_log_keeps_what_a_reader_has_not_read_up_to_max_held(index: Path) -> None:
    hub = EventHub(first_id=1, log=EventLog(index, max_events=5, max_held=8))
    conn = Database(index)
    eventlog.add_reader(conn, "webhook a")  # from the newest event on: none yet
    assert eventlog.reader_position(conn, "webhook a") == 0
    for n in range(6):
        hub.publish("test", {"n": n})
    hub.log.close()  # written, and trimmed
    assert ids(conn) == [1, 2, 3, 4, 5, 6]  # past max_events: the reader has not read them
    eventlog.move_reader(conn, "webhook a", 3)
    eventlog.move_reader(conn, "webhook a", 2)  # never back
    assert eventlog.reader_position(conn, "webhook a") == 3
    hub = EventHub(first_id=1, log=EventLog(index, max_events=5, max_held=8))  # a restart: trims at start
    assert ids(conn) == [2, 3, 4, 5, 6]  # the newest max_events, and those the reader has not read
    for n in range(6):
        hub.publish("test", {"n": n})
    hub.log.close()
    assert ids(conn) == list(range(5, 13))  # at most max_held, even for a reader
    assert eventlog.oldest_unread(conn, "webhook a") == eventlog.events_after(conn, 3, 1)[0][2]
    eventlog.move_reader(conn, "webhook a", 12)
    assert eventlog.oldest_unread(conn, "webhook a") is None
    assert eventlog.is_kept(conn, 12) and not eventlog.is_kept(conn, 4)
    wire = eventlog.events_after(conn, 11, 1)[0][1]
    assert eventlog.body_of(wire).startswith(b'{"type":"test"') and eventlog.body_of(wire).endswith(b"}")
    conn.close()


@pytest.mark.gen_test
async def test_a_reader_gone_for_max_age_holds_nothing(index: Path) -> None:
    conn = Database(index)
    hub = EventHub(first_id=1, log=EventLog(index, max_events=2, max_age=1))
    eventlog.add_reader(conn, "webhook gone")
    conn.execute("UPDATE event_readers SET touched = ?", (time.time() - 2,))
    for n in range(4):
        hub.publish("test", {"n": n})
    hub.log.close()
    assert ids(conn) == [3, 4]
    assert conn.execute("SELECT count(*) FROM event_readers").fetchone() == (0,)
    conn.close()


@pytest.mark.gen_test
async def test_who_listens_is_told_once_events_are_in_the_table(index: Path) -> None:
    log = EventLog(index)
    hub = EventHub(first_id=1, log=log)
    told = threading.Event()
    conn = Database(index)
    log.on_written.append(lambda: told.set() if ids(conn) == [1] else None)
    hub.publish("test", {})
    assert told.wait(5)
    log.close()
    conn.close()
