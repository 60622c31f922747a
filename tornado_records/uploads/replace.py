"""A plain PUT: the body is received into tmp/ and becomes the record's new version once it has arrived whole and
is durable (the store's commit); a body that stops early leaves nothing."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import hmac
import time
import uuid
from pathlib import Path
from typing import BinaryIO

from tornado_records.events import EventHub
from tornado_records.upload_events import UploadEvents
from tornado_records.storage.model import Condition, DigestMismatch, Record, storage_errors
from tornado_records.storage.store import NewContent, RecordStore
from tornado_records.uploads.sink import Sink
from tornado_records.uploads.spool import Spool


async def begin(
    store: RecordStore,
    event: uuid.UUID,
    start: datetime.datetime,
    content_type: str,
    expected: dict[str, bytes] | None = None,
    size: int | None = None,
) -> Upload:
    """A new, empty upload in tmp/ for the record (event, start), checked against the `expected` digests; StorageFull
    if the announced `size` does not fit on the disk.

    Both are done in a thread: under heavy writeback, creating a file waits on the disk's journal (11 % of the event
    loop's time in a storm of 50 uploads at once, before this moved; see bench/, ping-storm), and the disk's room
    (statvfs) and the file's random name (getrandom) are system calls the event loop need not make.
    """
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, _new_upload, store, event, start, content_type, expected, size)


def _new_upload(
    store: RecordStore,
    event: uuid.UUID,
    start: datetime.datetime,
    content_type: str,
    expected: dict[str, bytes] | None,
    size: int | None,
) -> Upload:
    if size is not None:
        store.ensure_space(size)
    return Upload(store, store.tmp / f"{uuid.uuid4().hex}.part", event, start, content_type, expected)


class Upload(Sink):
    """A body being received into tmp/: handed to its spool as it arrives, written and hashed by the spool's writer,
    and sent on by the content engine's receiver as the file fills (an object store's parts).

    `expected` maps hashlib algorithm names (sha256, md5) to the digests the client announced; the content is hashed
    with each of them too, and the commit refuses content whose digest differs.
    """

    def __init__(
        self,
        store: RecordStore,
        path: Path,
        event: uuid.UUID,
        start: datetime.datetime,
        content_type: str,
        expected: dict[str, bytes] | None = None,
    ) -> None:
        self.store = store
        self.path = path
        self.receiver = store.content.receiver(path, store.new_name())
        self.event = event
        self.start = start
        self.content_type = content_type
        self._placed = False
        self.began = time.time()  # when its first byte could come (the start of its part)
        self.expected = dict(expected or {})
        self._hashes = {name: hashlib.new(name) for name in {"sha256", *self.expected}}
        with storage_errors():
            self._file: BinaryIO | None = open(path, "xb", buffering=0)

    def _open(self) -> Spool:
        assert self._file is not None, "upload already sealed or discarded"
        return Spool(self._file, self._hashes.values())

    def _written(self) -> None:
        self.receiver.written(self.written)
        super()._written()

    async def commit(self, condition: Condition | None = None) -> tuple[Record, bool]:
        """Make the whole body the record's current version (see RecordStore.commit); whatever happens, the upload
        is gone afterwards. DigestMismatch if the content does not have an expected digest."""
        try:
            # where the file becomes the blob as it is, its writer fsyncs it in its last turn (else the receiver's
            # finish does what it has to, in the store's commit)
            durable = False
            if self.receiver.keeps_file:
                durable = await self.seal()
            else:
                await self.drain()
            self._seal()  # on the event loop, which the spool's notices of bytes written come to (see _written)
            new = NewContent(
                self.receiver, self.event, self.start, self.content_type, self.written, self._hashes["sha256"],
                self.began, durable,
            )  # fmt: skip
            record, created = await self.store.commit(new, condition)
            self._placed = self.receiver.keeps_file  # its file is the blob now, no longer in tmp/
        finally:
            self.discard()
        if self.events is not None:
            self.events.committed(record.to_json(), created)
        return record, created

    def _seal(self) -> None:
        """Check the expected digests and close the file."""
        assert self.written == self.received, "seal before drain"
        for name, digest in self.expected.items():
            if not hmac.compare_digest(self._hashes[name].digest(), digest):
                raise DigestMismatch(name)
        self._close()

    def _close(self) -> None:
        if self._spool is not None:
            self._close_spool()  # it closes the file
        elif self._file is not None:
            self._file.close()
        self._file = None

    def discard(self) -> None:
        """Forget the upload: close and remove its file (gone already if it became a blob), and give back what the
        content engine began for it. Safe to call more than once."""
        self._close()
        if not self._placed:
            self.path.unlink(missing_ok=True)
        if self.receiver.pending:
            asyncio.get_running_loop().run_in_executor(None, self.receiver.abort)

    def _events(self, hub: EventHub) -> UploadEvents:
        events = UploadEvents(hub, str(self.event), self.start.isoformat(), self.content_type)
        events.source = self.path  # a listener reads the bytes from the file in tmp/
        return events

    async def finish(self, condition: Condition | None) -> Record:
        record, _ = await self.commit(condition)
        return record

    def abandon(self, reason: str) -> None:
        """The body stopped early: nothing of it is kept."""
        self.discard()
        if self.events is not None:
            self.events.aborted(reason)
