"""/sse subscribers held by client processes, for the figures that publish one event to many (sse, scale-out)."""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import select
import socket
import time
from typing import Iterator

from harness import BenchError


def hold_subscribers(port: int, count: int, conn: multiprocessing.connection.Connection) -> None:
    """In a client process: subscribe `count` times to /sse, say so, then send back when each saw a record event."""
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(b"GET /sse HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            data = sock.recv(4096)
            if not data:
                break
            head += data
        if not head.startswith(b"HTTP/1.1 200"):
            conn.send(f"subscriber {len(socks)} refused: {head[:200]!r}")
            return
        sock.setblocking(False)
        socks.append(sock)
    conn.send(len(socks))
    poller = select.epoll()
    pending: dict[int, bytes] = {}
    for sock in socks:
        poller.register(sock.fileno(), select.EPOLLIN)
        pending[sock.fileno()] = b""
    seen: list[float] = []
    deadline = time.monotonic() + 120
    while pending and time.monotonic() < deadline:
        for fd, _ in poller.poll(0.5):
            data = os.read(fd, 65536)
            now = time.monotonic()
            text = pending[fd] + data
            if not data or b"record-created" in text or b"record-updated" in text:
                if data:
                    seen.append(now)
                poller.unregister(fd)
                del pending[fd]
            else:
                pending[fd] = text[-64:]  # a marker may straddle two reads
    conn.send(seen)
    for sock in socks:
        sock.close()


def serve_bare(
    listener: socket.socket, count: int, events: list[bytes], conn: multiprocessing.connection.Connection
) -> None:
    """In a server process: the floor of a fan-out in Python. Answer `count` GETs of /sse as the service does (HTTP/1.1,
    chunked), then, at each word from `conn`, send each of `events` to them all (one chunk, one `send` each, in one
    loop an event) and send back the monotonic time the last loop began."""
    socks = []
    while len(socks) < count:
        sock, _ = listener.accept()
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        socks.append(sock)
    chunks = [b"%x\r\n%s\r\n" % (len(event), event) for event in events]
    while conn.recv():
        for chunk in chunks:
            began = time.monotonic()
            for sock in socks:
                sock.send(chunk)
        conn.send(began)


@contextlib.contextmanager
def bare_server(count: int, events: list[bytes]) -> Iterator[tuple[int, multiprocessing.connection.Connection]]:
    """A process holding `count` /sse streams of its own (`serve_bare`); yields its port and the pipe that starts the
    fan-outs of `events` (send True, receive the time the last began)."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
    ours, theirs = multiprocessing.get_context("fork").Pipe()
    server = multiprocessing.get_context("fork").Process(
        target=serve_bare, args=(listener, count, events, theirs), daemon=True
    )
    server.start()
    port = listener.getsockname()[1]
    listener.close()
    try:
        yield port, ours
    finally:
        ours.send(False)
        server.join(timeout=5)
        if server.is_alive():
            server.kill()
            server.join()


@contextlib.contextmanager
def subscribers(port: int, count: int, processes: int = 4) -> Iterator[list[multiprocessing.connection.Connection]]:
    """`count` /sse subscribers held by client processes; yields a pipe per process once all are subscribed."""
    ctx = multiprocessing.get_context("fork")
    pipes, clients = [], []
    for i in range(processes):
        ours, theirs = ctx.Pipe()
        share = count // processes + (i < count % processes)
        clients.append(ctx.Process(target=hold_subscribers, args=(port, share, theirs), daemon=True))
        clients[-1].start()
        pipes.append(ours)
    try:
        for pipe in pipes:
            ready = pipe.recv()
            if isinstance(ready, str):
                raise BenchError(ready)
        yield pipes
    finally:
        for client in clients:
            client.join(timeout=5)
            if client.is_alive():
                client.kill()
                client.join()
