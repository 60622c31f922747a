"""A TCP proxy for tests that breaks the link between a recorder and the service, the ways real links break.

`BreakingProxy(upstream_port, breaks)` listens on a free port and forwards each connection to the service. Each
break is `(seconds, how)`, timed from the first connection, and hits every connection then carrying an upload (more
than HEAD_BYTES sent towards the service; Liquidsoap's second, empty PUT is spared):

- `reset`: both sides are reset (RST) at once, as a router that drops the connection does;
- `stall`: nothing passes any more, in either direction, and both sides stay open: only the service's idle timeout
  ends it (once the service closes its side, the recorder's side is reset, as a proxy in the way would do);
- `half-dead`: the recorder's side is reset, the service's side stays open and silent: the recorder reconnects at
  once while the service has not noticed yet that the old connection is dead.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time

HEAD_BYTES = 4096


def _reset(sock: socket.socket) -> None:
    """Close with a reset (RST). The read shut down first wakes a thread blocked reading it, so that the close is
    not held back until that read returns."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RD)
    except OSError:
        pass
    time.sleep(0.05)
    sock.close()


class _Link:
    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.sent = 0  # bytes towards the service
        self.uploading_at: float | None = None  # when it had carried more than HEAD_BYTES towards the service
        self.frozen = threading.Event()
        self.broken = False

    def pump(self, source: socket.socket, sink: socket.socket, towards_service: bool) -> None:
        try:
            while not self.frozen.is_set():
                data = source.recv(65536)
                if not data or self.frozen.is_set():
                    break
                sink.sendall(data)
                if towards_service:
                    self.sent += len(data)
                    if self.uploading_at is None and self.sent > HEAD_BYTES:
                        self.uploading_at = time.monotonic()
        except OSError:
            pass
        if self.frozen.is_set():
            return
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_WR if sock is sink else socket.SHUT_RD)
            except OSError:
                pass

    def wait_for_service_close(self) -> None:
        """While frozen: once the service closes its side, reset the recorder's (if still open)."""
        try:
            while self.upstream.recv(65536):
                pass
        except OSError:
            pass
        _reset(self.client)
        self.upstream.close()


class BreakingProxy:
    """A proxy on 127.0.0.1:`port` to the service on `upstream_port`, breaking uploads as `breaks` says."""

    def __init__(self, upstream_port: int, breaks: list[tuple[float, str]] = ()) -> None:
        self.upstream_port = upstream_port
        self.breaks = sorted(breaks)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.links: list[_Link] = []
        self.done: list[tuple[float, str, int]] = []  # breaks made: (when, how, links hit)
        self._first: float | None = None
        self._closing = False
        threading.Thread(target=self._accept, daemon=True).start()
        threading.Thread(target=self._break_on_time, daemon=True).start()

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self._first is None:
                self._first = time.monotonic()
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            link = _Link(client, upstream)
            self.links.append(link)
            threading.Thread(target=link.pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=link.pump, args=(upstream, client, False), daemon=True).start()

    def _break_on_time(self) -> None:
        for at, how in self.breaks:
            while not self._closing and (self._first is None or time.monotonic() - self._first < at):
                time.sleep(0.01)
            if self._closing:
                return
            hit = [link for link in self.links if link.sent > HEAD_BYTES and not link.broken]
            for link in hit:
                self._break(link, how)
            self.done.append((time.monotonic() - self._first, how, len(hit)))

    @staticmethod
    def _break(link: _Link, how: str) -> None:
        link.broken = True
        link.frozen.set()
        if how == "reset":
            _reset(link.client)
            _reset(link.upstream)
        elif how == "half-dead":
            _reset(link.client)
            threading.Thread(target=link.wait_for_service_close, daemon=True).start()
        elif how == "stall":
            threading.Thread(target=link.wait_for_service_close, daemon=True).start()
        else:
            raise ValueError(how)

    def outage(self) -> float:
        """The seconds, over all breaks made, from each break until an upload began to pass again (on a link whose
        upload began after it): how long the recorder brought the service nothing, as slow as the machine made it."""
        total = 0.0
        for when, _, _ in self.done:
            at = (self._first or 0.0) + when
            later = [link.uploading_at for link in self.links if link.uploading_at and link.uploading_at > at]
            total += min(later) - at if later else 0.0
        return total

    def refuse_new(self) -> None:
        """From now on refuse new connections (the recorder's network is down for good); links open stay as they
        are (a half-dead one stays open and silent on the service's side)."""
        self._closing = True
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()

    def close(self) -> None:
        self._closing = True
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() waiting on it: no more links
        self.listener.close()
        for link in self.links:
            _reset(link.client)
            _reset(link.upstream)
