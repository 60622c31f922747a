"""Group commit: the whole uploads that end together become records in one index transaction.

Each upload's content is made durable first, on its own and beside the others' (its receiver's `finish`: a file's
fsync in a thread, an object completed). It then waits in one line, which the store's writer thread takes whole at
its next turn: every content of the line is placed (a file renamed into blobs/), their names are made durable once
(one fsync of blobs/), and their rows are written in one transaction, so one commit (one flush of SQLite's WAL, or of
PostgreSQL's) for all of them. Fifty small uploads that end together cost about one disk flush, not fifty, and each
one's 2xx still comes only once its bytes and its row are on the disk.

Uploads that end while the writer is busy (with a line, a join, a delete) wait for its next turn: no timer delays a
commit that ends alone. A commit whose precondition does not hold, or whose file cannot be placed, is refused alone
(nothing of it was written); any other failure of the transaction (a full disk, the index gone) is every commit's of
the line, as it would have been each one's alone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from typing import TYPE_CHECKING

from tornado_records.storage import parts, sqldb
from tornado_records.storage.model import Condition, PreconditionFailed, Record, StoreError, storage_errors

if TYPE_CHECKING:
    from tornado_records.storage.store import NewContent, RecordStore


@dataclasses.dataclass(eq=False)
class _Waiting:
    """One commit in the line: what it asked, and (from the writer) what became of it."""

    new: NewContent
    condition: Condition | None
    record: Record | None = None  # the version it made
    old: Record | None = None  # the version it replaced
    error: BaseException | None = None


class CommitLine:
    """The commits waiting for the store's writer thread, taken as one transaction at each of its turns."""

    def __init__(self, store: RecordStore) -> None:
        self.store = store
        self._lock = threading.Lock()  # the line is added to on the event loop and taken in the writer thread
        self._waiting: list[_Waiting] = []
        self._turn: asyncio.Future | None = None  # the writer's turn that will take the line, not begun yet

    @property
    def waiting(self) -> int:
        """How many commits wait for the writer's next turn."""
        return len(self._waiting)

    async def commit(self, new: NewContent, condition: Condition | None) -> tuple[Record, bool]:
        """Make `new` (durable already) the record's current version in the writer's next transaction; the version
        and whether the record is new (see RecordStore.commit)."""
        waiting = _Waiting(new, condition)
        with self._lock:
            self._waiting.append(waiting)
            if self._turn is None:
                self._turn = asyncio.get_running_loop().run_in_executor(self.store.writer, self._take)
            turn = self._turn
        await asyncio.shield(turn)  # a commit given up on must not cancel the others' turn
        if waiting.error is not None:
            raise waiting.error
        assert waiting.record is not None
        return waiting.record, waiting.old is None

    def _take(self) -> None:
        """In the writer thread: commit the whole line as it is now."""
        with self._lock:
            line, self._waiting, self._turn = self._waiting, [], None
        # Records locked in one order in every process (PostgreSQL: two lines cannot wait for each other); the sort
        # is stable, so that two commits of one record keep their order and the last to end wins.
        line.sort(key=lambda waiting: (str(waiting.new.event), waiting.new.start))
        store = self.store
        modified = int(time.time())
        written: list[_Waiting] = []
        events: list[tuple[str, dict]] = []  # their events, written to a shared log at once
        try:
            # PostgreSQL: the line's statements in one pipeline, so that its records cost a round trip or two in all
            # rather than eight each (the storm of 50 uploads on a PostgreSQL index waited on them, py-spy)
            with storage_errors(), store.wconn.transaction(), store.wconn.pipeline():
                keys = [(str(waiting.new.event), waiting.new.start.isoformat()) for waiting in line]
                records = list(dict.fromkeys(keys))  # each once, in the line's order (a sort: see above)
                latest = dict(zip(records, store.lock_current(records)))  # each one's version, as the line goes on
                for key, waiting in zip(keys, line):
                    waiting.old = latest[key]
                    if self._place(waiting, modified):
                        assert waiting.record is not None
                        latest[key] = waiting.record  # what a later commit of the same record replaces
                        new = waiting.new
                        record = waiting.record
                        parts.replace(store.wconn, record.event, record.start, record.size, new.began, time.time())
                        written.append(waiting)
                if written:
                    store.write_versions([(waiting.record, waiting.old) for waiting in written], events)
                    store.write_events(events)
                    store.content.sync_placed()
        except sqldb.IndexUnavailable as exc:
            # the outcome is unknown: the blobs stay (named, or orphans that a later start removes)
            for waiting in line:
                waiting.error = waiting.error or exc
            return
        except BaseException as exc:  # noqa: BLE001 (each commit of the line raises it)
            for waiting in line:
                if waiting.error is None:
                    waiting.error = exc
                    store.content.remove(waiting.new.receiver.name)
            return
        for waiting in written:
            assert waiting.record is not None
            store.sharing.starts.add(waiting.record.event, waiting.record.start)
            store.keep_hash(waiting.new.digest)
            store.unlink_unused(waiting.old, waiting.record)

    def _place(self, waiting: _Waiting, modified: int) -> bool:
        """In the line's transaction, the record locked and its current version read (`waiting.old`): check the
        commit's condition against that version and make the content its blob; False (the commit's error set, its
        content removed) where the condition does not hold or the content cannot be placed. The index's own failures
        are the whole line's: they are raised."""
        new, store = waiting.new, self.store
        record = Record(
            str(new.event), new.start.isoformat(), new.type, new.size, new.digest.hexdigest(), modified,
            new.receiver.name,
        )  # fmt: skip
        try:
            if waiting.condition is not None and not waiting.condition(waiting.old):
                raise PreconditionFailed(new.event, new.start)
            with storage_errors():
                new.receiver.place(modified)
        except (StoreError, OSError) as exc:
            waiting.error = exc
            store.content.remove(new.receiver.name)
            return False
        waiting.record = record
        return True
