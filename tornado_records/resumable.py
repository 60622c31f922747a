"""Resumable uploads (tus 1.0 and the IETF draft): an upload resource's life, whichever protocol reaches it.

An upload resource is a row of the index's `uploads` table (the record it is for, its media type, its durable
offset, its length once known, its expiry, and the preconditions and digest to check at completion) and a file,
uploads/<id>, holding the bytes received. Bytes are written as they arrive and hashed on the way; the offset in the
row moves only after an fsync, so an offset a client is told is always on disk. A request bringing bytes records the
offset every --resumable-sync-interval seconds and when it ends, however it ends. The file is open only while a
request brings bytes to it (from its first byte to the request's end): an upload waiting for its next request holds
no descriptor, however many there are. At most `cap` uploads are in progress (created, neither completed nor
expired): a creation past it is refused (TooManyUploads) with nothing created. At start, each file is cut back to
its row's offset (what came after was never recorded, nor acknowledged), files without a row and rows without a file
are removed, and expired uploads go; the sweep of expired uploads then runs every SWEEP_INTERVAL seconds.

One request at a time per upload: a request for an upload that another one is still transferring to ends that one
(its connection is closed), waits until its bytes are recorded, and goes on (the draft's recommended approach).

Completion checks the digest and the preconditions, and commits the file as the record's new version as a plain PUT
does (RecordStore.commit_file: atomic, the same events). A completed upload's row stays, without its file, until it
expires, so that a client that lost the last answer learns that the upload is done.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import hashlib
import hmac
import json
import logging
import math
import os
import secrets
import time
from pathlib import Path
from typing import Awaitable, BinaryIO, Callable

import tornado.ioloop

from tornado_records.events import EventHub, UploadEvents
from tornado_records.http_semantics import Validators, precondition_status
from tornado_records.spool import Spool
from tornado_records.store import (
    ORPHAN_AGE,
    Busy,
    DigestMismatch,
    PreconditionFailed,
    Record,
    RecordStore,
    StoreError,
    storage_errors,
)

log = logging.getLogger("tornado_records.resumable")

WANT_LOOK = 0.25  # seconds between looks for uploads asked for by another process, and at the upload asked for
SWEEP_INTERVAL = 60.0  # seconds between sweeps of expired uploads
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
class Resumable:
    """One upload resource: its recorded state, its running hash, and while a request brings bytes, its open file."""

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
    events: UploadEvents | None = None
    base: int = 0  # bytes in the file when the process took it up (its offset then), before its spool's
    holder: Callable[[], None] | None = None  # ends the request transferring to it
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
    def written(self) -> int:
        """Bytes in the file: the offset, plus what was written since it was last recorded."""
        return self.base + (0 if self._spool is None else self._spool.written)

    @property
    def received(self) -> int:
        """Bytes received: those in the file, and those on their way to it (see spool.py)."""
        return self.base + (0 if self._spool is None else self._spool.received)

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

    def write(self, chunk: bytes) -> Awaitable[None] | None:
        """Hand received bytes to the file's writer (not yet durable); an awaitable to await before the next when
        the writer lags. StorageFull once the disk is full."""
        with storage_errors():
            if self._spool is None:
                self._file = open(self.path, "ab", buffering=0)
                self._spool = Spool(self._file, [] if self._hash is None else [self._hash])
                self._spool.on_written = None if self.events is None else self.events.changed.set
            return self._spool.put(chunk)

    async def drain(self) -> None:
        """Wait until all that was received is in the file; StorageFull if the disk filled up (what fit stays)."""
        if self._spool is not None:
            with storage_errors():
                await self._spool.drain()

    def close(self) -> None:
        """Close the file (call once what was received is in it: the spool drops what is not)."""
        if self._spool is not None:
            self.base = self.written
            self._spool.close()
            self._spool = None
            self._file = None

    def sha256_of_content(self) -> str:
        """The SHA-256 (hex) of the file's bytes: the running hash, or one made by reading the file (blocks)."""
        if self._hash is None:
            digest = hashlib.sha256()
            with open(self.path, "rb") as file:
                while data := file.read(HASH_BLOCK):
                    digest.update(data)
            self._hash = digest
        return self._hash.hexdigest()


class Resumables:
    """The resumable uploads of one data directory: create, find, write, record, complete, cancel, expire."""

    def __init__(self, store: RecordStore, hub: EventHub, expiry: float, takeover: float = 5.0) -> None:
        self.store = store
        self.hub = hub
        self.expiry = expiry
        self.takeover = takeover  # seconds a request waits for another process to let go of its upload
        self.dir = store.root / "uploads"
        self.dir.mkdir(exist_ok=True)
        self._open: dict[str, Resumable] = {}
        self._removing: set[str] = set()  # ids whose removal is under way
        self._sweeper: tornado.ioloop.PeriodicCallback | None = None
        self._watcher: tornado.ioloop.PeriodicCallback | None = None
        self._recover()

    # -- finding and creating ------------------------------------------------------------------------------------

    def get(self, upload_id: str) -> Resumable:
        """The upload of that id; UploadGone if there is none, or if it has expired (it is then removed).

        With processes sharing the index, an upload that no request here transfers to is read from the index again
        (another process may have moved it on)."""
        upload = self._open.get(upload_id)
        if upload is None or (self.store.shared and upload.holder is None and not upload.lock.locked()):
            rows = self.store.upload_rows(upload_id) if _is_id(upload_id) else []
            if not rows:
                self._open.pop(upload_id, None)
                raise UploadGone(upload_id)
            upload = self._open[upload_id] = self._refreshed(upload, rows[0])
        if upload.expires <= time.time() and upload.holder is None:
            if upload_id not in self._removing:
                asyncio.ensure_future(self._remove(upload, "expired"))
            raise UploadGone(upload_id, expired=True)
        if upload.events is None and not upload.complete:
            upload.events = UploadEvents(
                self.hub, upload.event, upload.start.isoformat(), upload.content_type, resumable=True, announce=False
            )
            upload.events.size = upload.offset
            upload.events.source = upload.path
        return upload

    async def create(
        self,
        event: str,
        start: datetime.datetime,
        content_type: str,
        length: int | None,
        conditions: dict[str, str],
        digest: str,
        cap: int,
    ) -> Resumable:
        """A new, empty upload resource for the record (event, start), recorded in the index; TooManyUploads, with
        nothing created, if `cap` uploads are in progress already."""
        upload_id = secrets.token_urlsafe(24)
        upload = Resumable(
            upload_id, event, start, content_type, 0, length, self._expires(), conditions, digest, None,
            self.dir / upload_id, _hash=hashlib.sha256(),
        )  # fmt: skip
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, _create_file, upload.path)
        try:
            if not await self.store.add_upload(upload.row(), cap):
                raise TooManyUploads(cap)
        except BaseException:
            upload.path.unlink(missing_ok=True)
            raise
        self._open[upload_id] = upload
        upload.events = UploadEvents(self.hub, event, start.isoformat(), content_type, resumable=True)
        upload.events.source = upload.path
        return upload

    def _expires(self) -> int:
        return math.ceil(time.time() + self.expiry)  # never sooner than the setting says (HTTP dates are whole seconds)

    # -- one request at a time -----------------------------------------------------------------------------------

    async def take(self, upload: Resumable, stop: Callable[[], None] | None) -> None:
        """Wait until the upload is free for this request, ending the request that transfers to it (if any);
        `stop`, if given, ends this one when the next comes. Call `release` at the end."""
        if upload.holder is not None:
            upload.holder()  # the draft: a new request ends the one still in progress
        await upload.lock.acquire()
        try:
            await self._hold(upload.id)
        except BaseException:
            upload.lock.release()
            raise
        if self.store.shared:  # another process may have moved it on (a request it let go of, just now)
            loop = asyncio.get_running_loop()
            rows = await loop.run_in_executor(None, self.store.upload_rows, upload.id)
            if rows:
                self._update(upload, rows[0])
            await loop.run_in_executor(None, _cut_back, upload)
        upload.holder = stop
        if upload.events is not None:
            upload.events.pause(False)

    async def _hold(self, upload_id: str) -> None:
        """Hold the upload against the other processes sharing the index; if one holds it, ask it to let go (the
        newer request wins, as within one process) and wait up to --append-takeover seconds; Busy past that."""
        try:
            await self.store.hold(upload_id)
            return
        except Busy:
            pass
        await self.store.want(upload_id)
        deadline = time.monotonic() + self.takeover
        try:
            while True:
                await asyncio.sleep(WANT_LOOK)
                try:
                    await self.store.hold(upload_id)
                    return
                except Busy:
                    if time.monotonic() >= deadline:
                        raise
        finally:
            await self.store.want(upload_id, wanted=False)

    async def _let_go_of_wanted(self) -> None:
        """End the requests of this process that transfer to uploads another process asks for (shared index)."""
        held = [upload for upload in self._open.values() if upload.holder is not None]
        if not held:
            return
        loop = asyncio.get_running_loop()
        try:
            wanted = set(await loop.run_in_executor(None, self.store.wanted, [upload.id for upload in held]))
        except Exception as exc:  # noqa: BLE001 (the next look tries again)
            log.warning("could not look for uploads other processes ask for: %s", exc)
            return
        for upload in held:
            if upload.id in wanted and upload.holder is not None:
                upload.holder()  # its bytes are recorded as the request ends, and the upload is let go

    def release(self, upload: Resumable) -> None:
        """The request that took the upload ends: its file is closed (what it received was recorded first, by
        `record`), and the upload is free for the next."""
        upload.close()
        if upload.lock.locked():
            self.store.let_go(upload.id)
        upload.holder = None
        if upload.events is not None:
            upload.events.pause(True)
        if upload.lock.locked():
            upload.lock.release()

    # -- bytes and offsets ---------------------------------------------------------------------------------------

    async def record(self, upload: Resumable, extend: bool = True) -> None:
        """Make what the file holds durable and the upload's offset (and, with `extend`, push its expiry back)."""
        if upload.gone:
            return
        loop = asyncio.get_running_loop()
        failure: StoreError | None = None
        try:
            await upload.drain()
        except StoreError as exc:  # a full disk: what fit is in the file, and is recorded before the error goes on
            failure = exc
        upto = upload.written
        if upload._file is not None:  # a duplicate descriptor: the request's end may close the file meanwhile
            await loop.run_in_executor(None, _fsync_and_close, os.dup(upload._file.fileno()))
        upload.offset = max(upload.offset, upto)
        if extend:
            upload.expires = max(upload.expires, self._expires())
        await self.store.save_upload(upload.row())
        if failure is not None:
            upload.close()  # the next request's bytes go through a new spool
            raise failure

    async def declare_length(self, upload: Resumable, length: int) -> None:
        """Record the upload's length, now known."""
        upload.length = length
        await self.store.save_upload(upload.row())

    async def complete(self, upload: Resumable) -> tuple[Record, bool]:
        """Commit the upload's bytes as the record's new version, checking its digest and preconditions.

        DigestMismatch or PreconditionFailed: nothing is stored and the upload is removed. Any other failure
        (StorageFull) leaves the upload as it was, to be completed again.
        """
        await self.record(upload)
        loop = asyncio.get_running_loop()
        sha256 = await loop.run_in_executor(None, upload.sha256_of_content)
        try:
            if upload.digest and not hmac.compare_digest(sha256, upload.digest):
                raise DigestMismatch("sha256")
            record, created = await self.store.commit_file(upload, sha256, self._condition(upload))
        except (DigestMismatch, PreconditionFailed) as exc:
            await self._remove(upload, "digest-mismatch" if isinstance(exc, DigestMismatch) else "precondition-failed")
            raise
        upload.close()
        upload.etag = record.etag
        upload.expires = self._expires()
        await self.store.save_upload(upload.row())
        if upload.events is not None:
            upload.events.committed(record.to_json(), created)
        return record, created

    @staticmethod
    def _condition(upload: Resumable) -> Callable[[Record | None], bool] | None:
        if not upload.conditions:
            return None

        def holds(current: Record | None) -> bool:
            validators = None if current is None else Validators(current.etag, current.modified, current.size)
            return precondition_status("PUT", upload.conditions, validators) is None

        return holds

    async def cancel(self, upload: Resumable) -> None:
        """Remove the upload and its bytes (the client cancelled it)."""
        await self._remove(upload, "cancelled")

    async def _remove(self, upload: Resumable, reason: str) -> None:
        upload.gone = True
        self._removing.add(upload.id)
        self._open.pop(upload.id, None)
        upload.close()
        upload.path.unlink(missing_ok=True)
        if upload.events is not None and not upload.complete:
            upload.events.size = upload.written
            upload.events.aborted(reason)
        try:
            await self.store.forget_upload(upload.id)
        finally:
            self._removing.discard(upload.id)

    # -- expiry and start-up -------------------------------------------------------------------------------------

    def start(self) -> None:
        """Sweep expired uploads every SWEEP_INTERVAL seconds (call on the event loop)."""
        self._sweeper = tornado.ioloop.PeriodicCallback(self._sweep_logged, SWEEP_INTERVAL * 1000)
        self._sweeper.start()
        if self.store.shared:
            self._watcher = tornado.ioloop.PeriodicCallback(self._let_go_of_wanted, WANT_LOOK * 1000)
            self._watcher.start()

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.stop()
        if self._watcher is not None:
            self._watcher.stop()

    async def _sweep_logged(self) -> None:
        try:
            await self.sweep()
        except Exception as exc:  # noqa: BLE001 (the next sweep tries again)
            log.warning("could not remove expired uploads: %s", exc)

    async def sweep(self) -> int:
        """Remove the uploads whose time is up and that no request is transferring to; returns how many."""
        now = time.time()
        gone = 0
        for row in self.store.upload_rows():
            if row["id"] in self._removing:
                continue
            upload = self._open.get(row["id"]) or self._from_row(row)
            if upload.expires <= now and upload.holder is None and not upload.lock.locked():
                await self._remove(upload, "expired")
                gone += 1
        return gone

    def _refreshed(self, upload: Resumable | None, row: dict) -> Resumable:
        """The upload as its row says, keeping what this process knows of it while the row says what it knew."""
        fresh = self._from_row(row)
        if upload is None or (upload.offset, upload.written, upload.etag) != (fresh.offset, fresh.offset, fresh.etag):
            if upload is not None:
                upload.close()
            return fresh  # moved on elsewhere: its running hash here is stale (completion reads the file instead)
        upload.length, upload.expires = fresh.length, fresh.expires
        return upload

    def _update(self, upload: Resumable, row: dict) -> None:
        """Bring an upload held here (no bytes in flight) to what its row says, where another process moved it on."""
        fresh = self._from_row(row)
        if (upload.offset, upload.etag) != (fresh.offset, fresh.etag):
            upload._hash = None  # stale: completion reads the file instead
        upload.offset, upload.base, upload.etag = fresh.offset, fresh.offset, fresh.etag
        upload.length, upload.expires = fresh.length, fresh.expires

    def _from_row(self, row: dict) -> Resumable:
        upload = Resumable(
            row["id"], row["event"], datetime.datetime.fromisoformat(row["start"]), row["type"], row["received"],
            row["length"], row["expires"], json.loads(row["conditions"]), row["digest"], row["etag"],
            self.dir / row["id"],
        )  # fmt: skip
        upload.base = upload.offset
        return upload

    def _recover(self) -> None:
        """Cut each upload's file back to its durable offset; remove expired uploads, files without a row, and
        rows whose file is missing (their bytes are lost: the upload is gone)."""
        now = time.time()
        rows = {row["id"]: row for row in self.store.upload_rows()}
        removed = 0
        for row in rows.values():
            path = self.dir / row["id"]
            lost = row["etag"] is None and (not path.exists() or path.stat().st_size < row["received"])
            if row["expires"] <= now or lost:
                path.unlink(missing_ok=True)
                self.store.forget_upload_now(row["id"])
                removed += 1
            elif row["etag"] is None and path.stat().st_size > row["received"] and not self.store.shared:
                os.truncate(path, row["received"])  # never recorded, never acknowledged: the client sends it again
        young = time.time() - ORPHAN_AGE  # with a shared index, a younger file may be one another process creates
        for path in self.dir.iterdir():
            if path.name not in rows and (not self.store.shared or path.stat().st_mtime < young):
                path.unlink()
                removed += 1
        if removed:
            log.warning("removed %d expired or unfinished resumable upload(s) from %s", removed, self.dir)


def _is_id(text: str) -> bool:
    return 16 <= len(text) <= 64 and all(c.isalnum() or c in "-_" for c in text)


def _create_file(path: Path) -> None:
    with storage_errors():
        with open(path, "xb"):
            pass
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _cut_back(upload: Resumable) -> None:
    """Cut the upload's file back to its durable offset (with processes sharing the index, at each take: what
    another process wrote past it before it ended was never recorded, nor acknowledged)."""
    if upload._spool is None and upload.etag is None and upload.path.exists():
        if upload.path.stat().st_size > upload.offset:
            os.truncate(upload.path, upload.offset)


def _fsync_and_close(fd: int) -> None:
    try:
        with storage_errors():
            os.fsync(fd)
    finally:
        os.close(fd)
