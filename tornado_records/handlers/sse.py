"""The live event stream: `GET /sse`, one long-lived response per subscriber of the event hub."""

from __future__ import annotations

import re
from asyncio import Future

from tornado.iostream import StreamClosedError

from tornado_records.events import EventHub, Subscriber
from tornado_records.handlers.base import ApiError, BaseHandler

RETRY_MS = 3000  # how long a client waits before it reconnects, as the stream's first line tells it
RETRY_AFTER_FULL = 10  # seconds a client refused for too many subscribers is asked to wait

_EVENT_ID = re.compile(r"[0-9]{1,30}")


class EventStreamHandler(BaseHandler):
    """`GET /sse`: Server-Sent Events as they are published, after those missed since `Last-Event-ID`."""

    subscriber: Subscriber | None = None

    def prepare(self) -> None:
        super().prepare()
        # A stream never ends by itself: the shutdown ends it through the hub instead of waiting for it.
        self.settings["inflight"].discard(self)

    async def get(self) -> None:
        hub: EventHub = self.settings["hub"]
        limit = self.settings["config"].max_subscribers
        if len(hub.subscribers) >= limit:
            raise ApiError(
                503, f"The event stream has its most subscribers ({limit}); retry later",
                {"Retry-After": str(RETRY_AFTER_FULL)},
            )  # fmt: skip
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        self.write(f"retry: {RETRY_MS}\n\n")
        self.subscriber = hub.subscribe(self.send, self.last_event_id(), on_drop=self.request.connection.close)
        try:
            await self.flush()  # the headers and the retry line; events published meanwhile wait in the queue
        except StreamClosedError:
            return
        self.subscriber.start()
        await self.subscriber.done

    def send(self, batch: list[bytes]) -> Future[None]:
        """Write the hub's bytes to the client; the future is done once they are sent."""
        for data in batch:
            self.write(data)
        return self.flush()

    def last_event_id(self) -> int | None:
        """The id of the last event the client saw: the `Last-Event-ID` header, or a `lastEventId` query argument
        (for clients that cannot set headers); None if absent or not an id this service gives."""
        text = self.request.headers.get("Last-Event-ID") or self.get_query_argument("lastEventId", "")
        return int(text) if _EVENT_ID.fullmatch(text.strip()) else None

    def on_connection_close(self) -> None:
        self._unsubscribe()
        super().on_connection_close()

    def on_finish(self) -> None:
        self._unsubscribe()
        super().on_finish()

    def _unsubscribe(self) -> None:
        if self.subscriber is not None:
            self.settings["hub"].unsubscribe(self.subscriber)
