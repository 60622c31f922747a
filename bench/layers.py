"""Where a small request's CPU goes, by layer: the same `/ping` answered three ways on uvloop, each under
`wrk -t2 -c50` in turn, with the server's CPU time per request (user + system, /proc/PID/stat):

- `tornado`: Tornado's HTTPServer (IOStream, HTTP1Connection) and a RequestHandler, as the service is built;
- `application`: the same Application and RequestHandler fed by a bare connection on an asyncio Protocol (the
  head parsed by Tornado's own functions, the answer written to the transport): what Tornado's connection layer
  costs is the difference from `tornado`;
- `protocol`: an asyncio Protocol answering the same bytes by itself: the floor of Python on uvloop.

An experiment for issue 27 (docs/benchmarks.md, "Beneath Tornado's Application"), not a figure of bench/run; the
`application` server handles only what `/ping` needs (no bodies, no errors).

    .venv/bin/python bench/layers.py [--seconds 6] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time

ANSWER = b'{"status": "ok"}'


def serve(kind: str, sock: socket.socket) -> None:
    """In a child process: answer /ping on `sock` the `kind` way until SIGTERM."""
    import tornado.httpserver
    import tornado.httputil
    import tornado.web
    import uvloop

    class Ping(tornado.web.RequestHandler):
        def get(self) -> None:
            self.set_header("Content-Type", "application/json")
            self.write(ANSWER)

    app = tornado.web.Application([(r"/ping", Ping)], log_function=lambda handler: None)

    class Bare(tornado.httputil.HTTPConnection):
        """What a RequestHandler needs of its connection to answer a GET."""

        def __init__(self, transport: asyncio.Transport) -> None:
            self.transport = transport

        def write_headers(self, start_line, headers, chunk=None):
            lines = [f"HTTP/1.1 {start_line.code} {start_line.reason}", *(f"{k}: {v}" for k, v in headers.get_all())]
            self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin1") + (chunk or b""))
            return self._done()

        def write(self, chunk: bytes):
            self.transport.write(chunk)
            return self._done()

        def finish(self) -> None:
            pass

        def set_close_callback(self, callback) -> None:
            pass

        @staticmethod
        def _done() -> asyncio.Future:
            future = asyncio.get_running_loop().create_future()
            future.set_result(None)
            return future

    class Heads(asyncio.Protocol):
        """Reads request heads; `answer(head, transport)` answers each."""

        def __init__(self, answer) -> None:
            self.answer, self.buffer = answer, b""

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            while b"\r\n\r\n" in self.buffer:
                head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
                self.answer(head, self.transport)

    def through_application(head: bytes, transport: asyncio.Transport) -> None:
        line, _, rest = head.decode("latin1").partition("\r\n")
        delegate = app.start_request(None, Bare(transport))
        start = tornado.httputil.parse_request_start_line(line)
        delegate.headers_received(start, tornado.httputil.HTTPHeaders.parse(rest))
        delegate.finish()

    plain = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(ANSWER), ANSWER)

    def by_itself(head: bytes, transport: asyncio.Transport) -> None:
        head.split(b"\r\n", 1)[0].split(b" ")
        transport.write(plain)

    async def main() -> None:
        sock.setblocking(False)
        if kind == "tornado":
            tornado.httpserver.HTTPServer(app).add_sockets([sock])
            await asyncio.Event().wait()
        answer = through_application if kind == "application" else by_itself
        server = await asyncio.get_running_loop().create_server(lambda: Heads(answer), sock=sock)
        await server.serve_forever()

    uvloop.run(main())


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(kind: str, seconds: int) -> tuple[float, float]:
    """Requests per second and µs of server CPU per request of one `kind` under wrk."""
    sock = socket.create_server(("127.0.0.1", 0), backlog=1024)
    pid = os.fork()
    if pid == 0:
        serve(kind, sock)
        os._exit(0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/ping"
    sock.close()
    try:
        time.sleep(1.0)
        before = cpu_seconds(pid)
        wrk = ["wrk", "-t2", "-c50", f"-d{seconds}s", url]
        out = subprocess.run(wrk, check=True, capture_output=True, text=True).stdout
        used = cpu_seconds(pid) - before
        requests = int(re.search(r"(\d+) requests in", out).group(1))
        return requests / seconds, used / requests * 1e6
    finally:
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    options = parser.parse_args()
    for round_ in range(1, options.rounds + 1):
        for kind in ("tornado", "application", "protocol"):
            rate, cpu = measure(kind, options.seconds)
            print(f"round {round_}: {kind:12} {rate:9.0f} requests/s, {cpu:6.1f} µs of server CPU each", flush=True)


if __name__ == "__main__":
    sys.exit(main())
