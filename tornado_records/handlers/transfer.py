"""The body of a resumable upload's request (tus 1.0 or the IETF draft): which protocol it speaks, and its bytes
written to the upload as they arrive and made durable however the request ends. handlers/resumable.py builds the
creation and the upload resource's methods on it."""

from __future__ import annotations

import email.utils
import logging
import re
import time
from typing import Any

import tornado.ioloop
import tornado.web

from tornado_records.handlers.base import ApiError, BaseHandler, quoted
from tornado_records.handlers.records import UNLIMITED_BODY
from tornado_records.resumable import Resumable, Resumables
from tornado_records.store import DigestMismatch, PreconditionFailed

log = logging.getLogger("tornado_records.handlers")

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = "creation,creation-with-upload,creation-defer-length,termination,expiration"
INTEROP_VERSIONS = ("6", "8")  # draft -04/-05 (tus-js-client's "ietf-draft-05", tusd), and the editor's copy
TUS_CHUNK = "application/offset+octet-stream"
PARTIAL_UPLOAD = "application/partial-upload"
_DIGITS = re.compile(r"[0-9]{1,19}")


def integer_field(headers: Any, name: str) -> int | None:
    """A header holding a number of bytes (None if absent); 400 if it is not one."""
    text = headers.get(name)
    if text is None:
        return None
    if not _DIGITS.fullmatch(text.strip()) or int(text) >= 1 << 63:
        raise ApiError(400, f"{name} must be a number of bytes, not {quoted(text)}")
    return int(text)


def boolean_field(headers: Any, name: str) -> bool | None:
    """A structured-field Boolean (`?1`, `?0`)."""
    text = headers.get(name)
    if text is None:
        return None
    if text.strip() not in ("?0", "?1"):
        raise ApiError(400, f"{name} must be ?1 or ?0, not {quoted(text)}")
    return text.strip() == "?1"


@tornado.web.stream_request_body
class TransferHandler(BaseHandler):
    """What creation and append share: the protocol of the request, and bytes written to an upload as they arrive,
    made durable however the request ends (its answer, a break, the next request, an idle timeout)."""

    proto = ""  # "tus", an IETF interop version, or "ietf" (Upload-Complete without an interop version)
    upload: Resumable | None = None
    transferring = False
    accept_body = False
    completion_refused = False  # the upload ended with the record's own refusal (IETF: Upload-Complete: ?1)
    _recorded_at = 0.0
    _last_byte = 0.0
    _idle_timer: object | None = None

    @property
    def resumables(self) -> Resumables:
        return self.settings["resumables"]

    def set_default_headers(self) -> None:
        super().set_default_headers()
        if self.proto == "tus":
            self.set_header("Tus-Resumable", TUS_VERSION)
        elif self.proto in INTEROP_VERSIONS:
            self.set_header("Upload-Draft-Interop-Version", self.proto)

    def detect_protocol(self, creating: bool) -> None:
        """Tell the protocol from the headers (tusd's rule); refuse versions this service does not speak."""
        headers = self.request.headers
        if "Tus-Resumable" in headers and headers["Tus-Resumable"].strip() != TUS_VERSION:
            raise ApiError(412, f"Tus-Resumable {quoted(headers['Tus-Resumable'])} is not supported",
                           {"Tus-Version": TUS_VERSION})  # fmt: skip
        version = headers.get("Upload-Draft-Interop-Version")
        if version is not None:
            if version.strip() not in INTEROP_VERSIONS:
                raise ApiError(400, f"Upload-Draft-Interop-Version {quoted(version)} is not one this service speaks "
                                    f"({', '.join(INTEROP_VERSIONS)})")  # fmt: skip
            self.proto = version.strip()
        elif "Tus-Resumable" in headers:
            self.proto = "tus"
        elif "Upload-Complete" in headers or not creating:
            self.proto = "ietf"
        else:
            raise ApiError(400, "POST to a record creates a resumable upload: send Tus-Resumable: 1.0.0 (tus) or "
                                "Upload-Complete (IETF Resumable Uploads)")  # fmt: skip
        self.clear()  # the protocol's own headers on every answer from here on

    @property
    def tus(self) -> bool:
        return self.proto == "tus"

    def limit_headers(self, upload: Resumable | None) -> None:
        """Upload-Limit (IETF) or Upload-Expires (tus)."""
        if self.tus:
            if upload is not None:
                self.set_header("Upload-Expires", email.utils.formatdate(upload.expires, usegmt=True))
            return
        limits = f"min-size=0, max-size={self.settings['config'].max_body_size}"
        if upload is not None:
            left = max(0, int(upload.expires - time.time()))
            limits += f", {'expires' if self.proto == '6' else 'max-age'}={left}"
        self.set_header("Upload-Limit", limits)

    # -- the body ------------------------------------------------------------------------------------------------

    async def begin_transfer(self, upload: Resumable) -> None:
        """Take the upload for this request (ending one still transferring to it), and let the body arrive."""
        self.request.connection.set_max_body_size(UNLIMITED_BODY)
        await self.resumables.take(upload, self._stop)
        self.upload = upload
        self.transferring = True
        self._recorded_at = self._last_byte = time.monotonic()
        self._watch_idle()

    def _stop(self) -> None:
        """Another request came for the upload: this one ends at once (its bytes are kept)."""
        self.request.connection.close()

    async def data_received(self, chunk: bytes) -> None:
        upload = self.upload
        if not self.transferring or upload is None or not self.accept_body:
            return
        self._last_byte = now = time.monotonic()
        try:
            room = self._room(upload)
            lagging = upload.write(chunk[:room])
            if room < len(chunk):
                raise ApiError(413, f"The upload is over its length or the limit of "
                                    f"{self.settings['config'].max_body_size} bytes; what fit is kept")  # fmt: skip
            if upload.events is not None:
                upload.events.progress(upload.received)
            if lagging is not None:
                await lagging  # Tornado reads no more of the body until the writer has caught up (see spool.py)
            if now - self._recorded_at >= self.settings["config"].resumable_sync_interval:
                self._recorded_at = now
                await self.resumables.record(upload)
        except Exception as exc:
            try:
                await self.end_transfer()
            except Exception as failure:  # noqa: BLE001 (the refusal goes out anyway; the next request tries again)
                log.warning("could not record what an upload received: %s", failure)
            self.refuse_body(exc)

    def _room(self, upload: Resumable) -> int:
        limit = self.settings["config"].max_body_size
        if upload.length is not None:
            limit = min(limit, upload.length)
        return max(0, limit - upload.received)

    async def end_transfer(self) -> None:
        """Make what arrived durable and recorded, and free the upload for the next request; once."""
        if not self.transferring:
            return
        self.transferring = False  # before any wait: whatever else ends the request finds it ended
        upload = self.upload
        try:
            await self.resumables.record(upload)
        finally:
            self.resumables.release(upload)

    def _end_in_background(self) -> None:
        if self.transferring:
            self.settings["store"].finish_later(self.end_transfer(), "recording what an upload received")

    def _watch_idle(self) -> None:
        timeout = self.settings["config"].upload_idle_timeout
        if not self.transferring or self._finished:
            self._idle_timer = None
            return
        left = self._last_byte + timeout - time.monotonic()
        if left > 0:
            self._idle_timer = tornado.ioloop.IOLoop.current().call_later(left, self._watch_idle)
            return
        self._idle_timer = None
        self._end_in_background()
        self.refuse_body(ApiError(408, f"No byte of the body arrived for {timeout:g} s: the bytes received are kept"))

    def on_connection_close(self) -> None:
        self._end_in_background()
        super().on_connection_close()

    def on_finish(self) -> None:
        self._end_in_background()
        if self._idle_timer is not None:
            tornado.ioloop.IOLoop.current().remove_timeout(self._idle_timer)
            self._idle_timer = None
        super().on_finish()

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if self.completion_refused and not self.tus:
            self.set_header("Upload-Complete", "?1")  # the answer is the record's: resuming would not help
        super().write_error(status_code, **kwargs)

    # -- answers -------------------------------------------------------------------------------------------------

    async def finish_body(self, complete: bool) -> None:
        """The body arrived to its end: record it, complete the upload if the request says so, and answer."""
        upload = self.upload
        self.transferring = False  # this method, not a break, ends the transfer
        try:
            await self.resumables.record(upload)
            if complete and upload.length is not None and upload.offset != upload.length:
                raise ApiError(400, f"The upload ends at {upload.offset} bytes, but its length is {upload.length}",
                               {"Upload-Offset": str(upload.offset)})  # fmt: skip
            if complete:
                try:
                    record, _ = await self.resumables.complete(upload)
                except (DigestMismatch, PreconditionFailed):
                    self.completion_refused = True
                    raise
                self.set_header("ETag", record.etag)
                self.set_header("Last-Modified", record.modified_at)
        finally:
            self.resumables.release(upload)
        self.set_header("Upload-Offset", str(upload.offset))
        if not self.tus:
            self.set_header("Upload-Complete", "?1" if complete else "?0")
        self.limit_headers(upload)
        self.set_status(204)
