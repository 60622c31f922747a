"""A data directory as a command beside the service sees it (check, backup): its index opened read-only, and what
the index names."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path
from typing import Iterator

from tornado_records.store import Record

INDEX = "records.sqlite3"
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


def records_of(conn: sqlite3.Connection) -> list[Record]:
    """Every record the index names, in (event, start) order."""
    return [Record(*row) for row in conn.execute(f"SELECT {RECORD_COLUMNS} FROM records ORDER BY event, start")]


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
