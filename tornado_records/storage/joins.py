"""Append joins: the bytes an append request writes to its own file (a piece) join the record after its content, as
one more run of that file (the record is not rewritten). The index's `appends` table lists the pieces with bytes on
disk, so that after a crash their rest joins at the next start (recovery.py).

This is the storage's side of append mode; the upload's side (which piece is live, when it joins) is
uploads/appends.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import hashlib
import os
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tornado_records.storage import parts, sqldb
from tornado_records.storage.files import fsync_file, punch_hole
from tornado_records.storage.model import Record, StoreError, blob_spec, piece_end, storage_errors

if TYPE_CHECKING:
    from tornado_records.storage.store import RecordStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS appends (  -- append requests with bytes on disk: their rest joins the record at start-up
    blob      TEXT    PRIMARY KEY,
    event     TEXT    NOT NULL,
    start     TEXT    NOT NULL,
    type      TEXT    NOT NULL,
    seq       BIGINT  NOT NULL,  -- the order their first bytes arrived in
    committed BIGINT  NOT NULL,  -- bytes of the file from which on nothing is in the record yet
    owner     BIGINT  NOT NULL DEFAULT 0  -- the process writing it (processes sharing a PostgreSQL index), else 0
);
"""
STANDBY_HEAD = 1 << 20  # bytes at the start of a standby piece's file always kept (an Ogg stream's header pages)
READ_BLOCK = 1 << 20


def create(conn: sqldb.Database) -> None:
    conn.schema(SCHEMA)
    conn.add_column("appends", "owner", "BIGINT NOT NULL DEFAULT 0")  # an index from before processes


class Joins:
    """The joins of one store's append pieces. `writing`: the files that pieces still write (kept by every sweep)."""

    def __init__(self, store: RecordStore) -> None:
        self.store = store
        self.writing: set[str] = set()

    def path(self, name: str) -> Path:
        """The piece's file."""
        return self.store.blobs / name

    def new_piece(self) -> str:
        """The name of a new piece's file, kept by every sweep until `let_go_of`."""
        name = uuid.uuid4().hex
        self.writing.add(name)
        return name

    def appending(self, event: str, start: str) -> bool:
        """Whether an append request (of any process) is still adding to the record (event, start)."""
        row = self.store.rconn.execute("SELECT 1 FROM appends WHERE event = ? AND start = ?", (event, start))
        return row.fetchone() is not None

    def let_go_of(self, name: str) -> None:
        """The piece no longer writes its file (a replacement of the record may remove it now)."""
        self.writing.discard(name)

    async def note(self, name: str, event: str, start: str, content_type: str) -> int:
        """List the file `name` as an append request's, so that a crash does not lose what it received; returns its
        place in the record's line (after every piece listed before, of any process)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.store.writer, self._note, name, event, start, content_type)

    def _note(self, name: str, event: str, start: str, content_type: str) -> int:
        conn = self.store.wconn
        with storage_errors(), conn.transaction():
            conn.lock_record(event, start)
            (seq,) = conn.execute(
                f"SELECT {conn.greatest}(coalesce(max(seq), 0) + 1, ?) FROM appends WHERE event = ? AND start = ?",
                (time.time_ns(), event, start),
            ).fetchone()
            conn.execute(
                "INSERT INTO appends (blob, event, start, type, seq, committed, owner) VALUES (?, ?, ?, ?, ?, 0, ?)",
                (name, event, start, content_type, seq, self.store.sharing.owner),
            )
        return seq

    async def join(
        self, name: str, event: str, start: str, content_type: str, at: int, upto: int, times: tuple[float, float]
    ) -> tuple[Record, bool]:
        """Add the bytes at..upto of the piece's file after the record's content, durably (creating the record, of
        `content_type`, if there is none); returns the new version and whether the record is new. Its SHA-256
        continues from the state of the content it extends (RecordStore.content_hash)."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, fsync_file, self.path(name), self.store.blobs)
        while True:
            current = self.store.current(event, start, self.store.rconn)
            digest = hashlib.sha256()
            if current is not None:
                digest = await loop.run_in_executor(None, self.store.content_hash, current)
            try:
                return await loop.run_in_executor(
                    self.store.writer, self.join_now, name, event, start, content_type, at, upto, current, digest, times
                )
            except _Changed:
                continue  # another change came first: extend that one

    def join_now(
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
        """join() in the writer thread (or at start-up), given the version it extends and that version's hash, and
        when the piece's first and last bytes came (None: at start-up, its file's time; `ended` then says so);
        _Changed if the record is no longer that version."""
        store, conn, path = self.store, self.store.wconn, self.path(name)
        added = None  # a blob made for the bytes joined (an object), removed if the version is not made
        try:
            with storage_errors(), conn.transaction():
                conn.lock_record(event, start)
                old = store.current(event, start)
                if old != expected:
                    raise _Changed()
                segments = old.segments if old is not None else []
                # never a byte of the file twice: from where the record's runs of it end (another process may have
                # joined them for this one, while it had lost its name with its connection to the index)
                at = max([at] + [end for s in segments if (end := piece_end(s, name)) is not None])
                if at >= upto:
                    conn.execute("UPDATE appends SET committed = ? WHERE blob = ?", (upto, name))
                    return old, False
                modified = int(time.time())
                segments, added = store.content.join_run(path, name, at, upto, segments, modified)
                _hash_file(digest, path, at, upto)
                size = (old.size if old is not None else 0) + upto - at
                content_type = old.type if old is not None else content_type
                record = Record(event, start, content_type, size, digest.hexdigest(), modified, blob_spec(segments))
                store.write_version(record, old)
                first, last = times or (path.stat().st_mtime,) * 2
                parts.extend(conn, event, start, name, size - (upto - at), size, first, last, ended)
                conn.execute("UPDATE appends SET committed = ? WHERE blob = ?", (upto, name))
        except sqldb.IndexUnavailable:
            raise  # the outcome is unknown: the object stays (named, or an orphan that a later start removes)
        except BaseException:
            if added is not None:
                store.content.remove(added)
            raise
        store.sharing.starts.add(event, start)
        store.keep_hash(digest)
        return record, old is None

    async def part_ended(self, name: str, event: str, start: str, ended: str, last_at: float) -> None:
        """Say how the append request that wrote the file `name` ended, in its part of the record."""
        await self.store.in_writer(parts.end, event, start, name, ended, last_at)

    def parts_of(self, event: uuid.UUID, start: datetime.datetime) -> list[dict[str, Any]]:
        """The parts of the record's current version, in the order of their bytes (RecordNotFound if none)."""
        record = self.store.get(event, start)
        return parts.of(self.store.rconn, record.event, record.start, record.size, record.modified)

    async def let_go_before(self, name: str, upto: int) -> bool:
        """A standby piece will never join its file's bytes before `upto` (they are the live one's audio again):
        say so in its row (a restart joins from there), then give their disk space back, keeping the file's
        offsets (a hole punched in it). Whether the space was given back (some file systems cannot)."""
        sql = "UPDATE appends SET committed = ? WHERE blob = ? AND committed < ?"
        await self.store.in_writer(lambda conn: conn.execute(sql, (upto, name, upto)))
        return await asyncio.get_running_loop().run_in_executor(None, punch_hole, self.path(name), STANDBY_HEAD, upto)

    async def forget(self, name: str) -> None:
        """The append request writing `name` has ended and all it received is in its record."""
        await self.store.in_writer(lambda conn: conn.execute("DELETE FROM appends WHERE blob = ?", (name,)))

    def ended(self, name: str, event: str, start: str) -> None:
        """All that the piece `name` received is in the record (or dropped): runs of it that follow on are merged
        into one blob in the background (the shutdown waits), and what only the piece needed goes."""
        current = self.store.current(event, start, self.store.rconn)
        found = [(s, end) for s in (current.segments if current else []) if (end := piece_end(s, name)) is not None]
        runs, ends = [run for run, _ in found], [end for _, end in found]
        if len(runs) > 1 and [end - run.length for run, end in found][1:] == ends[:-1]:
            self.store.finish_later(self._merge(name, event, start, runs), f"merging the joins of append piece {name}")
            return
        self.store.content.piece_done(self.path(name), name, name in {s.name for s in runs})

    async def _merge(self, name: str, event: str, start: str, runs: list) -> None:
        """Name one blob holding the piece's runs in the record's current version in place of them (the same bytes),
        then remove them (a download that reaches one of them afterwards reads the merged one: s3.merged)."""
        loop = asyncio.get_running_loop()
        content, path = self.store.content, self.path(name)
        merged, swapped = None, False
        try:
            merged = await loop.run_in_executor(None, content.merge_runs, path, name, runs)
            if merged is not None:
                swapped = await loop.run_in_executor(self.store.writer, self._swap_runs, event, start, runs, merged)
                unused = [run.name for run in runs] if swapped else [merged.name]
                await loop.run_in_executor(None, content.remove_all, unused)
        finally:
            content.piece_done(path, name, named=not swapped)

    def _swap_runs(self, event: str, start: str, runs: list, merged: Any) -> bool:
        """Name `merged` in the record's current version in place of `runs`, if that version names them in a row
        (in the writer thread); whether it did."""
        conn = self.store.wconn
        with storage_errors(), conn.transaction():
            conn.lock_record(event, start)
            current = self.store.current(event, start)
            segments = current.segments if current is not None else []
            at = segments.index(runs[0]) if runs[0] in segments else -1
            if at < 0 or segments[at : at + len(runs)] != runs:
                return False
            segments[at : at + len(runs)] = [merged]
            record = dataclasses.replace(current, blob=blob_spec(segments))  # the same bytes: no event, same validators
            self.store.put_row(record)
        return True


class _Changed(Exception):
    """The record changed between reading its version and the transaction that was to extend it."""


def _hash_file(digest: "hashlib._Hash", path: Path, at: int, upto: int) -> None:
    """Feed the bytes at..upto of a file to a hash."""
    with open(path, "rb") as file:
        while at < upto:
            data = os.pread(file.fileno(), min(READ_BLOCK, upto - at), at)
            if not data:
                raise StoreError(f"the blob file {path.name} is shorter than its record says")
            digest.update(data)
            at += len(data)
