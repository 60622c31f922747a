"""Request bodies read in blocks: each block straight from the socket into a buffer of its own, handed to the
request's `data_received` whole (a `Content-Length` body) or with a chunked body's framing taken out in one pass.

Tornado's own readers copy each byte of a body four to five times on its way to `data_received` (a buffer per socket
read, the stream's read buffer, a slice per chunk, the join of chunks) and take three trips through the stream for
each chunk of a chunked body (its size line, its data, its CRLF): at curl's 64 KiB chunks, that was most of the event
loop's time during an upload (docs/benchmarks.md). Here the kernel copies each byte once, into the block, and a
chunked body's data is moved down over the framing within the block (in the CPU's cache) so that each block is one
`data_received`. The handler gets a memoryview of the block (a copy when it holds few bytes), which it keeps until
the bytes are written (spool.py). Blocks are reused rather than made anew (a new block is zeroed: 6 % of the event
loop's CPU in the storm of 50 uploads at once, perf): a block goes back to
the process's few spare blocks as soon as it is lent, and is taken again only once no view of it is left (Python
refuses to resize a bytearray while a memoryview of it exists), so that no byte of it is overwritten while a writer
still reads it.

A block is allocated only once the first byte for it has arrived, so that a request whose body stalls holds no
block; and each wait for bytes is bounded by the connection's idle time (the service's --upload-idle-timeout), past
which the body is refused (a JSON 408, server.py) and the connection closed: a client cannot hold a connection, or
memory, by sending a body slowly or not at all.

The rules are Tornado's: a chunk size over the connection's body limit, a malformed size line or a chunk not ended by
CRLF is an HTTPInputError (answered 400 by Tornado, as JSON by server.py). Unlike Tornado, chunk extensions and
trailer fields are read and ignored, as RFC 9112 asks. Bytes past the end of a chunked body (a pipelined request) go
back to the stream, for the connection's next request.

Tornado's private attributes used here (the two readers replaced, the body limit, the stream's read buffer) are listed
in insides.py and checked when the service starts: a Tornado without them does not start, rather than reading bodies
its own way without a word.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import re
from typing import Callable

import tornado.http1connection
import tornado.httputil
import tornado.iostream

# The most one read of a body takes from the socket (and so one `data_received` at most); blocks of 256 KiB cost the
# server 0.06 s more CPU per GiB uploaded (each block's trip through the stream, the handler and the spool).
BLOCK = 512 << 10
LINE_BYTES = 64  # the longest chunk size line (with its extensions) or chunk end; Tornado's bound too
TRAILER_BYTES = 64 << 10  # the most trailer fields after the last chunk (they are ignored)
_SIZE = re.compile(rb"([0-9a-fA-F]{1,16})[ \t]*(?:;[^\r\n]*)?\r\n")
# The most blocks kept for reuse in a process (the spares, whether their bytes are still being written or not), and
# how many of them a read looks at for one that is free: past those it makes a new block.
SPARE_BLOCKS = 32  # 16 MiB
LOOKS = 4


class _Spares:
    """Blocks of BLOCK bytes to read bodies into, each taken again once no one sees it any more."""

    def __init__(self) -> None:
        self._blocks: collections.deque[bytearray] = collections.deque(maxlen=SPARE_BLOCKS)

    def take(self) -> bytearray:
        """A block that no one sees (a spare one, else a new one); it is a spare again at once (see `_free`)."""
        blocks = self._blocks
        for _ in range(min(LOOKS, len(blocks))):
            block = blocks.popleft()
            blocks.append(block)  # the newest again: looked at last
            if _free(block):
                return block
        block = bytearray(BLOCK + 1)
        del block[BLOCK:]  # the allocation keeps its byte more: the test of `_free` never moves the block
        blocks.append(block)  # the oldest spare goes past SPARE_BLOCKS (to be freed once no one sees it)
        return block


def _free(block: bytearray) -> bool:
    """Whether no memoryview of the block is left (one that a request or a writer holds): Python refuses to resize a
    bytearray that a view sees."""
    try:
        block.append(0)
    except BufferError:
        return False
    del block[BLOCK:]
    return True


_spares = _Spares()


def read_bodies_in_blocks(
    connection: tornado.http1connection.HTTP1Connection, idle_timeout: float, on_idle: Callable[[float], None]
) -> None:
    """Have `connection` read its request's body (Content-Length or chunked) in blocks; a wait of more than
    `idle_timeout` seconds for its next bytes calls `on_idle(idle_timeout)` and closes the connection."""
    connection._read_fixed_body = functools.partial(_read_fixed, connection)  # type: ignore[method-assign]
    connection._read_chunked_body = functools.partial(_read_chunked, connection)  # type: ignore[method-assign]
    connection.body_idle = (idle_timeout, on_idle)  # type: ignore[attr-defined]


class _Reads:
    """The reads of one body from its connection's stream, each in a new block, watched by one timer: a read that
    waits longer than the idle time ends the connection."""

    def __init__(self, connection: tornado.http1connection.HTTP1Connection) -> None:
        self.stream = connection.stream
        self.timeout, self.on_idle = connection.body_idle  # type: ignore[attr-defined]
        self.loop = asyncio.get_running_loop()
        self.since = self.loop.time()  # when the read under way began
        self.waiting = False
        self.full = False  # the last read filled its block: the next bytes are most likely here already
        self.timer = self.loop.call_later(self.timeout, self._check)

    def _check(self) -> None:
        if self.stream.closed():
            return
        left = self.since + self.timeout - self.loop.time() if self.waiting else self.timeout
        if left <= 0:
            self.on_idle(self.timeout)
            self.stream.close()  # the read fails; the connection's guard answers 408 (server.py)
            return
        self.timer = self.loop.call_later(left, self._check)

    async def _read(self, buffer: bytearray | memoryview) -> int:
        self.since, self.waiting = self.loop.time(), True
        try:
            return await self.stream.read_into(buffer, partial=True)  # type: ignore[arg-type]
        finally:
            self.waiting = False

    async def next_block(self, size: int) -> tuple[memoryview, int]:
        """A block of `size` bytes (at most BLOCK) holding the body's next bytes (at least one), and how many it
        holds. Unless the last read filled its block, the block is taken once the first of them is here (a 1-byte
        read first), not while the client keeps them waiting."""
        if self.full:
            block = memoryview(_spares.take())[:size]
            count = await self._read(block)
        else:
            first = bytearray(1)
            await self._read(first)
            block = memoryview(_spares.take())[:size]
            block[0] = first[0]
            count = 1 if size == 1 else 1 + await self._read(block[1:])
        self.full = count == size
        return block, count

    def close(self) -> None:
        self.timer.cancel()


async def _deliver(delegate: tornado.httputil.HTTPMessageDelegate, block: memoryview, size: int) -> None:
    """Hand the first `size` bytes of the block to the request: a view of it, or a copy when they fill little of it (so
    that a slow sender's small reads, which the handler may hold until they are written, do not each hold a whole
    block)."""
    data = block[:size] if size >= len(block) // 4 else bytes(block[:size])
    waiting = delegate.data_received(data)  # type: ignore[arg-type]  # any bytes-like object
    if waiting is not None:
        await waiting


async def _read_fixed(
    connection: tornado.http1connection.HTTP1Connection, length: int, delegate: tornado.httputil.HTTPMessageDelegate
) -> None:
    reads = _Reads(connection)
    try:
        while length > 0:
            block, count = await reads.next_block(min(length, BLOCK))
            length -= count
            await _deliver(delegate, block, count)
            del block  # no view of it left here while the next read waits
            await asyncio.sleep(0)  # a read from a socket that always has bytes completes at once: let others run
    finally:
        reads.close()


async def _read_chunked(
    connection: tornado.http1connection.HTTP1Connection, delegate: tornado.httputil.HTTPMessageDelegate
) -> None:
    reads = _Reads(connection)
    try:
        await _read_chunks(connection, delegate, reads)
    finally:
        reads.close()


async def _read_chunks(
    connection: tornado.http1connection.HTTP1Connection, delegate: tornado.httputil.HTTPMessageDelegate, reads: _Reads
) -> None:
    stream = connection.stream
    total = 0  # the chunks' sizes so far
    left = 0  # bytes of the current chunk's data still to come
    line = b""  # a framing line (or after the last chunk, the trailer fields) begun in an earlier block
    ended = False  # a chunk's data was read; its CRLF is due
    last = False  # the last chunk (size 0) was read; the trailer fields, if any, and an empty line are due
    while True:
        view, count = await reads.next_block(BLOCK)
        kept = pos = 0  # the chunks' data in the block, moved down over the framing: view[:kept]
        while pos < count:
            if left:
                take = min(left, count - pos)
                if kept != pos:
                    view[kept : kept + take] = view[pos : pos + take]
                kept += take
                pos += take
                left -= take
                ended = not left
                continue
            end = view.obj.find(b"\n", pos, count)  # type: ignore[attr-defined]  # the block: the view begins at 0
            line += view[pos : count if end < 0 else end + 1]
            pos = count if end < 0 else end + 1
            if len(line) > (TRAILER_BYTES if last else LINE_BYTES):
                raise tornado.httputil.HTTPInputError("a chunk size line or the trailer fields are too long")
            if end < 0:
                break
            if last:
                if line == b"\r\n" or line.endswith(b"\r\n\r\n"):
                    if kept:
                        await _deliver(delegate, view, kept)
                    _give_back(stream, view[pos:count])
                    return
                continue
            if ended:
                if line != b"\r\n":
                    raise tornado.httputil.HTTPInputError("improperly terminated chunk")
                line, ended = b"", False
                continue
            size = _SIZE.fullmatch(line)
            if size is None:
                raise tornado.httputil.HTTPInputError("invalid chunk size")
            line, left = b"", int(size.group(1), 16)
            total += left
            if total > connection._max_body_size:
                raise tornado.httputil.HTTPInputError("chunked body too large")
            last = not left
        if kept:
            await _deliver(delegate, view, kept)
        del view  # as in _read_fixed
        await asyncio.sleep(0)  # as in _read_fixed


def _give_back(stream: tornado.iostream.IOStream, extra: memoryview) -> None:
    """Put bytes read past the body's end back in front of the stream's read buffer (no read is under way)."""
    if extra:
        stream._read_buffer[:0] = extra
        stream._read_buffer_size += len(extra)
