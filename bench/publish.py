"""What the durable event log costs the event loop: publish() latency, and the loop's stalls while events flow.

    .venv/bin/python bench/publish.py [--events 20000] [--rate 2000] [--dir DIR]

Publishes `--events` upload-progress-sized events at `--rate` per second (in bursts of 10) through an EventHub with
no log (memory only, as before), with the EventLog (queued, written by its thread), and with the naive alternative
(an fsynced INSERT per event on the loop), each on a fresh records.sqlite3 in DIR (default: a temporary directory
on the disk holding the current one). Prints p50 / p99 / max of publish() and of the lag of a 1 ms timer.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from tornado_records.eventlog import EventLog
from tornado_records.events import EventHub

DATA = {"event": "0f339cb0-7ab4-43fe-852d-75708232f76c", "start": "2024-01-01T00:00:00", "bytes": 123456789}


class NaiveLog:
    """An INSERT and a fsynced commit per event, on the caller's thread (what the event log avoids)."""

    max_events, max_age, last_id = 1000, 86400.0, 0

    def __init__(self, path: Path) -> None:
        EventLog(path).close()  # the table
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA synchronous=FULL")

    def recent(self) -> list:
        return []

    def oldest(self) -> float:
        return 0.0

    def append(self, event_id: int, wire: bytes, created: float) -> None:
        self.conn.execute("INSERT INTO events VALUES (?, ?, ?)", (event_id, wire, created))

    def close(self) -> None:
        self.conn.close()


def percentiles(values: list[float]) -> str:
    values = sorted(values)
    p99 = values[int(len(values) * 0.99)]
    return f"p50 {statistics.median(values):.3f} / p99 {p99:.3f} / max {values[-1]:.3f} ms"


async def run(hub: EventHub, events: int, rate: float) -> tuple[list[float], list[float]]:
    latencies: list[float] = []
    lags: list[float] = []
    done = False

    async def ticker() -> None:
        while not done:
            began = time.perf_counter()
            await asyncio.sleep(0.001)
            lags.append((time.perf_counter() - began) * 1000 - 1)

    tick = asyncio.create_task(ticker())
    for burst in range(events // 10):
        for _ in range(10):
            began = time.perf_counter_ns()
            hub.publish("upload-progress", DATA)
            latencies.append((time.perf_counter_ns() - began) / 1e6)
        await asyncio.sleep(10 / rate)
    done = True
    await tick
    return latencies, lags


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--dir", type=Path, default=Path.cwd())
    args = parser.parse_args()
    for name in ("memory only", "event log", "naive fsync per event"):
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            path = Path(tmp) / "records.sqlite3"
            log = {"memory only": None, "event log": EventLog, "naive fsync per event": NaiveLog}[name]
            hub = EventHub(log=None if log is None else log(path))
            began = time.monotonic()
            latencies, lags = await run(hub, args.events, args.rate)
            if hub.log is not None:
                hub.log.close()
            took = time.monotonic() - began
            print(f"{name:22} {args.events} events in {took:.1f} s: publish {percentiles(latencies)}; "
                  f"loop lag {percentiles(lags)}")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
