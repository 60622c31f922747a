"""Each record's parts (table `parts`): where the bytes of each request that made the record lie in it, when its first
and last bytes arrived, and how it ended. A plain upload is one part; a live recording is one part per append request
that joined it, so that a person can see where a link broke and for how long (`GET /records/{event}/{start}/parts`).

Kept in the transaction of each change of the record (store.py): a commit replaces the parts, a join extends its
piece's part (or begins it), a delete removes them. Records from before the table, or copied by `migrate`, have no
rows: they are shown as one part.
"""

from __future__ import annotations

import datetime
from typing import Any

from tornado_records.storage import sqldb

SCHEMA = """
CREATE TABLE IF NOT EXISTS parts (
    event    TEXT    NOT NULL,
    start    TEXT    NOT NULL,
    piece    TEXT    NOT NULL,              -- the append request's file, or '' for a plain or resumable upload
    at       BIGINT  NOT NULL,              -- where its bytes begin in the record
    length   BIGINT  NOT NULL,
    first_at DOUBLE PRECISION NOT NULL,     -- Unix time its first byte arrived
    last_at  DOUBLE PRECISION NOT NULL,     -- and its last
    ended    TEXT    NOT NULL DEFAULT '',   -- how it ended: '' while it streams, completed, client-gone, superseded, ...
    PRIMARY KEY (event, start, piece)
)
"""

UPLOAD = ""  # the piece of a record's one part made by a plain (or resumable) upload


def create(conn: sqldb.Database) -> None:
    conn.schema(SCHEMA)


def replace(conn: sqldb.Database, event: str, start: str, size: int, first_at: float, last_at: float) -> None:
    """The record is now one upload of `size` bytes (in the transaction that commits it)."""
    remove(conn, event, start)
    conn.execute(
        "INSERT INTO parts (event, start, piece, at, length, first_at, last_at, ended) VALUES (?, ?, ?, 0, ?, ?, ?, ?)",
        (event, start, UPLOAD, size, first_at, last_at, "completed"),
    )


def extend(
    conn: sqldb.Database, event: str, start: str, piece: str, at: int, size: int, first_at: float, last_at: float,
    ended: str = "",
) -> None:  # fmt: skip
    """The append piece `piece` joined the record, which it made `size` bytes long; its part begins at `at` if this is
    its first join (in the transaction of the join)."""
    conn.execute(
        "INSERT INTO parts (event, start, piece, at, length, first_at, last_at, ended) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (event, start, piece) DO UPDATE SET length = excluded.at + excluded.length - parts.at,"
        " last_at = excluded.last_at, ended = excluded.ended",
        (event, start, piece, at, size - at, first_at, last_at, ended),
    )


def end(conn: sqldb.Database, event: str, start: str, piece: str, ended: str, last_at: float) -> None:
    """The append piece's request ended (`ended`: how), its last byte having come at `last_at`."""
    conn.execute(
        "UPDATE parts SET ended = ?, last_at = ? WHERE event = ? AND start = ? AND piece = ?",
        (ended, last_at, event, start, piece),
    )


def remove(conn: sqldb.Database, event: str, start: str) -> None:
    conn.execute("DELETE FROM parts WHERE event = ? AND start = ?", (event, start))


def of(conn: sqldb.Database, event: str, start: str, size: int, modified: int) -> list[dict[str, Any]]:
    """The parts of a record of `size` bytes, in the order of their bytes (as GET .../parts shows them)."""
    rows = conn.execute(
        "SELECT at, length, first_at, last_at, ended, piece FROM parts WHERE event = ? AND start = ? ORDER BY at",
        (event, start),
    ).fetchall()
    if not rows:
        return [{"offset": 0, "length": size, "first": None, "last": _time(modified), "ended": None, "append": False}]
    return [
        {"offset": at, "length": length, "first": _time(first), "last": _time(last), "ended": ended or None,
         "append": piece != UPLOAD}  # fmt: skip
        for at, length, first, last, ended, piece in rows
    ]


def _time(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(timespec="milliseconds")[:-6] + "Z"
