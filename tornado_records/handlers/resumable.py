"""Resumable uploads over HTTP: tus 1.0 and the IETF Resumable Uploads draft, on the same upload resources.

The record's URL creates an upload (`POST /records/{event}/{start}`, tus or IETF, and `PUT`/`POST` carrying
`Upload-Complete`, IETF); the upload resource, `/uploads/{id}`, answers offset retrieval (HEAD, GET), append
(PATCH) and cancellation (DELETE). Which protocol a request speaks is told by its headers, as tusd does:
`Upload-Draft-Interop-Version` (or, without it, `Upload-Complete`) is the IETF draft, `Tus-Resumable` is tus.
What an upload is and does lives in resumable.py; this module only translates.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.utils
import logging
import re
import time
from typing import Any

import tornado.ioloop
import tornado.routing
import tornado.web

from tornado_records.digest_fields import MalformedDigest, expected_digests
from tornado_records.handlers.base import ApiError, BaseHandler, quoted
from tornado_records.handlers.records import UNLIMITED_BODY, parse_event, parse_start, validators_of
from tornado_records.http_semantics import has_preconditions, precondition_status
from tornado_records.resumable import (
    CONDITION_HEADERS,
    SYNC_INTERVAL,
    Resumable,
    Resumables,
    UploadComplete,
    UploadGone,
)
from tornado_records.store import DigestMismatch, PreconditionFailed, RecordNotFound

log = logging.getLogger("tornado_records.handlers")

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = "creation,creation-with-upload,creation-defer-length,termination,expiration"
INTEROP_VERSIONS = ("6", "8")  # draft -04/-05 (tus-js-client's "ietf-draft-05", tusd), and the editor's copy
TUS_CHUNK = "application/offset+octet-stream"
PARTIAL_UPLOAD = "application/partial-upload"
_DIGITS = re.compile(r"[0-9]{1,19}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class CreationRequests(tornado.routing.PathMatches):
    """The requests to a record's URL that create a resumable upload (or discover how): POST, OPTIONS, and a PUT
    carrying `Upload-Complete`."""

    def match(self, request: Any) -> dict | None:
        method = request.method
        if method in ("POST", "OPTIONS") or (method == "PUT" and "Upload-Complete" in request.headers):
            return super().match(request)
        return None


def _integer(headers: Any, name: str) -> int | None:
    text = headers.get(name)
    if text is None:
        return None
    if not _DIGITS.fullmatch(text.strip()) or int(text) >= 1 << 63:
        raise ApiError(400, f"{name} must be a number of bytes, not {quoted(text)}")
    return int(text)


def _boolean(headers: Any, name: str) -> bool | None:
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
            upload.write(chunk[:room])
            if room < len(chunk):
                raise ApiError(413, f"The upload is over its length or the limit of "
                                    f"{self.settings['config'].max_body_size} bytes; what fit is kept")  # fmt: skip
            if upload.events is not None:
                upload.events.progress(upload.written)
            if now - self._recorded_at >= SYNC_INTERVAL:
                self._recorded_at = now
                await self.resumables.record(upload)
        except Exception as exc:
            await self.end_transfer()
            await self.refuse_body(exc)

    def _room(self, upload: Resumable) -> int:
        limit = self.settings["config"].max_body_size
        if upload.length is not None:
            limit = min(limit, upload.length)
        return max(0, limit - upload.written)

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
            store = self.settings["store"]
            task = asyncio.ensure_future(self.end_transfer())
            store.ending.add(task)  # the shutdown waits for it
            task.add_done_callback(store.ending.discard)
            task.add_done_callback(_log_failure)

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
        self.refused = True
        exc = ApiError(408, f"No byte of the body arrived for {timeout:g} s: the bytes received are kept")
        self.clear()
        body = self._error_body(408, (type(exc), exc, None))
        self.set_header("Content-Length", len(body))
        self.set_header("Connection", "close")
        self.finish(body)

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


class CreationHandler(TransferHandler):
    """`/records/{event}/{start}`: POST (tus creation, or IETF), PUT or POST with `Upload-Complete` (IETF), OPTIONS."""

    complete = False

    def options(self, *_: str) -> None:
        """Protocol discovery: tus versions and extensions, IETF limits."""
        self.set_status(204)
        self.set_header("Tus-Resumable", TUS_VERSION)
        self.set_header("Tus-Version", TUS_VERSION)
        self.set_header("Tus-Extension", TUS_EXTENSIONS)
        self.set_header("Tus-Max-Size", str(self.settings["config"].max_body_size))
        self.set_header("Upload-Limit", f"min-size=0, max-size={self.settings['config'].max_body_size}")

    async def prepare(self) -> None:
        super().prepare()
        event, start = parse_event(self.path_args[0]), parse_start(self.path_args[1])
        if self.request.method == "OPTIONS":
            return
        self.require_writer()
        if self.get_query_argument("append", "false") != "false":
            raise ApiError(400, "A resumable upload keeps whatever arrives already; append mode does not apply to it")
        self.detect_protocol(creating=True)
        headers = self.request.headers
        length = self._length()
        content_type = self._content_type()
        if "Content-Digest" in headers or "Content-MD5" in headers:
            raise ApiError(400, "A resumable upload keeps whatever part of a request arrives, so it cannot check the "
                                "digest of a request's content: give the whole record's Repr-Digest instead")  # fmt: skip
        try:
            digest = expected_digests({"Repr-Digest": headers["Repr-Digest"]}) if "Repr-Digest" in headers else {}
        except MalformedDigest as exc:
            raise ApiError(400, str(exc)) from None
        conditions = {name: headers[name] for name in CONDITION_HEADERS if name in headers}
        if has_preconditions(headers):
            try:
                current = self.settings["store"].get(event, start)
            except RecordNotFound:
                current = None
            if precondition_status("PUT", headers, validators_of(current)) is not None:
                raise PreconditionFailed(event, start)
        limit = self.settings["config"].max_body_size
        if length is not None and length > limit:
            raise ApiError(413, f"The upload of {length} bytes is over the limit of {limit} bytes")
        if length is not None:
            self.settings["store"].ensure_space(length)
        upload = await self.resumables.create(
            str(event), start, content_type, length, conditions, digest["sha256"].hex() if digest else ""
        )
        self.set_header("Location", f"/uploads/{upload.id}")
        self.accept_body = not self.tus or headers.get("Content-Type", "").split(";")[0].strip() == TUS_CHUNK
        if self._interim_allowed():
            self._interim(upload)
        await self.begin_transfer(upload)

    def _length(self) -> int | None:
        headers = self.request.headers
        length = _integer(headers, "Upload-Length")
        deferred = headers.get("Upload-Defer-Length")
        if deferred is not None and deferred.strip() != "1":
            raise ApiError(400, f"Upload-Defer-Length can only be 1, not {quoted(deferred)}")
        if self.tus:
            if length is None and deferred is None:
                raise ApiError(400, "tus creation needs Upload-Length, or Upload-Defer-Length: 1")
            return length
        self.complete = _boolean(headers, "Upload-Complete") or False
        content_length = _integer(headers, "Content-Length")
        if self.complete and content_length is not None:
            if length is not None and length != content_length:
                raise ApiError(400, "Upload-Length and Content-Length of a complete upload differ")
            return content_length
        return length

    def _content_type(self) -> str:
        """The record's media type: tus metadata `filetype`, else the request's Content-Type (IETF), else
        application/octet-stream."""
        headers = self.request.headers
        content_type = _metadata(headers.get("Upload-Metadata", "")).get("filetype")
        if content_type is None and not self.tus:
            given = headers.get("Content-Type", "")
            if given.split(";")[0].strip() not in ("", PARTIAL_UPLOAD, TUS_CHUNK):
                content_type = given
        content_type = content_type or "application/octet-stream"
        if _CONTROL.search(content_type) or len(content_type) > 1024:
            raise ApiError(400, "The media type must be a media type such as audio/ogg")
        return content_type

    def _interim_allowed(self) -> bool:
        """Whether the 104 may be sent: an HTTP/1.1 request of a draft version this service speaks (the draft:
        none without one), that came straight from the client. A proxy (nginx before 1.29) may take an interim
        answer other than 100 for the final one, so a request that names a proxy (Via, Forwarded, X-Forwarded-For,
        X-Real-IP) gets none: its client learns the Location from the final answer."""
        headers = self.request.headers
        proxied = any(name in headers for name in ("Via", "Forwarded", "X-Forwarded-For", "X-Real-IP"))
        return self.proto in INTEROP_VERSIONS and self.request.version == "HTTP/1.1" and not proxied

    def _interim(self, upload: Resumable) -> None:
        """Send `104 Upload Resumption Supported` with the upload's Location, before anything of the body is read
        (written on the connection's stream, as Tornado writes its own `100 Continue`)."""
        lines = [
            "HTTP/1.1 104 Upload Resumption Supported",
            f"Location: /uploads/{upload.id}",
            f"Upload-Draft-Interop-Version: {self.proto}",
            f"Upload-Limit: min-size=0, max-size={self.settings['config'].max_body_size}",
        ]
        self.request.connection.stream.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin1"))

    async def post(self, *_: str) -> None:
        await self._created()

    async def put(self, *_: str) -> None:
        await self._created()

    async def _created(self) -> None:
        if self.refused:
            return
        upload = self.upload
        complete = self.complete or upload.length == upload.written  # its length reached: done, as tusd does
        await self.finish_body(complete)
        if not complete or self.tus:
            self.set_status(201)
            self.clear_header("Content-Type")
            self.set_header("Location", f"/uploads/{upload.id}")


class UploadHandler(TransferHandler):
    """`/uploads/{id}`: an upload resource. HEAD (or GET) tells its offset, PATCH appends, DELETE cancels."""

    async def prepare(self) -> None:
        super().prepare()
        if self.request.method not in self.allowed_methods():
            raise tornado.web.HTTPError(405)
        self.require_writer()
        self.upload = self._upload()
        self.detect_protocol(creating=False)
        if self.request.method == "PATCH":
            await self._begin_append()

    def _upload(self) -> Resumable:
        try:
            return self.resumables.get(self.path_args[0])
        except UploadGone as exc:
            raise ApiError(410 if exc.expired else 404, str(exc)) from None

    async def _begin_append(self) -> None:
        headers = self.request.headers
        upload = self.upload
        kind = headers.get("Content-Type", "").split(";")[0].strip()
        wanted = TUS_CHUNK if self.tus else PARTIAL_UPLOAD
        empty = "Transfer-Encoding" not in headers and headers.get("Content-Length", "0").strip() == "0"
        if kind != wanted and not (empty and not kind):  # an empty append may go without a media type
            raise ApiError(415, f"An append's Content-Type is {wanted}, not {quoted(kind)}")
        offset = _integer(headers, "Upload-Offset")
        if offset is None:
            raise ApiError(400, "An append needs Upload-Offset: the offset its bytes start at")
        self.complete = False if self.tus else _boolean(headers, "Upload-Complete")
        if self.complete is None:
            raise ApiError(400, "An append needs Upload-Complete: ?1 (its content ends the upload) or ?0")
        await self.resumables.take(upload, None)  # end a transfer still in progress: its bytes count
        try:
            self._check_offset(offset)
            await self._declare_length(offset)
        finally:
            self.resumables.release(upload)
        length = _integer(headers, "Content-Length")
        if length is not None:
            self.settings["store"].ensure_space(length)
        self.accept_body = True
        await self.begin_transfer(upload)

    def _check_offset(self, offset: int) -> None:
        upload = self.upload
        headers = {"Upload-Offset": str(upload.offset)} | ({} if self.tus else {"Upload-Complete": "?0"})
        if offset != upload.offset:
            raise ApiError(409, f"The upload's offset is {upload.offset}, not {offset}: resume from there", headers)
        if upload.complete:
            if _integer(self.request.headers, "Content-Length") or "Transfer-Encoding" in self.request.headers:
                raise ApiError(400, str(UploadComplete()), headers)

    async def _declare_length(self, offset: int) -> None:
        upload = self.upload
        length = _integer(self.request.headers, "Upload-Length")
        content_length = _integer(self.request.headers, "Content-Length")
        if self.complete and content_length is not None:
            if length is not None and length != offset + content_length:
                raise ApiError(400, "Upload-Length and Content-Length disagree on the upload's length")
            length = offset + content_length
        if length is None or length == upload.length:
            return
        if upload.length is not None:
            raise ApiError(400, f"The upload's length is {upload.length}, not {length}")
        if length < upload.offset:
            raise ApiError(400, f"The length {length} is less than the bytes already received ({upload.offset})")
        if length > self.settings["config"].max_body_size:
            raise ApiError(413, f"The upload of {length} bytes is over the limit")
        await self.resumables.declare_length(upload, length)

    async def patch(self, *_: str) -> None:
        if self.refused:
            return
        upload = self.upload
        if upload.complete:  # a repeat of the last append, whose answer was lost: the same outcome again
            await self.end_transfer()
            self.set_header("Upload-Offset", str(upload.offset))
            if not self.tus:
                self.set_header("Upload-Complete", "?1")
                self.set_header("ETag", upload.etag)
            self.set_status(204)
            return
        complete = self.complete or upload.length == upload.written  # its length reached: done, as tusd does
        await self.finish_body(complete)

    async def head(self, *_: str) -> None:
        upload = self.upload
        if not self.tus and any(name in self.request.headers for name in ("Upload-Offset", "Upload-Length", "Upload-Complete")):
            raise ApiError(400, "An offset retrieval takes no Upload-Offset or Upload-Length")
        await self.resumables.take(upload, None)  # a transfer still in progress ends, and its bytes count
        self.resumables.release(upload)
        self.set_header("Cache-Control", "no-store")
        self.set_header("Upload-Offset", str(upload.offset))
        if upload.length is not None:
            self.set_header("Upload-Length", str(upload.length))
        elif self.tus:
            self.set_header("Upload-Defer-Length", "1")
        if not self.tus:
            self.set_header("Upload-Complete", "?1" if upload.complete else "?0")
        self.limit_headers(upload)
        self.set_status(200 if self.tus else 204)
        self.clear_header("Content-Type")

    get = head

    async def delete(self, *_: str) -> None:
        upload = self.upload
        await self.resumables.take(upload, None)
        try:
            await self.resumables.cancel(upload)
        finally:
            self.resumables.release(upload)
        self.set_status(204)


def _metadata(text: str) -> dict[str, str]:
    """tus Upload-Metadata: comma-separated `key base64value` pairs (values not base64 text are skipped)."""
    found = {}
    for element in text.split(","):
        parts = element.strip().split(" ")
        if len(parts) == 2 and parts[0]:
            try:
                found[parts[0]] = base64.b64decode(parts[1], validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                continue
    return found


def _log_failure(task: asyncio.Future) -> None:
    if not task.cancelled() and task.exception() is not None:
        exc = task.exception()
        log.warning("could not record what an upload received: %s", exc)
