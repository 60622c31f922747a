"""6. Listing latency at a deep offset, on the embedded default and on a PostgreSQL index; and what a page of 1,000
records costs, its ETag (a hash of its body) and a revalidation of it."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import http.client
import json
import shutil
import statistics
import sys
import time
import uuid
from pathlib import Path

from harness import START, Bench, BenchError, Server
from table import Row, Target, alone, repeat

EVENTS_LISTED = 500  # events of one record each, besides the two of the record listing, for the events list


async def populate(data_dir: Path, counts: dict[str, int], index: str = "sqlite") -> None:
    """Give each event `counts[event]` one-byte records through the store's own API (no HTTP), on the index `index`:
    each a plain upload, as a PUT brings it, 500 at a time."""
    from tornado_records.storage.store import RecordStore
    from tornado_records.uploads import replace

    async def one(event: str, i: int) -> None:
        upload = await replace.begin(store, uuid.UUID(event), START + datetime.timedelta(hours=i), "audio/ogg")
        upload.write(b"x")
        await upload.commit()

    store = RecordStore(data_dir, index)
    try:
        for event, count in counts.items():
            for first in range(0, count, 500):
                await asyncio.gather(*(one(event, i) for i in range(first, min(count, first + 500))))
    finally:
        store.close()


def timed_get(conn: http.client.HTTPConnection, path: str, headers: dict[str, str] | None = None):  # noqa: ANN201
    """Seconds a GET of `path` took on the connection, its response and its body."""
    began = time.perf_counter()
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    body = response.read()
    return time.perf_counter() - began, response, body


def list_latency(server: Server, event: str | None, count: int, requests: int, offset: int | None = None) -> float:
    """Median seconds of `GET /records/{event}?limit=10&offset=count-20&order=desc` (or at `offset`) on one
    keep-alive connection (with event None: of the events list, `GET /records?limit=10&offset=count-20`)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    what = "/records" if event is None else f"/records/{event}"
    path = f"{what}?limit=10&offset={max(0, count - 20) if offset is None else offset}&order=desc"
    times = []
    try:
        for i in range(requests + 10):
            elapsed, response, body = timed_get(conn, path)
            if response.status != 200 or json.loads(body)["count"] != count:
                raise BenchError(f"GET {path}: {response.status} {body[:200]!r}")
            if i >= 10:  # the first few warm the caches
                times.append(elapsed)
    finally:
        conn.close()
    return statistics.median(times)


def page_with_etag(server: Server, event: str, requests: int) -> dict[str, float]:
    """A listing of 1,000 records in one page (`limit=1000`), which is tagged by a hash of its body (docs/api.md,
    "Caching"): the median milliseconds of the whole GET, of the hash alone (the SHA-1 Tornado computes, over the
    same bytes), of a revalidation answered 304, and the page's kilobytes."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    path = f"/records/{event}?limit=1000"
    whole, hashed, revalidated = [], [], []
    try:
        for _ in range(requests + 10):
            elapsed, response, body = timed_get(conn, path)
            whole.append(elapsed)
            if response.status != 200 or len(json.loads(body)["records"]) != 1000:
                raise BenchError(f"GET {path}: {response.status} {body[:200]!r}")
            began = time.perf_counter()
            if f'"{hashlib.sha1(body).hexdigest()}"' != response.headers["ETag"]:
                raise BenchError(f"GET {path}: the ETag is not the SHA-1 of the body")
            hashed.append(time.perf_counter() - began)
            elapsed, again, _ = timed_get(conn, path, {"If-None-Match": response.headers["ETag"]})
            revalidated.append(elapsed)
            if again.status != 304:
                raise BenchError(f"GET {path} revalidated: {again.status}")
    finally:
        conn.close()
    return {"whole": statistics.median(whole[10:]) * 1e3, "hash": statistics.median(hashed[10:]) * 1e3,
            "304": statistics.median(revalidated[10:]) * 1e3, "kB": len(body) / 1e3}  # fmt: skip


def run(bench: Bench) -> list[Row]:
    """6. List latency (limit 10, deep offset, descending) for an event with few records and one with many; and of
    the events list, over those records and EVENTS_LISTED more events of one record each. On the embedded default,
    then with the index in PostgreSQL."""
    rows = list_rows(bench, "", None)
    with bench.postgres() as database:
        # the records are made with synchronous_commit off, to make them faster; the service lists with the defaults
        rows += list_rows(bench, "PostgreSQL index: ", database())
    return rows


def list_rows(bench: Bench, name: str, index: str | None) -> list[Row]:
    """The figure's rows on one index (None: the embedded default's SQLite)."""
    small, large = bench.options.list_counts
    events = {str(uuid.UUID(int=1)): small, str(uuid.UUID(int=2)): large}
    events.update({str(uuid.UUID(int=n)): 1 for n in range(3, 3 + EVENTS_LISTED)})
    data_dir = bench.fresh_dir("list", tmpfs=True)  # 100,000 commits, each with fsyncs
    try:
        began = time.monotonic()
        filling = "sqlite" if index is None else f"{index}?options=-c%20synchronous_commit%3Doff"
        asyncio.run(populate(data_dir, events, filling))
        print(f"  populated {small + large} records in {time.monotonic() - began:.0f} s", file=sys.stderr)
        # no analysis: it would probe the records meanwhile and change the pages between a GET and its revalidation
        flags = ("--analysis-workers", "0", *(() if index is None else ("--index", index)))
        with bench.service(data_dir, *flags) as service:

            def measure() -> dict[str, float]:
                requests = bench.options.list_requests
                return {
                    str(small): list_latency(service, str(uuid.UUID(int=1)), small, requests) * 1e3,
                    str(large): list_latency(service, str(uuid.UUID(int=2)), large, requests) * 1e3,
                    "middle": list_latency(service, str(uuid.UUID(int=2)), large, requests, large // 2) * 1e3,
                    "events": list_latency(service, None, len(events), requests) * 1e3,
                    **{f"page {k}": v for k, v in page_with_etag(service, str(uuid.UUID(int=2)), requests).items()},
                }

            m = repeat(bench.options.runs, measure)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    few, many = m[str(small)], m[str(large)]
    return [
        alone(f"{name}list, {small:,} records, deep offset (ms)", few, "{:.2f}"),
        alone(f"{name}list, {large:,} records, deep offset (ms)", many, "{:.2f}", Target("<=", 3), ratio=many / few),
        alone(f"{name}list, {large:,} records, offset {large // 2:,} (ms)", m["middle"], "{:.2f}"),
        alone(
            f"{name}events list, {len(events):,} events of {small + large + EVENTS_LISTED:,} records, deep offset (ms)",
            m["events"],
            "{:.2f}",
            Target("<=", 5, " ms"),
        ),  # fmt: skip
        alone(f"{name}list, a page of 1,000 records ({m['page kB']:.0f} kB) (ms)", m["page whole"], "{:.2f}"),
        alone(f"{name}list, that page's ETag: a SHA-1 of it, share of the GET (ms)", m["page hash"], "{:.3f}",
              Target("<=", 0.05), ratio=m["page hash"] / m["page whole"]),  # fmt: skip
        alone(f"{name}list, that page revalidated: 304 (ms)", m["page 304"], "{:.2f}"),
    ]
