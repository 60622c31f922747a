"""Append mode: the body of each `PUT ...?append=true` joins the record after its content, whatever way it ends.

A recorder that loses its link cannot resend what was lost: it opens a new PUT and streams on. So each append
request keeps every byte it received, and the pieces join the record in the order the recorder sent them:

- Each append request that receives a byte is a `Piece`: its own file in blobs/, written as the bytes arrive, and
  listed in the index's `appends` table (so that after a crash its bytes join the record at the next start).
- A record's pieces queue in the order their first bytes arrived. Only the first of the queue joins the record
  (every --append-join-interval seconds while bytes arrive, and at its end); the others keep their bytes in their
  files and join when every piece before them has ended. So when a dead connection that the service has not noticed yet
  holds the first piece while the recorder already streams on a new one, the new one's bytes wait and go after.
- A request that receives nothing (Liquidsoap opens one that stays empty for the whole broadcast) has no piece,
  holds no place in the queue, and adds nothing.
- Joining is `RecordStore.append`: an fsync and one index transaction that names one more run of the piece's file
  (the record is not rewritten). A reader gets one whole version, old or new.

One live recorder per record (issue 22). The first piece in line is the live one; a piece that receives bytes while
it streams is a standby (a second recorder of the same broadcast, or the same recorder back on a new connection
while the old one is dead but not yet noticed): its bytes wait in its file and never join while the live one streams.
The standby takes over when the live one ends (reason `ended`), or when it has brought no byte for --append-takeover
seconds while the standby brings some (`silent`: the live one is ended, `superseded`, keeping all it brought). Of the
standby's bytes, those that arrived after the live one's last byte join, from a clean cut (frames.py: an MP3 frame,
an Ogg page with the stream's header pages first); the ones before are the same audio again, and are dropped. A
standby that ends is dropped whole if the live one brings a byte within --append-takeover seconds (it streams on:
the standby's audio is in it), and otherwise takes over first (the live one was dead, and the standby's bytes are
new: a recorder back on a new connection that ended soon after). Pieces received by other processes sharing the
index keep the plain order.

What joins a record can be followed as it reaches the pieces' files, ahead of the joins (`LiveAudio`: the live
dead-air watch, audio/deadair.py): each piece as it becomes the live one, the bytes of its file that join, as the
file grows, and its end.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Awaitable, Callable, Protocol

from tornado_records.events import EventHub
from tornado_records.upload_events import UploadEvents
from tornado_records.storage.model import Condition, Record, StorageFull, storage_errors
from tornado_records.storage.store import RecordStore
from tornado_records.uploads import frames
from tornado_records.uploads.sink import Sink
from tornado_records.uploads.spool import Spool

log = logging.getLogger("tornado_records.appends")

RESERVE = 1 << 20  # bytes an append leaves free on the disk, so that the index can still record what it kept
STANDBY_LOOK = 0.1  # seconds between looks at the live piece, for a standby that ended
ARRIVALS_KEPT = 600.0  # seconds of a standby's arrival times kept, to find where its bytes after the live one's begin
STANDBY_KEEP = 16 << 20  # a standby's bytes from before the live one's last byte kept on the disk, at most about


class LiveAudio(Protocol):
    """What follows each record's live audio as it reaches the files of its pieces (called on the event loop)."""

    def live(self, piece: Piece, header: int, at: int) -> None:
        """`piece` is the record's live one now: the bytes of its file before `header`, then those from `at` on, join
        the record after what the pieces before it brought (0, 0: all of them)."""

    def grew(self, piece: Piece) -> None:
        """More of the piece's bytes are in its file (`piece.written`)."""

    def left(self, piece: Piece, last: bool) -> None:
        """The piece left the record's line: no more of its bytes come (`last`: no piece is left in it)."""


class Appends:
    """The append requests of one process with bytes, queued per record in the order their first bytes arrived, and
    the records whose last append request broke off. Only this module changes them."""

    def __init__(
        self, store: RecordStore, join_every: float = 3.0, takeover: float = 5.0, live_audio: LiveAudio | None = None
    ) -> None:
        self.store = store
        self.live_audio = live_audio  # told of what joins each record, as it reaches the files
        self.join_every = join_every  # seconds: while bytes arrive, what arrived joins the record at least this often
        self.takeover = takeover  # seconds of the live piece's silence after which a standby takes over
        self._queues: dict[tuple[str, str], list[Piece]] = {}
        self._interrupted: set[tuple[str, str]] = set()

    def queue(self, event: str, start: str) -> list[Piece]:
        """The record's pieces with bytes, the live one first (a list this module changes)."""
        return self._queues.setdefault((event, start), [])

    def first_in_line(self, event: str, start: str) -> Piece | None:
        """The record's live piece, if it has bytes."""
        queue = self._queues.get((event, start)) or []
        return queue[0] if queue and queue[0].name is not None else None

    def _left(self, event: str, start: str) -> None:
        if not self._queues.get((event, start)):
            self._queues.pop((event, start), None)


class Piece(Sink):
    """What one append request received: its file, how much of it is in the record, and its place in the queue."""

    def __init__(
        self, appends: Appends, event: str, start: str, content_type: str, on_superseded: Callable[[], None]
    ) -> None:
        self.appends = appends
        self.store = appends.store
        self.event = event
        self.start = start
        self.content_type = content_type
        self.checkpoint_every = appends.join_every
        self.name: str | None = None  # its file in blobs/, from its first byte on
        self.joined = 0  # bytes of its file that are in the record (or were, until a replacement)
        self.record: Record | None = None  # the version its last join made
        self._turn: asyncio.Future[None] | None = None  # done once every piece before it has ended
        # done once the pieces before it that other processes sharing the index received have ended (at once alone)
        self._others: asyncio.Future[None] | None = None
        self._lock = asyncio.Lock()  # one join at a time
        self._noted: asyncio.Future[None] | None = None
        self._joining: asyncio.Task | None = None
        self.takeover = appends.takeover  # seconds of the live piece's silence after which this one, standing by, takes over
        self.on_superseded = on_superseded  # ends its request (it stays in line until that has joined all it brought)
        self.first_at: float | None = None  # Unix time of its first byte (of the first joined, after a takeover)
        self.last_at: float | None = None  # and of its last
        self._last_byte = 0.0  # the same, on the monotonic clock
        self.superseded = False  # ended because a standby took over
        self.ending = False  # its request ended: no more bytes come
        self.taking_over: tuple[float, str] | None = None  # (the live one's last byte, reason) while its cut is due
        self.arrivals: collections.deque[tuple[float, int]] = collections.deque()  # (time, bytes before) per write
        self._let_go = 0  # bytes of its file from the start that it will never join (a standby: their space given back)
        self._letting_go: asyncio.Task | None = None
        self._bounded_for: float | None = None  # the live one's last byte when the standby last bounded what it keeps

    @property
    def queue(self) -> list[Piece]:
        return self.appends.queue(self.event, self.start)

    @property
    def size(self) -> int:
        """Bytes in its file (what a join or a listener may take from it)."""
        return self.written

    @property
    def standby(self) -> bool:
        """It has bytes and waits while another piece, the live one, streams."""
        return self._turn is not None and not self._turn.done()

    def _written(self) -> None:
        super()._written()
        if self.appends.live_audio is not None:
            self.appends.live_audio.grew(self)

    def silent_for(self) -> float:
        """Seconds since its last byte."""
        return time.monotonic() - self._last_byte

    def write(self, chunk: bytes) -> Awaitable[None] | None:
        """Hand received bytes to the file's writer (the first open the file and take a place in line); an
        awaitable to await before the next when the writer lags. StorageFull once the disk is full but for RESERVE
        bytes (what was written up to there stays counted, and the index has room to keep it). A standby notes
        when they came, and takes over from a live piece silent for `takeover` seconds."""
        if self._spool is None:
            self._spool = self._open()
            self._spool.on_written = self._written
            self._began()
        self.last_at = now = time.time()
        self.first_at = self.first_at or now
        self._last_byte = time.monotonic()
        if self.standby or self.taking_over is not None:
            self.arrivals.append((now, self._spool.received))
            while self.arrivals[0][0] < now - ARRIVALS_KEPT:
                self.arrivals.popleft()
            live = self.queue[0]
            if live is not self and live.silent_for() >= self.takeover:
                live.supersede()
            elif self.standby and self._spool.written - self._let_go >= 2 * STANDBY_KEEP and live.last_at:
                if live.last_at != self._bounded_for:  # once for each last byte of the live one, not at every write
                    self._bounded_for = live.last_at
                    self._let_go_before(live.last_at)
        with storage_errors():
            lagging = self._spool.put(chunk)
        if self.taking_over is not None:
            self.join_soon()  # its first bytes after the live one's last: the takeover joins them at once
        return lagging

    def _let_go_before(self, live_last: float) -> None:
        """A standby bounds what it keeps: its bytes that came before the live one's last byte, but the last
        STANDBY_KEEP of them (and its first, a stream's header), are the live one's audio again: their space goes."""
        upto = next((before for at, before in self.arrivals if at > live_last), self._spool.written)
        upto = min(upto, self._spool.written) - STANDBY_KEEP
        if upto > self._let_go and (self._letting_go is None or self._letting_go.done()):
            self._let_go = upto
            self._letting_go = asyncio.ensure_future(self._give_back(upto))

    async def _give_back(self, upto: int) -> None:
        try:
            if self._noted is not None:
                await asyncio.shield(self._noted)  # its row first
            await self.store.joins.let_go_before(self.name, upto)
        except Exception as exc:  # noqa: BLE001 (the space stays taken; the bytes are still never joined)
            log.warning("could not give back the space of standby append %s: %s", self.name, exc)

    def supersede(self) -> None:
        """A standby takes over: end this live piece's request (all it brought joins first), once."""
        if not self.superseded:
            self.superseded = True
            self.on_superseded()

    def _room(self) -> int:
        return self.store.free_space() - RESERVE

    def _open(self) -> Spool:
        name = self.store.joins.new_piece()
        try:
            with storage_errors():
                file = open(self.store.joins.path(name), "xb", buffering=0)
        except BaseException:
            self.store.joins.let_go_of(name)
            raise
        self.name = name
        # held until the piece is listed in the index (_note): bytes in a file that no row names would be an orphan
        # that a start after a crash removes
        return Spool(file, room=self._room, held=True)

    def _began(self) -> None:
        """Its first byte arrived: take a place in line (live, or standby); if the record's recorder broke off
        before, or another one streams, it is back."""
        self._turn = asyncio.get_running_loop().create_future()
        self._others = asyncio.get_running_loop().create_future()
        queue = self.queue
        queue.append(self)
        if queue[0] is self:
            self._turn.set_result(None)
            if self.appends.live_audio is not None:
                self.appends.live_audio.live(self, 0, 0)
        else:
            self.events.hub.publish("recorder-standby", {"event": self.event, "start": self.start})
        self._noted = asyncio.ensure_future(self._note())
        key = (self.event, self.start)
        if len(queue) > 1 or key in self.appends._interrupted:
            self.appends._interrupted.discard(key)
            self.events.resumed()

    async def _note(self) -> None:
        """List the piece in the index, so that a crash does not lose it (without it, its bytes still join the
        record while the process lives); then, if processes share the index, wait for the pieces they received
        before it."""
        try:
            try:
                seq = await self.store.joins.note(self.name, self.event, self.start, self.content_type)
            finally:
                self._spool.release()  # its row is there (or cannot be): its bytes go to its file
            await self.store.sharing.wait_for_others(self.event, self.start, seq)
        except Exception as exc:  # noqa: BLE001 (logged: the piece goes on without its row)
            log.warning("could not list the append %s in the index: %s", self.name, exc)
        self._others.set_result(None)

    def join_soon(self) -> None:
        """Join what arrived to the record in the background, if this piece is first in line and not joining."""
        if self._turn is not None and self._turn.done() and self._others.done() and not self._lock.locked():
            self._joining = asyncio.ensure_future(self._join_logged())

    async def _join_logged(self) -> None:
        try:
            await self.join()
        except Exception as exc:  # the next join, or the one at the end, tries again
            log.warning("could not yet join %d byte(s) to event %s at %s: %s", self.size - self.joined,
                        self.event, self.start, exc)  # fmt: skip

    async def join(self) -> None:
        """Join what arrived and is not in the record yet (call when first in line)."""
        async with self._lock:
            try:
                await self.drain()  # what arrived until now joins, not only what the writer had written
            except StorageFull:
                pass  # what fit is in the file and joins; the request's answer says that the disk is full
            if self._noted is not None:
                await asyncio.shield(self._noted)  # its row comes before the row's update
            if self.taking_over is not None and not await self._cut():
                return  # none of its bytes came after the live one's last yet
            upto = self.size
            if upto <= self.joined:
                return
            await self._append(self.joined, upto)
            self.joined = upto

    async def _append(self, at: int, upto: int) -> None:
        self.record, created = await self.store.joins.join(
            self.name, self.event, self.start, self.content_type, at, upto, (self.first_at, self.last_at)
        )
        self.events.joined(self.record.to_json(), created)

    async def _cut(self) -> bool:
        """Having taken over, skip its bytes that came before the live one's last byte, to a clean cut (its stream's
        header first, where the format needs one); announce the takeover. False while no byte came after it yet."""
        old_last, reason = self.taking_over
        after = next(((at, before) for at, before in self.arrivals if at > old_last), None)
        ended = self.ending
        if after is None and not ended:
            return False
        came, raw = after if after is not None else (time.time(), self.size)
        cut = frames.clean_cut(self.store.joins.path(self.name), raw, self.size, self.content_type, final=ended)
        if cut is None:
            return False  # the next frame has not come yet
        at, header = cut
        self.taking_over = None
        self.arrivals.clear()
        self.first_at = came
        if self.appends.live_audio is not None:
            self.appends.live_audio.live(self, header, at)
        if header:
            await self._append(0, header)
        self.joined = max(self.joined, at)
        gap = max(0.0, came - old_last)
        self.events.hub.publish("recorder-takeover", {"event": self.event, "start": self.start, "reason": reason,
                                          "gap": round(gap, 3)})  # fmt: skip
        return True

    async def end(self, how: str = "completed") -> Record | None:
        """The request ended (`how`: completed, client-gone, superseded, ...): join what is left once it is live;
        returns the record as this piece left it (None if it received nothing, or was dropped as a standby). Where
        the last join fails (a disk too full even for the index), the file and its row stay, and the bytes join the
        record at the next start."""
        if self._spool is None:
            return None
        self.ending = True
        if self.standby and await self._live_streams_on():
            await self._drop()  # the live one brings the same audio: none of this one's joins
            return None
        try:
            await self._turn
            await self._others
            await self.join()
        except Exception as exc:  # noqa: BLE001 (a full disk, or a damaged record: the bytes stay on disk)
            log.warning(
                "kept %d byte(s) for event %s at %s on disk; they join the record at the next start (%s)",
                self.size - self.joined, self.event, self.start, exc,
            )  # fmt: skip
            self._leave(keep_file=True)
            return self.record
        self._leave()
        try:
            if self.record is not None:
                await self.store.joins.part_ended(self.name, self.event, self.start, how, self.last_at)
            await self.store.joins.forget(self.name)
        except Exception as exc:  # noqa: BLE001 (the row is read at start-up only: a piece with nothing left goes)
            log.warning("could not remove the finished append %s from the index: %s", self.name, exc)
        self.store.joins.ended(self.name, self.event, self.start)
        return self.record

    async def _live_streams_on(self) -> bool:
        """This standby ended: whether the live one brings a byte within --append-takeover seconds (it streams on);
        if not, it was dead, and this one takes over first (its turn comes once the live one has joined all)."""
        ended = time.monotonic()
        while self.standby:
            live = self.queue[0]
            if live._last_byte > ended:
                return True
            if live.silent_for() >= self.takeover:
                live.supersede()
                return False
            await asyncio.sleep(STANDBY_LOOK)
        return False

    async def _drop(self) -> None:
        """A standby ends while the live one streams: its bytes are the live one's audio again; none joins."""
        self._leave()
        try:
            if self._noted is not None:
                await asyncio.shield(self._noted)
            await self.store.joins.forget(self.name)
        except Exception as exc:  # noqa: BLE001 (at the next start its bytes would join: logged)
            log.warning("could not remove the dropped standby append %s from the index: %s", self.name, exc)
        self.store.joins.ended(self.name, self.event, self.start)

    def _leave(self, keep_file: bool = False) -> None:
        """Give up its place in line (the next piece may join now) and its file (unless it must be kept: no
        replacement of the record may remove it then)."""
        queue = self.queue
        live = queue[0] is self
        queue.remove(self)
        if queue:
            following = queue[0]
            if live and not following._turn.done():  # the standby first in line takes over
                following.taking_over = (self.last_at or time.time(), "silent" if self.superseded else "ended")
                following._turn.set_result(None)
                if following._others.done():
                    following.join_soon()
        else:
            self.appends._left(self.event, self.start)
        if self.appends.live_audio is not None:
            self.appends.live_audio.left(self, not queue)
        self._spool.close()
        if not keep_file:
            self.store.joins.let_go_of(self.name)

    # -- what the byte path asks (handlers/intake.py) -----------------------------------------------------------

    def checkpoint(self) -> None:
        """What arrived joins the record (in the background)."""
        self.join_soon()

    def idle_refusal(self, timeout: float) -> str:
        return f"{super().idle_refusal(timeout)}; the {self.received} bytes received are kept"

    def _events(self, hub: EventHub) -> UploadEvents:
        return UploadEvents(hub, self.event, self.start, self.content_type, append=True)

    async def finish(self, condition: Condition | None) -> Record | None:  # noqa: ARG002 (append mode has none)
        """All it brought joins the record (what fit, if the disk filled up with its last bytes: StorageFull then)."""
        try:
            await self.drain()
        except StorageFull:
            await self.abandon("disk-full")
            raise
        return await self.abandon(None)

    def abandon(self, reason: str | None) -> asyncio.Future:
        """The request ended (reason None: its body arrived to its end, else why it stopped): what it received
        joins the record in the background (the shutdown waits); the task's result is the record then."""
        return self.store.finish_later(self._finish(reason), "joining what an append request received")

    async def _finish(self, reason: str | None) -> Record | None:
        record = await self.end(reason or "completed")
        key = (self.event, self.start)
        if reason is None:
            self.appends._interrupted.discard(key)
        elif self.size:
            self.appends._interrupted.add(key)
        self.events.append_ended(self.size, reason, None if record is None else record.size)
        return record
