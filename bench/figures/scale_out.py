"""11. The scale-out set-ups: a PostgreSQL index, then PostgreSQL and S3 (SeaweedFS); one process, then two."""

from __future__ import annotations

import time
from typing import Callable

from harness import Bench, BenchError, Server, proc_status, record_path
from objects import bucket_of, cpu_of, get_ranges, get_stream, put_parts, s3_client
from subscribers import subscribers
from table import MB, Row, Target, alone, compare, mib, percentile, repeat
from transfers import at_once, fetch, put_small, upload


def run(bench: Bench) -> list[Row]:
    """11. Both set-ups (see `setups`)."""
    return setups(bench, s3_only=False)


def run_s3(bench: Bench) -> list[Row]:
    """11, its S3 half alone (`--only scale-out-s3`): PostgreSQL + S3, beside nginx and raw botocore."""
    return setups(bench, s3_only=True)


def setups(bench: Bench, s3_only: bool) -> list[Row]:
    """11. The scale-out set-ups (docs/scale-out.md): the index in PostgreSQL with the recordings in the data
    directory, then with them in an S3 object store (SeaweedFS); each with one process, then two behind nginx: the big
    upload and download, eight uploads and eight downloads at once, and one event published on one process reaching
    the subscribers of both. Beside nginx, as figures 1-3 and 7 give the embedded default's in the same run."""
    size, eighth = bench.options.size, bench.options.size // 8
    source, part = bench.source(size), bench.source(eighth)
    rows: list[Row] = []
    with bench.postgres() as database, bench.seaweedfs() as bucket, bench.reference() as nginx:
        theirs = [nginx.url(f"/files/down-{i}") for i in range(8)]
        for url in theirs:
            upload(url, part)
        upload(nginx.url("/files/big"), source)

        def nginx_eight() -> float:
            return at_once([nginx.url(f"/files/up-{i}") for i in range(8)], theirs, part, eighth)

        for name, blobs in (("PostgreSQL index", None), ("PostgreSQL + S3", bucket))[1 if s3_only else 0 :]:
            rows += scale_out_rows(bench, name, database, blobs, nginx, nginx_eight)
    return rows


def scale_out_rows(
    bench: Bench,
    name: str,
    database: Callable[[], str],
    bucket: Callable[[], str] | None,
    nginx: Server,
    nginx_eight: Callable[[], float],
) -> list[Row]:
    """The figures of one scale-out set-up: a PostgreSQL index, and the recordings in the data directory (the
    processes share it, and nginx sends the files) or in a bucket (each process has a data directory of its own for
    what is in flight)."""
    size, eighth, n, runs = bench.options.size, bench.options.size // 8, bench.options.subscribers, bench.options.runs
    source, part = bench.source(size), bench.source(eighth)

    def eight_each(server: Server) -> float:  # 8 uploads and 8 downloads at once, the downloads of records 0-7
        ups, downs = [server.url(record_path(8 + i)) for i in range(8)], [server.url(record_path(i)) for i in range(8)]
        return at_once(ups, downs, part, eighth)

    def flags(blobs: str | None = None) -> tuple[str, ...]:
        blobs = blobs or (bucket() if bucket else None)
        return ("--index", database()) + (("--blobs", blobs) if blobs else ())

    blobs = bucket() if bucket else None
    store = s3_client() if blobs else None
    with bench.service(bench.fresh_dir("data"), *flags(blobs)) as one:

        def big() -> dict[str, float]:
            figures = {"up": upload(one.url(record_path()), source).mb_per_s}
            # the download's CPU: the service's, curl's and SeaweedFS's (beside botocore's one GET's, below)
            figures["down"], figures["down_cpu"] = cpu_of(lambda: fetch(one.url(record_path()), size).mb_per_s, one.pid)
            figures["nginx_up"] = upload(nginx.url("/files/up"), source).mb_per_s
            figures["nginx_down"] = fetch(nginx.url("/files/big"), size).mb_per_s
            if store is not None:  # the same store, straight: parallel parts up, parallel ranges down
                figures["boto_up"] = put_parts(store, bucket_of(blobs), "botocore/big", source)
                figures["boto_down"] = get_ranges(store, bucket_of(blobs), "botocore/big", size)
                figures["boto_stream"], figures["boto_stream_cpu"] = cpu_of(
                    lambda: get_stream(store, bucket_of(blobs), "botocore/big", size)
                )
                # issue 27's targets, on each run's ratios (the service and botocore in the same minutes)
                figures["up_ratio"] = figures["up"] / figures["boto_up"]
                figures["down_ratio"] = figures["down"] / figures["boto_stream"]
            return figures

        m = repeat(runs, big)
        peak = proc_status(one.pid, "VmHWM") / MB
        for i in range(8):
            upload(one.url(record_path(i)), part)
        c1 = repeat(runs, lambda: {"ours": eight_each(one), "nginx": nginx_eight()})
    shared = flags() + (() if bucket else ("--accel-redirect", "/_blobs/"))
    first_dir = bench.fresh_dir("data")
    second_dir = bench.fresh_dir("data") if bucket else first_dir
    with (
        bench.service(first_dir, *shared) as a,
        bench.service(second_dir, *shared) as b,
        bench.accel(a, first_dir, b) as front,
    ):
        for i in range(8):
            upload(front.url(record_path(i)), part)
        c2 = repeat(runs, lambda: {"ours": eight_each(front), "nginx": nginx_eight()})

        def one_event() -> dict[str, float]:
            with subscribers(a.port, n // 2) as on_a, subscribers(b.port, n - n // 2) as on_b:
                time.sleep(1.0)
                answered = put_small(a, record_path(100))
                seen = [t for pipe in on_a + on_b for t in pipe.recv()]
            if len(seen) < n:
                raise BenchError(f"only {len(seen)} of {n} subscribers received the event")
            delays = [(t - min(answered, *seen)) * 1e3 for t in seen]
            return {"p50": percentile(delays, 50), "p99": percentile(delays, 99), "max": max(delays)}

        e = repeat(runs, one_event)
    eights = f"8 up + 8 down of {mib(eighth)} (MB/s)"
    if store is not None:
        store.close()
    return [
        compare(f"{name}, 1 process: upload {mib(size)} (MB/s)", m["up"], m["nginx_up"], "{:.0f}", Target(">=", 1.0)),
        compare(
            f"{name}, 1 process: download {mib(size)} (MB/s)", m["down"], m["nginx_down"], "{:.0f}", Target(">=", 1.0)
        ),
        *(object_store_rows(name, size, m, peak) if store is not None else []),
        compare(f"{name}, 1 process: {eights}", c1["ours"], c1["nginx"], "{:.0f}", Target(">=", 0.8)),
        compare(f"{name}, 2 processes behind nginx: {eights}", c2["ours"], c2["nginx"], "{:.0f}", Target(">=", 0.8)),
        Row(
            f"{name}, 2 processes: SSE, 1 event to {n:,} subscribers of both, p50 / p99 / max (ms)",
            f"{e['p50']:.0f} / {e['p99']:.0f} / {e['max']:.0f}",
            target="p99 <= 500 ms",
            verdict=Target("<=", 500).verdict(e["p99"]),
        ),
    ]


def object_store_rows(name: str, size: int, m: dict[str, float], peak: float) -> list[Row]:
    """The big upload and download beside raw botocore against the same bucket (bench/objects.py), and the peak
    memory of the process through them."""
    return [
        compare(
            f"{name}, 1 process: upload {mib(size)} (MB/s), vs raw botocore (8 MiB parts, 10 threads)",
            m["up"], m["boto_up"], "{:.0f}",
        ),
        alone(f"{name}, 1 process: upload vs raw botocore, the median of each run's ratio", m["up_ratio"], "{:.2f}x",
              Target(">=", 0.8)),
        compare(
            f"{name}, 1 process: download {mib(size)} (MB/s), vs raw botocore (8 MiB ranges, 10 threads)",
            m["down"], m["boto_down"], "{:.0f}",
        ),
        compare(
            f"{name}, 1 process: download {mib(size)} (MB/s), vs raw botocore (one GET)",
            m["down"], m["boto_stream"], "{:.0f}",
        ),
        alone(f"{name}, 1 process: download vs raw botocore's one GET, the median of each run's ratio",
              m["down_ratio"], "{:.2f}x", Target(">=", 0.8)),
        compare(
            f"{name}, 1 process: download: CPU s per GiB of the service, curl and SeaweedFS, vs botocore's one GET and "
            "SeaweedFS", m["down_cpu"] / (size / (1 << 30)), m["boto_stream_cpu"] / (size / (1 << 30)), "{:.2f}",
        ),
        alone(f"{name}, 1 process: peak RSS through the transfers above (MB)", peak, "{:.0f}", Target("<=", 100, " MB")),
    ]  # fmt: skip
