"""An append request (`PUT ...?append=true`) sent by hand over a raw socket, a chunk whenever the test says; what the
uploads in flight have received (GET /uploads); and a record's body as a reader gets it."""

from __future__ import annotations

import json
import socket
import struct

from support.rawhttp import Answer, chunk, connect, read_until, request, request_head
from support.records import record_url

APPEND = record_url() + "?append=true"


class Appender:
    """An append request sent by hand: a chunk whenever the test says, then a clean end, a drop or a reset."""

    def __init__(self, url: str, path: str = APPEND, headers: dict[str, str] | None = None, method: str = "PUT") -> None:
        self.sock = connect(url)
        self.sock.sendall(request_head(method, path, {"Transfer-Encoding": "chunked", **(headers or {})}))
        self.sent = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(chunk(data))
        self.sent += data

    def end(self, timeout: float = 30) -> Answer:
        self.sock.sendall(b"0\r\n\r\n")
        return self.answer(timeout)

    def answer(self, timeout: float = 30) -> Answer:
        raw = read_until(self.sock, b"\r\n\r\n", timeout)
        head = Answer(raw)
        while len(head.body) < int(head.headers.get("content-length", "0")):
            raw += self.sock.recv(65536)
            head = Answer(raw)
        self.sock.close()
        return head

    def drop(self, reset: bool = False) -> None:
        if reset:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


def body_of(url: str, path: str = record_url()) -> bytes | None:
    status, _, body = request(url, "GET", path)
    return body if status == 200 else None


def receiving(url: str) -> list[int]:
    """The bytes that each upload in flight has received so far (GET /uploads): what reached the service."""
    uploads = json.loads(request(url, "GET", "/uploads")[2])["uploads"]
    return [upload["bytes"] for upload in uploads if upload["state"] == "receiving"]
