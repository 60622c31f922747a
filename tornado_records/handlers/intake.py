"""The byte path of every way in (a plain PUT, an append request, a resumable upload's request): each chunk of the
body goes to the request's sink (uploads/sink.py) within the body limit (413) and the writer's lag, a checkpoint
comes every few seconds while bytes arrive, the body is ended as broken when no byte comes for
--upload-idle-timeout seconds (408), and a refusal mid-body ends the sink before the answer goes out."""

from __future__ import annotations

import logging
import time
from typing import Awaitable

import tornado.ioloop

from tornado_records.handlers.base import ApiError, BaseHandler, abort_reason
from tornado_records.uploads.sink import Sink

log = logging.getLogger("tornado_records.handlers")


class IntakeHandler(BaseHandler):
    """A handler whose request body goes to a sink: `begin_intake(sink)` once the body may come, `end_intake(reason)`
    when it stops early; the body's end is the handler's (`put`, `patch`...), which takes the sink with `take_sink`."""

    sink: Sink | None = None
    _last_byte = 0.0
    _checkpoint_at = 0.0
    _idle_timer: object | None = None

    def begin_intake(self, sink: Sink) -> None:
        self.sink = sink
        self._checkpoint_at = self._last_byte = time.monotonic()
        self._watch_idle()

    def take_sink(self) -> Sink | None:
        """The sink, no longer fed nor ended by this path (the body arrived to its end)."""
        sink, self.sink = self.sink, None
        return sink

    def end_intake(self, reason: str) -> Awaitable[object] | None:
        """The body stops before its end (`reason`): the sink keeps what it keeps (see Sink.abandon), once."""
        sink = self.take_sink()
        return None if sink is None else sink.abandon(reason)

    def check_announced_length(self, length: int | None, what: str = "body", disk: bool = True) -> None:
        """Refuse, before any byte of the body, one announced over the body limit (413) or, where `disk`, over the
        room left on the disk (507; a plain PUT asks that in the thread that makes its file, replace.begin)."""
        if length is None:
            return
        limit = self.settings["config"].max_body_size
        if length > limit:
            raise ApiError(413, f"The {what} of {length} bytes is over the limit of {limit} bytes")
        if disk:
            self.settings["store"].ensure_space(length)

    def accepting(self) -> bool:
        """Whether the body's bytes go to the sink now (a handler may hold them back)."""
        return True

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        sink = self.sink
        if sink is None or not self.accepting():
            return None
        self._last_byte = now = time.monotonic()
        checkpoint = None
        try:
            limit = self.settings["config"].max_body_size
            room = sink.room(limit)
            lagging = None
            if len(chunk) <= room:
                lagging = sink.write(chunk)
            elif sink.keeps_part and room:
                lagging = sink.write(chunk[:room])
            if len(chunk) > room:
                raise ApiError(413, sink.over_limit(limit))
            if sink.events is not None:
                sink.events.progress(sink.received)
            if sink.checkpoint_every is not None and now - self._checkpoint_at >= sink.checkpoint_every:
                self._checkpoint_at = now
                checkpoint = sink.checkpoint()
        except Exception as exc:
            return self._refuse(exc)
        if checkpoint is None:
            return lagging  # Tornado reads no more of the body until the writer has caught up (see spool.py)
        return self._after(lagging, checkpoint)

    async def _after(self, lagging: Awaitable[None] | None, checkpoint: Awaitable[None]) -> None:
        try:
            if lagging is not None:
                await lagging
            await checkpoint
        except Exception as exc:
            refused = self._refuse(exc)
            if refused is not None:
                await refused

    def _refuse(self, exc: Exception) -> Awaitable[None] | None:
        """Refuse the body mid-way: the sink ends first, and the answer goes once what it keeps is kept."""
        ending = self.end_intake(abort_reason(exc, 500))
        if ending is None:
            self.refuse_body(exc)
            return None
        return self._refuse_once_ended(ending, exc)

    async def _refuse_once_ended(self, ending: Awaitable[object], exc: Exception) -> None:
        try:
            await ending
        except Exception as failure:  # noqa: BLE001 (the refusal goes out anyway; what arrived waits on disk)
            log.warning("could not keep what an upload received: %s", failure)
        self.refuse_body(exc)

    def _watch_idle(self) -> None:
        """End the body as broken once no byte has arrived for --upload-idle-timeout seconds."""
        timeout = self.settings["config"].upload_idle_timeout
        if self.sink is None or self.answered():
            self._idle_timer = None
            return
        left = self._last_byte + timeout - time.monotonic()
        if left > 0:
            self._idle_timer = tornado.ioloop.IOLoop.current().call_later(left, self._watch_idle)
            return
        self._idle_timer = None
        refusal = self.sink.idle_refusal(timeout)
        self.end_intake("idle-timeout")
        self.refuse_body(ApiError(408, refusal))

    def on_connection_close(self) -> None:
        # the body was still arriving: the client left, or the shutdown's grace is over
        self.end_intake("shutdown" if self.settings["stopping"] else "client-gone")
        super().on_connection_close()

    def on_finish(self) -> None:
        self.end_intake("error")
        if self._idle_timer is not None:
            tornado.ioloop.IOLoop.current().remove_timeout(self._idle_timer)
            self._idle_timer = None
        super().on_finish()
