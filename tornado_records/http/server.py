"""The HTTP server: Tornado's HTTPServer, with the refusals Tornado makes on its own, before any handler runs, answered
as JSON errors like every other error of the service.

Tornado's HTTP/1.1 connection answers a request it cannot parse (a malformed request line or header, a bad
Content-Length or Transfer-Encoding, a malformed chunk, a body over the connection's limit) with a bare
`HTTP/1.1 400 Bad Request` and no body, and it simply closes the connection on headers over the size limit. A
`_Guard` per connection watches only while a request is being read (from its first byte until its body has arrived):
it replaces that bare answer with a JSON one (400, or 413 for a Content-Length over the limit) and answers 431 for
headers over the limit. Once the request is read, the stream is Tornado's own again, so writing an answer (a
download, an event stream) costs nothing extra.

Any answer given while the request is still being read (a refusal, by Tornado or by a handler) closes the connection,
since the rest of the request is not read. Closed at once, the connection would be reset under a client that is still
sending its body, and the client would see the reset rather than the answer. The guard says `Connection: close` in
such an answer, and makes the close a lingering one, as nginx does: see `Linger`.
"""

from __future__ import annotations

import asyncio
import functools
import http
import json
import socket
import sys
import time
from typing import Any, Awaitable

import tornado.concurrent
import tornado.http1connection
import tornado.httpserver
import tornado.httputil
import tornado.ioloop
import tornado.iostream

from tornado_records import __version__
from tornado_records.http.body import read_bodies_in_blocks
from tornado_records.http.caching import NEVER

BARE_400 = b"HTTP/1.1 400 Bad Request\r\n\r\n"  # what tornado.http1connection answers to a request it cannot parse
INTERIM = b"HTTP/1.1 1"  # a 100 Continue is not the answer
MAX_HEADER_SIZE = 64 * 1024  # the request line and headers together (Tornado's default, made explicit)
# The bounds of a lingering close (nginx: lingering_time 30 s, lingering_timeout 5 s, no byte bound).
LINGER_SECONDS = 5.0  # at most this long after the answer
LINGER_IDLE_SECONDS = 2.0  # and no longer than this without a byte from the client
LINGER_BYTES = 1 << 30  # and at most this much read and dropped
HEAD_CHECKS = 10  # looks for heads waited for past their bound, per bound (at most one a second)
KEEP_LISTENING = 64 * 1024  # bytes read ahead of a request that leave the socket registered for reading


def raw_error(status: int, detail: str) -> bytes:
    """A whole HTTP/1.1 error answer with a JSON body, which closes the connection."""
    body = json.dumps({"status_code": status, "detail": detail}).encode()
    head = (
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n"
        f"Server: tornado-records/{__version__}\r\n"
        "Content-Type: application/json\r\n"
        f"Cache-Control: {NEVER}\r\n"
        "X-Content-Type-Options: nosniff\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("latin1") + body


class _Guard:
    """Watches one connection while a request is read: Tornado's bare refusals become JSON errors."""

    def __init__(self, stream: tornado.iostream.IOStream, body_limit: int) -> None:
        self.stream = stream
        self.body_limit = body_limit
        self.headers: tornado.httputil.HTTPHeaders | None = None
        self.answered = False  # the handler began its answer while the request was still being read
        self.armed = False
        self.idle: float | None = None  # the body stalled for this many seconds (body.py)
        self._close = stream.close
        stream.close = self._closing  # type: ignore[method-assign]  # called once per connection

    def arm(self) -> None:
        """A new request begins: watch what is written until its body has arrived."""
        self.headers = None
        self.idle = None
        self.answered = False
        self.armed = True
        self.stream.write = self._write  # type: ignore[method-assign]

    def disarm(self) -> None:
        """The request is read: writes go straight to Tornado's stream again."""
        self.armed = False
        self.stream.__dict__.pop("write", None)

    def _write(self, data: Any, *args: Any, **kwargs: Any) -> Awaitable[None]:
        if data == BARE_400:
            if self.answered:  # the handler has answered already (a refused upload): say nothing more
                return _done()
            data = raw_error(*self._diagnosis())
            self.answered = True
        elif not self.answered and bytes(data[: len(INTERIM)]) != INTERIM:  # data may be a memoryview
            data = closing_head(bytes(data))
            self.answered = True
        return type(self.stream).write(self.stream, data, *args, **kwargs)

    def body_stalled(self, seconds: float) -> None:
        """No byte of the request's body came for `seconds` (body.py): the refusal that follows is a 408."""
        self.idle = seconds

    def _diagnosis(self) -> tuple[int, str]:
        """The status and detail of a request Tornado refused while reading it."""
        if self.idle is not None:
            return 408, f"No byte of the body arrived for {self.idle:g} s: the request was ended"
        if self.headers is None:
            return 400, "The request line or a header is malformed (or the Host header is missing)"
        length = self.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > self.body_limit and "Transfer-Encoding" not in self.headers:
            return 413, f"The body of {int(length)} bytes is over the limit of {self.body_limit} bytes for this route"
        return 400, (
            "The body's framing is malformed (Content-Length, Transfer-Encoding or a chunk), or a chunked body is "
            f"over the limit of {self.body_limit} bytes for this route"
        )

    def _closing(self, exc_info: Any = False) -> None:
        error = sys.exc_info()[1] if exc_info is True else exc_info
        if isinstance(error, tuple):
            error = error[1]
        if self.idle is not None and self.armed and not self.answered:  # body.py closes a stalled body's connection
            self._answer_now(raw_error(*self._diagnosis()))
        if isinstance(error, tornado.iostream.UnsatisfiableReadError) and self.armed and not self.answered:
            if self.headers is None:
                self._answer_now(raw_error(431, f"The request line and headers are over {MAX_HEADER_SIZE} bytes"))
            else:
                self._answer_now(raw_error(400, "A chunk size line of the body is malformed"))
        # Answered while the request was still being read: the client may still be sending. (An answer not yet
        # wholly written is cut off, as Tornado does; Tornado closes a stream once its answer is written.)
        linger = self.armed and self.answered and self.stream.socket is not None and not self.stream.writing()
        sock = self.stream.socket.dup() if linger else None
        self.stream.__dict__.pop("close", None)
        self.disarm()
        self._close(exc_info)
        if sock is not None:
            Linger(sock)

    def _answer_now(self, answer: bytes) -> None:
        """Send an answer on a stream that Tornado is closing (best effort, never blocking)."""
        try:
            self.stream.socket.send(answer)
            self.answered = True
        except OSError:
            pass  # the client is gone, or does not read


def closing_head(data: bytes) -> bytes:
    """An answer's first bytes (its head, perhaps with the start of its body), saying `Connection: close`."""
    end = data.find(b"\r\n\r\n")
    if end < 0 or b"\r\nconnection:" in data[:end].lower():
        return data
    return data[:end] + b"\r\nConnection: close" + data[end:]


class Linger:
    """A lingering close of a connection whose answer is sent while its client may still be sending a request.

    The sending side is shut (the client reads the answer, then the end of the stream), and what the client still
    sends is read and dropped, so that closing does not reset the connection under the answer before the client has
    read it. The socket is closed when the client closes its side, or at the first of LINGER_SECONDS after the answer,
    LINGER_IDLE_SECONDS without a byte, or LINGER_BYTES dropped: a client that keeps sending cannot hold it longer.
    """

    _buffer = bytearray(1 << 16)  # what is dropped lands here: one buffer for all

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self.left = LINGER_BYTES
        now = self.loop.time()
        self.deadline = now + LINGER_SECONDS
        self.last_read = now
        try:
            sock.setblocking(False)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.sock.close()  # the client is gone
            return
        self.loop.add_reader(sock.fileno(), self._drain)
        self.timer = self.loop.call_later(LINGER_IDLE_SECONDS, self._check)

    def _drain(self) -> None:
        try:
            while self.left > 0:
                count = self.sock.recv_into(self._buffer)
                if count == 0:
                    break  # the client closed its side
                self.left -= count
                self.last_read = self.loop.time()
        except BlockingIOError:
            return  # all read for now
        except OSError:
            pass  # the client is gone
        self._close()

    def _check(self) -> None:
        now = self.loop.time()
        wake = min(self.deadline, self.last_read + LINGER_IDLE_SECONDS)
        if now >= wake:
            self._close()
        else:
            self.timer = self.loop.call_later(wake - now, self._check)

    def _close(self) -> None:
        self.timer.cancel()
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()


def _done() -> Awaitable[None]:
    future: Any = tornado.concurrent.Future()
    future.set_result(None)
    return future


class LeanIOStream(tornado.iostream.IOStream):
    """Tornado's IOStream for a client's connection, lighter on each request of a kept-alive connection.

    - Nagle's algorithm is off for good (as nginx's `tcp_nodelay on`): Tornado turns it off at the end of each
      answer and on again after it, two system calls a request;
    - the socket stays registered for reading while less than KEEP_LISTENING bytes wait unread. A client's next
      request usually arrives before the connection asks for it (the answer to the last one is still being
      finished), and Tornado, seeing bytes wait with no read asked for, unregistered the socket, then registered it
      again when the request was taken: a round trip through the loop per request. Past that many bytes it stops
      reading as Tornado does, so a body that the service is not reading yet still waits in the client.
    """

    def set_nodelay(self, value: bool) -> None:
        pass  # set once, in lean()

    def reading(self) -> bool:
        return super().reading() or 0 < self._read_buffer_size < KEEP_LISTENING


def lean(stream: tornado.iostream.IOStream) -> None:
    """Make a plain TCP client stream (not TLS) a LeanIOStream."""
    if type(stream) is tornado.iostream.IOStream and stream.socket.family in (socket.AF_INET, socket.AF_INET6):
        stream.set_nodelay(True)
        stream.__class__ = LeanIOStream


class _Reading(tornado.httputil.HTTPMessageDelegate):
    """Tornado's delegate for one request, with the connection's guard armed until the body has arrived, and the
    connection among those waiting for a head (`heads`) until its head has arrived."""

    def __init__(
        self, inner: tornado.httputil.HTTPMessageDelegate, guard: _Guard, heads: dict[tornado.iostream.IOStream, float]
    ) -> None:
        self.inner = inner
        self.guard = guard
        self.heads = heads
        self.data_received = inner.data_received  # type: ignore[method-assign]  # no extra call per chunk
        guard.arm()
        heads[guard.stream] = time.monotonic()

    def headers_received(
        self,
        start_line: tornado.httputil.RequestStartLine | tornado.httputil.ResponseStartLine,
        headers: tornado.httputil.HTTPHeaders,
    ) -> Awaitable[None] | None:
        self.heads.pop(self.guard.stream, None)
        answer = self.inner.headers_received(start_line, headers)  # may refuse them (no Host header)
        self.guard.headers = headers
        return answer

    def finish(self) -> None:
        self.guard.disarm()
        self.inner.finish()

    def on_connection_close(self) -> None:
        self.guard.disarm()
        self.inner.on_connection_close()


class RecordsHTTPServer(tornado.httpserver.HTTPServer):
    """Tornado's HTTPServer, whose own refusals of unparseable or over-large requests are JSON errors, with the
    bounds a client cannot go past: `header_timeout` seconds to send a request's head (and to wait, kept alive, for
    the next), `body_idle_timeout` seconds at most between two parts of a body, `max_connections` at once (past it a
    new connection is answered 503 and closed).

    The head's bound is kept here rather than by Tornado, which gives each request a timeout of its own on the
    loop and two futures around the read of its head (a tenth of the time of a small request such as /ping): one
    timer for all connections looks HEAD_CHECKS times per bound (at most once a second) for those that have waited
    past it, and closes them, so a head is given its bound and at most a tenth of it (or a second) more.
    """

    def initialize(  # type: ignore[override]
        self,
        *args: Any,
        max_body_size: int | None = None,
        header_timeout: float = 3600.0,
        body_idle_timeout: float = 3600.0,
        max_connections: int = 1 << 30,
        **kwargs: Any,
    ) -> None:
        super().initialize(
            *args,
            max_body_size=max_body_size,
            max_header_size=MAX_HEADER_SIZE,
            **kwargs,
        )
        self.conn_params.header_timeout = None  # Tornado's bound on each head, kept by _check_heads instead
        self.header_timeout = header_timeout
        self.body_limit = max_body_size or 100 * 1024 * 1024  # Tornado's default buffer size
        self.body_idle_timeout = body_idle_timeout
        self.max_connections = max_connections
        self._guards: dict[object, _Guard] = {}
        self._heads: dict[tornado.iostream.IOStream, float] = {}  # the connections waiting for a head, since when
        interval = min(1.0, header_timeout / HEAD_CHECKS)
        self._head_timer = tornado.ioloop.PeriodicCallback(self._check_heads, interval * 1000)
        self._in_turn: list[socket.socket] = []  # listening sockets shared with other processes (add_sockets_in_turn)

    def add_sockets_in_turn(self, sockets: list[socket.socket]) -> None:
        """Accept on listening sockets that other processes share (--processes N), one connection a wake-up of the
        loop rather than all those waiting (up to 128, as Tornado's `add_sockets`), so that a burst of connections is
        shared among the processes the kernel wakes for it: taken whole by the first awake, 45 to 50 of wrk's 50
        went to one process of two, whose core then did the work of both."""
        loop = tornado.ioloop.IOLoop.current()
        for sock in sockets:
            loop.add_handler(sock, functools.partial(self._accept_one, sock), tornado.ioloop.IOLoop.READ)
            self._in_turn.append(sock)

    def _accept_one(self, sock: socket.socket, fd: object, events: int) -> None:
        try:
            connection, address = sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return  # another process took it, or its client left already
        self._handle_connection(connection, address)

    def stop(self) -> None:
        loop = tornado.ioloop.IOLoop.current()
        for sock in self._in_turn:
            loop.remove_handler(sock)
            sock.close()
        self._in_turn.clear()
        super().stop()

    def handle_stream(self, stream: tornado.iostream.IOStream, address: tuple) -> None:
        if len(self._guards) >= self.max_connections:
            _refuse_connection(stream)
            return
        lean(stream)
        self._guards[stream] = _Guard(stream, self.body_limit)
        if not self._head_timer.is_running():
            self._head_timer.start()
        super().handle_stream(stream, address)

    def _check_heads(self) -> None:
        """Close the connections that have waited longer than the bound for a request's head."""
        overdue = time.monotonic() - self.header_timeout
        for stream, since in list(self._heads.items()):
            if since <= overdue:
                del self._heads[stream]
                stream.close()
        if not self._guards:
            self._head_timer.stop()  # started again by the next connection

    def start_request(
        self, server_conn: object, request_conn: tornado.httputil.HTTPConnection
    ) -> tornado.httputil.HTTPMessageDelegate:
        delegate = super().start_request(server_conn, request_conn)
        guard = self._guards.get(getattr(server_conn, "stream", None))
        if isinstance(request_conn, tornado.http1connection.HTTP1Connection):
            on_idle = guard.body_stalled if guard is not None else (lambda seconds: None)
            read_bodies_in_blocks(request_conn, self.body_idle_timeout, on_idle)
        return delegate if guard is None else _Reading(delegate, guard, self._heads)

    def on_close(self, server_conn: object) -> None:
        stream = getattr(server_conn, "stream", None)
        self._guards.pop(stream, None)
        self._heads.pop(stream, None)  # type: ignore[arg-type]
        super().on_close(server_conn)


def _refuse_connection(stream: tornado.iostream.IOStream) -> None:
    """Answer a connection past the cap with a 503 (written at once, best effort: its request is not read) and close
    it, lingering so that the client reads the answer rather than a reset."""
    answer = raw_error(503, "The service has as many connections as it takes: try again shortly")
    answer = answer.replace(b"\r\nConnection: close", b"\r\nRetry-After: 1\r\nConnection: close", 1)
    sock = stream.socket
    try:
        sock.send(answer)
    except OSError:
        sock.close()
        return
    Linger(sock)
