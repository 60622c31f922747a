"""tornado-records migrate: copy the records of a data directory (the embedded default) into the scale-out engines,
an object store and a PostgreSQL index, checking each copy's SHA-256 against the index.

Each record's content becomes one object, read back and hashed before the index names it; the record then appears
in the target with its type, size, ETag and Last-Modified unchanged, and with its audio analysis (nothing is analysed
again), and the events keep their details. A record the target has already, with the same content, is skipped, so a
migration that was stopped (Ctrl-C, SIGTERM, a lost link) goes on where it stopped when run again; a record the
target has with other content (written there since) is left as it is and reported. The source is only read: the service may keep serving it meanwhile, and what changes
there after a record was copied is copied by the next run.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import shutil
import signal
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from tornado_records.audio import analyses
from tornado_records.commands.datadir import CommandError, details_of, read_index, records_of
from tornado_records.storage.files import FileBlobs
from tornado_records.storage.model import BlobsError, Record, RecordNotFound, Segment
from tornado_records.storage.s3 import ObjectBlobs
from tornado_records.storage.store import RecordStore

READ_BLOCK = 1 << 20


def migrate(source: Path, index: str, blobs: str, endpoint: str | None = None) -> int:
    """Copy every record of the data directory `source` into the index and object store named; exit status 0 when
    every record is in the target with its content, 1 when some could not be copied (each said on stderr)."""
    if not blobs.startswith("s3://"):
        raise CommandError("--blobs must name the object store to copy into (s3://bucket/prefix)")
    signal.signal(signal.SIGTERM, _STOPS.stop)
    signal.signal(signal.SIGINT, _STOPS.stop)
    with read_index(source) as conn:
        records = records_of(conn)
        details = details_of(conn)
        analysed = analyses.all_of(conn)
    work = Path(tempfile.mkdtemp(prefix="records-migrate-"))
    try:
        store = RecordStore(work, index, blobs, endpoint)
    except Exception:
        shutil.rmtree(work, ignore_errors=True)
        raise
    analyses.create(store.wconn)
    copied = present = failed = 0
    size = 0
    try:
        files = FileBlobs(source / "blobs")
        for record in records:
            try:
                outcome = _copy(record, files, store, work, details.get(record.event))
                analyses.carry(store.wconn, record, analysed)
            except CommandError as exc:
                print(f"tornado-records migrate: {exc}", file=sys.stderr)
                failed += 1
                continue
            if outcome:
                copied += 1
                size += record.size
            else:
                present += 1
    finally:
        store.close()
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"tornado-records migrate: {copied} record(s) copied ({size} bytes), {present} already there, "
        f"{failed} not copied; {len(records)} in {source}"
    )
    return 1 if failed else 0


def _copy(record: Record, files: FileBlobs, store: RecordStore, work: Path, details: dict | None) -> bool:
    """Copy one record (and its event's details) unless the target has it; whether it was copied. CommandError: it
    could not be."""
    try:
        there = store.get(uuid.UUID(record.event), datetime.datetime.fromisoformat(record.start))
    except RecordNotFound:
        there = None
    if there is not None:
        if there.sha256 != record.sha256:
            raise CommandError(
                f"/records/{record.event}/{record.start} is in the target with other content ({there.etag}, not "
                f"{record.etag}): left as it is there"
            )
        return False
    objects = store.content  # an object store (see migrate)
    assert isinstance(objects, ObjectBlobs)
    name = store.new_name()
    path = _as_one_file(record, files, work)
    adopted = False
    try:
        try:
            objects.send(path, name)
        except OSError as exc:  # the source's file is missing or unreadable
            raise CommandError(f"/records/{record.event}/{record.start}: cannot read its content: {exc}") from None
        if _hash_object(objects, name, record.size) != record.sha256:
            raise CommandError(
                f"/records/{record.event}/{record.start}: the copy's SHA-256 is not the index's {record.sha256} "
                "(is the source damaged? see tornado-records check)"
            )
        with _STOPS.held():
            adopted = store.adopt(record, name, details)
        if not adopted:
            raise CommandError(f"/records/{record.event}/{record.start} was written in the target meanwhile")
    except BaseException:
        if not adopted:  # a stop that came after the index named the object must leave it
            with _STOPS.held():  # a stop during the removal waits for it (else the object would stay)
                objects.remove(name)
        raise
    finally:
        if path.parent == work:
            path.unlink(missing_ok=True)
    return True


def _as_one_file(record: Record, files: FileBlobs, work: Path) -> Path:
    """The file holding the record's content: its blob file, or a copy of its runs in `work` (an appended record)."""
    segments = record.segments
    try:
        if ":" not in record.blob:
            return files.directory / record.blob
        content = files.open(segments, whole=False)
    except (OSError, BlobsError) as exc:  # a missing or short file
        raise CommandError(f"/records/{record.event}/{record.start}: cannot read its content: {exc}") from None
    path = work / f"{record.blob.split(':')[0]}.joined"
    try:
        with open(path, "wb") as out:
            while data := content.read(READ_BLOCK):
                out.write(data)
    finally:
        content.close()
    return path


def _hash_object(objects: ObjectBlobs, name: str, size: int) -> str:
    """The SHA-256 of the object as the object store sends it back."""
    digest = hashlib.sha256()
    reader = objects.open([Segment(name, 0, size)], whole=False)
    try:
        while data := reader.read(READ_BLOCK):
            digest.update(data)
    finally:
        reader.close()
    return digest.hexdigest()


class _Stops:
    """Ctrl-C and SIGTERM stop a migration at once, except while the index takes a record: then as soon as it has,
    so that a stop never leaves the index naming an object it has no reason to keep, nor removes one it names."""

    holding = pending = False

    def stop(self, signum: int, frame: object) -> None:  # noqa: ARG002
        if self.holding:
            self.pending = True
        else:
            raise KeyboardInterrupt()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self.holding = True
        try:
            yield
        finally:
            self.holding = False
            if self.pending:
                raise KeyboardInterrupt()


_STOPS = _Stops()

