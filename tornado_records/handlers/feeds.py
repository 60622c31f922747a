"""`GET /feeds/{event}`: the event's podcast feed (publishing/feeds.py builds it), with an ETag and Last-Modified for
podcast apps that poll it."""

from __future__ import annotations

import datetime

from tornado_records.audio import analyses
from tornado_records.handlers.base import ApiError
from tornado_records.handlers.listings import MAX_LIST_LIMIT, ListingHandler
from tornado_records.handlers.records import parse_event
from tornado_records.http.access import public_base
from tornado_records.http.caching import REVALIDATE, body_etag
from tornado_records.http.semantics import Validators, precondition_status
from tornado_records.publishing import feeds
from tornado_records.storage.store import RecordStore

DEFAULT_ITEMS = 100


class FeedHandler(ListingHandler):
    """`GET|HEAD /feeds/{event}?limit=N`: RSS 2.0 of the event's newest N records (default 100); 404 while it has none.

    Its strong ETag is a hash of its bytes, so it changes with anything the feed shows (a record, a detail, a
    duration, the base URL); Last-Modified is the last change of the event's records, details or analyses. The feed
    is built on the event loop: feedgen sets the process's locale while it writes a date (feedgen.util), which
    threads would race on; a feed of 100 items takes about a millisecond a item (docs/feeds.md)."""

    async def get(self, event: str) -> None:
        event_id = parse_event(event)
        limit = self._integer("limit", DEFAULT_ITEMS, MAX_LIST_LIMIT)
        store: RecordStore = self.settings["store"]
        page = await store.list(event_id, limit=limit, descending=True)
        if page.count == 0:
            raise ApiError(404, f"No records of event {event_id}, so no feed")
        details = store.details(event_id)
        changed = max(details.changed, analyses.last_analysed(store.rconn, str(event_id)))
        modified = datetime.datetime.fromtimestamp(changed // 1_000_000, datetime.timezone.utc)
        described = analyses.described(store.rconn, page.records)
        episodes = [
            feeds.Episode(record, (item["audio"] or {}).get("duration")) for record, item in zip(page.records, described)
        ]
        zone = details.timezone or self.settings["config"].timezone
        body = feeds.build(self._base(), event_id, details, zone, episodes, modified)
        etag = body_etag(body)
        self.set_header("Cache-Control", REVALIDATE)
        self.set_header("ETag", etag)
        self.set_header("Last-Modified", modified)
        status = precondition_status("GET", self.request.headers, Validators(etag, int(modified.timestamp()), len(body)))
        if status == 412:
            raise ApiError(412, "The feed does not meet the request's preconditions")
        if status == 304:
            self.set_status(304)
            return
        self.set_header("Content-Type", "application/rss+xml; charset=utf-8")
        self.write(body)

    head = get

    def _base(self) -> str:
        """The public base URL of the feed's links: --public-url, else the one the request came to."""
        config = self.settings["config"]
        if config.public_url:
            return config.public_url
        headers = self.request.headers
        base = public_base(
            self.request.remote_ip or "", self.request.protocol, self.request.host, headers.get("X-Forwarded-Proto"),
            headers.get("X-Forwarded-Host"), config.trusted_proxies,
        )  # fmt: skip
        if base is None:
            raise ApiError(400, "The request's Host is not a host name, which the feed's links are made of")
        return base
