"""A sink: a request body on its way into storage. Every way in is one (replace.py: a plain PUT; appends.py: an
append request's piece; resumable.py: a resumable upload), so that the handlers' byte path (handlers/intake.py: the
size limit, the writer's lag, the idle timer, the periodic checkpoint, a refusal mid-body) is written once.

The bytes go to the sink's file through its spool (spool.py); what differs between sinks is where the file is, what
a checkpoint does (an append joins what arrived, a resumable upload records its offset), and what an early end
keeps (a plain upload nothing, the others everything that arrived).
"""

from __future__ import annotations

from typing import Awaitable, Callable

from tornado_records.events import EventHub
from tornado_records.upload_events import UploadEvents
from tornado_records.storage.model import Condition, Record, storage_errors
from tornado_records.uploads.spool import Spool


class Sink:
    """Bytes handed to a spool as they arrive (`write`), in the file once drained (`drain`). Subclasses open the
    spool (`_open`) and say what the byte path asks of them (the class attributes and methods below `drain`)."""

    base = 0  # bytes in the file before this sink's spool (a resumable upload taken up again)
    _spool: Spool | None = None
    _follower: Callable[[], None] | None = None
    checkpoint_every: float | None = None  # seconds between checkpoints while bytes arrive (None: no checkpoint)
    events: UploadEvents | None = None  # its events (upload-started, -progress, ...), once announced

    def announce(self, hub: EventHub) -> UploadEvents:
        """Begin its events (upload-started); a listener (handlers/live.py) sees new bytes by `events.changed`."""
        self.events = self._events(hub)
        self.follow(self.events.changed.set)
        return self.events

    def _events(self, hub: EventHub) -> UploadEvents:
        raise NotImplementedError

    @property
    def received(self) -> int:
        """Bytes received: in the file, or on their way to it (see spool.py)."""
        return self.base + (0 if self._spool is None else self._spool.received)

    @property
    def written(self) -> int:
        """Bytes in the file."""
        return self.base + (0 if self._spool is None else self._spool.written)

    def follow(self, on_written: Callable[[], None]) -> None:
        """Have `on_written` called (on the event loop) whenever received bytes reach the file."""
        self._follower = on_written

    def _written(self) -> None:
        if self._follower is not None:
            self._follower()

    def _open(self) -> Spool:
        raise NotImplementedError

    def write(self, chunk: bytes) -> Awaitable[None] | None:
        """Hand a received chunk to the file's writer; an awaitable to await before the next one when the writer
        lags (see spool.py). StorageFull once the disk is full."""
        with storage_errors():
            if self._spool is None:
                self._spool = self._open()
                self._spool.on_written = self._written
            return self._spool.put(chunk)

    async def drain(self) -> None:
        """Wait until all that was received is in the file; StorageFull if the disk filled up (what fit stays)."""
        if self._spool is not None:
            with storage_errors():
                await self._spool.drain()

    async def seal(self) -> bool:
        """Drain, then make the file durable (fsync) and close it, in the writer's last turn (one thread's hand-off
        for all three); whether it did (False: nothing was received, the file is as it was and open). StorageFull
        if the disk filled up."""
        if self._spool is None:
            return False
        with storage_errors():
            await self._spool.seal()
        return True

    def _close_spool(self) -> None:
        """Close the file (what the spool had not written is dropped: drain first)."""
        spool, self._spool = self._spool, None  # first: `written` must never count the spool's bytes twice
        if spool is not None:
            self.base += spool.written
            spool.close()

    # -- what the byte path asks (handlers/intake.py) -----------------------------------------------------------

    keeps_part = False  # a chunk over the room: its part that fits is written (else none of it)

    def room(self, limit: int) -> int:
        """How many more bytes the body may bring, under the service's body limit."""
        return max(0, limit - self.received)

    def over_limit(self, limit: int) -> str:
        """The 413's detail."""
        return f"The body is over the limit of {limit} bytes"

    def idle_refusal(self, timeout: float) -> str:
        """The 408's detail."""
        return f"No byte of the body arrived for {timeout:g} s: the upload was ended as broken"

    def checkpoint(self) -> Awaitable[None] | None:
        """Every `checkpoint_every` seconds while bytes arrive: an awaitable that the next chunk waits for, or None."""
        return None

    async def finish(self, condition: Condition | None) -> Record | None:
        """The body arrived to its end: keep it (under `condition` on the record, where the way in checks one);
        the record then, if there is one."""
        raise NotImplementedError

    def abandon(self, reason: str) -> Awaitable[object] | None:
        """The body stops before its end (`reason`, as in the events): an awaitable for what is kept meanwhile (the
        shutdown waits for it too), or None."""
        raise NotImplementedError
