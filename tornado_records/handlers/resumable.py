"""Resumable uploads over HTTP: tus 1.0 and the IETF Resumable Uploads draft, on the same upload resources.

The record's URL creates an upload (`POST /records/{event}/{start}`, tus or IETF, and `PUT`/`POST` carrying
`Upload-Complete`, IETF); the upload resource, `/uploads/{id}`, answers offset retrieval (HEAD, GET), append
(PATCH) and cancellation (DELETE). Which protocol a request speaks is told by its headers, as tusd does:
`Upload-Draft-Interop-Version` (or, without it, `Upload-Complete`) is the IETF draft, `Tus-Resumable` is tus.
What an upload is and does lives in resumable.py; this module only translates.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import tornado.routing
import tornado.web

from tornado_records.http.digest_fields import MalformedDigest, expected_digests
from tornado_records.http.caching import NEVER
from tornado_records.handlers.base import ApiError, quoted
from tornado_records.handlers.records import parse_event, parse_start, validators_of
from tornado_records.handlers.transfer import (
    INTEROP_VERSIONS,
    PARTIAL_UPLOAD,
    TUS_CHUNK,
    TUS_EXTENSIONS,
    TUS_VERSION,
    TransferHandler,
    boolean_field,
    integer_field,
)
from tornado_records.http.semantics import has_preconditions, is_media_type, precondition_status
from tornado_records.storage.model import PreconditionFailed, RecordNotFound
from tornado_records.uploads.resumable import CONDITION_HEADERS, Resumable, TooManyUploads, UploadComplete, UploadGone



class CreationRequests(tornado.routing.PathMatches):
    """The requests to a record's URL that create a resumable upload (or discover how): POST, OPTIONS, and a PUT
    carrying `Upload-Complete`."""

    def match(self, request: Any) -> dict | None:
        method = request.method
        if method in ("POST", "OPTIONS") or (method == "PUT" and "Upload-Complete" in request.headers):
            return super().match(request)
        return None


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
        self.check_announced_length(length, "upload")
        try:
            upload = await self.resumables.create(
                str(event), start, content_type, length, conditions, digest["sha256"].hex() if digest else "",
                self.settings["config"].max_resumable_uploads,
            )  # fmt: skip
        except TooManyUploads as exc:
            raise ApiError(507, str(exc)) from None
        self.set_header("Location", f"/uploads/{upload.id}")
        self.accept_body = not self.tus or headers.get("Content-Type", "").split(";")[0].strip() == TUS_CHUNK
        if self._interim_allowed():
            self._interim(upload)
        await self.begin_transfer(upload)

    def _length(self) -> int | None:
        headers = self.request.headers
        length = integer_field(headers, "Upload-Length")
        deferred = headers.get("Upload-Defer-Length")
        if deferred is not None and deferred.strip() != "1":
            raise ApiError(400, f"Upload-Defer-Length can only be 1, not {quoted(deferred)}")
        if self.tus:
            if length is None and deferred is None:
                raise ApiError(400, "tus creation needs Upload-Length, or Upload-Defer-Length: 1")
            return length
        self.complete = boolean_field(headers, "Upload-Complete") or False
        content_length = integer_field(headers, "Content-Length")
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
        if not is_media_type(content_type):
            raise ApiError(400, f"The media type must be a media type such as audio/ogg, not {quoted(content_type)}")
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
        complete = self.complete or upload.length == upload.received  # its length reached: done, as tusd does
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
        offset = integer_field(headers, "Upload-Offset")
        if offset is None:
            raise ApiError(400, "An append needs Upload-Offset: the offset its bytes start at")
        self.complete = False if self.tus else boolean_field(headers, "Upload-Complete")
        if self.complete is None:
            raise ApiError(400, "An append needs Upload-Complete: ?1 (its content ends the upload) or ?0")
        await self.resumables.take(upload, None)  # end a transfer still in progress: its bytes count
        try:
            self._check_offset(offset)
            await self._declare_length(offset)
        finally:
            self.resumables.release(upload)
        length = integer_field(headers, "Content-Length")
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
            if integer_field(self.request.headers, "Content-Length") or "Transfer-Encoding" in self.request.headers:
                raise ApiError(400, str(UploadComplete()), headers)

    async def _declare_length(self, offset: int) -> None:
        upload = self.upload
        length = integer_field(self.request.headers, "Upload-Length")
        content_length = integer_field(self.request.headers, "Content-Length")
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
            self.take_sink()
            await self.resumables.end_transfer(upload)
            self.set_header("Upload-Offset", str(upload.offset))
            if not self.tus:
                self.set_header("Upload-Complete", "?1")
                self.set_header("ETag", upload.etag)
            self.set_status(204)
            return
        complete = self.complete or upload.length == upload.received  # its length reached: done, as tusd does
        await self.finish_body(complete)

    async def head(self, *_: str) -> None:
        upload = self.upload
        if not self.tus and any(name in self.request.headers for name in ("Upload-Offset", "Upload-Length", "Upload-Complete")):
            raise ApiError(400, "An offset retrieval takes no Upload-Offset or Upload-Length")
        await self.resumables.take(upload, None)  # a transfer still in progress ends, and its bytes count
        self.resumables.release(upload)
        self.set_header("Cache-Control", NEVER)
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


