"""4. /ping under wrk."""

from __future__ import annotations

from harness import Bench
from table import Row, compare, repeat
from transfers import wrk


def run(bench: Bench) -> list[Row]:
    """4. /ping under wrk (2 threads, 50 connections): requests/s and p99 latency, beside nginx's `return 204`."""
    seconds = bench.options.ping_seconds
    with bench.service() as service, bench.reference() as nginx:

        def measure() -> dict[str, float]:
            ours, theirs = wrk(service.url("/ping"), 2, 50, seconds), wrk(nginx.url("/ping"), 2, 50, seconds)
            return {"ours": ours.rps, "nginx": theirs.rps, "ours_p99": ours.p99 * 1e3, "nginx_p99": theirs.p99 * 1e3}

        m = repeat(bench.options.runs, measure)
    return [
        compare("/ping, 50 connections (requests/s)", m["ours"], m["nginx"], "{:.0f}"),
        compare("/ping, 50 connections, p99 (ms)", m["ours_p99"], m["nginx_p99"], "{:.2f}"),
    ]
