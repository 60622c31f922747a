"""RecordStore: the records of a data directory, their content in a content engine (content.py), their index in a
database (sqldb.py). Knows nothing of HTTP.

    data/records.sqlite3   (event, start) -> blob name, content type, size, sha256, modified (or --index postgresql://)
    data/blobs/            one immutable file per record version, named at random (or --blobs s3://: objects)
    data/tmp/              uploads in flight, on the same filesystem as blobs/ so that rename is atomic

A commit makes the new content whole and durable first (a file fsynced, or an object complete), then one index
transaction points the record at it (the file renamed into blobs/ inside it); the content it replaced is removed
last. A crash between any two steps leaves the old version or the new one, whole, and at worst a blob that the next
start removes (recovery.py).

A record's content is one blob, or, once appended to (joins.py), the concatenation of runs of several (`Segment`s).
Blobs never change once a version names them, except the file an append request is still writing, which only grows
past the runs already named.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import datetime
import hashlib
import os
import uuid
from pathlib import Path
from typing import Any, Awaitable, Callable

from tornado_records.storage import catalogue, joins, parts, recovery, sqldb, upload_rows
from tornado_records.storage.commits import CommitLine
from tornado_records.storage.content import Receiver, open_content
from tornado_records.storage.joins import Joins
from tornado_records.storage.model import (
    Blob, BlobsError, Condition, ContentDamaged, Page, PreconditionFailed, Record, RecordNotFound, StorageFull,
    StoreError, storage_errors,
)  # fmt: skip
from tornado_records.storage.sharing import sharing_for
from tornado_records.storage.upload_rows import UploadRows

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    event    TEXT    NOT NULL,  -- canonical UUID
    start    TEXT    NOT NULL,  -- canonical naive ISO 8601 (datetime.isoformat), sorts as time does
    blob     TEXT    NOT NULL,  -- no index: a record of many runs makes a long value
    type     TEXT    NOT NULL,
    size     BIGINT  NOT NULL,
    sha256   TEXT    NOT NULL,
    modified BIGINT  NOT NULL,  -- Unix seconds
    PRIMARY KEY (event, start)
) {without_rowid};
-- blob: one file name (the whole file is the content), or runs "name:offset:length ..." (appended records).
"""
HASH_CACHE = 256  # SHA-256 states of recent contents kept, so that an append hashes only what it adds
READ_BLOCK = 1 << 20
_COLUMNS = "event, start, type, size, sha256, modified, blob"
_PUT_RECORD = (
    f"INSERT INTO records ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event, start) DO UPDATE SET"
    " type = excluded.type, size = excluded.size, sha256 = excluded.sha256, modified = excluded.modified,"
    " blob = excluded.blob"
)


@dataclasses.dataclass
class NewContent:
    """A whole upload on its way to be a record's version: what `commit` takes."""

    receiver: Receiver  # its file and the blob it becomes
    event: uuid.UUID
    start: datetime.datetime
    type: str
    size: int
    digest: "hashlib._Hash"  # the SHA-256 of all of it
    began: float  # Unix time its first byte could come (the start of its part)
    durable: bool = False  # the file that becomes its blob as it is (keeps_file) was fsynced by its writer: no finish


class RecordStore:
    """The records of one data directory. Reads run on the caller's thread; writes go through one writer thread.

    Its rooms: `content` (where bytes are kept), `joins` (append pieces joining records), `uploads` (the resumable
    uploads' rows), `sharing` (this process alone on its index, or one of several)."""

    def __init__(
        self, root: Path, index: str = "sqlite", blobs: str = "", endpoint: str | None = None, shared: bool = False
    ) -> None:
        self.root = root
        self.blobs = root / "blobs"  # blob files; with an object store, the files of append pieces while they arrive
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.content = open_content(blobs, root, endpoint)
        self.writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="records-writer")
        self.wconn = sqldb.connect(index, root, shared=shared)  # shared: SQLite with --processes N
        self.wconn.schema(_SCHEMA)
        self.wconn.drop_unique("records", "blob")  # an index from before: PostgreSQL refused 60 runs and more
        for room in (catalogue, parts, joins, upload_rows):
            room.create(self.wconn)
        self.rconn = sqldb.connect(index, root, shared=shared)
        self.joins = Joins(self)
        self.commits = CommitLine(self)
        self.uploads = UploadRows(self)
        self.sharing = sharing_for(self)
        self.tmp = self.sharing.tmp
        self.tmp.mkdir(parents=True, exist_ok=True)
        self._hashes: collections.OrderedDict[str, "hashlib._Hash"] = collections.OrderedDict()
        self.background: set[asyncio.Future] = set()  # work that the shutdown waits for (finish_later)
        # With a shared event log: writes the events of records' changes in the changes' transaction (the hub's
        # write_changes), given the writer's connection and each event's type and data.
        self.change_events: Callable[[sqldb.Database, list[tuple[str, dict]]], None] | None = None
        recovery.recover(self)

    @property
    def shared(self) -> bool:
        """Other processes share the index (and the data directory)."""
        return self.sharing.shared

    def finish_later(self, work: Awaitable, what: str) -> asyncio.Future:
        """Run `work` as a task that the shutdown waits for (settle) before the store closes; its failure is one
        warning line saying `what` failed."""
        task = asyncio.ensure_future(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        task.add_done_callback(lambda done: _log_failure(done, what))
        return task

    async def settle(self) -> None:
        """Wait for the work begun with finish_later (and what it began in turn)."""
        while self.background:
            await asyncio.wait(set(self.background))

    def start(self) -> None:
        self.sharing.start()

    def stop(self) -> None:
        self.sharing.stop()

    def close(self) -> None:
        self.writer.shutdown(wait=True)
        self.content.close()
        self.wconn.close()
        self.rconn.close()

    # -- reading -------------------------------------------------------------------------------------------------

    async def list(
        self,
        event: uuid.UUID,
        *,
        after: datetime.datetime | None = None,
        before: datetime.datetime | None = None,
        limit: int = 10,
        offset: int = 0,
        descending: bool = False,
    ) -> Page:
        """The records of an event with after < start < before, ordered by start, paged by limit and offset.

        The count and the page's bounds come from the index of starts (starts.py: alone, in memory, where a deep
        offset costs no scan; with a shared index, in a thread); the rows from one indexed range query.
        """
        bounds = (
            str(event),
            None if after is None else after.isoformat(),
            None if before is None else before.isoformat(),
            limit,
            offset,
            descending,
        )
        count, starts = await self.sharing.page(*bounds)
        if not starts:
            return Page(count, [])
        rows = self.rconn.execute(
            f"SELECT {_COLUMNS} FROM records WHERE event = ? AND start BETWEEN ? AND ?"
            f" ORDER BY start {'DESC' if descending else 'ASC'} LIMIT ?",
            (str(event), min(starts), max(starts), limit),
        ).fetchall()
        return Page(count, [Record(*row) for row in rows])

    def events(
        self, *, search: str | None = None, limit: int = 10, offset: int = 0, descending: bool = True
    ) -> tuple[int, list[catalogue.EventSummary]]:
        """How many events have records (matching `search` in their title or UUID), and one page of them by last
        change, each with its first and last start."""
        return catalogue.page(self.rconn, search=search, limit=limit, offset=offset, descending=descending)

    def details(self, event: uuid.UUID) -> catalogue.EventDetails:
        """The event's details (title, description, author, image, timezone)."""
        return catalogue.details(self.rconn, str(event))

    async def set_details(self, event: uuid.UUID, changes: dict[str, str | None]) -> catalogue.EventDetails:
        """Set the event's details named in `changes` (None takes one away), keeping the others; its details now."""
        return await self.in_writer(catalogue.set_details, str(event), changes)

    def get(self, event: uuid.UUID, start: datetime.datetime) -> Record:
        """The current version of a record; RecordNotFound if there is none."""
        row = self.rconn.execute(
            f"SELECT {_COLUMNS} FROM records WHERE event = ? AND start = ?", (str(event), start.isoformat())
        ).fetchone()
        if row is None:
            raise RecordNotFound(event, start)
        return Record(*row)

    def open(self, event: uuid.UUID, start: datetime.datetime) -> Blob:
        """The current version of a record, open for reading; RecordNotFound if there is none, ContentDamaged if a
        file of it is missing or shorter than its runs (for a one-file record: not of the record's size)."""
        for _ in range(3):
            record = self.get(event, start)
            whole = ":" not in record.blob  # one file that is the content; else runs, parts of files that may grow
            try:
                return Blob(record, self.content.open(record.segments, whole))
            except FileNotFoundError as exc:
                if self.get(event, start) == record:
                    where = f"file blobs/{Path(exc.filename).name}" if exc.filename else f"object {exc}"
                    raise ContentDamaged(record, f"its {where} is missing") from None
                continue  # replaced or deleted between the query and the open: look again
            except BlobsError as exc:
                raise ContentDamaged(record, str(exc)) from None
        raise StoreError(f"the content of event {event} starting at {start.isoformat()} is missing from the disk")

    def sealed_file(self, record: Record) -> str | None:
        """The one blob file that holds exactly the record's content and will not change, or None (a content engine
        with no files, a record made of several runs, or one whose file an append request is still writing)."""
        segments = record.segments
        name = self.content.whole_file(segments[0]) if len(segments) == 1 else None
        if name is None or name in self.joins.writing or self.sharing.appended_elsewhere(name):
            return None
        return name

    def content_hash(self, record: Record) -> "hashlib._Hash":
        """A SHA-256 hash object that has hashed the record's content: a copy of the one kept since the content
        was written, or else made by reading it (blocks: run it in a thread)."""
        cached = self._hashes.get(record.sha256)
        if cached is not None:
            return cached.copy()
        digest = hashlib.sha256()
        blob = Blob(record, self.content.open(record.segments, whole=False))
        try:
            while data := blob.file.read(READ_BLOCK):
                digest.update(data)
        finally:
            blob.close()
        if digest.hexdigest() != record.sha256:
            raise StoreError(f"the content of event {record.event} starting at {record.start} is damaged on the disk")
        self.keep_hash(digest)
        return digest.copy()

    def keep_hash(self, digest: "hashlib._Hash") -> None:
        """Remember the state of a hash of some content, for appends to it."""
        self._hashes[digest.hexdigest()] = digest.copy()
        self._hashes.move_to_end(digest.hexdigest())
        while len(self._hashes) > HASH_CACHE:
            self._hashes.popitem(last=False)

    # -- writing -------------------------------------------------------------------------------------------------

    def free_space(self) -> int:
        """Bytes that an unprivileged process may still write on the disk holding the data directory."""
        stats = os.statvfs(self.tmp)
        return stats.f_bavail * stats.f_frsize

    def ensure_space(self, size: int) -> None:
        """Raise StorageFull unless `size` more bytes fit on the disk holding the data directory."""
        if size > self.free_space():
            raise StorageFull(f"An upload of {size} bytes does not fit in the space left on the server's disk")

    def new_name(self) -> str:
        """A new blob's name."""
        return self.content.new_name(self.sharing.owner)

    async def commit(self, new: NewContent, condition: Condition | None = None) -> tuple[Record, bool]:
        """Make a whole upload the record's current version; returns it and whether the record is new. The upload's
        content is made durable first (its receiver's finish), then placed in the index's transaction, which the
        commits that end together share (commits.py).

        `condition`, if given, is checked against the current version in the same transaction that replaces it
        (PreconditionFailed if it does not hold), so that no other change can slip in between. On a failure the
        previous version stays as it was, and the new content's blob is removed (its file in tmp/ is the caller's).
        """
        if not new.durable:
            await new.receiver.finish(new.size)
        return await self.commits.commit(new, condition)

    def adopt(self, record: Record, name: str, details: dict[str, str | None] | None = None) -> bool:
        """Make `record`, a version copied from another data directory whose content is now the blob `name`, the
        record's version here, unless it has one; whether it did. The event gets each of `details` (title,
        description, ...) that it has not. Blocks (for `migrate`)."""
        with storage_errors(), self.wconn.transaction():
            self.wconn.lock_record(record.event, record.start)
            if self.current(record.event, record.start) is not None:
                return False
            self.wconn.execute(_PUT_RECORD, dataclasses.astuple(dataclasses.replace(record, blob=name)))
            catalogue.count_change(self.wconn, record.event, None, record.size)
            if details and any(value is not None for value in details.values()):
                catalogue.set_details(self.wconn, record.event, details, keep=True)
        self.sharing.starts.add(record.event, record.start)
        return True

    def write_version(self, record: Record, old: Record | None, events: list[tuple[str, dict]] | None = None) -> None:
        """In a writer transaction: make `record` the current version in place of `old`, counted in its event's
        summary, and its event written where the event log is shared (or added to `events`, for write_events)."""
        self.write_versions([(record, old)], events)

    def write_versions(
        self, versions: list[tuple[Record, Record | None]], events: list[tuple[str, dict]] | None = None
    ) -> None:
        """write_version of each (record, old), in their order (of one record, the last is current), in a few
        statements: the rows in one executemany, the counts added up by event."""
        self.wconn.executemany(_PUT_RECORD, [dataclasses.astuple(record) for record, _ in versions])
        catalogue.count_changes(
            self.wconn, [(record.event, None if old is None else old.size, record.size) for record, old in versions]
        )
        changes = [
            ("record-created" if old is None else "record-updated", {"record": record.to_json()})
            for record, old in versions
        ]
        if events is not None:
            events.extend(changes)
        else:
            self.write_events(changes)

    def write_events(self, events: list[tuple[str, dict]]) -> None:
        """In a writer transaction: the events (type, data) of its changes, written where the event log is shared
        (all at once: the log's writer, which holds its lock between writes, has its say once)."""
        if self.change_events is not None and events:
            self.change_events(self.wconn, events)

    def put_row(self, record: Record) -> None:
        """In a writer transaction: the record's row, as it is (the same bytes in other runs: no event)."""
        self.wconn.execute(_PUT_RECORD, dataclasses.astuple(record))

    def unlink_unused(self, old: Record | None, new: Record | None) -> None:
        """Remove the blobs of a replaced or deleted version that the new one does not use (nor an append request
        that still writes one)."""
        if old is None:
            return
        keep = {s.name for s in new.segments} if new is not None else set()
        keep |= self.joins.writing
        if ":" in old.blob:  # runs (joins.py) may name files that append requests write; a plain upload's file, none
            keep |= self.sharing.written_elsewhere(old.event, old.start)  # (a query of the index: PostgreSQL's)
        for segment in old.segments:
            if segment.name not in keep:
                self.content.remove(segment.name)

    async def delete(self, event: uuid.UUID, start: datetime.datetime, condition: Condition | None = None) -> Record:
        """Remove a record and its content; returns what was removed.

        RecordNotFound if there is none; PreconditionFailed if `condition` does not hold for the current version
        (or for its absence), checked in the transaction that removes it.
        """
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.writer, self._delete, event, start, condition)

    def _delete(self, event: uuid.UUID, start: datetime.datetime, condition: Condition | None) -> Record:
        with storage_errors(), self.wconn.transaction():
            self.wconn.lock_record(str(event), start.isoformat())
            record = self.current(event, start)
            if condition is not None and not condition(record):
                raise PreconditionFailed(event, start)
            if record is None:
                raise RecordNotFound(event, start)
            self.wconn.execute("DELETE FROM records WHERE event = ? AND start = ?", (record.event, record.start))
            catalogue.count_change(self.wconn, record.event, record.size, None)
            parts.remove(self.wconn, record.event, record.start)
            self.write_events([("record-deleted", {"record": {"event": record.event, "start": record.start}})])
        self.sharing.starts.remove(record.event, record.start)
        self.unlink_unused(record, None)
        return record

    def current(
        self, event: uuid.UUID | str, start: datetime.datetime | str, conn: sqldb.Database | None = None
    ) -> Record | None:
        """The current version of a record as the writer sees it (call inside a writer transaction), or as `conn`
        sees it."""
        start = start if isinstance(start, str) else start.isoformat()
        row = (conn or self.wconn).execute(
            f"SELECT {_COLUMNS} FROM records WHERE event = ? AND start = ?", (str(event), start)
        ).fetchone()
        return None if row is None else Record(*row)

    def lock_current(self, keys: list[tuple[str, str]]) -> list[Record | None]:
        """In a writer transaction: hold the records (event, start) until its end, in the order given, and read the
        current version of each (None: none); all asked at once (in the pipeline, if one is under way)."""
        for event, start in keys:
            self.wconn.lock_record(event, start)
        select = f"SELECT {_COLUMNS} FROM records WHERE event = ? AND start = ?"
        rows = [self.wconn.execute(select, key) for key in keys]
        return [None if (row := found.fetchone()) is None else Record(*row) for found in rows]

    async def in_writer(self, change: Callable[..., Any], *arguments: Any) -> Any:
        """Run `change(connection, *arguments)` in one transaction of the writer thread."""
        return await asyncio.get_running_loop().run_in_executor(self.writer, self._in_transaction, change, *arguments)

    def _in_transaction(self, change: Callable[..., Any], *arguments: Any) -> Any:
        with storage_errors(), self.wconn.transaction():
            return change(self.wconn, *arguments)

    def execute(self, sql: str, parameters: tuple) -> None:
        """One statement in a transaction of its own, on the caller's thread (the writer's, or at start-up)."""
        self._in_transaction(lambda conn: conn.execute(sql, parameters))


def _log_failure(task: asyncio.Future, what: str) -> None:
    if not task.cancelled() and task.exception() is not None:
        recovery.log.warning("%s failed: %s", what, task.exception())
