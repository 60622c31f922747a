"""7. One event to many /sse subscribers."""

from __future__ import annotations

import time

from harness import Bench, BenchError, proc_status, record_path
from subscribers import subscribers
from table import Row, Target, alone, percentile, repeat
from transfers import put_small, status_of


def run(bench: Bench) -> list[Row]:
    """7. One event to many /sse subscribers: how long until each has it; the server's RSS per subscriber.

    The delay runs from the first sign that the upload is complete: its answer, or the first subscriber having the
    event, whichever comes first (a server may tell its subscribers before it answers the uploader). Each run is a
    fresh process keeping its data on a tmpfs, so that the upload's fsyncs do not count.
    """
    n = bench.options.subscribers
    figure = f"SSE: 1 event to {n:,} subscribers, p50 / p99 / max (ms)"
    rss_figure = "SSE: server RSS per subscriber (KB)"
    with bench.service() as probe:
        if status_of(probe.url("/sse")) == 404:
            return [Row(figure, "n/a (no /sse yet)"), Row(rss_figure, "n/a (no /sse yet)")]
    flags = ("--max-subscribers", str(2 * n)) if bench.supports("--max-subscribers") else ()

    def measure() -> dict[str, float]:
        with bench.service(bench.fresh_dir("sse", tmpfs=True), *flags) as service:
            put_small(service, record_path(0))  # warm the upload and SSE paths before the baseline RSS
            status_of(service.url("/sse"))
            before = proc_status(service.pid, "VmRSS")
            with subscribers(service.port, n) as pipes:
                time.sleep(1.0)
                after = proc_status(service.pid, "VmRSS")
                answered = put_small(service, record_path(1))
                seen = [t for pipe in pipes for t in pipe.recv()]
        if len(seen) < n:
            raise BenchError(f"only {len(seen)} of {n} subscribers received the event")
        complete = min(answered, *seen)
        delays = [(t - complete) * 1e3 for t in seen]
        return {
            "p50": percentile(delays, 50),
            "p99": percentile(delays, 99),
            "max": max(delays),
            "kb": (after - before) / n / 1000,
        }

    m = repeat(bench.options.runs, measure)
    return [
        Row(
            figure,
            f"{m['p50']:.0f} / {m['p99']:.0f} / {m['max']:.0f}",
            target="p99 <= 500 ms",
            verdict=Target("<=", 500).verdict(m["p99"]),
        ),
        alone(rss_figure, m["kb"], "{:.1f}", Target("<=", 20, " KB")),
    ]
