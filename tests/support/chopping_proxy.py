"""A TCP proxy for the resumable-upload tests: it breaks the link to the service (a reset, both ways) each time
`every` more bytes went through a connection towards the service, `breaks` times in all, so that an upload of any
speed is broken mid-body at known points (tests/support/breaking_proxy.py breaks on a clock instead)."""

from __future__ import annotations

import socket
import threading

from support.breaking_proxy import _reset


class ChoppingProxy:
    """A proxy on 127.0.0.1:`port` to the service on `upstream_port` that resets a connection once it has carried
    `every` bytes towards the service, `breaks` times (then it only forwards)."""

    def __init__(self, upstream_port: int, every: int, breaks: int) -> None:
        self.upstream_port = upstream_port
        self.every = every
        self.left = breaks
        self.broken = 0  # links reset so far
        self.carried = 0  # bytes that went through towards the service, request heads included
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self._socks += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, towards_service: bool) -> None:
        carried = 0
        try:
            while data := source.recv(65536):
                sink.sendall(data)
                carried += len(data)
                if towards_service:
                    with self._lock:
                        self.carried += len(data)
                if towards_service and carried >= self.every and self._take_break():
                    _reset(source)
                    _reset(sink)
                    return
        except OSError:
            return
        for sock, how in ((sink, socket.SHUT_WR), (source, socket.SHUT_RD)):
            try:
                sock.shutdown(how)
            except OSError:
                pass

    def _take_break(self) -> bool:
        with self._lock:
            if self.left <= 0:
                return False
            self.left -= 1
            self.broken += 1
            return True

    def close(self) -> None:
        self.listener.close()
        for sock in self._socks:
            try:
                sock.close()
            except OSError:
                pass
