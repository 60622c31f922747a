"""A relay through which ffprobe and ffmpeg read content that has no file of its own (an object in S3), seeking as
they need, without the whole of it copied out first and without a credential on their command lines.

Each relay is an HTTP proxy on the loopback for the programs of one analysis. The programs are given a URL that
names nothing (`URL`: no host, object or query of the store) and find the relay through `http_proxy` in their
environment, with a secret of its own as the proxy's Basic credentials. A program's arguments can be read by every
user of the machine (`ps`, /proc/PID/cmdline); its environment only by its own user. Any local user can connect to
the relay's port, but without the secret it is answered 407 and nothing else. The relay reads the content through
the content engine (`ContentStore.open`: the store's own client, TLS and retries) for each ranged GET, and ends with
the analysis. ffmpeg asks its proxy for the credentials only once answered 407, which costs each of its GETs (one a
seek) a connection more on the loopback.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import http.server
import logging
import os
import re
import secrets
import threading
from typing import Callable, Iterator

from tornado_records.storage.model import Reader

log = logging.getLogger("tornado_records.audio")

URL = "http://content.invalid/analysis"  # what the programs are told to read (the relay answers any name alike)
BLOCK = 1 << 16  # under malloc's mmap threshold: a relay adds ~1 MB to the peak RSS, not ~3 (1 MiB reads)
_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


class Relay(http.server.ThreadingHTTPServer):
    """The relay of one content of `size` bytes, open with `opened()` (a new reader for each GET); `environment` is
    what the programs that read `URL` through it are run with."""

    daemon_threads = True

    def __init__(self, opened: Callable[[], Reader], size: int) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.opened = opened
        self.size = size
        self.error: Exception | None = None  # the content's first failed read, if one did
        secret = secrets.token_urlsafe(24)
        self.expected = "Basic " + base64.b64encode(f"records:{secret}".encode()).decode()
        self.environment = {  # nor the store's keys: the programs reach the store through the relay alone
            name: value
            for name, value in os.environ.items()
            if name.lower() != "no_proxy" and not name.startswith("AWS_")
        }
        self.environment["http_proxy"] = f"http://records:{secret}@127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request, client_address) -> None:  # noqa: ANN001, ARG002
        log.warning("the analysis's relay could not answer a program's request")  # not a traceback on the terminal


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Relay
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        relay = self.server
        if not hmac.compare_digest(self.headers.get("Proxy-Authorization", ""), relay.expected):
            self._answer(407, {"Proxy-Authenticate": 'Basic realm="tornado-records"'})
            return
        first, last, status = 0, relay.size - 1, 200
        asked = _RANGE.match(self.headers.get("Range", "").strip())
        if asked is not None:
            first, status = int(asked[1]), 206
            last = min(last, int(asked[2])) if asked[2] else last
            if first >= relay.size:
                self._answer(416, {"Content-Range": f"bytes */{relay.size}"})
                return
        length = max(0, last - first + 1)
        headers = {"Accept-Ranges": "bytes", "Content-Length": str(length)}
        if status == 206:
            headers["Content-Range"] = f"bytes {first}-{last}/{relay.size}"
        sent = False
        try:
            reader = relay.opened()
            try:
                reader.seek(first)
                self._head(status, headers)
                sent = True
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the program seeks, or has enough
                    while length > 0 and (data := reader.read(min(BLOCK, length))):
                        self.wfile.write(data)
                        length -= len(data)
            finally:
                reader.close()
        except Exception as exc:  # noqa: BLE001 (the content could not be read: the program's read fails with it)
            relay.error = relay.error or exc
            if not sent:
                self._answer(502)

    def _answer(self, status: int, headers: dict[str, str] | None = None) -> None:
        self._head(status, {**(headers or {}), "Content-Length": "0"})

    def _head(self, status: int, headers: dict[str, str]) -> None:
        self.send_response_only(status)
        for name, value in {**headers, "Connection": "close"}.items():
            self.send_header(name, value)
        self.end_headers()
        self.close_connection = True

    def log_message(self, format: str, *args) -> None:  # noqa: A002, ANN002 (http.server's signature)
        pass  # each GET of a program's reading is no news for the log


@contextlib.contextmanager
def relayed(opened: Callable[[], Reader], size: int) -> Iterator[Relay]:
    """A relay of the content for the block, serving in a thread of its own; closed at the block's end."""
    relay = Relay(opened, size)
    thread = threading.Thread(target=relay.serve_forever, args=(0.1,), name="records-relay", daemon=True)
    thread.start()
    try:
        yield relay
    finally:
        relay.shutdown()
        relay.server_close()
        thread.join()
