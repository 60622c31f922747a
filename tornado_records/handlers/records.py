"""One record: upload (streamed to disk), download, HEAD and delete; and how its event and start are read."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import re
import time
import uuid
from typing import Any, Awaitable

import tornado.ioloop
import tornado.web
from tornado.iostream import StreamClosedError

from tornado_records.appends import Piece
from tornado_records.digest_fields import MalformedDigest, expected_digests, repr_digest
from tornado_records.events import UploadEvents, publish_deleted
from tornado_records.handlers.base import ApiError, BaseHandler, abort_reason, quoted
from tornado_records.http_semantics import (
    ByteRange,
    RangeNotSatisfiable,
    Validators,
    has_preconditions,
    is_media_type,
    precondition_status,
    requested_range,
)
from tornado_records.sendfile import ShortFile, can_sendfile, send_runs
from tornado_records.store import Blob, Condition, PreconditionFailed, Record, RecordNotFound, RecordStore, Upload

log = logging.getLogger("tornado_records.handlers")

DOWNLOAD_CHUNK = 1 << 20
UNLIMITED_BODY = 1 << 62  # Tornado's own limit on an upload's body, above any --max-body-size: this handler counts

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
_DIGITS = re.compile(r"[0-9]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def parse_event(text: str) -> uuid.UUID:
    """The event's UUID, from a hyphenated UUID in any case."""
    if not _UUID.fullmatch(text):
        raise ApiError(400, f"event must be a UUID such as 0f339cb0-7ab4-43fe-852d-75708232f76c, not {quoted(text)}")
    return uuid.UUID(text)


def parse_start(text: str, name: str = "start") -> datetime.datetime:
    """A naive date-time (the event's own timezone) as `datetime.fromisoformat` reads it."""
    try:
        if _CONTROL.search(text):  # CPython's fromisoformat stops at a NUL: 2024-01-01\x0000 would be midnight
            raise ValueError(text)
        value = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ApiError(
            400, f"{name} must be an ISO 8601 date-time such as 2024-01-01T00:00:00, not {quoted(text)}"
        ) from None
    if value.tzinfo is not None:
        raise ApiError(400, f"{name} is in the event's own timezone and takes no UTC offset or Z: {quoted(text)}")
    return value


@tornado.web.stream_request_body
class RecordHandler(BaseHandler):
    """`/records/{event}/{start}`: PUT streams the body to disk; GET, HEAD and DELETE act on the stored record.

    A plain PUT replaces the record once its whole body is durable; `PUT ...?append=true` adds its body after the
    record's content and keeps whatever arrived, however the request ends (see appends.py). Range, the conditional
    headers and the digest fields follow RFC 9110 and RFC 9530 (see http_semantics and digest_fields); the body
    limit is counted here, so that an over-large body is answered 413.
    """

    upload: Upload | Piece | None = None
    upload_events: UploadEvents | None = None
    _last_byte = 0.0
    _idle_timer: object | None = None
    _joined_at = 0.0

    def allowed_methods(self) -> list[str]:
        return [*super().allowed_methods(), "POST", "OPTIONS"]  # the resumable uploads' (handlers/resumable.py)

    async def prepare(self) -> None:
        if self.request.method == "PUT":
            # The body limit is enforced by this handler (413); Tornado's own check would answer a bare 400, also
            # to a body still arriving after a refusal (401, 503) from here.
            self.request.connection.set_max_body_size(UNLIMITED_BODY)
        super().prepare()
        if self.request.method in ("PUT", "DELETE"):
            self.require_writer()  # before anything of the body is read or anything is said about the record
        self.store: RecordStore = self.settings["store"]
        self.event = parse_event(self.path_args[0])
        self.start = parse_start(self.path_args[1])
        if self.request.method == "PUT":
            self.upload = await self._begin_upload()
            if self.request.connection.stream.closed():  # the client left while the upload's file was made
                if isinstance(self.upload, Upload):
                    self.upload.discard()
                self.upload = None
                return
            self.upload_events = UploadEvents(
                self.settings["hub"],
                str(self.event),
                self.start.isoformat(),
                self.upload.content_type,
                append=isinstance(self.upload, Piece),
            )
            if isinstance(self.upload, Upload):
                self.upload_events.source = self.upload.path
            self.upload.follow(self.upload_events.changed.set)  # a listener (handlers/live.py) sees new bytes
            self._joined_at = self._last_byte = time.monotonic()
            self._watch_idle()

    async def _begin_upload(self) -> Upload | Piece:
        """The upload of the request's body, once everything that can be refused without the body is checked.

        Answering here (400, 412, 413, 507) means no `100 Continue` is sent and no body byte is stored.
        """
        headers = self.request.headers
        append = self._append_mode()
        content_type = headers.get("Content-Type") or "application/octet-stream"
        if not is_media_type(content_type):
            raise ApiError(400, f"Content-Type must be a media type such as audio/ogg, not {quoted(content_type)}")
        try:
            expected = expected_digests(headers)
        except MalformedDigest as exc:
            raise ApiError(400, str(exc)) from None
        if append and expected:
            raise ApiError(
                400, "Append mode keeps whatever part of the body arrives, so it cannot check a digest of the body: "
                "send it without Content-Digest, Repr-Digest and Content-MD5, or use a plain PUT",
            )  # fmt: skip
        length = self._content_length()
        condition = self._condition("PUT")
        if condition is not None and not condition(self._current()):
            raise PreconditionFailed(self.event, self.start)  # checked again at commit
        limit = self.settings["config"].max_body_size
        if length is not None and length > limit:
            raise ApiError(413, f"The body of {length} bytes is over the limit of {limit} bytes")
        if length is not None:
            self.store.ensure_space(length)
        if append:
            return Piece(
                self.store, str(self.event), self.start.isoformat(), content_type, self._joined,
                takeover=self.settings["config"].append_takeover, notify=self.settings["hub"].publish,
                on_superseded=self._superseded,
            )  # fmt: skip
        return await self.store.begin_upload(self.event, self.start, content_type, expected)

    def _append_mode(self) -> bool:
        """Whether the PUT asks for append mode (`?append=true`)."""
        text = self.get_query_argument("append", "false")
        if text not in ("true", "false"):
            raise ApiError(400, f"append must be true or false, not {quoted(text)}")
        return text == "true"

    def _content_length(self) -> int | None:
        """The announced body size, or None for a chunked body."""
        text = self.request.headers.get("Content-Length")
        if text is None:
            return None
        if not _DIGITS.fullmatch(text.strip()):
            raise ApiError(400, f"Content-Length must be a number of bytes, not {quoted(text)}")
        return int(text)

    def _current(self) -> Record | None:
        """The record's current version, or None."""
        try:
            return self.store.get(self.event, self.start)
        except RecordNotFound:
            return None

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        if self.upload is None:
            return None
        upload = self.upload
        self._last_byte = now = time.monotonic()
        try:
            limit = self.settings["config"].max_body_size
            if upload.received + len(chunk) > limit:
                raise ApiError(413, f"The body is over the limit of {limit} bytes")
            if isinstance(upload, Piece):
                first = upload.name is None
                lagging = upload.write(chunk)
                if first:
                    self._piece_began(upload)
                if now - self._joined_at >= self.settings["config"].append_join_interval:
                    self._joined_at = now
                    upload.join_soon()
            else:
                lagging = upload.write(chunk)
            self.upload_events.progress(upload.received)
        except Exception as exc:
            ending = self._end_upload(abort_reason(exc, 500))
            if ending is not None:  # an append request's piece: the answer comes once what it kept has joined
                return self._refuse_once_joined(ending, exc)
            self.refuse_body(exc)
            return None
        return lagging  # Tornado reads no more of the body until the writer has caught up (see spool.py)

    async def _refuse_once_joined(self, ending: Awaitable[Record | None], exc: Exception) -> None:
        with contextlib.suppress(Exception):  # (a failure to join is logged; the bytes wait for the next start)
            await ending
        self.refuse_body(exc)

    def _piece_began(self, piece: Piece) -> None:
        """A piece has its first byte: if the record's recorder broke off before, it is back."""
        key = (piece.event, piece.start)
        if len(piece.queue) > 1 or key in self.store.interrupted:
            self.store.interrupted.discard(key)
            self.upload_events.resumed()

    def _joined(self, record: Record, created: bool) -> None:
        self.upload_events.joined(record.to_json(), created)

    def _superseded(self) -> None:
        """A standby recorder took over from this append request, silent for --append-takeover seconds: end it,
        keeping all it brought (its connection is presumed dead; the answer is for one that is not)."""
        if self.upload is None or self._finished:
            return
        self._end_upload("superseded")
        self.refuse_body(ApiError(409, "Another recorder took over this record: what this request brought is kept"))

    async def _end_piece(self, piece: Piece, reason: str | None) -> Record | None:
        """End an append request's piece (reason None: its body arrived to its end); returns the record then."""
        record = await piece.end(reason or "completed")
        key = (piece.event, piece.start)
        if reason is None:
            self.store.interrupted.discard(key)
        elif piece.size:
            self.store.interrupted.add(key)
        self.upload_events.append_ended(piece.size, reason, None if record is None else record.size)
        return record

    def _end_upload(self, reason: str) -> Awaitable[Record | None] | None:
        """The body stops before its end (`reason`): a plain upload is discarded, an append request's piece keeps
        what arrived and joins the record in the background (the shutdown waits for it)."""
        upload, self.upload = self.upload, None
        if isinstance(upload, Piece):
            return self._track(self._end_piece(upload, reason))
        if upload is not None:
            upload.discard()
            self.upload_events.aborted(reason)
        return None

    def _track(self, ending: Awaitable[Record | None]) -> asyncio.Future:
        """Run a piece's end as a task the store knows of, so that the shutdown waits for it."""
        return self.store.finish_later(ending, "joining what an append request received")

    def _watch_idle(self) -> None:
        """End the upload as broken once no byte has arrived for --upload-idle-timeout seconds."""
        timeout = self.settings["config"].upload_idle_timeout
        left = self._last_byte + timeout - time.monotonic()
        if self.upload is None or self._finished:
            self._idle_timer = None
            return
        if left > 0:
            self._idle_timer = tornado.ioloop.IOLoop.current().call_later(left, self._watch_idle)
            return
        self._idle_timer = None
        kept = f"; the {self.upload.received} bytes received are kept" if isinstance(self.upload, Piece) else ""
        self._end_upload("idle-timeout")
        self.refuse_body(
            ApiError(408, f"No byte of the body arrived for {timeout:g} s: the upload was ended as broken{kept}")
        )

    async def put(self, *_: str) -> None:
        upload, self.upload = self.upload, None
        if upload is None:
            assert self.refused
            return  # the body arrived to its end after it was refused, and the answer was sent
        if isinstance(upload, Piece):
            try:
                await upload.drain()
            except Exception as exc:  # the disk filled up with the body's last bytes: what fit is kept
                self.upload = upload
                self._end_upload(abort_reason(exc, 500))
                self.refuse_body(exc)
                return
            record = await self._track(self._end_piece(upload, None))
            self.set_status(204)
            if record is not None:
                self.set_header("ETag", record.etag)
                self.set_header("Last-Modified", record.modified_at)
            return
        record, created = await self.store.commit(upload, self._condition("PUT"))
        self.upload_events.committed(record.to_json(), created)
        self.set_status(204)
        self.set_header("ETag", record.etag)
        self.set_header("Last-Modified", record.modified_at)

    async def get(self, *_: str) -> None:
        for attempt in range(3):
            blob = self.store.open(self.event, self.start)
            try:
                part = self._start_answer(blob.record)
                if part is not None:
                    await self._send(blob, part)
                return
            except StreamClosedError:
                return  # the client left; nothing to answer
            except FileNotFoundError:
                # an object that the version names is gone: replaced or deleted between the index's answer and the
                # first read of it (then answer anew), or during the download (then it is cut off)
                if self._headers_written:
                    self.request.connection.stream.close()
                    return
                if attempt == 2:
                    raise
                self.clear()
            finally:
                blob.close()

    def head(self, *_: str) -> None:
        self._start_answer(self.store.get(self.event, self.start))

    async def delete(self, *_: str) -> None:
        record = await self.store.delete(self.event, self.start, self._condition("DELETE"))
        publish_deleted(self.settings["hub"], record.event, record.start)
        self.set_status(204)

    def _condition(self, method: str) -> Condition | None:
        """The request's preconditions as a check the store makes when it commits the change (None: none)."""
        headers = self.request.headers
        if not has_preconditions(headers):
            return None
        return lambda current: precondition_status(method, headers, validators_of(current)) is None

    def _start_answer(self, record: Record) -> ByteRange | None:
        """Set the status and headers of a GET or HEAD of the record; return the bytes to send (None: no body)."""
        self.set_header("ETag", record.etag)
        self.set_header("Last-Modified", record.modified_at)
        self.set_header("Accept-Ranges", "bytes")
        status = precondition_status(self.request.method, self.request.headers, validators_of(record))
        if status == 412:
            raise PreconditionFailed(self.event, self.start)
        if status == 304:
            self.set_status(304)
            return None
        self.set_served_type(record.type)
        self.set_header("Repr-Digest", repr_digest(record.sha256))
        accel = self.settings["config"].accel_redirect
        sealed = self.store.sealed_file(record) if accel and self.request.method == "GET" else None
        if sealed is not None:
            # nginx sends the file, and applies Range itself: see deploy/nginx.conf. Only a file that holds exactly
            # this version and will not change (not an appended record of several runs, nor one being appended to).
            self.set_header("X-Accel-Redirect", accel + sealed)
            return None
        part = self._requested_range(record)
        if part is None:
            self.set_header("Content-Length", record.size)
            return ByteRange(0, record.size, record.size)
        self.set_status(206)
        self.set_header("Content-Range", part.content_range)
        self.set_header("Content-Length", part.length)
        return part

    def _requested_range(self, record: Record) -> ByteRange | None:
        """The part of the record a GET asks for (None: all of it); a 416 if it lies past the end."""
        if self.request.method != "GET":
            return None
        try:
            return requested_range(self.request.headers, validators_of(record), time.time())
        except RangeNotSatisfiable as exc:
            raise ApiError(416, str(exc), {"Content-Range": exc.content_range}) from None

    async def _send(self, blob: Blob, part: ByteRange) -> None:
        """Send the bytes of `part` from the blob: with sendfile where the connection allows (see sendfile.py),
        else a chunk at a time."""
        if can_sendfile(self) and blob.file.local:
            try:
                await send_runs(self, blob.file.runs(part.start, part.length))
            except ShortFile:
                log.warning("the content of event %s at %s ended before its size: the download was cut off",
                            self.event, self.start.isoformat())  # fmt: skip
                self.request.connection.stream.close()
                raise StreamClosedError() from None
            return
        blob.file.seek(part.start)
        remaining = part.length
        while remaining > 0 and (chunk := await blob.file.aread(min(DOWNLOAD_CHUNK, remaining))):
            self.write(chunk)
            await self.flush()
            # flush() is already done when the socket took the chunk at once (a fast client): yield anyway, so that
            # one big download does not keep the event loop from everyone else.
            await asyncio.sleep(0)
            remaining -= len(chunk)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        reason = abort_reason(kwargs.get("exc_info", (None, None))[1], status_code)
        self._end_upload(reason)
        if self.upload_events is not None:
            self.upload_events.aborted(reason)
        super().write_error(status_code, **kwargs)

    def on_connection_close(self) -> None:
        # the body was still arriving: the client left, or the shutdown's grace is over
        self._end_upload("shutdown" if self.settings["stopping"] else "client-gone")
        super().on_connection_close()

    def on_finish(self) -> None:
        self._end_upload("error")
        if self._idle_timer is not None:
            tornado.ioloop.IOLoop.current().remove_timeout(self._idle_timer)
            self._idle_timer = None
        super().on_finish()


def validators_of(record: Record | None) -> Validators | None:
    """What the conditions of a request are checked against, for a record's current version (or its absence)."""
    return None if record is None else Validators(record.etag, record.modified, record.size)
