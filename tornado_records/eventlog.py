"""EventLog: the recent events, kept in the index database so that Last-Event-ID replay outlives the process.

The table `events` of records.sqlite3 holds each event's id, its wire form (as the stream sends it) and when it was
published, bounded by a count (MAX_EVENTS, the newest) and an age (MAX_AGE). `append` only queues (it runs on the
event loop, for every event); one thread writes what has queued in one fsynced transaction at most every
FLUSH_DELAY seconds, so a crash or a power cut loses at most the events of the last FLUSH_DELAY seconds (plus one
fsync). Knows no HTTP.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sqlite3
import threading
import time
from pathlib import Path

log = logging.getLogger("tornado_records.eventlog")

MAX_EVENTS = 1000  # the newest events kept for replay
MAX_AGE = 24 * 3600.0  # seconds: older events are not replayed, and leave the table
FLUSH_DELAY = 0.1  # seconds that events gather before they are written together (one fsync for all)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id      INTEGER PRIMARY KEY,  -- the event's id on the stream
    wire    BLOB    NOT NULL,     -- the event as the stream sends it: id line, data line, blank line
    created REAL    NOT NULL      -- Unix time of its publication
);
"""

Event = tuple[int, bytes, float]
"""An event as the log keeps it: (id, wire, created)."""

_STOP = None


class EventLog:
    """The durable tail of the event stream: `recent()` at start, `append()` for each event, `close()` at the end."""

    def __init__(
        self,
        path: Path,
        *,
        max_events: int = MAX_EVENTS,
        max_age: float = MAX_AGE,
        flush_delay: float = FLUSH_DELAY,
    ) -> None:
        self.max_events = max_events
        self.max_age = max_age
        self.flush_delay = flush_delay
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")  # each batch's commit is fsynced (in the writer thread)
        self._conn.executescript(_SCHEMA)
        self._trim()
        self._queue: queue.SimpleQueue[Event | None] = queue.SimpleQueue()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._write_batches, name="records-eventlog", daemon=True)
        self._thread.start()

    @property
    def last_id(self) -> int:
        """The newest id the table holds (0 if none)."""
        return self._conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]

    def recent(self) -> list[Event]:
        """The events kept for replay, oldest first."""
        rows = self._conn.execute(
            "SELECT id, wire, created FROM events WHERE created >= ? ORDER BY id DESC LIMIT ?",
            (self.oldest(), self.max_events),
        ).fetchall()
        return rows[::-1]

    def oldest(self) -> float:
        """The Unix time of publication of the oldest event that may still be replayed."""
        return time.time() - self.max_age

    def append(self, event_id: int, wire: bytes, created: float) -> None:
        """Keep an event; it is on disk within about `flush_delay` seconds. Does no I/O."""
        self._queue.put((event_id, wire, created))

    def close(self) -> None:
        """Write what is queued, then stop. Safe to call more than once."""
        if self._thread.is_alive():
            self._closing.set()
            self._queue.put(_STOP)
            self._thread.join()
            self._conn.close()

    def _write_batches(self) -> None:
        while True:
            batch = [self._queue.get()]
            self._closing.wait(self.flush_delay)  # let the events of a burst gather: one transaction, one fsync
            while not self._queue.empty():
                batch.append(self._queue.get())
            events = [event for event in batch if event is not _STOP]
            if events:
                self._write(events)
            if len(events) < len(batch):
                return

    def _write(self, events: list[Event]) -> None:
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.executemany("INSERT OR IGNORE INTO events (id, wire, created) VALUES (?, ?, ?)", events)
            self._trim()
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):  # the thread lives on whatever happens: the next batch may work
                self._conn.execute("ROLLBACK")
            log.warning("could not keep %d event(s) for replay after a restart: %s", len(events), exc)

    def _trim(self) -> None:
        """Remove the events past the bounds: those older than max_age, and all but the newest max_events."""
        self._conn.execute(
            "DELETE FROM events WHERE created < ?"
            " OR id <= (SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET ?)",
            (self.oldest(), self.max_events),
        )
