"""The records of a service as a command beside it sees them (check, backup, migrate): its index opened read-only,
what the index names, and where the content is. The commands take the service's settings (`--data-dir`, `--index`,
`--blobs`, `--s3-endpoint` and their environment variables), so that they read what the service serves: a SQLite
index and files in the data directory (the default), or a PostgreSQL index with the files in a shared data
directory or objects in an S3 store."""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterator

from tornado_records.storage import sqldb
from tornado_records.storage.catalogue import DETAILS
from tornado_records.storage.content import ContentStore, open_content
from tornado_records.storage.model import BlobsError, Record

INDEX = sqldb.SQLITE_FILE
RECORD_COLUMNS = "event, start, type, size, sha256, modified, blob"  # Record's fields, in order


class CommandError(Exception):
    """A command cannot do its work (no data directory there, an unusable destination): its one-line reason."""


@contextlib.contextmanager
def read_index(root: Path) -> Iterator[sqlite3.Connection]:
    """The index of the data directory `root`, open read-only for the block; CommandError if there is none.

    Nothing is written: the connection is read-only (`mode=ro`). While the service runs (the index has its `-wal`
    file), this is an ordinary WAL reader, which never blocks the service's writer; on a stopped directory (no
    `-wal`) the index is opened as immutable, so that the reader does not create the `-wal` and `-shm` files either.
    """
    index = root / INDEX
    if not root.is_dir():
        raise CommandError(f"{root} is not a directory")
    if not index.is_file():
        raise CommandError(f"{root} is not a data directory: it has no {INDEX}")
    live = Path(f"{index}-wal").exists()
    uri = f"{index.resolve().as_uri()}?mode=ro" + ("" if live else "&immutable=1")
    try:
        conn = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as exc:
        raise CommandError(f"cannot open {index}: {exc}") from None
    try:
        yield conn
    except sqlite3.Error as exc:
        raise CommandError(f"cannot read {index}: {exc}") from None
    finally:
        conn.close()


@dataclasses.dataclass(frozen=True)
class Source:
    """Where a service keeps its records, as its settings say: the data directory, the index (`sqlite`, or a
    postgresql:// URL) and the blob store (empty: the data directory's blobs/; or s3://bucket/prefix, with the
    object store's `endpoint`)."""

    root: Path
    index: str = "sqlite"
    blobs: str = ""
    endpoint: str | None = None

    @property
    def embedded(self) -> bool:
        """Whether it is the default: the index in the data directory's records.sqlite3, the content in its blobs/."""
        return not sqldb.is_postgresql(self.index) and not self.blobs

    @property
    def index_name(self) -> str:
        """The index as an operator names it: the SQLite file, or the PostgreSQL URL without its password."""
        return sqldb.safe_url(self.index) if sqldb.is_postgresql(self.index) else str(self.root / INDEX)

    @property
    def content_name(self) -> str:
        """Where the content is, as an operator names it: the blobs/ directory, or the s3:// URL."""
        return self.blobs or str(self.root / "blobs")

    @contextlib.contextmanager
    def read_index(self) -> Iterator[Any]:
        """The index, open read-only for the block (`execute(sql, parameters)` with `?` placeholders); CommandError if
        it cannot be read."""
        if not sqldb.is_postgresql(self.index):
            with read_index(self.root) as conn:
                yield conn
            return
        try:
            conn = sqldb.PostgresDatabase(self.index)
        except sqldb.Database.errors as exc:
            raise CommandError(f"cannot use the index {self.index_name}: {_first_line(exc)}") from None
        try:
            conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            yield conn
        except sqldb.Database.errors as exc:
            raise CommandError(f"cannot read the index {self.index_name}: {_first_line(exc)}") from None
        finally:
            conn.close()

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[Any]:
        """The index for the block, every read in it seeing one moment of it (PostgreSQL: a REPEATABLE READ
        transaction; SQLite: a read transaction)."""
        with self.read_index() as conn:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY" if self.shared else "BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")

    @property
    def shared(self) -> bool:
        """Whether the index is PostgreSQL's (several processes may share it)."""
        return sqldb.is_postgresql(self.index)

    def open_content(self) -> ContentStore:
        """The content engine (the files of blobs/, or the bucket); CommandError if the bucket does not answer."""
        try:
            return open_content(self.blobs, self.root, self.endpoint)
        except BlobsError as exc:
            raise CommandError(f"cannot read the recordings in {self.blobs}: {exc}") from None

    def left_index(self) -> str | None:
        """A note on a SQLite index in the data directory that is not the one in use (left there when the records
        moved to PostgreSQL), or None."""
        left = self.root / INDEX
        if not self.shared or not left.exists():
            return None
        return f"note: {left} is not the index in use ({self.index_name}): it is not read"


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def records_of(conn: sqlite3.Connection) -> list[Record]:
    """Every record the index names, in (event, start) order."""
    return [Record(*row) for row in conn.execute(f"SELECT {RECORD_COLUMNS} FROM records ORDER BY event, start")]


def details_of(conn: Any) -> dict[str, dict[str, str | None]]:
    """The events' details (title, description, ...) by event, those it has; an index from before some of them
    (issue 26) has none of those."""
    columns = [c[0] for c in conn.execute("SELECT * FROM catalogue WHERE false").description if c[0] in DETAILS]
    rows = conn.execute(f"SELECT event, {', '.join(columns)} FROM catalogue").fetchall()
    return {row[0]: dict(zip(columns, row[1:])) for row in rows if any(value is not None for value in row[1:])}


def appending_of(conn: sqlite3.Connection) -> set[str]:
    """The files that append requests in progress are writing (the `appends` table)."""
    return {name for (name,) in conn.execute("SELECT blob FROM appends")}


def record_path(record: Record) -> str:
    """The record's URL path, by which an operator names it."""
    return f"/records/{record.event}/{record.start}"


def human(size: float) -> str:
    """A byte count for people: 1.5 GiB."""
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError


class RateLimit:
    """Paces a reader to `rate` bytes per second on average (0: no limit)."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.started = time.monotonic()
        self.spent = 0

    def spend(self, size: int) -> None:
        """Count `size` bytes read; sleep while the reader is ahead of its rate."""
        self.spent += size
        if self.rate:
            ahead = self.spent / self.rate - (time.monotonic() - self.started)
            if ahead > 0:
                time.sleep(ahead)
