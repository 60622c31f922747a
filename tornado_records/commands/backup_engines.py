"""`tornado-records backup DEST` of a service on a PostgreSQL index, with its content in files of a shared data
directory or in S3 objects: DEST is a data directory of the default kind (a SQLite index and files), made with the
same promises as a data directory's backup (backup.py): one snapshot of the index, every version whole, the index put
in place last, a failure leaving nothing."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
import shutil
import sqlite3
import sys
import time
import uuid
from pathlib import Path
from typing import TextIO

from tornado_records.audio import analyses
from tornado_records.commands.backup import BLOCK, NO_LINK, ROUNDS, _make_dest, _remove, failure, report
from tornado_records.commands.datadir import (
    INDEX,
    CommandError,
    RateLimit,
    Source,
    record_path,
    records_of,
    details_of,
)
from tornado_records.storage.content import ContentStore
from tornado_records.storage.files import fsync_content
from tornado_records.storage.model import BlobsError, Record
from tornado_records.storage.store import RecordStore

Version = tuple[str, str, str, int]  # a record's version: event, start, SHA-256, size


def version_of(record: Record) -> Version:
    return (record.event, record.start, record.sha256, record.size)


def backup_engines(source: Source, dest: Path, rate: int, out: TextIO) -> int:
    """`backup` of a source on a PostgreSQL index or an object store (see EngineCopier); the same promises and
    summary as the data directory's."""
    started = time.monotonic()
    if (note := source.left_index()) is not None:
        print(note, file=sys.stderr)
    with source.read_index() as index:
        index.execute("SELECT count(*) FROM records").fetchone()  # the service's index, readable
    new = _make_dest(source.root, dest)
    blobs = None
    try:
        blobs = source.open_content()
        copier = EngineCopier(source, blobs, dest, RateLimit(rate))
        records, rounds = copier.run()
    except BaseException as exc:
        _remove(dest, new)
        raise failure(exc) from None
    finally:
        if blobs is not None:
            blobs.close()
    origin = f"{source.index_name} and {source.content_name}"
    return report(copier.problems, list(copier.done.values()), records, rounds, origin, dest, started, out)


class EngineCopier:
    """Copies the records of a PostgreSQL index and their content (files of a shared data directory, or objects)
    into DEST, a data directory of the default kind, snapshot after snapshot until one is whole.

    A snapshot is one REPEATABLE READ transaction of the index. Each version's content becomes one file of
    DEST/blobs: a hard link of a whole file where DEST is on the same filesystem, else a copy (an appended record's
    runs joined), its SHA-256 checked against the index's as it is copied. A content removed before it was copied
    (its record replaced or deleted meanwhile) makes a new snapshot, as for a data directory. The index of DEST is
    made with the store's own schema (RecordStore.adopt, as `migrate` makes one), in DEST/.index, and put in place
    last."""

    def __init__(self, source: Source, blobs: ContentStore, dest: Path, limit: RateLimit) -> None:
        self.source = source
        self.blobs = blobs
        self.dest = dest
        self.limit = limit
        self.linking = True  # until os.link says DEST is on another filesystem
        # Each version copied: (its file in DEST/blobs, the bytes copied, or None if linked)
        self.done: dict[Version, tuple[str, int | None]] = {}
        self.problems: list[str] = []

    def run(self) -> tuple[list[Record], int]:
        """Make the backup; returns the records it holds and the number of snapshots it took."""
        missing_before: set[Version] | None = None
        for rounds in range(1, ROUNDS + 1):
            records, details, analysed = self.snapshot()
            missing = {version_of(r) for r in records if version_of(r) not in self.done and not self.transfer(r)}
            if not missing or (missing_before is not None and missing <= missing_before):
                break
            missing_before = missing
        else:
            raise CommandError(f"the records changed faster than they could be copied ({ROUNDS} tries)")
        wanted = {version_of(record) for record in records}
        for version in set(self.done) - wanted:  # versions replaced between snapshots
            (self.dest / "blobs" / self.done.pop(version)[0]).unlink()
        kept = []
        for record in records:
            if version_of(record) in self.done:
                kept.append(record)
            else:
                self.problems.append(f"missing: {record_path(record)}: its content is not in {self.source.content_name}")
        self.finish(kept, details, analysed)
        return kept, rounds

    def snapshot(self) -> tuple[list[Record], dict[str, dict[str, str | None]], analyses.Analyses]:
        """The records, the events' details and the records' analyses, at one moment of the index."""
        with self.source.snapshot() as index:
            return records_of(index), details_of(index), analyses.all_of(index)

    def transfer(self, record: Record) -> bool:
        """Link or copy a version's content into DEST/blobs; False if it is gone from the source."""
        whole = ":" not in record.blob
        name = self.blobs.whole_file(record.segments[0]) if whole else None  # a file of the source's to link
        if name is not None and self.linking:
            try:
                os.link(self.source.root / "blobs" / name, self.dest / "blobs" / name)
                self.done[version_of(record)] = (name, None)
                return True
            except FileNotFoundError:
                return False
            except OSError as exc:
                if exc.errno not in NO_LINK:
                    raise
                self.linking = exc.errno != errno.EXDEV
        name = record.blob if whole else uuid.uuid4().hex
        target = self.dest / "blobs" / name
        try:
            content = self.blobs.open(record.segments, whole=False)
        except FileNotFoundError:
            return False
        except BlobsError as exc:  # a file shorter than its runs: what there is
            self.problems.append(f"truncated: {record_path(record)}: {exc}")
            return True
        digest = hashlib.sha256()
        try:
            with open(target, "xb") as out:
                while data := content.read(BLOCK):
                    out.write(data)
                    digest.update(data)
                    self.limit.spend(len(data))
                out.flush()
                os.fsync(out.fileno())
                copied = out.tell()
        except FileNotFoundError:  # a later run's file or object removed meanwhile
            target.unlink(missing_ok=True)
            return False
        finally:
            content.close()
        os.utime(target, (record.modified, record.modified))  # the Last-Modified that nginx sends
        self.done[version_of(record)] = (name, copied)
        if digest.hexdigest() != record.sha256:
            self.problems.append(
                f"damaged: {record_path(record)}: its content's SHA-256 is {digest.hexdigest()}, not {record.sha256}:"
                " copied so"
            )
        return True

    def finish(self, records: list[Record], details: dict[str, dict[str, str | None]], analysed: analyses.Analyses) -> None:
        """Make DEST's index of the records copied (with their analyses), make everything durable, and put the index
        in place."""
        work = self.dest / ".index"
        store = RecordStore(work)
        try:
            analyses.create(store.wconn)
            for record in records:
                name = self.done[version_of(record)][0]
                store.adopt(dataclasses.replace(record, blob=name), name, details.get(record.event))
                analyses.carry(store.wconn, record, analysed)
        finally:
            store.close()
        index = sqlite3.connect(work / INDEX, isolation_level=None)
        try:
            index.execute("PRAGMA journal_mode=DELETE")  # one file, with no -wal beside it
        finally:
            index.close()
        fsync_content(work / INDEX)
        fsync_content(self.dest / "blobs")
        os.rename(work / INDEX, self.dest / INDEX)
        shutil.rmtree(work)
        fsync_content(self.dest)
