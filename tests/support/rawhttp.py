"""HTTP/1.1 by hand over a real socket, for what a client library hides: when `100 Continue` is (not) sent, what is
answered before any body byte is sent, a chunked body that stops half-way. Also small upload helpers."""

from __future__ import annotations

import base64
import hashlib
import http.client
import socket
from urllib.parse import urlsplit

import tornado.httpclient
import tornado.iostream
import tornado.tcpclient


class Answer:
    """What came back on the socket: any interim `100 Continue`, then the final status, headers and body."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.continued = raw.startswith(b"HTTP/1.1 100")
        if self.continued:
            raw = raw.split(b"\r\n\r\n", 1)[1]
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin1").split("\r\n")
        self.status = int(lines[0].split()[1]) if lines[0] else 0
        self.headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}


async def open_stream(base_url: str) -> tornado.iostream.IOStream:
    """A TCP connection to the server at base_url."""
    url = urlsplit(base_url)
    return await tornado.tcpclient.TCPClient().connect(url.hostname, url.port)


def request_head(method: str, path: str, headers: dict[str, str]) -> bytes:
    """The request line and headers of a request, ready to send."""
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    return "\r\n".join(lines).encode("latin1")


async def exchange(base_url: str, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> Answer:
    """Send a request (only its head, and `body` as is, which may be less than announced) and read the answer."""
    stream = await open_stream(base_url)
    try:
        await stream.write(request_head(method, path, {**headers, "Connection": "close"}) + body)
        return await read_answer(stream)
    finally:
        stream.close()


async def read_answer(stream: tornado.iostream.IOStream) -> Answer:
    """The next answer on the stream (after any `100 Continue`), its body read by its Content-Length."""
    raw = await stream.read_until(b"\r\n\r\n")
    if raw.startswith(b"HTTP/1.1 100"):
        raw += await stream.read_until(b"\r\n\r\n")
    length = int(Answer(raw).headers.get("content-length", "0"))
    return Answer(raw + await stream.read_bytes(length))


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def sha256_field(body: bytes) -> str:
    """A Content-Digest / Repr-Digest value for the body."""
    return f"sha-256=:{base64.b64encode(hashlib.sha256(body).digest()).decode()}:"


async def upload(fetch, path: str, body: bytes, **headers: str) -> tornado.httpclient.HTTPResponse:  # noqa: ANN001
    """PUT the body; header names are given with underscores (If_Match=...)."""
    return await fetch(path, method="PUT", body=body, headers={k.replace("_", "-"): v for k, v in headers.items()})


# -- blocking helpers, for tests against real processes ------------------------------------------------------------


def request(url: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None):  # noqa: ANN201
    """One request with the standard library's client; returns (status, headers (any case), body)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def connect(url: str, receive_buffer: int | None = None) -> socket.socket:
    """A TCP connection to the server at url; `receive_buffer` sets SO_RCVBUF (bytes) before connecting."""
    parts = urlsplit(url)
    sock = socket.socket()
    sock.settimeout(30)
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect((parts.hostname, parts.port))
    return sock


def read_to_end(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    while received := sock.recv(65536):
        data += received
    return data


def open_event_stream(url: str) -> socket.socket:
    """A subscriber of /sse that has read the response head and the retry line."""
    sock = connect(url)
    sock.sendall(request_head("GET", "/sse", {}))
    read_until(sock, b"retry:")
    return sock


def read_until(sock: socket.socket, end: bytes, timeout: float = 10) -> bytes:
    """What the server sends until `end` (the connection may stay open: it is keep-alive)."""
    sock.settimeout(timeout)
    received = b""
    while end not in received and (data := sock.recv(4096)):
        received += data
    return received


class Download:
    """A GET whose body the test reads at its own pace, through a small receive buffer."""

    def __init__(self, url: str, path: str, receive_buffer: int = 256 * 1024) -> None:
        self.sock = connect(url, receive_buffer=receive_buffer)
        self.sock.sendall(request_head("GET", path, {"Connection": "close"}))
        raw = b""
        while b"\r\n\r\n" not in raw:
            raw += self.sock.recv(16 * 1024)
        head = Answer(raw)
        self.status, self.headers, self.body = head.status, head.headers, head.body

    def read(self, size: int) -> int:
        """Read up to `size` bytes more of the body; returns how many came (0: the body is complete)."""
        data = self.sock.recv(size)
        self.body += data
        return len(data)

    def read_at_least(self, size: int) -> None:
        """Read until `size` bytes of the body have come (or all of it)."""
        while len(self.body) < size and self.read(64 * 1024):
            pass

    def finish(self) -> bytes:
        """The whole body, once the server has sent it."""
        while self.read(1 << 20):
            pass
        self.sock.close()
        return self.body


def sha256_hex(data: bytes) -> str:
    """The SHA-256 of the data, in hex (as ETags hold it)."""
    return hashlib.sha256(data).hexdigest()
