"""Clients of `/sse`: a raw HTTP/1.1 listener for async tests (`listen`), an HTTP/1.0 stream read event by event
(`Stream`), and readers in a thread (`events_of`, `events_until`)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any


class Listener:
    """A raw HTTP/1.1 client of `/sse`: the response head, then the decoded stream read line by line."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> None:
        self.reader, self.writer = reader, writer
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        self.headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines if h)}
        self.buffer = b""

    @classmethod
    async def open(cls, port: int, path: str = "/sse", headers: dict[str, str] | None = None) -> "Listener":
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in (headers or {}).items())]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        return cls(reader, writer, head[:-4])

    async def _chunk(self) -> bytes:
        size = int((await self.reader.readline()).strip(), 16)
        return (await self.reader.readexactly(size + 2))[:-2]

    async def line(self, timeout: float = 10) -> str | None:
        """The next line of the stream; None at its clean end (the last chunk)."""
        while b"\n" not in self.buffer:
            chunk = await asyncio.wait_for(self._chunk(), timeout)
            if not chunk:
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()

    async def event(self, timeout: float = 10) -> tuple[int, dict]:
        """The next event (its id and JSON), skipping the retry line and keepalive comments."""
        fields: dict[str, str] = {}
        while True:
            line = await self.line(timeout)
            assert line is not None, "the stream ended"
            if line == "" and "data" in fields:
                return int(fields["id"]), json.loads(fields["data"])
            if line and not line.startswith(":"):
                name, _, value = line.partition(": ")
                assert name not in fields, f"two {name} lines in one event"
                fields[name] = value

    async def event_of(self, event_type: str, timeout: float = 10) -> tuple[int, dict]:
        """The next event of that type, skipping others."""
        while True:
            event_id, event = await self.event(timeout)
            if event["type"] == event_type:
                return event_id, event

    def close(self) -> None:
        self.writer.close()


async def listen(port: int, **kwargs: Any) -> Listener:
    """A listener whose subscription has started (its retry line has arrived)."""
    listener = await Listener.open(port, **kwargs)
    assert await listener.line() == "retry: 3000"
    return listener


class Stream:
    """An /sse subscription over HTTP/1.0 (the events come unframed), read event by event."""

    def __init__(self, service: Any, last_id: int | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", service.port), timeout=10)
        header = "" if last_id is None else f"Last-Event-ID: {last_id}\r\n"
        self.sock.sendall(f"GET /sse HTTP/1.0\r\n{header}\r\n".encode())
        self.buffer = b""
        head = self._until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 200") or head.startswith(b"HTTP/1.1 200"), head
        assert self._until(b"\n\n") == b"retry: 3000"

    def _until(self, separator: bytes) -> bytes:
        while separator not in self.buffer:
            data = self.sock.recv(65536)
            assert data, "the stream ended"
            self.buffer += data
        part, self.buffer = self.buffer.split(separator, 1)
        return part

    def event(self) -> tuple[int, dict]:
        """The next event: its id and JSON (keepalive comments skipped)."""
        while True:
            block = self._until(b"\n\n").decode()
            if not block.startswith(":"):
                fields = dict(line.split(": ", 1) for line in block.split("\n"))
                assert fields.keys() == {"id", "data"}, block
                return int(fields["id"]), json.loads(fields["data"])

    def events(self, count: int) -> list[tuple[int, dict]]:
        return [self.event() for _ in range(count)]

    def close(self) -> None:
        self.sock.close()


def events_of(url: str, count: int, seen: list, last_id: int | None = None) -> threading.Thread:
    """Read `count` events of `url`'s /sse (after `last_id`, if given) into `seen` (id and JSON), in a thread."""
    headers = {} if last_id is None else {"Last-Event-ID": str(last_id)}
    answer = urllib.request.urlopen(urllib.request.Request(url + "/sse", headers=headers), timeout=30)  # subscribed

    def read() -> None:
        event_id = None
        while len(seen) < count:
            line = answer.readline()
            if line.startswith(b"id: "):
                event_id = int(line[4:])
            elif line.startswith(b"data: "):
                seen.append((event_id, json.loads(line[6:])))
        answer.close()

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def events_until(service_url: str, stop: threading.Event, timed: bool = False) -> list:
    """Collect the /sse events in a thread until `stop` is set (subscribed when it returns); returns the list it fills,
    of events, or if `timed` of (time.monotonic() of its arrival, event)."""
    seen: list = []
    stream = urllib.request.urlopen(service_url + "/sse")

    def listen() -> None:
        with stream:
            while not stop.is_set():
                line = stream.readline()
                if not line:
                    return
                if line.startswith(b"data: "):
                    event = json.loads(line[6:])
                    seen.append((time.monotonic(), event) if timed else event)

    threading.Thread(target=listen, daemon=True).start()
    return seen
