"""Sending runs of files to a client with `os.sendfile`: the kernel moves the bytes from the page cache to the socket,
and Python makes one call per block instead of a read and a write of each.

Tornado has no sendfile, so this writes to the connection's socket itself, as the SSE fan-out does (handlers/sse.py),
and only while nothing waits in the stream's buffer. The socket is non-blocking: when the client does not take more
(EAGAIN), the next few bytes are read and written through the stream instead, which waits for the socket to be
writable as Tornado always does; so a slow client only slows itself, and the event loop never blocks. Each block is
followed by a yield to the event loop, so one fast download does not keep it from everyone else.

The bytes sent around Tornado are counted off the response's Content-Length as Tornado counts its own writes (its
private `_expected_content_remaining`, checked at start: insides.py), so that `finish` finds the body complete.
"""

from __future__ import annotations

import asyncio
import os
from typing import Iterable

import tornado.http1connection
import tornado.iostream
import tornado.web
from tornado.iostream import StreamClosedError

SEND_BLOCK = 4 << 20  # bytes asked of one sendfile call
SLOW_BLOCK = 64 << 10  # bytes written through the stream when the socket is full (it then waits for writable)


class ShortFile(Exception):
    """A file ended before the run that was to be sent from it."""


def can_sendfile(handler: tornado.web.RequestHandler) -> bool:
    """Whether the handler's answer can be sent with sendfile: a plain (not TLS) HTTP/1.x connection of Tornado's,
    and an answer Tornado does not transform (compression)."""
    connection = handler.request.connection
    return (
        hasattr(os, "sendfile")
        and isinstance(connection, tornado.http1connection.HTTP1Connection)
        and type(connection.stream) is tornado.iostream.IOStream
        and not handler.settings.get("compress_response")
        and not handler.settings.get("gzip")
        and not handler.settings.get("transforms")
    )


async def send_runs(handler: tornado.web.RequestHandler, runs: Iterable[tuple[int, int, int]]) -> None:
    """Send each run (file descriptor, offset, length) to the handler's client, in order, after the headers.

    StreamClosedError if the client leaves; ShortFile if a file is shorter than its run.
    """
    await handler.flush()  # the headers, and nothing left in the stream's buffer
    connection = handler.request.connection
    stream = connection.stream
    for fd, offset, length in runs:
        while length > 0:
            if stream.closed():
                raise StreamClosedError()
            try:
                sent = os.sendfile(stream.socket.fileno(), fd, offset, min(length, SEND_BLOCK))
            except (BlockingIOError, InterruptedError):
                sent = await _through_stream(handler, fd, offset, min(length, SLOW_BLOCK))
            except OSError as exc:  # the connection broke
                stream.close(exc)
                raise StreamClosedError(real_error=exc) from None
            else:
                if sent == 0:
                    raise ShortFile()
                connection._expected_content_remaining -= sent  # what Tornado counts of its own writes
                handler.bytes_sent = getattr(handler, "bytes_sent", 0) + sent  # the access log's and the metrics' count
            offset += sent
            length -= sent
            await asyncio.sleep(0)


async def _through_stream(handler: tornado.web.RequestHandler, fd: int, offset: int, size: int) -> int:
    """Write the next bytes through Tornado's stream, which waits until the client takes them; how many."""
    data = os.pread(fd, size, offset)
    if not data:
        raise ShortFile()
    handler.write(data)
    await handler.flush()
    return len(data)
