"""`GET /records/{event}/{start}/clip?from=A&to=B`: the record's audio between two times, as a file of its own format
cut without re-encoding (audio/clips.py), sent as an attachment once it is cut."""

from __future__ import annotations

import logging
import urllib.parse

from tornado.iostream import StreamClosedError

from tornado_records.audio import analyses
from tornado_records.audio.clips import Clip, Clips, NotCuttable, PastTheEnd, TooMany
from tornado_records.audio.spans import BadRange, Span, ascii_name, file_name, parse_span
from tornado_records.audio.programs import ProgramFailed, Stopper
from tornado_records.handlers.base import ApiError, BaseHandler
from tornado_records.handlers.records import parse_event, parse_start
from tornado_records.http.caching import REVALIDATE
from tornado_records.http.semantics import Validators, precondition_status
from tornado_records.http.sendfile import ShortFile, can_sendfile, send_runs
from tornado_records.storage.model import PreconditionFailed, Record
from tornado_records.storage.store import RecordStore

log = logging.getLogger("tornado_records.handlers")

RETRY_AFTER_BUSY = 5  # seconds a client refused because every clip worker is busy is asked to wait
SEND_BLOCK = 1 << 20  # bytes a write, where sendfile cannot be used


def clip_etag(record: Record, span: Span) -> str:
    """The clip's entity tag: the record's version and the range. Weak: another ffmpeg may write other bytes."""
    return f'W/"{record.sha256}-{span.start:g}-{span.end:g}"'


class ClipHandler(BaseHandler):
    """A clip of the record's current version: 200 with the clip as an attachment; 304 on revalidation; 400 for an
    unreadable or empty range, 416 for one past the end, 422 for content that is not cut, 503 when every clip worker
    is busy. A client that leaves while its clip is cut stops its ffmpeg."""

    stopper: Stopper | None = None

    async def get(self, event: str, start: str) -> None:
        store: RecordStore = self.settings["store"]
        self.event_id, self.start_at = event_id, start_at = parse_event(event), parse_start(start)
        try:
            span = parse_span(self.get_query_argument("from", None), self.get_query_argument("to", None))
        except BadRange as exc:
            raise ApiError(400, str(exc)) from None
        blob = store.open(event_id, start_at)
        try:
            record = blob.record
            self.set_header("Cache-Control", REVALIDATE)
            if self._not_modified(record, span):
                return
            state = analyses.described(store.rconn, [record])[0]
            if state["analysis"] == "unsupported":
                raise ApiError(422, f"No clip of the record of event {event_id} starting at {record.start}: its "
                               "content is not audio that the service can read")  # fmt: skip
            self.stopper = Stopper()
            if self.request.connection.stream.closed():
                return
            clips: Clips = self.settings["clips"]
            try:
                clip = await clips.cut(blob, state["audio"], span, self.stopper)
            except PastTheEnd as exc:
                raise ApiError(416, f"No clip of the record of event {event_id} starting at {record.start}: {exc}")
            except NotCuttable as exc:
                raise ApiError(422, f"No clip of the record of event {event_id} starting at {record.start}: {exc}")
            except TooMany as exc:
                raise ApiError(503, str(exc), {"Retry-After": str(RETRY_AFTER_BUSY)}) from None
            except ProgramFailed as exc:
                if self.stopper.stopped:
                    return  # the client left: its ffmpeg was stopped
                log.warning("GET %s: %s", self.request.uri, exc)
                raise ApiError(500, f"The clip could not be cut: {exc}") from None
        finally:
            blob.close()
        with clip.file:
            await self._send(record, clip)

    def _not_modified(self, record: Record, span: Span) -> bool:
        """Set the clip's validators; whether the answer is a 304 (412 raised where a precondition fails)."""
        etag = clip_etag(record, span)
        self.set_header("ETag", etag)
        self.set_header("Last-Modified", record.modified_at)
        status = precondition_status("GET", self.request.headers, Validators(etag, record.modified, record.size))
        if status == 412:
            raise PreconditionFailed(self.event_id, self.start_at)
        if status == 304:
            self.set_status(304)
            return True
        return False

    async def _send(self, record: Record, clip: Clip) -> None:
        """The clip, with its type, length and file name."""
        self.set_served_type(record.type)
        title = self.settings["store"].details(self.event_id).title
        name = file_name(title, record.event, record.start, clip.span, clip.extension)
        disposition = f'attachment; filename="{ascii_name(name)}"'
        if not name.isascii():
            disposition += f"; filename*=UTF-8''{urllib.parse.quote(name, safe='')}"
        self.set_header("Content-Disposition", disposition)
        self.set_header("Content-Length", clip.size)
        try:
            if can_sendfile(self):
                await send_runs(self, [(clip.file.fileno(), 0, clip.size)])
                return
            while chunk := clip.file.read(SEND_BLOCK):
                self.write(chunk)
                await self.flush()
        except (StreamClosedError, ShortFile):
            self.request.connection.stream.close()

    def on_connection_close(self) -> None:
        if self.stopper is not None:
            self.stopper.stop()
        super().on_connection_close()
