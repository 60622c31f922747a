"""Tornado's insides: every private attribute of Tornado's that the service relies on, named once, with the class it
belongs to and the module of ours that needs it; `check()` verifies each on the installed Tornado, and the service
checks them when it starts (cli.py, app.make_app): a Tornado that changed stops the start with one line, rather than
letting the service run on without them (body.py's readers, for one, would simply not be called).

Only modules of this package use these names. The handlers ask the small functions below (`finished`,
`headers_sent`, `buffered_bytes`) rather than read a RequestHandler's private attributes themselves.
tests/test_tornado_insides.py pins each attribute, and holds INSIDES equal to what the code uses.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import threading
from dataclasses import dataclass
from typing import Any

import tornado
import tornado.http1connection
import tornado.httputil
import tornado.iostream
import tornado.tcpserver
import tornado.web

SUPPORTED = ">=6.5,<7"  # the Tornado releases this one supports: setup.py's install_requires says the same


@dataclass(frozen=True)
class Inside:
    """A private attribute of a Tornado class that a module of ours relies on.

    A method (`positional` set) must be on the class, taking that many positional parameters (self included), as
    Tornado calls it; we replace it on each connection. Any other attribute is set by the class's `__init__`, so it
    is looked for on a throwaway instance, as a value of `kind`.
    """

    owner: type
    name: str
    user: str  # the module of ours that uses it (or the modules, separated by ", ")
    why: str
    kind: type | tuple[type, ...] = object
    positional: int | None = None

    @property
    def label(self) -> str:
        return f"{self.owner.__name__}.{self.name}"


BODY = "tornado_records/http/body.py"
SENDFILE = "tornado_records/http/sendfile.py"
SERVER = "tornado_records/http/server.py"
EAGER = "tornado_records/http/eager.py"
HERE = "tornado_records/http/insides.py"
HTTP1Connection = tornado.http1connection.HTTP1Connection
IOStream = tornado.iostream.IOStream
RequestHandler = tornado.web.RequestHandler

INSIDES: tuple[Inside, ...] = (
    Inside(HTTP1Connection, "_read_fixed_body", BODY, "replaced per connection: a Content-Length body read in blocks",
           positional=3),  # fmt: skip
    Inside(HTTP1Connection, "_read_chunked_body", BODY, "replaced per connection: a chunked body read in blocks",
           positional=2),  # fmt: skip
    Inside(HTTP1Connection, "_max_body_size", BODY, "the connection's body limit, which a chunked body is held to",
           kind=int),  # fmt: skip
    Inside(HTTP1Connection, "_expected_content_remaining", SENDFILE,
           "what is left of the answer's Content-Length: bytes sent with sendfile are counted off it",
           kind=(int, type(None))),  # fmt: skip
    Inside(IOStream, "_read_buffer", BODY, "bytes read past a chunked body's end go back in front of it",
           kind=bytearray),  # fmt: skip
    Inside(IOStream, "_read_buffer_size", f"{BODY}, {SERVER}", "counted with the bytes given back (body.py); "
           "bytes read ahead of a request keep the socket registered (server.LeanIOStream)", kind=int),  # fmt: skip
    Inside(tornado.tcpserver.TCPServer, "_handle_connection", SERVER, "a connection accepted in turn with other "
           "processes (add_sockets_in_turn) made a stream and handled", positional=3),  # fmt: skip
    Inside(RequestHandler, "_execute", EAGER, "the handler's coroutine (transforms, path arguments), started at once",
           positional=2),  # fmt: skip
    Inside(RequestHandler, "_prepared_future", EAGER, "resolved once prepare() has run, for a body read as it arrives",
           kind=(asyncio.Future, type(None))),  # fmt: skip
    Inside(RequestHandler, "_finished", HERE, "finished(): BaseHandler.answered, for the byte path of uploads",
           kind=bool),  # fmt: skip
    Inside(RequestHandler, "_headers_written", HERE, "headers_sent(): a download cut off once its headers are sent",
           kind=bool),  # fmt: skip
    Inside(RequestHandler, "_write_buffer", HERE, "buffered_bytes(): the body bytes the access log counts; "
           "begin_answer() empties it", kind=list),  # fmt: skip
    Inside(RequestHandler, "_headers", HERE, "begin_answer(): the answer's headers, made from ready values",
           kind=tornado.httputil.HTTPHeaders),  # fmt: skip
    Inside(RequestHandler, "_status_code", HERE, "begin_answer(): the status, 200 to begin with", kind=int),
    Inside(RequestHandler, "_reason", HERE, "begin_answer(): the status's reason phrase", kind=str),
)


class TornadoChanged(Exception):
    """The installed Tornado lacks (or has changed) a private attribute the service relies on; the message is one
    line, for the user."""


def finished(handler: tornado.web.RequestHandler) -> bool:
    """Whether the handler's answer is finished (`finish()` has run)."""
    return handler._finished


def headers_sent(handler: tornado.web.RequestHandler) -> bool:
    """Whether the answer's status line and headers have been written to the connection."""
    return handler._headers_written


def buffered_bytes(handler: tornado.web.RequestHandler) -> int:
    """How many bytes of the answer's body wait in the handler, written but not yet flushed to the connection."""
    return sum(len(part) for part in handler._write_buffer)


def begin_answer(handler: tornado.web.RequestHandler, headers: dict[str, str]) -> None:
    """Reset the handler's answer as `RequestHandler.clear` does (200, nothing written), its headers `headers`: values
    ready for the wire, taken as they are (clear formats the date and checks each value at every request)."""
    handler._headers = tornado.httputil.HTTPHeaders(headers)
    handler._write_buffer = []
    handler._status_code = 200
    handler._reason = "OK"


def check() -> None:
    """Verify every attribute of INSIDES on the installed Tornado; TornadoChanged names the first one missing."""
    try:
        instances = throwaway_attributes()
    except Exception as exc:  # a constructor that changed
        raise TornadoChanged(
            f"this Tornado ({tornado.version}) cannot build the objects {HERE} looks into ({type(exc).__name__}: "
            f"{exc}); install a Tornado this release supports ({SUPPORTED})"
        ) from None
    for inside in INSIDES:
        problem = problem_with(inside, instances)
        if problem is not None:
            raise TornadoChanged(
                f"this Tornado ({tornado.version}) {problem}, which {inside.user} needs; "
                f"install a Tornado this release supports ({SUPPORTED})"
            )


def problem_with(inside: Inside, instances: dict[type, dict[str, Any]]) -> str | None:
    """What is wrong with one attribute on the installed Tornado (`instances`: from throwaway_attributes), or None."""
    if inside.positional is not None:
        method = inspect.getattr_static(inside.owner, inside.name, None)
        if method is None or not callable(method):
            return f"lacks {inside.label}"
        parameters = inspect.signature(method).parameters.values()
        count = sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters)
        if count != inside.positional:
            return f"has {inside.label} taking {count} positional parameters, not {inside.positional}"
        return None
    attributes = instances[inside.owner]
    if inside.name not in attributes:
        return f"lacks {inside.label}"
    if not isinstance(attributes[inside.name], inside.kind):
        return f"has {inside.label} as a {type(attributes[inside.name]).__name__}"
    return None


def throwaway_attributes() -> dict[type, dict[str, Any]]:
    """The attributes a new instance of each class of INSIDES has once built: an IOStream over one end of a socket
    pair, a server's HTTP1Connection on it, a RequestHandler for a request on that. They are built and closed on an
    event loop of their own, in a thread, so that this can run with or without a loop running."""
    found: dict[type, dict[str, Any]] = {}
    failed: list[BaseException] = []

    async def build() -> None:
        ours, theirs = socket.socketpair()
        stream = IOStream(ours)
        try:
            found[IOStream] = dict(vars(stream))
            connection = HTTP1Connection(stream, is_client=False)
            found[HTTP1Connection] = dict(vars(connection))
            start = tornado.httputil.RequestStartLine("GET", "/", "HTTP/1.1")
            headers = tornado.httputil.HTTPHeaders({"Host": "localhost"})
            request = tornado.httputil.HTTPServerRequest(start_line=start, headers=headers, connection=connection)
            found[RequestHandler] = dict(vars(RequestHandler(tornado.web.Application(), request)))
        finally:
            stream.close()
            theirs.close()

    def run() -> None:
        try:
            asyncio.run(build())
        except BaseException as exc:  # raised again in the caller's thread
            failed.append(exc)

    thread = threading.Thread(target=run, name="tornado-insides")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return found
