"""The listings: the events that have records (`GET /records`), an event's records (`GET /records/{event}`), and
an event's details (`PUT /records/{event}`)."""

from __future__ import annotations

import datetime
import re

from tornado_records.audio import analyses
from tornado_records.handlers.base import ApiError, BaseHandler, quoted
from tornado_records.handlers.records import parse_event, parse_start
from tornado_records.http.caching import REVALIDATE
from tornado_records.publishing.details import BadDetails, parse_changes
from tornado_records.storage.store import RecordStore

MAX_LIST_LIMIT = 1000
MAX_OFFSET = (1 << 63) - 1  # SQLite's largest integer
MAX_SEARCH = 200  # characters of `q`

_DIGITS = re.compile(r"[0-9]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ListingHandler(BaseHandler):
    """What the listings share: their paging and order arguments, and their caching: revalidated at each use, with
    an ETag hashed from the answer (a 304 when it is the same), since the listing shows facts (titles, analyses,
    sizes) that change at different times and places."""

    tagged_by_body = True

    def prepare(self) -> None:
        super().prepare()
        if self.request.method in ("GET", "HEAD"):
            self.set_header("Cache-Control", REVALIDATE)

    def page_arguments(self, default_order: str) -> tuple[int, int, bool]:
        """limit, offset, and whether the order is descending."""
        order = self.get_query_argument("order", default_order)
        if order not in ("asc", "desc"):
            raise ApiError(400, f"order must be asc or desc, not {quoted(order)}")
        return self._integer("limit", 10, MAX_LIST_LIMIT), self._integer("offset", 0, MAX_OFFSET), order == "desc"

    def _integer(self, name: str, default: int, maximum: int) -> int:
        text = self.get_query_argument(name, None)
        if text is None:
            return default
        if not _DIGITS.fullmatch(text) or int(text) > maximum:
            raise ApiError(400, f"{name} must be a whole number from 0 to {maximum}, not {quoted(text)}")
        return int(text)


class EventsHandler(ListingHandler):
    """`GET /records`: one page of the events that have records, the most recently changed first by default."""

    def get(self) -> None:
        store: RecordStore = self.settings["store"]
        limit, offset, descending = self.page_arguments("desc")
        search = self._raw_argument("q")
        if len(search) > MAX_SEARCH or _CONTROL.search(search):
            raise ApiError(400, f"q must be at most {MAX_SEARCH} characters of text, not {quoted(search)}")
        count, events = store.events(search=search, limit=limit, offset=offset, descending=descending)
        durations = analyses.durations(store.rconn, (e.event for e in events))
        listed = [{**e.to_json(), "duration": durations.get(e.event)} for e in events]
        self.write({"count": count, "limit": limit, "offset": offset, "events": listed})

    head = get

    def _raw_argument(self, name: str) -> str:
        """A query argument as sent (Tornado's own reading turns control characters into spaces)."""
        values = self.request.query_arguments.get(name)
        try:
            return values[-1].decode() if values else ""
        except UnicodeDecodeError:
            raise ApiError(400, f"{name} must be UTF-8 text") from None


class RecordsHandler(ListingHandler):
    """`GET /records/{event}`: one page of an event's records, ordered by start, with the event's details;
    `PUT /records/{event}`: set some of the event's details (`{"title": "..."}`, `{"timezone": null}`; see
    publishing/details.py), keeping the others."""

    def prepare(self) -> None:
        super().prepare()
        if self.request.method == "PUT":
            self.require_writer()

    async def get(self, event: str) -> None:
        store: RecordStore = self.settings["store"]
        event_id = parse_event(event)
        limit, offset, descending = self.page_arguments("asc")
        page = await store.list(
            event_id,
            after=self._date_time("after"),
            before=self._date_time("before"),
            limit=limit,
            offset=offset,
            descending=descending,
        )
        self.write(
            {
                "count": page.count,
                "limit": limit,
                "offset": offset,
                **store.details(event_id).to_json(),
                "records": analyses.described(store.rconn, page.records),
            }
        )

    head = get

    async def put(self, event: str) -> None:
        event_id = parse_event(event)
        try:
            changes = parse_changes(self.request.body)
        except BadDetails as exc:
            raise ApiError(400, str(exc)) from None
        details = await self.settings["store"].set_details(event_id, changes)
        data = {"event": str(event_id), **details.to_json()}
        self.settings["hub"].publish("event-updated", data)
        self.write(data)

    def _date_time(self, name: str) -> datetime.datetime | None:
        text = self.get_query_argument(name, None)
        return None if text is None else parse_start(text, name)


class PartsHandler(BaseHandler):
    """`GET /records/{event}/{start}/parts`: the parts of the record's current version, in the order of their bytes:
    where each request's bytes lie in it, when they came, how the request ended (parts.py); revalidated, with an ETag
    hashed from the answer."""

    tagged_by_body = True

    def get(self, event: str, start: str) -> None:
        event_id, start_at = parse_event(event), parse_start(start)
        store: RecordStore = self.settings["store"]
        self.set_header("Cache-Control", REVALIDATE)
        self.write({"event": str(event_id), "start": start_at.isoformat(), "parts": store.joins.parts_of(event_id, start_at)})

    head = get
