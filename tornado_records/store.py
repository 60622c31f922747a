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
import concurrent.futures
import contextlib
import dataclasses
import datetime
import hashlib
import logging
import os
import sqlite3
import time
import uuid
from pathlib import Path
from typing import BinaryIO, Iterator

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
    """A body being received into tmp/: written chunk by chunk and hashed on the way."""

    def __init__(self, path: Path, event: uuid.UUID, start: datetime.datetime, content_type: str) -> None:
        self.path = path
        self.event = event
        self.start = start
        self.content_type = content_type
        self.size = 0
        self._hash = hashlib.sha256()
        self._file: BinaryIO | None = open(path, "xb", buffering=0)

    def write(self, chunk: bytes) -> None:
        """Append a chunk to the file."""
        assert self._file is not None, "upload already sealed or discarded"
        self._file.write(chunk)
        self._hash.update(chunk)
        self.size += len(chunk)

    def seal(self) -> str:
        """Make the content durable (fsync) and close it; returns its SHA-256 (hex). Blocks: run it in a thread."""
        assert self._file is not None, "upload already sealed or discarded"
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        return self._hash.hexdigest()

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
        """The records of an event with after < start < before, ordered by start, paged by limit and offset."""
        where, args = "event = ?", [str(event)]
        if after is not None:
            where, args = where + " AND start > ?", args + [after.isoformat()]
        if before is not None:
            where, args = where + " AND start < ?", args + [before.isoformat()]
        (count,) = self._rconn.execute(f"SELECT count(*) FROM records WHERE {where}", args).fetchone()
        rows = self._rconn.execute(
            f"SELECT {_COLUMNS} FROM records WHERE {where} ORDER BY start {'DESC' if descending else 'ASC'}"
            " LIMIT ? OFFSET ?",
            args + [limit, offset],
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

    def begin_upload(self, event: uuid.UUID, start: datetime.datetime, content_type: str) -> Upload:
        """A new, empty upload in tmp/ for the record (event, start)."""
        return Upload(self.tmp / f"{uuid.uuid4().hex}.part", event, start, content_type)

    async def commit(self, upload: Upload) -> tuple[Record, bool]:
        """Make a received upload the record's current version; returns it and whether the record is new.

        On any failure the upload is discarded and the previous version stays as it was.
        """
        loop = asyncio.get_running_loop()
        try:
            sha256 = await loop.run_in_executor(None, upload.seal)
            return await loop.run_in_executor(self._writer, self._commit, upload, sha256)
        finally:
            upload.discard()

    def _commit(self, upload: Upload, sha256: str) -> tuple[Record, bool]:
        blob = uuid.uuid4().hex
        record = Record(
            str(upload.event), upload.start.isoformat(), upload.content_type, upload.size, sha256, int(time.time()), blob
        )
        os.rename(upload.path, self.blobs / blob)
        try:
            _fsync_dir(self.blobs)
            with _transaction(self._wconn):
                old = self._wconn.execute(
                    "SELECT blob FROM records WHERE event = ? AND start = ?", (record.event, record.start)
                ).fetchone()
                self._wconn.execute(
                    f"INSERT OR REPLACE INTO records ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    dataclasses.astuple(record),
                )
        except BaseException:
            (self.blobs / blob).unlink(missing_ok=True)
            raise
        if old is not None:
            (self.blobs / old[0]).unlink(missing_ok=True)
        return record, old is None

    async def delete(self, event: uuid.UUID, start: datetime.datetime) -> Record:
        """Remove a record and its content; returns what was removed, or raises RecordNotFound."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, self._delete, event, start)

    def _delete(self, event: uuid.UUID, start: datetime.datetime) -> Record:
        with _transaction(self._wconn):
            row = self._wconn.execute(
                f"DELETE FROM records WHERE event = ? AND start = ? RETURNING {_COLUMNS}", (str(event), start.isoformat())
            ).fetchone()
        if row is None:
            raise RecordNotFound(event, start)
        record = Record(*row)
        (self.blobs / record.blob).unlink(missing_ok=True)
        return record

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


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """Run the block in BEGIN IMMEDIATE ... COMMIT, or ROLLBACK if it raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
