"""7. One event to many /sse subscribers."""

from __future__ import annotations

import json
import time

from harness import Bench, BenchError, proc_status, record_path
from subscribers import bare_server, subscribers
from table import Row, Target, alone, percentile, repeat
from transfers import put_small, status_of


def bare_event(event_type: str, data: dict) -> bytes:
    """An event as the service sends one, for the bare fan-out."""
    body = {"type": event_type, "created_at": "2026-12-07T14:00:00.000000Z", "data": data}
    return b"id: 1796650000000000\ndata: %s\n\n" % json.dumps(body, separators=(",", ":")).encode()


# The events of a small upload, as the service sends them: the bare fan-out sends both, one after the other.
KEY = {"event": "0f339cb0-7ab4-43fe-852d-75708232f76c", "start": "2026-01-01T01:00:00"}
BARE_EVENTS = [
    bare_event("upload-started", {**KEY, "type": "audio/ogg"}),
    bare_event("record-created", {"record": {**KEY, "type": "audio/ogg", "size": 1024, "etag": f'"{"0" * 64}"',
                                             "modified": "2026-12-07T14:00:00Z"}}),
]  # fmt: skip


def delays(seen: list[float], complete: float) -> dict[str, float]:
    """p50, p99 and max of the delays (ms) from `complete` to each subscriber's having the event."""
    ms = [(t - complete) * 1e3 for t in seen]
    return {"p50": percentile(ms, 50), "p99": percentile(ms, 99), "max": max(ms)}


def run(bench: Bench) -> list[Row]:
    """7. One event to many /sse subscribers: how long until each has it; the server's RSS per subscriber.

    The delay runs from the first sign that the upload is complete: its answer, or the first subscriber having the
    event, whichever comes first (a server may tell its subscribers before it answers the uploader). Each run is a
    fresh process keeping its data on a tmpfs, so that the upload's fsyncs do not count.

    The reference (nginx's column; nginx has no fan-out of its own) is the floor of a fan-out in Python: a process
    that sends the upload's two events (upload-started, then record-created, of the same sizes) to as many
    streams of the same clients, one `send` each in one loop an event, the delay running from the second loop's
    start. What both cost the kernel (loopback TCP, waking the clients) and the clients is the same.
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
        ours, bare = delays(seen, min(answered, *seen)), bare_fanout()  # the floor measured right after, each run
        return {**ours, "kb": (after - before) / n / 1000, "ratio": ours["p99"] / bare["p99"],
                **{f"bare_{key}": value for key, value in bare.items()}}  # fmt: skip

    def bare_fanout() -> dict[str, float]:
        with bare_server(n, BARE_EVENTS) as (port, start), subscribers(port, n) as pipes:
            time.sleep(1.0)
            start.send(True)
            began = start.recv()
            seen = [t for pipe in pipes for t in pipe.recv()]
        if len(seen) < n:
            raise BenchError(f"only {len(seen)} of {n} subscribers received the bare fan-out's event")
        return delays(seen, min(began, *seen))

    m = repeat(bench.options.runs, measure)
    return [
        Row(
            figure,
            f"{m['p50']:.0f} / {m['p99']:.0f} / {m['max']:.0f}",
            f"{m['bare_p50']:.0f} / {m['bare_p99']:.0f} / {m['bare_max']:.0f}",
            f"{m['ratio']:.2f}x",  # of the p99s, a run's each
            target="p99 <= 100 ms",
            verdict=Target("<=", 100).verdict(m["p99"]),
        ),
        alone(rss_figure, m["kb"], "{:.1f}", Target("<=", 20, " KB")),
    ]
