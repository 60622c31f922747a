"""Blocking raw-socket HTTP/1.1 for bad-input tests: send any bytes at all, read whatever comes back, and check that
a refusal is a JSON error and that nothing was stored."""

from __future__ import annotations

import dataclasses
import json
import socket
from pathlib import Path

from support.records import EVENT, files_in

TRACEBACK = b"Traceback (most recent call last)"


@dataclasses.dataclass
class Reply:
    """What the server sent back: status (0: nothing), headers (names lowercased), body and the raw bytes."""

    status: int
    headers: dict[str, str]
    body: bytes
    raw: bytes
    head: bool = False  # the answer to a HEAD, which has no body


def send(port: int, data: bytes, timeout: float = 10.0, half_close: bool = False) -> Reply:
    """Send `data` as is on a new connection (then shut the sending side, with `half_close`) and read one answer
    (a 2xx/3xx only up to its head, since a stream may never end; an error with its body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server answered and closed before taking everything: read what it said
        head = data.startswith(b"HEAD ")
        raw = _read_answer(sock, head_only=head)
    return dataclasses.replace(parse_reply(raw), head=head)


def _read_answer(sock: socket.socket, head_only: bool) -> bytes:
    raw = b""
    while True:
        head_end = _final_head_end(raw)
        if head_end is not None:
            reply = parse_reply(raw)
            if head_only or (reply.status < 400 and "content-length" not in reply.headers):
                return raw
            if len(raw) - head_end >= int(reply.headers.get("content-length", "0") or 0):
                return raw
        try:
            part = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return raw
        if not part:
            return raw
        raw += part


def _final_head_end(raw: bytes) -> int | None:
    """Where the body of the final (non-1xx) answer begins, or None if its head is not complete yet."""
    start = 0
    while (end := raw.find(b"\r\n\r\n", start)) != -1:
        if not raw.startswith(b"HTTP/1.1 1", start):
            return end + 4
        start = end + 4
    return None


def parse_reply(raw: bytes) -> Reply:
    """The final answer in the raw bytes (after any `100 Continue`)."""
    while raw.startswith(b"HTTP/1.1 1") and b"\r\n\r\n" in raw:
        raw = raw.split(b"\r\n\r\n", 1)[1]
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin1").split("\r\n")
    parts = lines[0].split()
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return Reply(status, headers, body, raw)


def assert_json_error(reply: Reply) -> None:
    """A refusal as the service promises it: 4xx, JSON `{"status_code", "detail"}` with its Content-Type."""
    assert 400 <= reply.status < 500, reply.raw[:300]
    assert reply.headers.get("content-type", "").startswith("application/json"), reply.raw[:300]
    if reply.head:
        return  # its headers only
    answer = json.loads(reply.body)
    assert answer.keys() == {"status_code", "detail"}, answer  # no traceback, whatever the detail quotes
    assert answer["status_code"] == reply.status and isinstance(answer["detail"], str), answer


def assert_no_server_error(reply: Reply) -> None:
    """Any answer but a 5xx or a traceback; an error is JSON."""
    assert 0 < reply.status < 500, reply.raw[:300]
    if reply.status >= 400:
        assert_json_error(reply)
    else:
        assert TRACEBACK not in reply.raw


def stored_state(port: int, data_dir: Path) -> tuple:
    """What is stored: the blobs, the uploads in flight and the event's listing."""
    listing = send(port, f"GET /records/{EVENT}?limit=1000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    return files_in(data_dir / "blobs"), files_in(data_dir / "tmp"), listing.status, listing.body
