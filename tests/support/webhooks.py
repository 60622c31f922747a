"""Webhook receivers for the tests: one that verifies each delivery with the `standardwebhooks` library (the
specification's own) and answers as it is told, one that accepts connections and never answers, and a URL where
nothing listens."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import http.server
import os
import socket
import threading
from typing import Any

import standardwebhooks

from support.metrics import P, Samples, value
from support.ports import free_port


def new_secret() -> str:
    """A Standard Webhooks secret: whsec_ and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


@dataclasses.dataclass
class Delivery:
    """One request the receiver got: its webhook-id, its body (parsed, if it verified), whether its signature
    verified, and the status it was answered."""

    id: str
    body: Any
    verified: bool
    status: int
    headers: dict[str, str]


class Receiver:
    """A webhook receiver on a free port of 127.0.0.1, in threads of its own: each POST is verified with
    `standardwebhooks.Webhook(secret).verify(body, headers)` and answered `status` (204 unless told otherwise)."""

    def __init__(self, secret: str, status: int = 204) -> None:
        self.secret = secret
        self.status = status
        self.attempts: list[Delivery] = []
        self.lock = threading.Lock()
        verifier = standardwebhooks.Webhook(secret)
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {name.lower(): value for name, value in self.headers.items()}
                try:
                    payload, verified = verifier.verify(body, headers), True
                except standardwebhooks.WebhookVerificationError:
                    payload, verified = None, False
                with receiver.lock:
                    status = receiver.status if verified else 400
                    receiver.attempts.append(Delivery(headers.get("webhook-id", ""), payload, verified, status, headers))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/records"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def answer(self, status: int) -> None:
        """Answer the next deliveries with `status`."""
        with self.lock:
            self.status = status

    @property
    def accepted(self) -> list[Delivery]:
        """The deliveries that verified and were answered 2xx, in the order they came."""
        with self.lock:
            return [d for d in self.attempts if d.verified and 200 <= d.status < 300]

    def ids(self) -> list[int]:
        """The webhook-ids of the accepted deliveries, as numbers (they are the events' ids)."""
        return [int(d.id) for d in self.accepted]

    def bodies(self) -> list[dict]:
        return [d.body for d in self.accepted]

    def types(self) -> list[str]:
        return [d.body["type"] for d in self.accepted]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Hanging:
    """A URL whose server accepts connections and never reads or answers a byte."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(64)
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}/hangs"
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                self.accepted.append(self.socket.accept()[0])

    def connections(self) -> int:
        """How many connections it took (and holds open)."""
        return len(self.accepted)

    def close(self) -> None:
        self.socket.close()
        for connection in self.accepted:
            connection.close()


def refused_url() -> str:
    """A URL of 127.0.0.1 where nothing listens: connections to it are refused."""
    return f"http://127.0.0.1:{free_port()}/down"


def sample(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value (0 if it is not there); `name` without the tornado_records_ prefix."""
    return value(samples, P + name, **labels)
