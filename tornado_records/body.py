"""Request bodies read in blocks: each block straight from the socket into a buffer of its own, handed to the
request's `data_received` whole (a `Content-Length` body) or with a chunked body's framing taken out in one pass.

Tornado's own readers copy each byte of a body four to five times on its way to `data_received` (a buffer per socket
read, the stream's read buffer, a slice per chunk, the join of chunks) and take three trips through the stream for
each chunk of a chunked body (its size line, its data, its CRLF): at curl's 64 KiB chunks, that was most of the event
loop's time during an upload (docs/benchmarks.md). Here the kernel copies each byte once, into the block, and a
chunked body's data is moved down over the framing within the block (in the CPU's cache) so that each block is one
`data_received`. The handler gets a memoryview of the block (a copy when it holds few bytes), which it keeps until
the bytes are written (spool.py): each read has a fresh block.

A block is allocated only once the first byte for it has arrived, so that a request whose body stalls holds no
block; and each wait for bytes is bounded by the connection's idle time (the service's --upload-idle-timeout), past
which the body is refused (a JSON 408, server.py) and the connection closed: a client cannot hold a connection, or
memory, by sending a body slowly or not at all.

The rules are Tornado's: a chunk size over the connection's body limit, a malformed size line or a chunk not ended by
CRLF is an HTTPInputError (answered 400 by Tornado, as JSON by server.py). Unlike Tornado, chunk extensions and
trailer fields are read and ignored, as RFC 9112 asks. Bytes past the end of a chunked body (a pipelined request) go
back to the stream, for the connection's next request.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import re
from typing import Awaitable, Callable, TypeVar

import tornado.gen
import tornado.http1connection
import tornado.httputil
import tornado.iostream

T = TypeVar("T")

BLOCK = 256 << 10  # the most one read of a body takes from the socket (and so one `data_received` at most)
LINE_BYTES = 64  # the longest chunk size line (with its extensions) or chunk end; Tornado's bound too
TRAILER_BYTES = 64 << 10  # the most trailer fields after the last chunk (they are ignored)
_SIZE = re.compile(rb"([0-9a-fA-F]{1,16})[ \t]*(?:;[^\r\n]*)?\r\n")


def read_bodies_in_blocks(
    connection: tornado.http1connection.HTTP1Connection, idle_timeout: float, on_idle: Callable[[float], None]
) -> None:
    """Have `connection` read its request's body (Content-Length or chunked) in blocks; a wait of more than
    `idle_timeout` seconds for its next bytes calls `on_idle(idle_timeout)` and ends the request as malformed."""
    connection._read_fixed_body = functools.partial(_read_fixed, connection)  # type: ignore[method-assign]
    connection._read_chunked_body = functools.partial(_read_chunked, connection)  # type: ignore[method-assign]
    connection.body_idle = (idle_timeout, on_idle)  # type: ignore[attr-defined]


async def _within_idle(connection: tornado.http1connection.HTTP1Connection, waiting: Awaitable[T]) -> T:
    """What `waiting` gives, unless the client sends nothing for the connection's idle time."""
    timeout, on_idle = connection.body_idle  # type: ignore[attr-defined]
    try:
        return await tornado.gen.with_timeout(
            datetime.timedelta(seconds=timeout), waiting, quiet_exceptions=tornado.iostream.StreamClosedError
        )
    except tornado.gen.TimeoutError:
        on_idle(timeout)
        raise tornado.httputil.HTTPInputError(f"no byte of the body for {timeout:g} s") from None


async def _next_block(connection: tornado.http1connection.HTTP1Connection, size: int) -> tuple[bytearray, int]:
    """A new block of `size` bytes holding the body's next bytes (at least one), and how many it holds. The block is
    made once the first of them is here (a 1-byte read first), not while the client keeps them waiting."""
    stream = connection.stream
    first = bytearray(1)
    await _within_idle(connection, stream.read_into(first, partial=True))
    block = bytearray(size)
    block[0] = first[0]
    if size == 1:
        return block, 1
    count = await _within_idle(connection, stream.read_into(memoryview(block)[1:], partial=True))
    return block, 1 + count


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
    while length > 0:
        block, count = await _next_block(connection, min(length, BLOCK))
        length -= count
        await _deliver(delegate, memoryview(block), count)
        await asyncio.sleep(0)  # a read from a socket that always has bytes completes at once: let others run


async def _read_chunked(
    connection: tornado.http1connection.HTTP1Connection, delegate: tornado.httputil.HTTPMessageDelegate
) -> None:
    stream = connection.stream
    total = 0  # the chunks' sizes so far
    left = 0  # bytes of the current chunk's data still to come
    line = b""  # a framing line (or after the last chunk, the trailer fields) begun in an earlier block
    ended = False  # a chunk's data was read; its CRLF is due
    last = False  # the last chunk (size 0) was read; the trailer fields, if any, and an empty line are due
    while True:
        block, count = await _next_block(connection, BLOCK)
        view = memoryview(block)
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
            end = block.find(b"\n", pos, count)
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
        await asyncio.sleep(0)  # as in _read_fixed


def _give_back(stream: tornado.iostream.IOStream, extra: memoryview) -> None:
    """Put bytes read past the body's end back in front of the stream's read buffer (no read is under way)."""
    if extra:
        stream._read_buffer[:0] = extra
        stream._read_buffer_size += len(extra)
