"""The resumable uploads of one data directory (see resumable.py for what one is): created, found, taken by one
request at a time, recorded, completed, cancelled, expired, and mended at a start."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import hmac
import json
import logging
import math
import os
import secrets
import time
import uuid
from pathlib import Path
from typing import Callable

import tornado.ioloop

from tornado_records.events import EventHub
from tornado_records.upload_events import UploadEvents
from tornado_records.http.semantics import Validators, precondition_status
from tornado_records.storage.files import fsync_dir
from tornado_records.storage.model import Busy, DigestMismatch, PreconditionFailed, Record, StoreError, storage_errors
from tornado_records.storage.sharing import ORPHAN_AGE
from tornado_records.storage.store import NewContent, RecordStore
from tornado_records.uploads.resumable import Resumable, TooManyUploads, UploadGone

log = logging.getLogger("tornado_records.resumable")

WANT_LOOK = 0.25  # seconds between looks for uploads asked for by another process, and at the upload asked for
SWEEP_INTERVAL = 60.0  # seconds between sweeps of expired uploads


class Resumables:
    """The resumable uploads of one data directory: create, find, write, record, complete, cancel, expire."""

    def __init__(
        self, store: RecordStore, hub: EventHub, expiry: float, takeover: float = 5.0, sync_every: float = 3.0
    ) -> None:
        self.store = store
        self.sync_every = sync_every  # seconds: while bytes arrive, the offset is made durable at least this often
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
            rows = self.store.uploads.rows(upload_id) if _is_id(upload_id) else []
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
            self.dir / upload_id, resumables=self, _hash=hashlib.sha256(),
        )  # fmt: skip
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, _create_file, upload.path)
        try:
            if not await self.store.uploads.add(upload.row(), cap):
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
            rows = await loop.run_in_executor(None, self.store.uploads.rows, upload.id)
            if rows:
                self._update(upload, rows[0])
            await loop.run_in_executor(None, _cut_back, upload)
        upload.holder = stop
        upload.transferring = True
        if upload.events is not None:
            upload.events.pause(False)

    async def _hold(self, upload_id: str) -> None:
        """Hold the upload against the other processes sharing the index; if one holds it, ask it to let go (the
        newer request wins, as within one process) and wait up to --append-takeover seconds; Busy past that."""
        try:
            await self.store.sharing.hold(upload_id)
            return
        except Busy:
            pass
        await self.store.uploads.want(upload_id)
        deadline = time.monotonic() + self.takeover
        try:
            while True:
                await asyncio.sleep(WANT_LOOK)
                try:
                    await self.store.sharing.hold(upload_id)
                    return
                except Busy:
                    if time.monotonic() >= deadline:
                        raise
        finally:
            await self.store.uploads.want(upload_id, wanted=False)

    async def _let_go_of_wanted(self) -> None:
        """End the requests of this process that transfer to uploads another process asks for (shared index)."""
        held = [upload for upload in self._open.values() if upload.holder is not None]
        if not held:
            return
        loop = asyncio.get_running_loop()
        try:
            wanted = set(await loop.run_in_executor(None, self.store.uploads.wanted, [upload.id for upload in held]))
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
            self.store.sharing.let_go(upload.id)
        upload.holder = None
        upload.transferring = False
        if upload.events is not None:
            upload.events.pause(True)
        if upload.lock.locked():
            upload.lock.release()

    async def end_transfer(self, upload: Resumable) -> None:
        """The request that holds the upload ends: what it received is made durable and recorded, and the upload
        is free for the next; once."""
        if not upload.transferring:
            return
        upload.transferring = False  # before any wait: whatever else ends the request finds it ended
        try:
            await self.record(upload)
        finally:
            self.release(upload)

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
        await self.store.uploads.save(upload.row())
        if failure is not None:
            upload.close()  # the next request's bytes go through a new spool
            raise failure

    async def declare_length(self, upload: Resumable, length: int) -> None:
        """Record the upload's length, now known."""
        upload.length = length
        await self.store.uploads.save(upload.row())

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
            receiver = self.store.content.receiver(upload.path, self.store.new_name())
            new = NewContent(receiver, uuid.UUID(upload.event), upload.start, upload.content_type, upload.written,
                             upload.sha256, upload.began)  # fmt: skip
            record, created = await self.store.commit(new, self._condition(upload))
            upload.path.unlink(missing_ok=True)  # renamed into blobs/ already, or its bytes sent
        except (DigestMismatch, PreconditionFailed) as exc:
            await self._remove(upload, "digest-mismatch" if isinstance(exc, DigestMismatch) else "precondition-failed")
            raise
        upload.close()
        upload.etag = record.etag
        upload.expires = self._expires()
        await self.store.uploads.save(upload.row())
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
            await self.store.uploads.forget(upload.id)
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
        for row in self.store.uploads.rows():
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
            self.dir / row["id"], resumables=self,
        )  # fmt: skip
        upload.base = upload.offset
        return upload

    def _recover(self) -> None:
        """Cut each upload's file back to its durable offset; remove expired uploads, files without a row, and
        rows whose file is missing (their bytes are lost: the upload is gone)."""
        now = time.time()
        rows = {row["id"]: row for row in self.store.uploads.rows()}
        removed = 0
        for row in rows.values():
            path = self.dir / row["id"]
            lost = row["etag"] is None and (not path.exists() or path.stat().st_size < row["received"])
            if row["expires"] <= now or lost:
                path.unlink(missing_ok=True)
                self.store.uploads.forget_now(row["id"])
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
        fsync_dir(path.parent)


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
