"""RecordStore: the data directory (a SQLite index, immutable blob files, uploads in flight). Knows nothing of HTTP.

    data/records.sqlite3   (event, start) -> blob name, content type, size, sha256, modified
    data/blobs/            one immutable file per record version, named at random
    data/tmp/              uploads in flight, on the same filesystem as blobs/ so that rename is atomic

An upload is written to tmp/, fsynced, renamed into blobs/, and only then does one transaction point the record at
it; the blob it replaced is unlinked last. A crash between any two steps leaves the old version or the new one,
whole, and at worst a file that `RecordStore.open` removes at the next start.

A record's content is one blob file, or, once appended to (see appends.py), the concatenation of runs of several
(`Segment`s): each append request writes its own file in blobs/, and a version names the runs it is made of. Files
never change once a version names them, except the one an append request is still writing, which only grows past
the runs already named.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import ctypes
import dataclasses
import datetime
import hashlib
import hmac
import logging
import os
import secrets
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Awaitable, BinaryIO, Callable, Iterator

import tornado.ioloop

from tornado_records import catalogue, parts, sqldb
from tornado_records.blobs import (
    MERGED, BlobsError, FileContent, ObjectContent, ObjectSender, Segment, fsync_dir, open_blobs, piece_end,
)
from tornado_records.starts import SqlStarts, StartIndex
from tornado_records.spool import Spool

log = logging.getLogger("tornado_records.store")

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

CREATE TABLE IF NOT EXISTS appends (  -- append requests with bytes on disk: their rest joins the record at start-up
    blob      TEXT    PRIMARY KEY,
    event     TEXT    NOT NULL,
    start     TEXT    NOT NULL,
    type      TEXT    NOT NULL,
    seq       BIGINT  NOT NULL,  -- the order their first bytes arrived in
    committed BIGINT  NOT NULL,  -- bytes of the file from which on nothing is in the record yet
    owner     BIGINT  NOT NULL DEFAULT 0  -- the process writing it (processes sharing a PostgreSQL index), else 0
);

CREATE TABLE IF NOT EXISTS uploads (  -- resumable uploads (resumable.py); the bytes of each are the file uploads/<id>
    id         TEXT    PRIMARY KEY,  -- random, unguessable: the upload resource's URL
    event      TEXT    NOT NULL,
    start      TEXT    NOT NULL,
    type       TEXT    NOT NULL,
    received   BIGINT  NOT NULL,     -- the durable offset: bytes of the file known to be on disk (fsync)
    length     BIGINT,               -- the announced length, NULL until known
    expires    BIGINT  NOT NULL,     -- Unix seconds
    conditions TEXT    NOT NULL,     -- JSON: the creation request's precondition headers, checked at completion
    digest     TEXT    NOT NULL,     -- hex SHA-256 the whole content must have, or empty
    etag       TEXT                  -- the record version it made, once completed (the row stays until it expires)
);

CREATE TABLE IF NOT EXISTS upload_wanted (  -- resumable uploads a request to another process waits to take over
    id   TEXT PRIMARY KEY,
    at   DOUBLE PRECISION NOT NULL      -- Unix time it was asked for
);
"""

ENDED_WAIT = 1.0  # seconds a start waits for a process that has just ended to let go of its name (shared index)
ENDED_TIDY = 10.0  # seconds between looks for what ended processes left (shared index)
ORPHAN_AGE = 3600.0  # seconds: a blob no row names is removed at start-up once this old (when processes share the index)
STANDBY_HEAD = 1 << 20  # bytes at the start of a standby piece's file always kept (an Ogg stream's header pages)
HASH_CACHE = 256  # SHA-256 states of recent contents kept, so that an append hashes only what it adds


class StoreError(Exception):
    """Base of the errors the store raises; handlers map each to one HTTP status."""


class RecordNotFound(StoreError):
    """There is no record of that event at that start."""

    def __init__(self, event: uuid.UUID, start: datetime.datetime) -> None:
        super().__init__(f"No record of event {event} starting at {start.isoformat()}")


class PreconditionFailed(StoreError):
    """The record is not in the state the change was made conditional on; nothing was changed."""

    def __init__(self, event: uuid.UUID, start: datetime.datetime) -> None:
        super().__init__(
            f"The record of event {event} starting at {start.isoformat()} does not meet the request's preconditions"
        )


class StorageFull(StoreError):
    """The disk holding the data directory has no room for the upload (ENOSPC); nothing was stored."""

    def __init__(self, detail: str = "There is not enough space left on the server's disk for this upload") -> None:
        super().__init__(detail)


class Busy(StoreError):
    """Another process sharing the index is writing it (such as a resumable upload): try again once it is done."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} is being written by a request to another process of the service: try again later")


class ContentDamaged(StoreError):
    """A file of the record's content is missing from the disk, or its size is not what the index says: the record
    is damaged, and is not served."""

    def __init__(self, record: "Record", problem: str) -> None:
        super().__init__(f"the record of event {record.event} starting at {record.start} is damaged: {problem}")


class DigestMismatch(StoreError):
    """The content received does not have the digest the client said it has; nothing was stored."""

    def __init__(self, algorithm: str) -> None:
        super().__init__(f"The content received does not match the {algorithm} digest given with it")


Condition = Callable[["Record | None"], bool]
"""A precondition on a record's current version (None: there is none), checked as part of a change."""


def blob_spec(segments: list[Segment]) -> str:
    """The index's text for a content made of these runs."""
    return " ".join(f"{s.name}:{s.offset}:{s.length}" for s in segments)


@dataclasses.dataclass(frozen=True)
class Record:
    """One stored version of a record, as the index describes it."""

    event: str
    start: str
    type: str
    size: int
    sha256: str
    modified: int
    blob: str

    @property
    def etag(self) -> str:
        """The strong entity tag: the quoted SHA-256 of the content."""
        return f'"{self.sha256}"'

    @property
    def segments(self) -> list[Segment]:
        """The runs of blob files whose concatenation is the content: one whole file, unless it was appended to."""
        if ":" not in self.blob:
            return [Segment(self.blob, 0, self.size)]
        return [Segment(name, int(at), int(length)) for name, at, length in (p.split(":") for p in self.blob.split())]

    @property
    def modified_at(self) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self.modified, datetime.timezone.utc)

    def to_json(self) -> dict:
        return {
            "event": self.event,
            "start": self.start,
            "type": self.type,
            "size": self.size,
            "etag": self.etag,
            "modified": self.modified_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }


@dataclasses.dataclass
class Blob:
    """A record and its content, open for reading until `close`; it stays readable even if the record is replaced
    or deleted meanwhile (see FileContent and ObjectContent for the limits: an object, or a file that another process
    sharing the data directory removed, before the reading reached it)."""

    record: Record
    file: FileContent | ObjectContent

    def close(self) -> None:
        self.file.close()


@dataclasses.dataclass(frozen=True)
class Page:
    """One page of a listing: `count` records match the bounds, `records` are those after offset and limit."""

    count: int
    records: list[Record]


class Upload:
    """A body being received into tmp/: handed to its spool as it arrives, written and hashed by the spool's writer.

    `expected` maps hashlib algorithm names (sha256, md5) to the digests the client announced; the content is
    hashed with each of them too, and `seal` refuses content whose digest differs.
    """

    def __init__(
        self,
        path: Path,
        event: uuid.UUID,
        start: datetime.datetime,
        content_type: str,
        expected: dict[str, bytes] | None = None,
        name: str = "",
        sender: ObjectSender | None = None,
    ) -> None:
        self.path = path
        self.name = name  # the blob it becomes
        self.sender = sender  # writes it to the object store as it arrives (S3 blobs), else None
        self._follower: Callable[[], None] | None = None
        self.event = event
        self.start = start
        self.content_type = content_type
        self.moved = False  # renamed into blobs/ by a commit
        self.began = time.time()  # when its first byte could come (the start of its part)
        self.expected = dict(expected or {})
        self._hashes = {name: hashlib.new(name) for name in {"sha256", *self.expected}}
        with storage_errors():
            self._file: BinaryIO | None = open(path, "xb", buffering=0)
        self._spool = Spool(self._file, self._hashes.values())
        self._spool.on_written = self._written

    @property
    def received(self) -> int:
        """Bytes received so far (in the file, or on their way to it)."""
        return self._spool.received

    @property
    def size(self) -> int:
        """Bytes in the file: once `drain`ed, the content's size."""
        return self._spool.written

    def write(self, chunk: bytes) -> Awaitable[None] | None:
        """Hand a received chunk to the writer; an awaitable to await before the next one when the writer lags
        (see spool.py). StorageFull if the disk is full."""
        assert self._file is not None, "upload already sealed or discarded"
        with storage_errors():
            return self._spool.put(chunk)

    def follow(self, on_written: Callable[[], None]) -> None:
        """Have `on_written` called (on the event loop) whenever received bytes reach the file."""
        self._follower = on_written

    def _written(self) -> None:
        if self.sender is not None:
            self.sender.written(self._spool.written)
        if self._follower is not None:
            self._follower()

    async def drain(self) -> None:
        """Wait until all that was received is in the file; StorageFull if the disk is full."""
        with storage_errors():
            await self._spool.drain()

    def seal(self) -> str:
        """Make the content durable (fsync) and close it; returns its SHA-256 (hex). Blocks: run it in a thread,
        after `drain`.

        DigestMismatch if the content does not have an expected digest; StorageFull if the disk is full.
        """
        assert self._file is not None, "upload already sealed or discarded"
        assert self.size == self.received, "seal before drain"
        for name, digest in self.expected.items():
            if not hmac.compare_digest(self._hashes[name].digest(), digest):
                raise DigestMismatch(name)
        if self.sender is None:  # an object store keeps the content durably instead
            with storage_errors():
                os.fsync(self._file.fileno())
        self._spool.close()
        self._file = None
        return self.sha256.hexdigest()

    @property
    def sha256(self) -> "hashlib._Hash":
        """The SHA-256 of what was written so far, as a hash object."""
        return self._hashes["sha256"]

    def discard(self) -> None:
        """Forget the upload: close and remove its file (unless it became a blob). Safe to call more than once."""
        if self._file is not None:
            self._spool.close()
            self._file = None
        if not self.moved:
            self.path.unlink(missing_ok=True)
        if self.sender is not None:
            sender, self.sender = self.sender, None
            if sender.upload_id is not None:
                asyncio.get_running_loop().run_in_executor(None, sender.abort)


class RecordStore:
    """The records of one data directory. Reads run on the caller's thread; writes go through one writer thread."""

    def __init__(self, root: Path, index: str = "sqlite", blobs: str = "", endpoint: str | None = None) -> None:
        self.root = root
        self.blobs = root / "blobs"  # blob files; with an object store, the files of append pieces while they arrive
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.blob_store = open_blobs(blobs, root, endpoint)  # where versions' content is kept
        self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="records-writer")
        self._wconn = sqldb.connect(index, root)
        self._wconn.schema(_SCHEMA)
        self._wconn.add_column("appends", "owner", "BIGINT NOT NULL DEFAULT 0")  # an index from before processes
        self._wconn.drop_unique("records", "blob")  # an index from before: PostgreSQL refused 60 runs and more
        catalogue.create(self._wconn)
        parts.create(self._wconn)
        self._rconn = sqldb.connect(index, root)
        self.shared = self._wconn.shared  # other processes share the index (and the data directory)
        # Processes sharing an index each hold a name of their own while they live (an advisory lock in
        # PostgreSQL): their uploads in flight are in tmp/<owner>/, their append requests' rows carry it, and what a
        # process that ended left is tidied by one that finds its name free. One process alone is owner 0.
        self.owner = secrets.randbits(31) | 1 if self.shared else 0
        self._wconn.claim(self.owner)
        if self.shared:  # a connection lost and made again holds the name again
            self._wconn.on_reconnect.append(lambda: self._wconn.claim(self.owner))
        self.tmp = root / "tmp" / str(self.owner) if self.shared else root / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self._hashes: collections.OrderedDict[str, "hashlib._Hash"] = collections.OrderedDict()
        self.writing: set[str] = set()  # blob files that append requests are still writing (see appends.py)
        self.appends: dict[tuple[str, str], list] = {}  # each record's append requests with bytes, in order
        self.ending: set[asyncio.Future] = set()  # append requests that ended and are joining their records
        self.interrupted: set[tuple[str, str]] = set()  # records whose last append request broke off
        self._tidying: tornado.ioloop.PeriodicCallback | None = None
        self._starts = SqlStarts(self._rconn) if self.shared else StartIndex(self._wconn)
        # With a shared event log: writes the event of a record's change in the change's transaction (the hub's
        # write_change), given the writer's connection, the event's type and data.
        self.change_event: Callable[[sqldb.Database, str, dict], None] | None = None
        self._recover()

    def finish_later(self, work: Awaitable, what: str) -> asyncio.Future:
        """Run `work` as a task that the shutdown waits for (in `ending`) before the store closes; its failure is one
        warning line saying `what` failed."""
        task = asyncio.ensure_future(work)
        self.ending.add(task)
        task.add_done_callback(self.ending.discard)
        task.add_done_callback(lambda done: _log_failure(done, what))
        return task

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        self.blob_store.close()
        self._wconn.close()
        self._rconn.close()

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
        if self.shared:
            count, starts = await asyncio.get_running_loop().run_in_executor(None, self._starts.page, *bounds)
        else:
            count, starts = self._starts.page(*bounds)
        if not starts:
            return Page(count, [])
        rows = self._rconn.execute(
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
        return catalogue.page(self._rconn, search=search, limit=limit, offset=offset, descending=descending)

    def title(self, event: uuid.UUID) -> str | None:
        """The event's title, or None."""
        return catalogue.title(self._rconn, str(event))

    async def set_title(self, event: uuid.UUID, title: str | None) -> None:
        """Give the event a title, or take it away (None)."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._writer, self._in_transaction, catalogue.set_title, str(event), title)

    def _in_transaction(self, change: Callable, *arguments: object) -> None:
        with storage_errors(), self._wconn.transaction():
            change(self._wconn, *arguments)

    def get(self, event: uuid.UUID, start: datetime.datetime) -> Record:
        """The current version of a record; RecordNotFound if there is none."""
        row = self._rconn.execute(
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
                return Blob(record, self.blob_store.open(record.segments, whole))
            except FileNotFoundError as exc:
                if self.get(event, start) == record:
                    where = f"file blobs/{Path(exc.filename).name}" if exc.filename else f"object {exc}"
                    raise ContentDamaged(record, f"its {where} is missing") from None
                continue  # replaced or deleted between the query and the open: look again
            except BlobsError as exc:
                raise ContentDamaged(record, str(exc)) from None
        raise StoreError(f"the content of event {event} starting at {start.isoformat()} is missing from the disk")

    def sealed_file(self, record: Record) -> str | None:
        """The one blob file that holds exactly the record's content and will not change, or None (an appended
        record made of several runs, or one whose file an append request is still writing)."""
        segments = record.segments
        if not self.blob_store.local:
            return None
        if len(segments) == 1 and segments[0].offset == 0 and segments[0].name not in self.writing:
            name = segments[0].name
            if not self.shared or not self._rconn.execute("SELECT 1 FROM appends WHERE blob = ?", (name,)).fetchone():
                return name
        return None

    def content_hash(self, record: Record) -> "hashlib._Hash":
        """A SHA-256 hash object that has hashed the record's content: a copy of the one kept since the content
        was written, or else made by reading it (blocks: run it in a thread)."""
        cached = self._hashes.get(record.sha256)
        if cached is not None:
            return cached.copy()
        digest = hashlib.sha256()
        blob = self._open_version(record)
        try:
            while data := blob.file.read(DOWNLOAD_BLOCK):
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

    def _open_version(self, record: Record) -> Blob:
        return Blob(record, self.blob_store.open(record.segments, whole=False))

    # -- writing -------------------------------------------------------------------------------------------------

    def free_space(self) -> int:
        """Bytes that an unprivileged process may still write on the disk holding the data directory."""
        stats = os.statvfs(self.tmp)
        return stats.f_bavail * stats.f_frsize

    def ensure_space(self, size: int) -> None:
        """Raise StorageFull unless `size` more bytes fit on the disk holding the data directory."""
        if size > self.free_space():
            raise StorageFull(f"An upload of {size} bytes does not fit in the space left on the server's disk")

    async def begin_upload(
        self,
        event: uuid.UUID,
        start: datetime.datetime,
        content_type: str,
        expected: dict[str, bytes] | None = None,
    ) -> Upload:
        """A new, empty upload in tmp/ for the record (event, start), checked against the `expected` digests.

        Its file is made in a thread: under heavy writeback, creating a file waits on the disk's journal (11 % of
        the event loop's time in a storm of 50 uploads at once, before this moved; see bench/, ping-storm).
        """
        path = self.tmp / f"{uuid.uuid4().hex}.part"
        name = self.new_name()
        sender = None if self.blob_store.local else ObjectSender(self.blob_store, path, name)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, Upload, path, event, start, content_type, expected, name, sender)

    def new_name(self) -> str:
        """A new blob's name: random (in an object store, after the name of the process that writes it, so that
        the sweep at a start knows whose unfinished uploads it finds)."""
        return uuid.uuid4().hex if self.blob_store.local else f"{self.owner:x}-{uuid.uuid4().hex}"

    async def commit(self, upload: Upload, condition: Condition | None = None) -> tuple[Record, bool]:
        """Make a received upload the record's current version; returns it and whether the record is new.

        `condition`, if given, is checked against the current version in the same transaction that replaces it
        (PreconditionFailed if it does not hold), so that no other change can slip in between. On any failure the
        upload is discarded and the previous version stays as it was.
        """
        loop = asyncio.get_running_loop()
        try:
            await upload.drain()
            sha256 = await loop.run_in_executor(None, upload.seal)
            if upload.sender is not None:
                await upload.sender.finish(upload.size)
                upload.sender = None  # the object is whole: the commit removes it if it fails
            return await loop.run_in_executor(self._writer, self._commit, upload, sha256, condition)
        finally:
            upload.discard()

    def _commit(self, upload: Upload, sha256: str, condition: Condition | None) -> tuple[Record, bool]:
        """commit() in the writer thread; with an object store, the object `upload.name` is whole already."""
        blob = upload.name
        record = Record(
            str(upload.event), upload.start.isoformat(), upload.content_type, upload.size, sha256, int(time.time()), blob
        )
        try:
            with storage_errors(), self._wconn.transaction():
                self._wconn.lock_record(str(upload.event), upload.start.isoformat())
                old = self._current(upload.event, upload.start)
                if condition is not None and not condition(old):
                    raise PreconditionFailed(upload.event, upload.start)
                if self.blob_store.local:
                    self.blob_store.place(upload.path, blob, record.modified)
                    upload.moved = True
                self._wconn.execute(_PUT_RECORD, dataclasses.astuple(record))
                catalogue.count_change(self._wconn, record.event, None if old is None else old.size, record.size)
                parts.replace(self._wconn, record.event, record.start, record.size, upload.began, time.time())
                self._changed(record, old is None)
        except sqldb.IndexUnavailable:
            raise  # the commit's outcome is unknown: the blob stays (named, or an orphan that a later start removes)
        except BaseException:
            self.blob_store.remove(blob)
            raise
        self._starts.add(record.event, record.start)
        self.keep_hash(upload.sha256)
        self.unlink_unused(old, record)
        return record, old is None

    def adopt(self, record: Record, name: str, title: str | None = None) -> bool:
        """Make `record`, a version copied from another data directory whose content is now the blob `name`, the
        record's version here, unless it has one; whether it did. The event gets `title` unless it has one. Blocks
        (for `migrate`)."""
        with storage_errors(), self._wconn.transaction():
            self._wconn.lock_record(record.event, record.start)
            if self._current(record.event, record.start) is not None:
                return False
            self._wconn.execute(_PUT_RECORD, dataclasses.astuple(dataclasses.replace(record, blob=name)))
            catalogue.count_change(self._wconn, record.event, None, record.size)
            if title is not None and catalogue.title(self._wconn, record.event) is None:
                catalogue.set_title(self._wconn, record.event, title)
        self._starts.add(record.event, record.start)
        return True

    def _changed(self, record: Record, created: bool) -> None:
        """Write the event of a new version in the change's transaction, where the event log is shared."""
        if self.change_event is not None:
            change = "record-created" if created else "record-updated"
            self.change_event(self._wconn, change, {"record": record.to_json()})

    def unlink_unused(self, old: Record | None, new: Record | None) -> None:
        """Remove the files of a replaced or deleted version that the new one does not use (nor an append request
        that still writes one)."""
        if old is None:
            return
        keep = {s.name for s in new.segments} if new is not None else set()
        keep |= self.writing | self._written_elsewhere(old.event, old.start)
        for segment in old.segments:
            if segment.name not in keep:
                self.blob_store.remove(segment.name)

    def _written_elsewhere(self, event: str, start: str) -> set[str]:
        """The files that append requests of other processes sharing the index write for the record (in the writer
        thread)."""
        if not self.shared:
            return set()
        rows = self._wconn.execute("SELECT blob FROM appends WHERE event = ? AND start = ?", (event, start))
        return {name for (name,) in rows}

    async def append(
        self, name: str, event: str, start: str, content_type: str, at: int, upto: int, times: tuple[float, float]
    ) -> tuple[Record, bool]:
        """Add the bytes at..upto of the blob file `name` after the record's content, durably (creating the record,
        of `content_type`, if there is none); returns the new version and whether the record is new.

        The record is not rewritten: the version names one more run of the file (or a longer one), and its SHA-256
        continues from the state of the content it extends (content_hash).
        """
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, _fsync_file, self.blobs / name, self.blobs)
        while True:
            current = self._current(event, start, self._rconn)
            digest = hashlib.sha256()
            if current is not None:
                digest = await loop.run_in_executor(None, self.content_hash, current)
            try:
                return await loop.run_in_executor(
                    self._writer, self._append, name, event, start, content_type, at, upto, current, digest, times
                )
            except _Changed:
                continue  # another change came first: extend that one

    def _append(
        self,
        name: str,
        event: str,
        start: str,
        content_type: str,
        at: int,
        upto: int,
        expected: Record | None,
        digest: "hashlib._Hash",
        times: tuple[float, float] | None = None,
        ended: str = "",
    ) -> tuple[Record, bool]:
        """append() in the writer thread (or at start-up), given the version it extends and that version's hash, and
        when the piece's first and last bytes came (None: at start-up, its file's time; `ended` then says so);
        _Changed if the record is no longer that version."""
        path = self.blobs / name
        sent = None  # the object that holds the bytes joined, with an object store
        try:
            with storage_errors(), self._wconn.transaction():
                self._wconn.lock_record(event, start)
                old = self._current(event, start)
                if old != expected:
                    raise _Changed()
                segments = old.segments if old is not None else []
                # never a byte of the file twice: from where the record's runs of it end (another process may have
                # joined them for this one, while it had lost its name with its connection to the index)
                at = max([at] + [end for s in segments if (end := piece_end(s, name)) is not None])
                if at >= upto:
                    self._wconn.execute("UPDATE appends SET committed = ? WHERE blob = ?", (upto, name))
                    return old, False
                if not self.blob_store.local:  # the bytes joined become an object of their own, named for where
                    sent = f"{name}.{at}"
                    self.blob_store.send(path, sent, at, upto)
                    segments.append(Segment(sent, 0, upto - at))
                elif segments and segments[-1].name == name and segments[-1].end == at:
                    segments[-1] = Segment(name, segments[-1].offset, upto - segments[-1].offset)
                else:
                    segments.append(Segment(name, at, upto - at))
                _hash_file(digest, path, at, upto)
                size = (old.size if old is not None else 0) + upto - at
                content_type = old.type if old is not None else content_type
                modified = int(time.time())
                record = Record(event, start, content_type, size, digest.hexdigest(), modified, blob_spec(segments))
                if sent is None:
                    os.utime(path, (modified, modified))  # Last-Modified, when nginx sends the file itself
                self._wconn.execute(_PUT_RECORD, dataclasses.astuple(record))
                catalogue.count_change(self._wconn, event, None if old is None else old.size, record.size)
                first, last = times or (path.stat().st_mtime,) * 2
                parts.extend(self._wconn, event, start, name, size - (upto - at), size, first, last, ended)
                self._wconn.execute("UPDATE appends SET committed = ? WHERE blob = ?", (upto, name))
                self._changed(record, old is None)
        except sqldb.IndexUnavailable:
            raise  # the outcome is unknown: the object stays (named, or an orphan that a later start removes)
        except BaseException:
            if sent is not None:
                self.blob_store.remove(sent)
            raise
        self._starts.add(event, start)
        self.keep_hash(digest)
        return record, old is None

    async def part_ended(self, name: str, event: str, start: str, ended: str, last_at: float) -> None:
        """Say how the append request that wrote the file `name` ended, in its part of the record."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._writer, self._execute_with, parts.end, event, start, name, ended, last_at)

    def _execute_with(self, change: Callable[..., None], *args: Any) -> None:
        with storage_errors(), self._wconn.transaction():
            change(self._wconn, *args)

    def parts_of(self, event: uuid.UUID, start: datetime.datetime) -> list[dict[str, Any]]:
        """The parts of the record's current version, in the order of their bytes (RecordNotFound if none)."""
        record = self.get(event, start)
        return parts.of(self._rconn, record.event, record.start, record.size, record.modified)

    async def let_go_before(self, name: str, upto: int) -> bool:
        """A standby append piece will never join its file's bytes before `upto` (they are the live one's audio
        again): say so in its row (a restart joins from there), then give their disk space back, keeping the file's
        offsets (a hole punched in it). Whether the space was given back (some file systems cannot)."""
        loop = asyncio.get_running_loop()
        sql = "UPDATE appends SET committed = ? WHERE blob = ? AND committed < ?"
        await loop.run_in_executor(self._writer, self._execute, sql, (upto, name, upto))
        return await loop.run_in_executor(None, punch_hole, self.blobs / name, STANDBY_HEAD, upto)

    def piece_ended(self, name: str, event: str, start: str) -> None:
        """The append request that wrote the file `name` for the record (event, start) ended, and all it received
        is in the record. With files: remove the file unless the record's current version uses it. In an object
        store: merge the piece's runs into one object in the background (the shutdown waits), then remove it."""
        if not self.blob_store.local:
            self.finish_later(self._merge_piece(name, event, start), f"merging the joins of append piece {name}")
            return
        current = self._current(event, start, self._rconn)
        if current is None or name not in {s.name for s in current.segments}:
            self.blob_store.remove(name)  # once no download of a version that names it reads it

    async def _merge_piece(self, name: str, event: str, start: str) -> None:
        """In an object store, make the runs of the piece `name` that the record names (one object each join) one
        object, sent from the piece's file; the record's content stays the same bytes. Then remove the file and the
        runs' objects (a download that reaches one of them afterwards reads the merged object: blobs.merged)."""
        loop = asyncio.get_running_loop()
        path = self.blobs / name
        try:
            current = self._current(event, start, self._rconn)
            found = [(s, end) for s in (current.segments if current else []) if (end := piece_end(s, name)) is not None]
            runs, ends = [run for run, _ in found], [end for _, end in found]
            starts = [end - run.length for run, end in found]
            if len(runs) < 2 or starts[1:] != ends[:-1]:
                return  # one object already, or not one stretch of the file (a version made anew meanwhile)
            first = starts[0]
            merged = Segment(f"{name}.{first}{MERGED}", 0, ends[-1] - first)
            await loop.run_in_executor(None, self.blob_store.send, path, merged.name, first, first + merged.length)
            swapped = await loop.run_in_executor(self._writer, self._swap_runs, event, start, runs, merged)
            unused = [run.name for run in runs] if swapped else [merged.name]
            await loop.run_in_executor(None, self.blob_store.remove_all, unused)
        finally:
            path.unlink(missing_ok=True)

    def _swap_runs(self, event: str, start: str, runs: list[Segment], merged: Segment) -> bool:
        """Name `merged` in the record's current version in place of `runs`, if that version names them in a row
        (in the writer thread); whether it did."""
        with storage_errors(), self._wconn.transaction():
            self._wconn.lock_record(event, start)
            current = self._current(event, start)
            segments = current.segments if current is not None else []
            at = segments.index(runs[0]) if runs[0] in segments else -1
            if at < 0 or segments[at : at + len(runs)] != runs:
                return False
            segments[at : at + len(runs)] = [merged]
            record = dataclasses.replace(current, blob=blob_spec(segments))  # the same bytes: no event, same validators
            self._wconn.execute(_PUT_RECORD, dataclasses.astuple(record))
        return True

    async def note_append(self, name: str, event: str, start: str, content_type: str) -> int:
        """List the blob file `name` as an append request's, so that a crash does not lose what it received; returns
        its place in the record's line (after every piece listed before, of any process)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, self._note_append, name, event, start, content_type)

    def _note_append(self, name: str, event: str, start: str, content_type: str) -> int:
        with storage_errors(), self._wconn.transaction():
            self._wconn.lock_record(event, start)
            (seq,) = self._wconn.execute(
                f"SELECT {self._wconn.greatest}(coalesce(max(seq), 0) + 1, ?) FROM appends"
                " WHERE event = ? AND start = ?",
                (time.time_ns(), event, start),
            ).fetchone()
            self._wconn.execute(
                "INSERT INTO appends (blob, event, start, type, seq, committed, owner) VALUES (?, ?, ?, ?, ?, 0, ?)",
                (name, event, start, content_type, seq, self.owner),
            )
        return seq

    async def wait_for_others(self, event: str, start: str, seq: int, poll: float = 0.25) -> None:
        """Wait until no append request of another process that shares the index is before `seq` in the record's
        line; those of a process that ended are joined to the record here, in their order."""
        loop = asyncio.get_running_loop()
        while True:
            owners = [
                owner
                for (owner,) in self._rconn.execute(
                    "SELECT DISTINCT owner FROM appends WHERE event = ? AND start = ? AND seq < ? AND owner <> ?",
                    (event, start, seq, self.owner),
                )
            ]
            if not owners:
                return
            for owner in owners:
                await loop.run_in_executor(self._writer, self.recover_owner, owner)
            await asyncio.sleep(poll)

    def start(self) -> None:
        """With a shared index: look for what ended processes left every ENDED_TIDY seconds (on the event loop)."""
        if self.shared:
            self._tidying = tornado.ioloop.PeriodicCallback(self._tidy_logged, ENDED_TIDY * 1000)
            self._tidying.start()

    def stop(self) -> None:
        if self._tidying is not None:
            self._tidying.stop()

    async def _tidy_logged(self) -> None:
        try:
            await self.tidy_ended()
        except Exception as exc:  # noqa: BLE001 (the next look tries again)
            log.warning("could not tidy what ended processes left: %s", exc)

    async def tidy_ended(self) -> None:
        """Tidy what processes that ended left (with a shared index; run every ENDED_TIDY seconds)."""
        loop = asyncio.get_running_loop()
        for owner in self._ended_candidates(self._appending_owners()):
            await loop.run_in_executor(self._writer, self.recover_owner, owner)
        if not self.blob_store.local:
            await loop.run_in_executor(self._writer, self._abort_unfinished)

    def _appending_owners(self) -> set[int]:
        return {owner for (owner,) in self._rconn.execute("SELECT DISTINCT owner FROM appends")}

    def _ended_candidates(self, appending: set[int]) -> set[int]:
        """The processes other than this one that have append rows or uploads in flight (alive or not)."""
        owners = appending | {int(path.name) for path in (self.root / "tmp").iterdir() if path.name.isdigit()}
        return owners - {self.owner}

    def recover_owner(self, owner: int) -> bool:
        """If the process `owner` has ended: join what its append requests received to their records, and remove
        its uploads in flight; whether it had ended (in the writer thread, or at start-up)."""
        if not self._wconn.claim(owner, wait=False):
            return False
        try:
            self._recover_appends(owner)
            shutil.rmtree(self.root / "tmp" / str(owner), ignore_errors=True)
        finally:
            self._wconn.release(owner)
        return True

    async def forget_append(self, name: str) -> None:
        """The append request writing `name` has ended and all it received is in its record."""
        sql = "DELETE FROM appends WHERE blob = ?"
        await asyncio.get_running_loop().run_in_executor(self._writer, self._execute, sql, (name,))

    # -- resumable uploads (see resumable.py) ----------------------------------------------------------------------

    def upload_rows(self, upload_id: str | None = None) -> list[dict]:
        """Every resumable upload's row (or that of `upload_id`), as a dict of its columns."""
        where, parameters = ("", ()) if upload_id is None else (" WHERE id = ?", (upload_id,))
        cursor = self._rconn.execute(f"SELECT {_UPLOAD_COLUMNS} FROM uploads{where}", parameters)
        return [dict(zip(_UPLOAD_COLUMNS.split(", "), row)) for row in cursor]

    async def hold(self, name: str) -> None:
        """Hold `name` (a resumable upload's id) against the other processes sharing the index until `let_go`; Busy
        if one of them holds it. Alone on the index, nothing to do."""
        if self.shared:
            loop = asyncio.get_running_loop()
            if not await loop.run_in_executor(self._writer, self._wconn.hold, name):
                raise Busy(f"The upload {name}")

    def let_go(self, name: str) -> None:
        """Stop holding `name` (in the writer thread, after what it has to do before)."""
        if self.shared:
            self._writer.submit(self._wconn.let_go, name)

    async def want(self, name: str, wanted: bool = True) -> None:
        """Ask the process that holds `name` to let it go (or, with `wanted` False, stop asking)."""
        if wanted:
            sql, values = "INSERT INTO upload_wanted (id, at) VALUES (?, ?) ON CONFLICT (id) DO NOTHING", (name, time.time())
        else:
            sql, values = "DELETE FROM upload_wanted WHERE id = ?", (name,)
        await asyncio.get_running_loop().run_in_executor(self._writer, self._execute, sql, values)

    def wanted(self, names: list[str]) -> list[str]:
        """Which of `names` another process asks for (blocks: call in a thread)."""
        marks = ", ".join("?" * len(names))
        rows = self._rconn.execute(f"SELECT id FROM upload_wanted WHERE id IN ({marks})", tuple(names)).fetchall()
        return [name for (name,) in rows]

    async def save_upload(self, row: dict) -> None:
        """Insert or replace a resumable upload's row (all its columns)."""
        values = tuple(row[name] for name in _UPLOAD_NAMES)
        await asyncio.get_running_loop().run_in_executor(self._writer, self._execute, _PUT_UPLOAD, values)

    async def add_upload(self, row: dict, cap: int) -> bool:
        """Insert a new resumable upload's row unless `cap` uploads are in progress (neither completed nor expired),
        counted in the insert's transaction; whether it did. Creations are counted one at a time, also by processes
        sharing the index."""
        values = tuple(row[name] for name in _UPLOAD_NAMES)
        return await asyncio.get_running_loop().run_in_executor(self._writer, self._add_upload, values, cap)

    def _add_upload(self, values: tuple, cap: int) -> bool:
        with storage_errors(), self._wconn.transaction():
            self._wconn.lock_record("uploads", "")  # the key of no record (an event is a UUID): the creations' lock
            (count,) = self._wconn.execute(
                "SELECT count(*) FROM uploads WHERE etag IS NULL AND expires > ?", (int(time.time()),)
            ).fetchone()
            if count >= cap:
                return False
            self._wconn.execute(_PUT_UPLOAD, values)
        return True

    async def forget_upload(self, upload_id: str) -> None:
        """Remove a resumable upload's row."""
        await asyncio.get_running_loop().run_in_executor(self._writer, self.forget_upload_now, upload_id)

    def forget_upload_now(self, upload_id: str) -> None:
        """forget_upload, on the caller's thread (at start-up, before the writer thread has work)."""
        self._execute("DELETE FROM uploads WHERE id = ?", (upload_id,))

    async def commit_file(self, upload: "Upload", sha256: str, condition: Condition | None) -> tuple[Record, bool]:
        """Make a durable, checked file the record's current version, as `commit` does with a sealed upload (the
        file is renamed into blobs/, or sent to the object store and then removed); `upload` names the file, the
        record, its media type, size and hash."""
        loop = asyncio.get_running_loop()
        upload.name = self.new_name()
        if not self.blob_store.local:
            await loop.run_in_executor(None, self.blob_store.send, upload.path, upload.name)
        committed = await loop.run_in_executor(self._writer, self._commit, upload, sha256, condition)
        if not self.blob_store.local:
            upload.path.unlink(missing_ok=True)
        return committed

    def _execute(self, sql: str, parameters: tuple) -> None:
        with storage_errors(), self._wconn.transaction():
            self._wconn.execute(sql, parameters)

    async def delete(self, event: uuid.UUID, start: datetime.datetime, condition: Condition | None = None) -> Record:
        """Remove a record and its content; returns what was removed.

        RecordNotFound if there is none; PreconditionFailed if `condition` does not hold for the current version
        (or for its absence), checked in the transaction that removes it.
        """
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, self._delete, event, start, condition)

    def _delete(self, event: uuid.UUID, start: datetime.datetime, condition: Condition | None) -> Record:
        with storage_errors(), self._wconn.transaction():
            self._wconn.lock_record(str(event), start.isoformat())
            record = self._current(event, start)
            if condition is not None and not condition(record):
                raise PreconditionFailed(event, start)
            if record is None:
                raise RecordNotFound(event, start)
            self._wconn.execute("DELETE FROM records WHERE event = ? AND start = ?", (record.event, record.start))
            catalogue.count_change(self._wconn, record.event, record.size, None)
            parts.remove(self._wconn, record.event, record.start)
            if self.change_event is not None:
                deleted = {"record": {"event": record.event, "start": record.start}}
                self.change_event(self._wconn, "record-deleted", deleted)
        self._starts.remove(record.event, record.start)
        self.unlink_unused(record, None)
        return record

    def _current(
        self, event: uuid.UUID | str, start: datetime.datetime | str, conn: sqldb.Database | None = None
    ) -> Record | None:
        """The current version of a record as the writer sees it (call inside a writer transaction), or as `conn`
        sees it."""
        start = start if isinstance(start, str) else start.isoformat()
        row = (conn or self._wconn).execute(
            f"SELECT {_COLUMNS} FROM records WHERE event = ? AND start = ?", (str(event), start)
        ).fetchone()
        return None if row is None else Record(*row)

    # -- start-up ------------------------------------------------------------------------------------------------

    def _recover(self) -> None:
        """Tidy what a stopped or crashed process left behind: the bytes that append requests had received join
        their records; uploads in flight and blobs no record points to are removed."""
        if self.shared:
            self._recover_shared()
        else:
            self._recover_alone()
        if not self.blob_store.local:
            self._sweep_objects()

    def _recover_alone(self) -> None:
        self._recover_appends()
        leftovers = list(self.tmp.iterdir())
        for path in leftovers:
            path.unlink()
        known = {s.name for (blob,) in self._wconn.execute("SELECT blob FROM records") for s in _runs(blob)}
        known |= self.writing
        orphans = [path for path in self.blobs.iterdir() if path.name not in known]
        for path in orphans:
            path.unlink()
        if leftovers or orphans:
            log.warning(
                "removed %d unfinished upload(s) and %d orphan blob(s) from %s", len(leftovers), len(orphans), self.root
            )


    def _recover_shared(self) -> None:
        """With an index shared by processes: tidy what each process that ended left (recover_owner), and remove
        the blobs that no record nor append request names, once they are ORPHAN_AGE old (a younger one may be a
        version that another process is committing)."""
        appending = self._appending_owners()
        waited_until = time.monotonic() + ENDED_WAIT
        for owner in self._ended_candidates(appending):
            # a process killed a moment ago may still hold its name while PostgreSQL notices: its appends must join
            # at this start, so wait a little for those; the rest, the periodic tidy_ended finds later
            while not self.recover_owner(owner) and owner in appending and time.monotonic() < waited_until:
                time.sleep(0.05)
        known = {s.name for (blob,) in self._wconn.execute("SELECT blob FROM records") for s in _runs(blob)}
        known |= {name for (name,) in self._wconn.execute("SELECT blob FROM appends")}
        old = time.time() - ORPHAN_AGE
        orphans = [path for path in self.blobs.iterdir() if path.name not in known and path.stat().st_mtime < old]
        for path in orphans:
            path.unlink(missing_ok=True)
        if orphans:
            log.warning("removed %d orphan blob(s) from %s", len(orphans), self.root)

    def _sweep_objects(self) -> None:
        """In an object store: abort the multipart uploads that a process that ended began, and remove the objects
        no record names (alone on the index: all of them; sharing it, those ORPHAN_AGE old)."""
        self._abort_unfinished()
        known = {s.name for (blob,) in self._wconn.execute("SELECT blob FROM records") for s in _runs(blob)}
        orphans = set(self.blob_store.names(time.time() - ORPHAN_AGE if self.shared else None)) - known
        self.blob_store.remove_all(sorted(orphans))
        if orphans:
            log.warning("removed %d orphan object(s) from %s", len(orphans), self.blob_store)

    def _abort_unfinished(self) -> int:
        """Abort the multipart uploads that processes that ended began in the object store (alone on the index:
        all); how many."""
        aborted = 0
        for name, upload_id in self.blob_store.unfinished():
            try:
                owner = int(name.split("-", 1)[0], 16)  # see new_name
            except ValueError:
                owner = 0
            if not self.shared or (owner != self.owner and self._ended(owner)):
                self.blob_store.abort(name, upload_id)
                aborted += 1
        if aborted:
            log.warning("aborted %d unfinished upload(s) in %s", aborted, self.blob_store)
        return aborted

    def _ended(self, owner: int) -> bool:
        """Whether the process `owner` that shared the index has ended (its name is free)."""
        if not self._wconn.claim(owner, wait=False):
            return False
        self._wconn.release(owner)
        return True

    def _recover_appends(self, owner: int | None = None) -> None:
        """Join to their records the bytes that append requests had received and that were not in them yet, in the
        order the requests began (a crash, or a disk too full for the last transaction): all of them, or those of
        the process `owner`."""
        rows = self._wconn.execute(
            "SELECT blob, event, start, type, committed FROM appends"
            + (" ORDER BY seq" if owner is None else " WHERE owner = ? ORDER BY seq"),
            () if owner is None else (owner,),
        ).fetchall()
        for name, event, start, content_type, committed in rows:
            path = self.blobs / name
            size = path.stat().st_size if path.exists() else 0
            try:
                if size > committed:
                    current = self._current(event, start)
                    digest = hashlib.sha256() if current is None else self.content_hash(current)
                    record, _ = self._append(
                        name, event, start, content_type, committed, size, current, digest, ended="restart"
                    )
                    log.warning(
                        "joined %d byte(s) that an append request had received before the stop to event %s at %s "
                        "(now %d bytes)", size - committed, event, start, record.size,
                    )  # fmt: skip
                self._execute("DELETE FROM appends WHERE blob = ?", (name,))
            except StorageFull:
                self.writing.add(name)  # kept for the next start: the sweep of orphans leaves it
                log.warning("the disk is full: %d byte(s) of event %s at %s wait for the next start", size - committed,
                            event, start)  # fmt: skip


_COLUMNS = "event, start, type, size, sha256, modified, blob"
_PUT_RECORD = (
    f"INSERT INTO records ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event, start) DO UPDATE SET"
    " type = excluded.type, size = excluded.size, sha256 = excluded.sha256, modified = excluded.modified,"
    " blob = excluded.blob"
)
_UPLOAD_COLUMNS = "id, event, start, type, received, length, expires, conditions, digest, etag"
_UPLOAD_NAMES = _UPLOAD_COLUMNS.split(", ")
_PUT_UPLOAD = (
    f"INSERT INTO uploads ({_UPLOAD_COLUMNS}) VALUES ({', '.join('?' * len(_UPLOAD_NAMES))}) ON CONFLICT (id) DO UPDATE"
    f" SET {', '.join(f'{name} = excluded.{name}' for name in _UPLOAD_NAMES[1:])}"
)
DOWNLOAD_BLOCK = 1 << 20


def _runs(blob: str) -> list[Segment]:
    """The runs a blob column names (their lengths do not matter to the caller)."""
    return Record("", "", "", 0, "", 0, blob).segments


@contextlib.contextmanager
def storage_errors() -> Iterator[None]:
    """Turn "no space left on the disk" (from the file system or from the index's database) into StorageFull."""
    try:
        yield
    except (OSError, *sqldb.Database.errors) as exc:
        if sqldb.Database.is_full(exc):
            raise StorageFull() from exc
        raise


def _log_failure(task: asyncio.Future, what: str) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("%s failed: %s", what, task.exception())


class _Changed(Exception):
    """The record changed between reading its version and the transaction that was to extend it."""


def _hash_file(digest: "hashlib._Hash", path: Path, at: int, upto: int) -> None:
    """Feed the bytes at..upto of a file to a hash."""
    with open(path, "rb") as file:
        while at < upto:
            data = os.pread(file.fileno(), min(DOWNLOAD_BLOCK, upto - at), at)
            if not data:
                raise StoreError(f"the blob file {path.name} is shorter than its record says")
            digest.update(data)
            at += len(data)


def _fsync_file(path: Path, directory: Path) -> None:
    """Make a file's content and its name in `directory` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(directory)


_FALLOC_FL_KEEP_SIZE, _FALLOC_FL_PUNCH_HOLE = 1, 2
_BLOCK = 4096


def punch_hole(path: Path, start: int, stop: int) -> bool:
    """Give back the disk space of the file's bytes start..stop (whole blocks), which then read as zeros; its size and
    other bytes stay. False where the file system cannot (then nothing changes)."""
    start, stop = -(-start // _BLOCK) * _BLOCK, stop // _BLOCK * _BLOCK
    if stop <= start:
        return True
    libc = ctypes.CDLL(None, use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    fd = os.open(path, os.O_WRONLY)
    try:
        return libc.fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, start, stop - start) == 0
    finally:
        os.close(fd)
