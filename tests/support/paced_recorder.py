"""A live recorder for tests: a chunked PUT whose body arrives at the pace of the broadcast, from a thread."""

from __future__ import annotations

import threading
import time

from support.rawhttp import Answer, chunk, connect, read_until, request_head


class PacedRecorder(threading.Thread):
    """A live recorder: a chunked PUT that sends `body` at `rate` bytes a second, as an encoder sends a broadcast,
    and ends its body when `body` is all sent or `stop` is set."""

    def __init__(self, url: str, path: str, body: bytes, rate: int, content_type: str) -> None:
        super().__init__(daemon=True)
        self.sock = connect(url)
        self.head = request_head("PUT", path, {"Transfer-Encoding": "chunked", "Content-Type": content_type})
        self.body, self.rate = body, rate
        self.sent = 0
        self.status = 0
        self.stop = threading.Event()

    def run(self) -> None:
        self.sock.sendall(self.head)
        began = time.monotonic()
        step = self.rate // 10
        while self.sent < len(self.body) and not self.stop.is_set():
            part = self.body[self.sent : self.sent + step]
            self.sock.sendall(chunk(part))
            self.sent += len(part)
            time.sleep(max(0.0, began + self.sent / self.rate - time.monotonic()))
        self.sock.sendall(b"0\r\n\r\n")
        self.status = Answer(read_until(self.sock, b"\r\n\r\n", 30)).status
        self.sock.close()
