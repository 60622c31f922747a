"""The live event stream: `GET /sse`, one long-lived response per subscriber of the event hub."""

from __future__ import annotations

import re
from asyncio import Future

from tornado.iostream import StreamClosedError

from tornado_records.events import EventHub, Subscriber
from tornado_records.handlers.base import ApiError, BaseHandler
from tornado_records.http.caching import NEVER

RETRY_MS = 3000  # how long a client waits before it reconnects, as the stream's first line tells it
RETRY_AFTER_FULL = 10  # seconds a client refused for too many subscribers is asked to wait

_EVENT_ID = re.compile(r"[0-9]{1,30}")


def chunk(data: bytes) -> bytes:
    """`data` as one HTTP/1.1 chunk."""
    return b"%x\r\n%s\r\n" % (len(data), data)


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
        self.take_stream_place()
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", NEVER)
        self.set_header("X-Accel-Buffering", "no")
        self.write(f"retry: {RETRY_MS}\n\n")
        stream = self.request.connection.stream
        if stream.closed():
            return  # the client left already
        stream.set_nodelay(True)  # each write is a whole event: none waits for the client's (delayed) ack of the last
        self.subscriber = hub.subscribe(
            self.send, self.last_event_id(), on_drop=self.request.connection.close, write=stream.socket.send,
            # Tornado answers HTTP/1.1 chunked (the framing is done here, once an event, as the bytes go to the socket
            # directly); an HTTP/1.0 answer ends at the close
            frame=chunk if self.request.version == "HTTP/1.1" else None,
        )  # fmt: skip
        try:
            await self.flush()  # the headers and the retry line; events published meanwhile wait in the queue
        except StreamClosedError:
            return
        self.subscriber.start()
        await self.subscriber.done

    def send(self, batch: list[bytes]) -> Future[None]:
        """Write what the client's socket did not take at once (framed already) to the stream's buffer; the future
        is done once it is sent (with StreamClosedError if the client is gone)."""
        stream = self.request.connection.stream
        if stream.closed():
            gone: Future[None] = Future()
            gone.set_exception(StreamClosedError())
            return gone
        return stream.write(b"".join(batch))

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
