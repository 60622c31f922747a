"""The resumable uploads' rows in the index (uploads/resumable.py owns the uploads; this is where they are kept), and
the requests one process makes to another to let go of one."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from tornado_records.storage import sqldb
from tornado_records.storage.model import storage_errors

if TYPE_CHECKING:
    from tornado_records.storage.store import RecordStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS uploads (  -- resumable uploads; the bytes of each are the file uploads/<id>
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
_COLUMNS = "id, event, start, type, received, length, expires, conditions, digest, etag"
_NAMES = _COLUMNS.split(", ")
_PUT = (
    f"INSERT INTO uploads ({_COLUMNS}) VALUES ({', '.join('?' * len(_NAMES))}) ON CONFLICT (id) DO UPDATE"
    f" SET {', '.join(f'{name} = excluded.{name}' for name in _NAMES[1:])}"
)


def create(conn: sqldb.Database) -> None:
    conn.schema(SCHEMA)


class UploadRows:
    """The `uploads` and `upload_wanted` tables of one store's index."""

    def __init__(self, store: RecordStore) -> None:
        self.store = store

    def rows(self, upload_id: str | None = None) -> list[dict]:
        """Every resumable upload's row (or that of `upload_id`), as a dict of its columns."""
        where, parameters = ("", ()) if upload_id is None else (" WHERE id = ?", (upload_id,))
        cursor = self.store.rconn.execute(f"SELECT {_COLUMNS} FROM uploads{where}", parameters)
        return [dict(zip(_NAMES, row)) for row in cursor]

    async def save(self, row: dict) -> None:
        """Insert or replace a resumable upload's row (all its columns)."""
        values = tuple(row[name] for name in _NAMES)
        await self.store.in_writer(lambda conn: conn.execute(_PUT, values))

    async def add(self, row: dict, cap: int) -> bool:
        """Insert a new upload's row unless `cap` uploads are in progress (neither completed nor expired), counted in
        the insert's transaction; whether it did. Creations are counted one at a time, also by processes sharing the
        index."""
        values = tuple(row[name] for name in _NAMES)
        return await asyncio.get_running_loop().run_in_executor(self.store.writer, self._add, values, cap)

    def _add(self, values: tuple, cap: int) -> bool:
        conn = self.store.wconn
        with storage_errors(), conn.transaction():
            conn.lock_record("uploads", "")  # the key of no record (an event is a UUID): the creations' lock
            (count,) = conn.execute(
                "SELECT count(*) FROM uploads WHERE etag IS NULL AND expires > ?", (int(time.time()),)
            ).fetchone()
            if count >= cap:
                return False
            conn.execute(_PUT, values)
        return True

    async def forget(self, upload_id: str) -> None:
        """Remove an upload's row."""
        await asyncio.get_running_loop().run_in_executor(self.store.writer, self.forget_now, upload_id)

    def forget_now(self, upload_id: str) -> None:
        """forget(), on the caller's thread (at start-up, before the writer thread has work)."""
        self.store.execute("DELETE FROM uploads WHERE id = ?", (upload_id,))

    async def want(self, upload_id: str, wanted: bool = True) -> None:
        """Ask the process that holds the upload to let it go (or, with `wanted` False, stop asking)."""
        if wanted:
            sql, values = "INSERT INTO upload_wanted (id, at) VALUES (?, ?) ON CONFLICT (id) DO NOTHING", (upload_id, time.time())
        else:
            sql, values = "DELETE FROM upload_wanted WHERE id = ?", (upload_id,)
        await self.store.in_writer(lambda conn: conn.execute(sql, values))

    def wanted(self, upload_ids: list[str]) -> list[str]:
        """Which of the uploads another process asks for (blocks: call in a thread)."""
        marks = ", ".join("?" * len(upload_ids))
        rows = self.store.rconn.execute(f"SELECT id FROM upload_wanted WHERE id IN ({marks})", tuple(upload_ids))
        return [upload_id for (upload_id,) in rows.fetchall()]
