"""5. /ping while a big upload and a big download run on the same server."""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from harness import Bench, Server, record_path
from table import Row, Target, compare, mib, repeat
from transfers import Pending, get, put, upload, wrk


@contextlib.contextmanager
def transfers_running(put_url: str, get_url: str, source: Path) -> Iterator[None]:
    """Keep one upload of `source` and one download going, each restarted as it ends, until the block ends."""
    done = threading.Event()
    running: list[subprocess.Popen] = []

    def loop(start: Callable[[], Pending]) -> None:
        while not done.is_set():
            proc = start().proc
            running.append(proc)
            proc.communicate()
            running.remove(proc)

    size = source.stat().st_size
    threads = [
        threading.Thread(target=loop, args=(lambda: put(put_url, source),), daemon=True),
        threading.Thread(target=loop, args=(lambda: get(get_url, size),), daemon=True),
    ]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        done.set()
        for proc in list(running):
            proc.terminate()
        for thread in threads:
            thread.join()


def run(bench: Bench) -> list[Row]:
    """5. /ping p99 (wrk, 1 thread, 10 connections) while a big upload and a big download run on the same server."""
    size = bench.options.size
    source = bench.source(size)
    seconds = max(2, bench.options.ping_seconds)

    def ping_p99_during(server: Server, put_url: str, get_url: str) -> float:
        with transfers_running(put_url, get_url, source):
            time.sleep(0.5)
            return wrk(server.url("/ping"), 1, 10, seconds).p99 * 1e3

    with bench.service() as service, bench.reference() as nginx:
        upload(service.url(record_path(1)), source)
        upload(nginx.url("/files/busy-down"), source)

        def measure() -> dict[str, float]:
            return {
                "ours": ping_p99_during(service, service.url(record_path(0)), service.url(record_path(1))),
                "nginx": ping_p99_during(nginx, nginx.url("/files/busy-up"), nginx.url("/files/busy-down")),
            }

        m = repeat(bench.options.runs, measure)
    return [
        compare(
            f"/ping p99 during {mib(size)} up + down (ms)",
            m["ours"],
            m["nginx"],
            "{:.1f}",
            Target("<=", 50, " ms"),
            judge_ratio=False,
        )
    ]
