"""EventLog: the recent events, kept in the index database so that Last-Event-ID replay outlives the process.

The table `events` of the index holds each event's id, its wire form (as the stream sends it) and when it was
published, bounded by a count (MAX_EVENTS, the newest) and an age (MAX_AGE). `append` only queues (it runs on the
event loop, for every event); one thread writes what has queued in one fsynced transaction at most every
FLUSH_DELAY seconds, so a crash or a power cut loses at most the events of the last FLUSH_DELAY seconds (plus one
fsync). Knows no HTTP.

SharedEventLog is the log of processes that share an index (PostgreSQL, or SQLite with --processes N): the table is
the one stream of them all. A process's events get their ids in the transaction that writes them (under a lock: ids
commit in their order), a NOTIFY wakes every process (SQLite: each looks at the table every EVENTS_POLL seconds), and
each one sends its subscribers the rows after the last it sent, its own included.

Readers (table `event_readers`) are consumers that must see every event, such as a webhook's URL: each has its
position in the index (the newest event it is done with), and the log keeps the events after the lowest position past
MAX_EVENTS, up to MAX_AGE and MAX_HELD. A reader that has not moved for MAX_AGE is forgotten (its consumer is gone).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from pathlib import Path
from typing import Callable, Iterable

from tornado_records.storage.sqldb import Database

log = logging.getLogger("tornado_records.eventlog")

MAX_EVENTS = 1000  # the newest events kept for replay
MAX_AGE = 24 * 3600.0  # seconds: older events are not replayed, and leave the table
FLUSH_DELAY = 0.1  # seconds that events gather before they are written together (one fsync for all)
FLUSH_WAIT = 1.0  # seconds a change's event waits at most for the events published before it to be written
MAX_HELD = 100_000  # the most events kept for readers that have not read them (past MAX_EVENTS; within MAX_AGE)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id      BIGINT PRIMARY KEY,         -- the event's id on the stream
    wire    {blob} NOT NULL,            -- the event as the stream sends it: id line, data line, blank line
    created DOUBLE PRECISION NOT NULL   -- Unix time of its publication
);
CREATE INDEX IF NOT EXISTS events_created ON events (created);
CREATE TABLE IF NOT EXISTS event_readers (
    name    TEXT PRIMARY KEY,           -- a consumer that must see every event (webhook URL)
    last_id BIGINT NOT NULL,            -- the newest event it is done with: the log keeps those after it
    touched DOUBLE PRECISION NOT NULL   -- Unix time it last moved or said it is there: forgotten after MAX_AGE
);
"""

Event = tuple[int, bytes, float]
"""An event as the log keeps it: (id, wire, created)."""

_STOP = None


class EventLog:
    """The durable tail of the event stream: `recent()` at start, `append()` for each event, `close()` at the end."""

    def __init__(
        self,
        index: Path | Database,
        *,
        max_events: int = MAX_EVENTS,
        max_age: float = MAX_AGE,
        flush_delay: float = FLUSH_DELAY,
        max_held: int = MAX_HELD,
    ) -> None:
        self.max_events = max_events
        self.max_age = max_age
        self.flush_delay = flush_delay
        self.max_held = max(max_held, max_events)
        # called in a thread once events are in the table (this process's after each write; with a shared log,
        # every process's too, as they come): the readers look for them then
        self.on_written: list[Callable[[], None]] = []
        self._conn = Database(index) if isinstance(index, Path) else index  # fsynced commits (synchronous=FULL)
        self._conn.schema(_SCHEMA)
        with self._conn.transaction():
            self._trim()
        self._queue: queue.SimpleQueue[Event | None] = queue.SimpleQueue()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._write_batches, name="records-eventlog", daemon=True)
        self._thread.start()

    @property
    def last_id(self) -> int:
        """The newest id the table holds (0 if none)."""
        return self._conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]

    @property
    def assigns_ids(self) -> bool:
        """Whether the log gives events their ids (publish), or takes them as the hub made them (append)."""
        return False

    def recent(self) -> list[Event]:
        """The events kept for replay, oldest first."""
        rows = self._conn.execute(
            "SELECT id, wire, created FROM events WHERE created >= ? ORDER BY id DESC LIMIT ?",
            (self.oldest(), self.max_events),
        ).fetchall()
        return _events(rows[::-1])

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
            self._stopped()
            self._conn.close()

    def _stopped(self) -> None:
        """The writer has written its last events (its connection is still open)."""

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

    def _write(self, events: list) -> None:
        try:  # the thread lives on whatever happens: the next batch may work
            with self._conn.transaction():
                self._insert(events)
                self._trim()
        except Database.errors as exc:
            log.warning("could not keep %d event(s) for replay after a restart: %s", len(events), exc)
            return
        self._written()

    def _written(self) -> None:
        for tell in self.on_written:
            try:  # the thread lives on whatever happens
                tell()
            except Exception as exc:  # noqa: BLE001
                log.warning("could not tell of events written: %s", exc)

    def _insert(self, events: list[Event]) -> None:
        self._conn.executemany("INSERT INTO events (id, wire, created) VALUES (?, ?, ?) ON CONFLICT DO NOTHING", events)

    def _trim(self) -> None:
        """Remove the events past the bounds: those older than max_age, and all but the newest max_events, unless a
        reader has not read them (then all but the newest max_held); and the readers gone for max_age. Each statement
        follows an index (a reader behind leaves up to max_held rows, which a scan would read at each write)."""
        conn, oldest = self._conn, self.oldest()
        conn.execute("DELETE FROM event_readers WHERE touched < ?", (oldest,))
        conn.execute("DELETE FROM events WHERE created < ?", (oldest,))
        past = self._newest_but(self.max_events)  # the newest id past the count bound (None: within it)
        if past is None:
            return
        (needed,) = conn.execute("SELECT min(last_id) FROM event_readers").fetchone()
        if needed is not None and needed < past:  # a reader has not read them: keep them, within max_held
            past = max(needed, self._newest_but(self.max_held) or 0)
        conn.execute("DELETE FROM events WHERE id <= ?", (past,))

    def _newest_but(self, count: int) -> int | None:
        """The id of the newest event but `count` (None if there are no more than `count`)."""
        row = self._conn.execute("SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET ?", (count,)).fetchone()
        return None if row is None else row[0]


def _events(rows: Iterable[tuple]) -> list[Event]:
    """Rows of the table as events (PostgreSQL gives the wire as a memoryview, SQLite as bytes)."""
    return [(event_id, bytes(wire), created) for event_id, wire, created in rows]


def frame(event_id: int, body: str) -> bytes:
    """An event's wire form: its id line and its data line (`body`, one line of JSON)."""
    return f"id: {event_id}\ndata: {body}\n\n".encode()


class SharedEventLog(EventLog):
    """The event log of processes sharing an index: `publish` queues an event's body; the writer thread
    gives it the next id (the time in microseconds for the first, as the hub does) and writes it with a NOTIFY; a
    listening thread hands each process the rows after the last it had (`deliver`, called on the event loop)."""

    CHANNEL = "tornado_records_events"
    POLL = 0.5  # seconds: the listener also looks without a NOTIFY this often (a NOTIFY lost with a connection)

    def __init__(self, index: Database, listen: Database, *, flush_delay: float = 0.005, **kwargs: float) -> None:
        super().__init__(index, flush_delay=flush_delay, **kwargs)
        self._listen = listen
        self.deliver: Callable[[list[Event]], None] | None = None
        self._listener: threading.Thread | None = None
        self._seen = self.last_id
        self.queued = 0  # events this process published (counted on the event loop)
        self.written = 0  # of those, how many are in the table (counted by the writer thread)
        self.written_id = 0  # the newest id the writer gave

    @property
    def assigns_ids(self) -> bool:
        return True

    def publish(self, body: str, created: float) -> None:
        """Keep an event (its JSON `body`); every process's hub gets it through `deliver`. Does no I/O."""
        self.queued += 1
        self._queue.put((0, body, created))

    def start(self, deliver: Callable[[list[Event]], None], loop: "asyncio.AbstractEventLoop") -> None:
        """Hand the events of every process to `deliver` on `loop`, from now on."""
        self.deliver = lambda rows: loop.call_soon_threadsafe(deliver, rows)
        self._listen.listen(self.CHANNEL)
        self._listener = threading.Thread(target=self._listen_for_events, name="records-eventlog-listen", daemon=True)
        self._listener.start()

    def _stopped(self) -> None:
        with contextlib.suppress(Exception):  # wake the listener now, rather than at its next look (POLL)
            self._conn.notify(self.CHANNEL)

    def close(self) -> None:
        super().close()
        if self._listener is not None:
            self._listener.join(timeout=2 * self.POLL)  # its connection is closed once it no longer uses it
        with contextlib.suppress(Exception):
            self._listen.close()

    def _insert(self, events: list) -> None:
        self.write_in(self._conn, [(body, created) for _, body, created in events])
        self.written += len(events)  # (were the commit to fail, the hub's `settled` would wait on: it is for tests)

    def write_in(self, conn: Database, events: list[tuple[str, float]]) -> None:
        """Write events (body, created) in `conn`'s transaction, which must be under way: a change of a record
        writes its event in its own transaction (see store.py), so that both are kept or neither."""
        conn.lock_key(_EVENTS_LOCK)
        (last,) = conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()
        first = last + 1 if last else time.time_ns() // 1000  # as the hub's: from the time, then one by one
        rows = [(first + n, frame(first + n, body), created) for n, (body, created) in enumerate(events)]
        conn.executemany("INSERT INTO events (id, wire, created) VALUES (?, ?, ?) ON CONFLICT DO NOTHING", rows)
        conn.notify(self.CHANNEL)  # sent at the commit
        self.written_id = max(self.written_id, rows[-1][0])

    def wait_written(self) -> None:
        """Wait until the events published until now are written (up to FLUSH_WAIT seconds; not in the writer
        thread): a change's event, written in the change's transaction, then comes after them."""
        queued, deadline = self.queued, time.monotonic() + FLUSH_WAIT
        while self.written < queued and time.monotonic() < deadline:
            time.sleep(0.0005)

    def _listen_for_events(self) -> None:
        while not self._closing.is_set():
            try:
                for _ in self._listen.notifies(timeout=self.POLL, stop_after=1):
                    pass
                rows = self._rows_after(self._seen)
            except Exception as exc:  # noqa: BLE001 (the database is away for a while: look again)
                if self._closing.is_set():
                    return
                log.warning("could not read the shared event log: %s", exc)
                self._closing.wait(self.POLL)
                continue
            if rows and self.deliver is not None:
                self._seen = rows[-1][0]
                try:
                    self.deliver(rows)
                except RuntimeError:  # the loop is closed: its process is ending (a test's app torn down first)
                    return
                self._written()

    def _rows_after(self, after: int) -> list[Event]:
        rows = self._listen.execute("SELECT id, wire, created FROM events WHERE id > ? ORDER BY id", (after,))
        return _events(rows)


# -- readers: consumers that must see every event, each with its position in the index -------------------------
# Functions of a connection (a reader's own, used from one thread), as every reader does the same.


def add_reader(conn: Database, name: str) -> None:
    """Make `name` a reader of the log from the newest event on, unless it is one already."""
    conn.execute(
        "INSERT INTO event_readers (name, last_id, touched) SELECT ?, coalesce(max(id), 0), ? FROM events WHERE true"
        " ON CONFLICT (name) DO NOTHING",
        (name, time.time()),
    )


def reader_position(conn: Database, name: str) -> int:
    """The newest event the reader `name` is done with (made a reader from the newest event on, if it was not)."""
    add_reader(conn, name)
    return conn.execute("SELECT last_id FROM event_readers WHERE name = ?", (name,)).fetchone()[0]


def move_reader(conn: Database, name: str, last_id: int) -> None:
    """The reader `name` is done with the events up to `last_id` (never moves back); also says it is there."""
    conn.execute(
        "INSERT INTO event_readers (name, last_id, touched) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE"
        f" SET last_id = {conn.greatest}(event_readers.last_id, excluded.last_id), touched = excluded.touched",
        (name, last_id, time.time()),
    )


def events_after(conn: Database, after: int, limit: int) -> list[Event]:
    """The first `limit` events of the log after the id `after`, oldest first."""
    rows = conn.execute("SELECT id, wire, created FROM events WHERE id > ? ORDER BY id LIMIT ?", (after, limit))
    return _events(rows.fetchall())


def is_kept(conn: Database, event_id: int) -> bool:
    """Whether the log still has the event."""
    return conn.execute("SELECT 1 FROM events WHERE id = ?", (event_id,)).fetchone() is not None


def oldest_unread(conn: Database, name: str) -> float | None:
    """When the oldest event that the reader `name` has not read was published (Unix time); None if none."""
    row = conn.execute(
        "SELECT created FROM events WHERE id > (SELECT last_id FROM event_readers WHERE name = ?) ORDER BY id LIMIT 1",
        (name,),
    ).fetchone()
    return None if row is None else row[0]


def body_of(wire: bytes) -> bytes:
    """The JSON of an event's data line, from its wire form (see `frame`)."""
    return wire[wire.index(b"\ndata: ") + 7 : -2]


_EVENTS_LOCK = 7_261_442  # the advisory lock held while an event's id is chosen and its row written
