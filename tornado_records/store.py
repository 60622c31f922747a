"""RecordStore: the data directory (a SQLite index, immutable blob files, uploads in flight). Knows nothing of HTTP.

    data/records.sqlite3   (event, start) -> blob name, content type, size, sha256, modified
    data/blobs/            one immutable file per record version, named at random
    data/tmp/              uploads in flight, on the same filesystem as blobs/ so that rename is atomic

An upload is written to tmp/, fsynced, renamed into blobs/, and only then does one transaction point the record at
it; the blob it replaced is unlinked last. A crash between any two steps leaves the old version or the new one,
whole, and at worst a file that `RecordStore.open` removes at the next start.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import concurrent.futures
import contextlib
import dataclasses
import datetime
import errno
import hashlib
import hmac
import logging
import os
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator

log = logging.getLogger("tornado_records.store")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    event    TEXT    NOT NULL,  -- canonical UUID
    start    TEXT    NOT NULL,  -- canonical naive ISO 8601 (datetime.isoformat), sorts as time does
    blob     TEXT    NOT NULL UNIQUE,
    type     TEXT    NOT NULL,
    size     INTEGER NOT NULL,
    sha256   TEXT    NOT NULL,
    modified INTEGER NOT NULL,  -- Unix seconds
    PRIMARY KEY (event, start)
) WITHOUT ROWID;
"""


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


class DigestMismatch(StoreError):
    """The content received does not have the digest the client said it has; nothing was stored."""

    def __init__(self, algorithm: str) -> None:
        super().__init__(f"The content received does not match the {algorithm} digest given with it")


Condition = Callable[["Record | None"], bool]
"""A precondition on a record's current version (None: there is none), checked as part of a change."""


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
    """A record and its content, open for reading; it stays readable even if the record is replaced meanwhile."""

    record: Record
    file: BinaryIO

    def close(self) -> None:
        self.file.close()


@dataclasses.dataclass(frozen=True)
class Page:
    """One page of a listing: `count` records match the bounds, `records` are those after offset and limit."""

    count: int
    records: list[Record]


class Upload:
    """A body being received into tmp/: written chunk by chunk and hashed on the way.

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
    ) -> None:
        self.path = path
        self.event = event
        self.start = start
        self.content_type = content_type
        self.size = 0
        self.expected = dict(expected or {})
        self._hashes = {name: hashlib.new(name) for name in {"sha256", *self.expected}}
        with _storage_errors():
            self._file: BinaryIO | None = open(path, "xb", buffering=0)

    def write(self, chunk: bytes) -> None:
        """Append a chunk to the file; StorageFull if the disk is full."""
        assert self._file is not None, "upload already sealed or discarded"
        view = memoryview(chunk)
        with _storage_errors():
            while view:  # an unbuffered write may take only part of the chunk (a nearly full disk does that)
                view = view[self._file.write(view) :]
        for digest in self._hashes.values():
            digest.update(chunk)
        self.size += len(chunk)

    def seal(self) -> str:
        """Make the content durable (fsync) and close it; returns its SHA-256 (hex). Blocks: run it in a thread.

        DigestMismatch if the content does not have an expected digest; StorageFull if the disk is full.
        """
        assert self._file is not None, "upload already sealed or discarded"
        for name, digest in self.expected.items():
            if not hmac.compare_digest(self._hashes[name].digest(), digest):
                raise DigestMismatch(name)
        with _storage_errors():
            os.fsync(self._file.fileno())
            self._file.close()
        self._file = None
        return self._hashes["sha256"].hexdigest()

    def discard(self) -> None:
        """Forget the upload: close and remove its file. Safe to call more than once."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self.path.unlink(missing_ok=True)


class RecordStore:
    """The records of one data directory. Reads run on the caller's thread; writes go through one writer thread."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs"
        self.tmp = root / "tmp"
        for directory in (root, self.blobs, self.tmp):
            directory.mkdir(parents=True, exist_ok=True)
        index = root / "records.sqlite3"
        self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="records-writer")
        self._wconn = sqlite3.connect(index, isolation_level=None, check_same_thread=False)
        self._wconn.execute("PRAGMA journal_mode=WAL")
        self._wconn.execute("PRAGMA synchronous=FULL")
        self._wconn.executescript(_SCHEMA)
        self._rconn = sqlite3.connect(index, isolation_level=None)
        self._starts = StartIndex(self._wconn.execute("SELECT event, start FROM records"))
        self._recover()

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        self._wconn.close()
        self._rconn.close()

    # -- reading -------------------------------------------------------------------------------------------------

    def list(
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

        The count and the page's bounds come from the in-memory index of starts (a deep offset costs no scan); the
        rows from one indexed range query.
        """
        count, starts = self._starts.page(
            str(event),
            None if after is None else after.isoformat(),
            None if before is None else before.isoformat(),
            limit,
            offset,
            descending,
        )
        if not starts:
            return Page(count, [])
        rows = self._rconn.execute(
            f"SELECT {_COLUMNS} FROM records WHERE event = ? AND start BETWEEN ? AND ?"
            f" ORDER BY start {'DESC' if descending else 'ASC'} LIMIT ?",
            (str(event), min(starts), max(starts), limit),
        ).fetchall()
        return Page(count, [Record(*row) for row in rows])

    def get(self, event: uuid.UUID, start: datetime.datetime) -> Record:
        """The current version of a record; RecordNotFound if there is none."""
        row = self._rconn.execute(
            f"SELECT {_COLUMNS} FROM records WHERE event = ? AND start = ?", (str(event), start.isoformat())
        ).fetchone()
        if row is None:
            raise RecordNotFound(event, start)
        return Record(*row)

    def open(self, event: uuid.UUID, start: datetime.datetime) -> Blob:
        """The current version of a record, open for reading; RecordNotFound if there is none."""
        for _ in range(3):
            record = self.get(event, start)
            try:
                return Blob(record, open(self.blobs / record.blob, "rb"))
            except FileNotFoundError:
                continue  # replaced or deleted between the query and the open: look again
        raise StoreError(f"the content of event {event} starting at {start.isoformat()} is missing from the disk")

    # -- writing -------------------------------------------------------------------------------------------------

    def free_space(self) -> int:
        """Bytes that an unprivileged process may still write on the disk holding the data directory."""
        stats = os.statvfs(self.tmp)
        return stats.f_bavail * stats.f_frsize

    def ensure_space(self, size: int) -> None:
        """Raise StorageFull unless `size` more bytes fit on the disk holding the data directory."""
        if size > self.free_space():
            raise StorageFull(f"An upload of {size} bytes does not fit in the space left on the server's disk")

    def begin_upload(
        self,
        event: uuid.UUID,
        start: datetime.datetime,
        content_type: str,
        expected: dict[str, bytes] | None = None,
    ) -> Upload:
        """A new, empty upload in tmp/ for the record (event, start), checked against the `expected` digests."""
        return Upload(self.tmp / f"{uuid.uuid4().hex}.part", event, start, content_type, expected)

    async def commit(self, upload: Upload, condition: Condition | None = None) -> tuple[Record, bool]:
        """Make a received upload the record's current version; returns it and whether the record is new.

        `condition`, if given, is checked against the current version in the same transaction that replaces it
        (PreconditionFailed if it does not hold), so that no other change can slip in between. On any failure the
        upload is discarded and the previous version stays as it was.
        """
        loop = asyncio.get_running_loop()
        try:
            sha256 = await loop.run_in_executor(None, upload.seal)
            return await loop.run_in_executor(self._writer, self._commit, upload, sha256, condition)
        finally:
            upload.discard()

    def _commit(self, upload: Upload, sha256: str, condition: Condition | None) -> tuple[Record, bool]:
        blob = uuid.uuid4().hex
        record = Record(
            str(upload.event), upload.start.isoformat(), upload.content_type, upload.size, sha256, int(time.time()), blob
        )
        try:
            with _storage_errors(), _transaction(self._wconn):
                old = self._current(upload.event, upload.start)
                if condition is not None and not condition(old):
                    raise PreconditionFailed(upload.event, upload.start)
                os.rename(upload.path, self.blobs / blob)
                # The file's mtime is the record's Last-Modified, so nginx sending it itself (X-Accel-Redirect) agrees.
                os.utime(self.blobs / blob, (record.modified, record.modified))
                _fsync_dir(self.blobs)
                self._wconn.execute(
                    f"INSERT OR REPLACE INTO records ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    dataclasses.astuple(record),
                )
        except BaseException:
            (self.blobs / blob).unlink(missing_ok=True)
            raise
        self._starts.add(record.event, record.start)
        if old is not None:
            (self.blobs / old.blob).unlink(missing_ok=True)
        return record, old is None

    async def delete(self, event: uuid.UUID, start: datetime.datetime, condition: Condition | None = None) -> Record:
        """Remove a record and its content; returns what was removed.

        RecordNotFound if there is none; PreconditionFailed if `condition` does not hold for the current version
        (or for its absence), checked in the transaction that removes it.
        """
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, self._delete, event, start, condition)

    def _delete(self, event: uuid.UUID, start: datetime.datetime, condition: Condition | None) -> Record:
        with _storage_errors(), _transaction(self._wconn):
            record = self._current(event, start)
            if condition is not None and not condition(record):
                raise PreconditionFailed(event, start)
            if record is None:
                raise RecordNotFound(event, start)
            self._wconn.execute("DELETE FROM records WHERE event = ? AND start = ?", (record.event, record.start))
        self._starts.remove(record.event, record.start)
        (self.blobs / record.blob).unlink(missing_ok=True)
        return record

    def _current(self, event: uuid.UUID, start: datetime.datetime) -> Record | None:
        """The current version of a record as the writer sees it (call inside a writer transaction)."""
        row = self._wconn.execute(
            f"SELECT {_COLUMNS} FROM records WHERE event = ? AND start = ?", (str(event), start.isoformat())
        ).fetchone()
        return None if row is None else Record(*row)

    # -- start-up ------------------------------------------------------------------------------------------------

    def _recover(self) -> None:
        """Remove what a stopped or crashed process left behind: uploads in flight and blobs no record points to."""
        leftovers = list(self.tmp.iterdir())
        for path in leftovers:
            path.unlink()
        known = {blob for (blob,) in self._wconn.execute("SELECT blob FROM records")}
        orphans = [path for path in self.blobs.iterdir() if path.name not in known]
        for path in orphans:
            path.unlink()
        if leftovers or orphans:
            log.warning(
                "removed %d unfinished upload(s) and %d orphan blob(s) from %s", len(leftovers), len(orphans), self.root
            )


_COLUMNS = "event, start, type, size, sha256, modified, blob"


class StartIndex:
    """The starts of each event's records, sorted, in memory: a listing's count and its page at any offset are found
    by bisection, where SQLite would scan every row before them. Changed by the writer thread, read by the event
    loop; a lock keeps each change and each read whole."""

    def __init__(self, rows: Iterable[tuple[str, str]]) -> None:
        self._starts: dict[str, list[str]] = collections.defaultdict(list)
        for event, start in rows:
            self._starts[event].append(start)
        for starts in self._starts.values():
            starts.sort()  # canonical isoformat strings sort as the times they name
        self._lock = threading.Lock()

    def add(self, event: str, start: str) -> None:
        with self._lock:
            starts = self._starts[event]
            at = bisect.bisect_left(starts, start)
            if at == len(starts) or starts[at] != start:
                starts.insert(at, start)

    def remove(self, event: str, start: str) -> None:
        with self._lock:
            starts = self._starts.get(event, [])
            at = bisect.bisect_left(starts, start)
            if at < len(starts) and starts[at] == start:
                del starts[at]
            if not starts:
                self._starts.pop(event, None)

    def page(
        self, event: str, after: str | None, before: str | None, limit: int, offset: int, descending: bool
    ) -> tuple[int, list[str]]:
        """How many starts lie strictly between after and before, and those of the page asked for."""
        with self._lock:
            starts = self._starts.get(event, [])
            low = 0 if after is None else bisect.bisect_right(starts, after)
            high = len(starts) if before is None else bisect.bisect_left(starts, before)
            count = max(0, high - low)
            if descending:
                last = max(low, high - offset)
                return count, starts[max(low, last - limit) : last]
            first = min(high, low + offset)
            return count, starts[first : min(high, first + limit)]


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """Run the block in BEGIN IMMEDIATE ... COMMIT, or ROLLBACK if it raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # COMMIT itself may fail (a full disk), leaving the transaction open
            conn.execute("ROLLBACK")
        raise


@contextlib.contextmanager
def _storage_errors() -> Iterator[None]:
    """Turn "no space left on the disk" (from the file system or from SQLite) into StorageFull."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageFull() from exc
        raise
    except sqlite3.Error as exc:
        if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            raise StorageFull() from exc
        raise


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
