"""Spool: the bytes of an upload on their way to its file, written and hashed by a writer thread within a stated lag.

Every way in (a plain PUT, an append request's piece, a resumable upload's requests) hands what it receives to the
spool of its file, on the event loop, and goes on receiving. A writer thread takes everything waiting at each turn (up
to TURN_BYTES), writes it with one `os.writev` and feeds it to the upload's hashes; both release the GIL, so the
second core does that work while the event loop reads the socket.

The lag is bounded in bytes and in time:

- at most LAG_BYTES received bytes are not in the file yet: past that, `put` returns an awaitable that the request's
  `data_received` awaits (Tornado reads no more of the body until the writer has caught up), so memory stays flat;
- bytes are handed to the writer as soon as KICK_BYTES are waiting, and at the latest KICK_DELAY seconds after they
  arrived: what arrives is in the file within KICK_DELAY plus the write's own time (the page cache, not an fsync:
  durability stays with the commit, the joins and the offsets, which `drain` first).

An upload that keeps the file as it is (store.Upload, on the files engine) ends with `seal`: the writer's last turn,
on the file it holds open, also makes it durable (fsync) and closes it, so that the commit needs no thread of its own
for that.

A failure of the writer (an OSError: ENOSPC for a full disk, or for the room a `room` function leaves) is kept, and
raised by the next `put` or by `drain`; `written` then counts exactly the bytes that are in the file, hashed. The
spool knows nothing of the store: its owners (store.Upload, appends.Piece, resumable.Resumable) turn errors into the
store's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import errno
import hashlib
import os
import threading
from typing import Awaitable, BinaryIO, Callable, Iterable

# Small enough that the writer copies bytes that are still in the CPU's cache (a 4 MiB lag with 1 MiB chunks tripled
# the writer's time in the kernel's copy to the page cache: see docs/benchmarks.md).
LAG_BYTES = 1 << 20  # received but not yet in the file: the most an upload holds in memory (plus one chunk)
KICK_BYTES = 256 << 10  # bytes waiting that wake the writer at once
# The most one turn takes: the writer wakes a receiver held back by the lag after each turn, and goes on with what
# is left, so that the two work at once rather than in turns.
TURN_BYTES = 512 << 10
KICK_DELAY = 0.005  # seconds: the longest that fewer bytes wait before the writer is woken for them
# Threads shared by all uploads' spools (each spool uses one at a time; a sealing one holds it through its fsync: more
# threads than the 50 uploads of the storm, so that their fsyncs never hold up the others' bytes)
WRITERS = 64
_IOV_MAX = 1024
# Every WRITEBACK_BYTES written, the writer has the kernel begin writing the file's dirty pages to the disk
# (sync_file_range, SYNC_FILE_RANGE_WRITE: it does not wait), so that the fsync of the commit finds little left to
# write (a whole GiB took it 0.5-0.8 s here) rather than the whole upload.
WRITEBACK_BYTES = 8 << 20
_sync_file_range = getattr(ctypes.CDLL(None, use_errno=True), "sync_file_range", None)  # Linux (glibc)
if _sync_file_range is not None:
    _sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
_SYNC_FILE_RANGE_WRITE = 2

_writers = concurrent.futures.ThreadPoolExecutor(WRITERS, thread_name_prefix="spool-writer")


class Spool:
    """Received bytes on their way to `file` (opened unbuffered for writing; the spool closes it): `received`
    counts what was handed in, `written` what is in the file and hashed into each of `hashes`.

    `room`, if given, is asked (in the writer thread) how many more bytes may be written; past it the writer stops
    with OSError(ENOSPC), having written what fit. A spool made `held` keeps what it receives from its file (within
    the lag: its receiver waits past it) until `release()`.
    """

    def __init__(
        self,
        file: BinaryIO,
        hashes: Iterable["hashlib._Hash"] = (),
        room: Callable[[], int] | None = None,
        held: bool = False,
    ) -> None:
        self.received = 0
        self.written = 0
        self._file = file
        self._fd = file.fileno()
        self._hashes = list(hashes)
        self._room = room
        self._lock = threading.Lock()
        self._queue: list[bytes] = []
        self._queued = 0  # bytes in _queue
        self._behind = 0  # received, not yet written (queued or being written)
        self._running = False  # a writer thread owns the turn
        self._closing = False
        self._held = held
        self._sealing = False  # seal(): the writer's last turn fsyncs and closes the file
        self._error: BaseException | None = None
        # who waits, and for what: each wakes once _behind is at most its number (-1: once the writer is idle). A
        # request's drain, a join's drain and a lagging receiver may all wait at once.
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.on_written: Callable[[], None] | None = None  # called on the event loop after bytes reach the file

    @property
    def error(self) -> BaseException | None:
        """What stopped the writer, if anything."""
        return self._error

    def put(self, chunk: bytes) -> Awaitable[None] | None:
        """Hand received bytes to the writer; an awaitable to await before handing more when the lag is past
        LAG_BYTES (else None). Raises what stopped the writer, if it stopped."""
        if self._error is not None:
            raise self._error
        if self._closing or self._sealing:
            raise ValueError("the spool is closed")
        size = len(chunk)
        if not size:
            return None
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        with self._lock:
            self._queue.append(chunk)
            self._queued += size
            self._behind += size
            self.received += size
            kick = not self._running and not self._held and self._queued >= KICK_BYTES
            if kick:
                self._running = True
            behind = self._behind
        if kick:
            self._cancel_timer()
            _writers.submit(self._run)
        elif self._timer is None and not self._running and not self._held:
            self._timer = self._event_loop().call_later(KICK_DELAY, self._kick)
        if behind > LAG_BYTES:
            return self._wait(LAG_BYTES)
        return None

    def release(self) -> None:
        """Let a held spool's bytes reach its file (on the event loop)."""
        self._held = False
        self._kick()

    async def drain(self) -> None:
        """Wait until every byte received is in the file (or the writer stopped); raise what stopped it, if it
        stopped."""
        self._cancel_timer()
        self._kick()
        await self._wait(-1)
        if self._error is not None:
            raise self._error

    async def seal(self) -> None:
        """Wait until every byte received is in the file and durable (fsync), and the file closed, all in the writer's
        last turn; raise what stopped the writer, if it stopped (the file is then closed as by `close`). The spool takes
        no more bytes."""
        self._cancel_timer()
        with self._lock:
            if self._closing:
                raise ValueError("the spool is closed")
            self._sealing = True
        self._kick()
        await self._wait(-1)
        if self._error is not None:
            self.close()
            raise self._error

    def close(self) -> None:
        """Drop what is not written yet and close the file (once the writer is done with it). Safe to call more
        than once."""
        self._cancel_timer()
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self._behind -= self._queued
            self._queue, self._queued = [], 0
            running = self._running
            self._notify()
        if not running:
            self._file.close()

    # -- the event loop's side -------------------------------------------------------------------------------------

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def _kick(self) -> None:
        """Wake the writer for whatever is waiting (the end of KICK_DELAY, or a drain)."""
        self._timer = None
        with self._lock:
            kick = not self._running and (self._queue or self._sealing) and not self._closing and not self._held
            if kick:
                self._running = True
        if kick:
            _writers.submit(self._run)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _wait(self, wake_at: int) -> asyncio.Future[None]:
        future = self._event_loop().create_future()
        with self._lock:
            if self._satisfied(wake_at):
                future.set_result(None)
            else:
                self._waiters.append((wake_at, future))
        return future

    def _satisfied(self, wake_at: int) -> bool:
        if self._error is not None or self._closing:
            return True
        if wake_at < 0:
            return not self._running and not self._queue
        return self._behind <= wake_at

    # -- the writer thread's side ------------------------------------------------------------------------------------

    def _notify(self) -> None:
        """Wake the waiters whose wait is over (call with the lock held)."""
        waiting = []
        for wake_at, waiter in self._waiters:
            if self._satisfied(wake_at):
                self._event_loop_threadsafe_call(_resolve, waiter)
            else:
                waiting.append((wake_at, waiter))
        self._waiters = waiting

    def _event_loop_threadsafe_call(self, function: Callable, *arguments: object) -> None:
        assert self._loop is not None  # bytes were put, on it
        self._loop.call_soon_threadsafe(function, *arguments)

    def _run(self) -> None:
        """The writer's turn: write and hash what is waiting, again while more comes (then, once sealing, the fsync
        and the close)."""
        while True:
            with self._lock:
                seal = self._sealing and not self._queue and self._error is None and not self._closing
                if not seal:
                    if not self._queue or self._error is not None or self._closing:
                        self._running = False
                        self._notify()
                        if self._closing:
                            self._file.close()
                        return
                    batch = self._take()
            if seal:
                self._seal_file()
                continue
            try:
                self._write(batch)
            except BaseException as exc:  # kept for the event loop: the next put or drain raises it
                with self._lock:
                    self._error = exc
                    self._behind = 0
                    self._queue, self._queued = [], 0

    def _seal_file(self) -> None:
        """Make the file durable and close it (no byte comes any more: the spool is sealing); a failure is kept as
        the writer's, for seal to raise."""
        error = None
        try:
            os.fsync(self._fd)
        except BaseException as exc:  # noqa: BLE001 (kept for the event loop)
            error = exc
        self._file.close()
        with self._lock:
            self._error = self._error or error
            self._closing = True

    def _take(self) -> list[bytes]:
        """The chunks waiting, up to TURN_BYTES of them (at least one), off the queue (call with the lock held)."""
        size = count = 0
        for chunk in self._queue:
            if count and size + len(chunk) > TURN_BYTES:
                break
            size += len(chunk)
            count += 1
        batch, self._queue = self._queue[:count], self._queue[count:]
        self._queued -= size
        return batch

    def _write(self, batch: list[bytes]) -> None:
        total = sum(len(chunk) for chunk in batch)
        fit = total if self._room is None else max(0, min(total, self._room()))
        views = _cut(batch, fit)
        done = 0
        failure: BaseException | None = None
        try:
            while views:
                n = os.writev(self._fd, views[:_IOV_MAX])
                done += n
                views = _skip(views, n)
            if fit < total:
                raise OSError(errno.ENOSPC, "no room left on the disk for more of this upload")
        except BaseException as exc:
            failure = exc
        for view in _cut(batch, done):
            for digest in self._hashes:
                digest.update(view)
        if _sync_file_range is not None and (self.written + done) // WRITEBACK_BYTES > self.written // WRITEBACK_BYTES:
            _sync_file_range(self._fd, 0, 0, _SYNC_FILE_RANGE_WRITE)  # the whole file's dirty pages; errors ignored
        with self._lock:
            self.written += done
            self._behind -= done
            self._notify()
        if done and self.on_written is not None:
            self._event_loop_threadsafe_call(self.on_written)
        if failure is not None:
            raise failure


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _cut(batch: list[bytes], size: int) -> list[bytes | memoryview]:
    """The first `size` bytes of the batch, as its chunks (the last one cut)."""
    views: list[bytes | memoryview] = []
    for chunk in batch:
        if size <= 0:
            break
        views.append(chunk if len(chunk) <= size else memoryview(chunk)[:size])
        size -= len(chunk)
    return views


def _skip(views: list[bytes | memoryview], size: int) -> list[bytes | memoryview]:
    """The views without their first `size` bytes (after a write that took only part of them)."""
    while views and size >= len(views[0]):
        size -= len(views[0])
        views = views[1:]
    if views and size:
        views = [memoryview(views[0])[size:], *views[1:]]
    return views
