"""12. /ping p99 and an upload with dead webhook URLs configured (one refuses, one hangs), beside the same without."""

from __future__ import annotations

import base64
import contextlib
import os
import re
import socket
import threading
import urllib.request
from typing import Iterator

from harness import Bench, BenchError, Server, free_port, record_path
from table import Row, Target, alone, mib, repeat
from transfers import upload, wrk


@contextlib.contextmanager
def hanging_url() -> Iterator[str]:
    """A URL whose server accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                held.append(listener.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/hangs"
    finally:
        listener.close()
        for connection in held:
            connection.close()


def failed_attempts(server: Server) -> float:
    """The webhook attempts that failed so far, by /metrics."""
    with urllib.request.urlopen(server.url("/metrics"), timeout=10) as response:
        text = response.read().decode()
    return sum(float(v) for v in re.findall(r"^tornado_records_webhook_failures_total\{.*\} (\S+)$", text, re.M))


def run(bench: Bench) -> list[Row]:
    """12. /ping p99 (wrk, 2 threads, 50 connections) and a chunked upload of the big file (data directory on a tmpfs),
    on a service with two dead webhook URLs (a port that refuses, a server that never answers) and on one without."""
    if not bench.supports("--webhook"):
        raise BenchError("the service measured has no --webhook")
    size = bench.options.size
    source = bench.source(size)
    seconds = bench.options.ping_seconds
    secret = bench.fresh_dir("webhook") / "secret"
    secret.write_text("whsec_" + base64.b64encode(os.urandom(32)).decode() + "\n")
    with hanging_url() as hangs:
        dead = ["--webhook", f"http://127.0.0.1:{free_port()}/refuses", "--webhook", hangs]
        # On a tmpfs (where fsync is free), so that the disk's ups and downs (from 300 to 900 MB/s from one upload to
        # the next on the development machine) do not hide what the service itself does; one record each, replaced.
        on_tmpfs = bench.fresh_dir("data", tmpfs=True), bench.fresh_dir("data", tmpfs=True)
        with (
            bench.service(on_tmpfs[0]) as plain,
            bench.service(on_tmpfs[1], *dead, "--webhook-secret-file", str(secret)) as webhooks,
        ):
            serial = iter(range(1_000_000))

            def measure() -> dict[str, float]:
                m = {}
                pair = [("plain", plain), ("dead", webhooks)]
                for name, server in pair if next(serial) % 2 == 0 else pair[::-1]:  # in turn first
                    m[f"{name}_up"] = upload(server.url(record_path()), source).mb_per_s  # its events wait for the URLs
                    m[f"{name}_p99"] = wrk(server.url("/ping"), 2, 50, seconds).p99 * 1e3
                return m

            m = repeat(bench.options.runs, measure)
            if failed_attempts(webhooks) == 0:
                raise BenchError("no webhook attempt failed: the dead URLs were not tried")
    return [
        alone(f"/ping p99 with 2 dead webhook URLs (ms; without: {m['plain_p99']:.2f})", m["dead_p99"], "{:.2f}",
              Target("<=", 1.25), m["dead_p99"] / m["plain_p99"]),  # fmt: skip
        alone(f"upload {mib(size)} with 2 dead webhook URLs (MB/s; without: {m['plain_up']:.0f})", m["dead_up"],
              "{:.0f}", Target(">=", 0.9), m["dead_up"] / m["plain_up"]),  # fmt: skip
    ]
