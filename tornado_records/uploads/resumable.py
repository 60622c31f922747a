"""Resumable uploads (tus 1.0 and the IETF draft): an upload resource's life, whichever protocol reaches it.

An upload resource is a row of the index's `uploads` table (the record it is for, its media type, its durable
offset, its length once known, its expiry, and the preconditions and digest to check at completion) and a file,
uploads/<id>, holding the bytes received. Bytes are written as they arrive and hashed on the way; the offset in the
row moves only after an fsync, so an offset a client is told is always on disk. A request bringing bytes records
the offset every --resumable-sync-interval seconds (its checkpoint) and when it ends, however it ends. The file is open only while a request
brings bytes to it (from its first byte to the request's end): an upload waiting for its next request holds no
descriptor, however many there are. At most `cap` uploads are in progress (created, neither completed nor expired):
a creation past it is refused (TooManyUploads) with nothing created. At start, each file is cut back to its
row's offset (what came after was never recorded, nor acknowledged), files without a row and rows without a file are
removed, and expired uploads go; the sweep of expired uploads then runs every SWEEP_INTERVAL seconds.

One request at a time per upload: a request for an upload that another one is still transferring to ends that one
(its connection is closed), waits until its bytes are recorded, and goes on (the draft's recommended approach).

Completion checks the digest and the preconditions, and commits the file as the record's new version as a plain PUT
does (RecordStore.commit: atomic, the same events). A completed upload's row stays, without its file, until it
expires, so that a client that lost the last answer learns that the upload is done.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Awaitable, BinaryIO, Callable


from tornado_records.upload_events import UploadEvents
from tornado_records.storage.model import Record, StoreError
from tornado_records.uploads.sink import Sink
from tornado_records.uploads.spool import Spool

if TYPE_CHECKING:
    from tornado_records.uploads.resumables import Resumables

log = logging.getLogger("tornado_records.resumable")

HASH_BLOCK = 1 << 20
CONDITION_HEADERS = ("If-Match", "If-None-Match", "If-Unmodified-Since")


class UploadGone(StoreError):
    """There is no upload resource of that id (never was, cancelled, or expired and removed)."""

    def __init__(self, upload_id: str, expired: bool = False) -> None:
        super().__init__(f"The upload {upload_id} has expired" if expired else f"There is no upload {upload_id}")
        self.expired = expired


class TooManyUploads(StoreError):
    """The service holds as many resumable uploads in progress as it takes: a new one is refused."""

    def __init__(self, cap: int) -> None:
        super().__init__(
            f"The service holds too many resumable uploads in progress (at most {cap}): complete or cancel one, "
            "or try again once some have completed or expired"
        )


class UploadComplete(StoreError):
    """The upload is complete: it takes no more bytes."""

    def __init__(self) -> None:
        super().__init__("The upload is complete and takes no more bytes")


@dataclasses.dataclass
class Resumable(Sink):
    """One upload resource: its recorded state, its running hash, and while a request brings bytes, its open file.
    The sink of the request that holds it (Resumables.take) while that request brings bytes."""

    id: str
    event: str
    start: datetime.datetime
    content_type: str
    offset: int  # durable: on disk and recorded
    length: int | None
    expires: int
    conditions: dict[str, str]
    digest: str
    etag: str | None
    path: Path
    resumables: Resumables | None = None
    events: UploadEvents | None = None
    base: int = 0  # bytes in the file when the process took it up (its offset then), before its spool's
    holder: Callable[[], None] | None = None  # ends the request transferring to it
    transferring: bool = False  # a request holds it (take) until release
    gone: bool = False  # cancelled, expired or refused: removed
    began: float = dataclasses.field(default_factory=time.time)  # when this process took it up (its part's start)
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    _file: BinaryIO | None = None
    _spool: Spool | None = None  # from the first byte a request brings until the request ends (close)
    _hash: "hashlib._Hash | None" = None  # of the file's first `written` bytes, None where unknown (after a restart)

    @property
    def complete(self) -> bool:
        return self.etag is not None

    @property
    def size(self) -> int:
        """What the commit of the content needs to know: its size (a Record's `size`)."""
        return self.written

    @property
    def sha256(self) -> "hashlib._Hash":
        assert self._hash is not None
        return self._hash

    def row(self) -> dict:
        return {
            "id": self.id,
            "event": self.event,
            "start": self.start.isoformat(),
            "type": self.content_type,
            "received": self.offset,
            "length": self.length,
            "expires": self.expires,
            "conditions": json.dumps(self.conditions),
            "digest": self.digest,
            "etag": self.etag,
        }

    def _open(self) -> Spool:
        self._file = open(self.path, "ab", buffering=0)
        return Spool(self._file, [] if self._hash is None else [self._hash])

    def _written(self) -> None:
        if self.events is not None:
            self.events.changed.set()

    def close(self) -> None:
        """Close the file (call once what was received is in it: the spool drops what is not)."""
        self._close_spool()
        self._file = None

    # -- what the byte path asks (handlers/intake.py) -----------------------------------------------------------

    keeps_part = True  # past its length or the limit, what fits is kept

    @property
    def checkpoint_every(self) -> float:
        return self.resumables.sync_every

    def room(self, limit: int) -> int:
        return max(0, (limit if self.length is None else min(limit, self.length)) - self.received)

    def over_limit(self, limit: int) -> str:
        return f"The upload is over its length or the limit of {limit} bytes; what fit is kept"

    def idle_refusal(self, timeout: float) -> str:
        return f"No byte of the body arrived for {timeout:g} s: the bytes received are kept"

    def checkpoint(self) -> Awaitable[None]:
        """Its offset made durable and recorded."""
        return self.resumables.record(self)

    def abandon(self, reason: str) -> asyncio.Future:  # noqa: ARG002 (a break is no end of a resumable upload)
        """The request stopped early: what arrived is recorded, and the upload freed for the next (the shutdown
        waits)."""
        return self.resumables.store.finish_later(self.resumables.end_transfer(self), "recording what an upload received")

    async def finish(self, condition: object = None) -> Record:  # noqa: ARG002 (its own, given at its creation)
        """Commit it as the record's new version (see Resumables.complete)."""
        record, _ = await self.resumables.complete(self)
        return record

    def sha256_of_content(self) -> str:
        """The SHA-256 (hex) of the file's bytes: the running hash, or one made by reading the file (blocks)."""
        if self._hash is None:
            digest = hashlib.sha256()
            with open(self.path, "rb") as file:
                while data := file.read(HASH_BLOCK):
                    digest.update(data)
            self._hash = digest
        return self._hash.hexdigest()
