"""The records: list an event's records; upload (streamed to disk), download, HEAD and delete one record."""

from __future__ import annotations

import datetime
import re
import uuid
from typing import Any

import tornado.web
from tornado.iostream import StreamClosedError

from tornado_records.events import UploadEvents, publish_deleted
from tornado_records.handlers.base import ApiError, BaseHandler, abort_reason, quoted
from tornado_records.store import Record, RecordStore, Upload

DOWNLOAD_CHUNK = 1 << 20
MAX_LIST_LIMIT = 1000
MAX_OFFSET = (1 << 63) - 1  # SQLite's largest integer

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
        value = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ApiError(
            400, f"{name} must be an ISO 8601 date-time such as 2024-01-01T00:00:00, not {quoted(text)}"
        ) from None
    if value.tzinfo is not None:
        raise ApiError(400, f"{name} is in the event's own timezone and takes no UTC offset or Z: {quoted(text)}")
    return value


class RecordsHandler(BaseHandler):
    """`GET /records/{event}`: one page of an event's records, ordered by start."""

    def get(self, event: str) -> None:
        store: RecordStore = self.settings["store"]
        order = self.get_query_argument("order", "asc")
        if order not in ("asc", "desc"):
            raise ApiError(400, f"order must be asc or desc, not {quoted(order)}")
        limit = self._integer("limit", 10, MAX_LIST_LIMIT)
        offset = self._integer("offset", 0, MAX_OFFSET)
        page = store.list(
            parse_event(event),
            after=self._date_time("after"),
            before=self._date_time("before"),
            limit=limit,
            offset=offset,
            descending=order == "desc",
        )
        self.write(
            {"count": page.count, "limit": limit, "offset": offset, "records": [r.to_json() for r in page.records]}
        )

    head = get

    def _integer(self, name: str, default: int, maximum: int) -> int:
        text = self.get_query_argument(name, None)
        if text is None:
            return default
        if not _DIGITS.fullmatch(text) or int(text) > maximum:
            raise ApiError(400, f"{name} must be a whole number from 0 to {maximum}, not {quoted(text)}")
        return int(text)

    def _date_time(self, name: str) -> datetime.datetime | None:
        text = self.get_query_argument(name, None)
        return None if text is None else parse_start(text, name)


@tornado.web.stream_request_body
class RecordHandler(BaseHandler):
    """`/records/{event}/{start}`: PUT streams the body to disk; GET, HEAD and DELETE act on the stored record."""

    upload: Upload | None = None
    upload_events: UploadEvents | None = None

    def prepare(self) -> None:
        super().prepare()
        self.store: RecordStore = self.settings["store"]
        self.event = parse_event(self.path_args[0])
        self.start = parse_start(self.path_args[1])
        if self.request.method == "PUT":
            content_type = self.request.headers.get("Content-Type", "application/octet-stream")
            if _CONTROL.search(content_type) or len(content_type) > 1024:
                raise ApiError(400, "Content-Type must be a media type such as audio/ogg")
            self.request.connection.set_max_body_size(self.settings["config"].max_body_size)
            self.upload = self.store.begin_upload(self.event, self.start, content_type)
            self.upload_events = UploadEvents(
                self.settings["hub"], str(self.event), self.start.isoformat(), content_type
            )

    async def data_received(self, chunk: bytes) -> None:
        if self.upload is not None:
            self.upload.write(chunk)
            self.upload_events.progress(self.upload.size)

    async def put(self, *_: str) -> None:
        upload, self.upload = self.upload, None
        assert upload is not None
        record, created = await self.store.commit(upload)
        self.upload_events.committed(record.to_json(), created)
        self.set_status(204)
        self.set_header("ETag", record.etag)
        self.set_header("Last-Modified", record.modified_at)

    async def get(self, *_: str) -> None:
        blob = self.store.open(self.event, self.start)
        try:
            self._set_record_headers(blob.record)
            while chunk := blob.file.read(DOWNLOAD_CHUNK):
                self.write(chunk)
                await self.flush()
        except StreamClosedError:
            return  # the client left; nothing to answer
        finally:
            blob.close()

    def head(self, *_: str) -> None:
        self._set_record_headers(self.store.get(self.event, self.start))

    async def delete(self, *_: str) -> None:
        record = await self.store.delete(self.event, self.start)
        publish_deleted(self.settings["hub"], record.event, record.start)
        self.set_status(204)

    def _set_record_headers(self, record: Record) -> None:
        self.set_header("Content-Type", record.type)
        self.set_header("Content-Length", record.size)
        self.set_header("ETag", record.etag)
        self.set_header("Last-Modified", record.modified_at)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if self.upload_events is not None:
            self.upload_events.aborted(abort_reason(kwargs.get("exc_info", (None, None))[1], status_code))
        super().write_error(status_code, **kwargs)

    def on_connection_close(self) -> None:
        if self.upload is not None:  # the body was still arriving
            self.upload_events.aborted("client-gone")
        self._discard_upload()
        super().on_connection_close()

    def on_finish(self) -> None:
        self._discard_upload()
        super().on_finish()

    def _discard_upload(self) -> None:
        if self.upload is not None:
            self.upload.discard()
            self.upload = None
