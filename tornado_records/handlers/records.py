"""One record: upload (streamed to disk), download, HEAD and delete; and how its event and start are read."""

from __future__ import annotations

import asyncio
import datetime
import logging
import re
import time
import uuid
from typing import Any

import tornado.ioloop
import tornado.web
from tornado.iostream import StreamClosedError

from tornado_records.http.digest_fields import MalformedDigest, expected_digests, repr_digest
from tornado_records.http.insides import headers_sent
from tornado_records.upload_events import UploadEvents, publish_deleted
from tornado_records.handlers.base import ApiError, abort_reason, quoted
from tornado_records.http.semantics import (
    ByteRange,
    RangeNotSatisfiable,
    Validators,
    has_preconditions,
    is_media_type,
    precondition_status,
    requested_range,
)
from tornado_records.http.caching import REVALIDATE
from tornado_records.http.sendfile import ShortFile, can_sendfile, send_runs
from tornado_records.handlers.intake import IntakeHandler
from tornado_records.storage.model import Blob, Condition, PreconditionFailed, Record, RecordNotFound
from tornado_records.storage.store import RecordStore
from tornado_records.uploads import replace
from tornado_records.uploads.appends import Piece
from tornado_records.uploads.sink import Sink

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
class RecordHandler(IntakeHandler):
    """`/records/{event}/{start}`: PUT streams the body to disk; GET, HEAD and DELETE act on the stored record.

    A plain PUT replaces the record once its whole body is durable (uploads/replace.py); `PUT ...?append=true` adds
    its body after the record's content and keeps whatever arrived, however the request ends (uploads/appends.py).
    Range, the conditional headers and the digest fields follow RFC 9110 and RFC 9530 (see http.semantics and
    http.digest_fields); the body's way to the sink is handlers/intake.py's.
    """

    upload_events: UploadEvents | None = None

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
            sink = await self._begin_upload()
            if self.request.connection.stream.closed():  # the client left while the upload's file was made
                sink.abandon("client-gone")
                return
            self.upload_events = sink.announce(self.settings["hub"])
            self.begin_intake(sink)

    async def _begin_upload(self) -> Sink:
        """The sink of the request's body, once everything that can be refused without the body is checked.

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
        self.check_announced_length(length, disk=append)
        if append:
            appends = self.settings["appends"]
            return Piece(appends, str(self.event), self.start.isoformat(), content_type, self._superseded)
        return await replace.begin(self.store, self.event, self.start, content_type, expected, length)

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

    def _superseded(self) -> None:
        """A standby recorder took over from this append request, silent for --append-takeover seconds: end it,
        keeping all it brought (its connection is presumed dead; the answer is for one that is not)."""
        if self.sink is None or self.answered():
            return
        self.end_intake("superseded")
        self.refuse_body(ApiError(409, "Another recorder took over this record: what this request brought is kept"))

    async def put(self, *_: str) -> None:
        sink = self.take_sink()
        if sink is None:
            # the body arrived to its end after it was refused (the answer was sent), or after prepare() found the
            # client gone (Tornado still hands over a body it had read whole before the connection closed)
            assert self.refused or self.request.connection.stream.closed()
            return
        record = await sink.finish(self._condition("PUT"))
        self.set_status(204)
        if record is not None:  # (an append request that received nothing, to a record that has none)
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
                if headers_sent(self):
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
        self.set_header("Cache-Control", REVALIDATE)  # a record can be replaced at any time: ask before each use
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
        """Send the bytes of `part` from the blob: with sendfile where the connection allows (see http/sendfile.py),
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
        self.end_intake(reason)
        if self.upload_events is not None:
            self.upload_events.aborted(reason)  # (a plain upload's, refused at its commit)
        super().write_error(status_code, **kwargs)


def validators_of(record: Record | None) -> Validators | None:
    """What the conditions of a request are checked against, for a record's current version (or its absence)."""
    return None if record is None else Validators(record.etag, record.modified, record.size)
