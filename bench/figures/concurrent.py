"""3. Eight uploads and eight downloads at once."""

from __future__ import annotations

from pathlib import Path

from harness import Bench, Server, cpu_per_gib, record_path
from table import Row, Target, compare, mib, repeat
from transfers import at_once, upload

EVENT = "5e0f8a3b-2c71-4d96-b8e4-7a1c3f9d6e20"  # the event of the eight and eight's records


def eighth(bench: Bench) -> tuple[int, Path]:
    """The size of each transfer (an eighth of the big size) and the file uploaded."""
    size = bench.options.size // 8
    return size, bench.source(size)


def urls(server: Server, nginx: bool = False) -> tuple[list[str], list[str]]:
    """The eight URLs uploaded to and the eight downloaded from: records of the service (of an event of their own,
    apart from the upload figure's when both run on one service), files of nginx."""
    if nginx:
        return [server.url(f"/files/up-{i}") for i in range(8)], [server.url(f"/files/down-{i}") for i in range(8)]
    ups = [server.url(record_path(8 + i, EVENT)) for i in range(8)]
    return ups, [server.url(record_path(i, EVENT)) for i in range(8)]


def prepare(bench: Bench, server: Server, nginx: bool = False) -> None:
    """Store what the downloads fetch."""
    for url in urls(server, nginx)[1]:
        upload(url, eighth(bench)[1])


def measure(bench: Bench, service: Server, nginx: Server) -> dict[str, float]:
    """One run: the eight and eight at once on each server (aggregate MB/s, and its CPU per GiB moved)."""
    size, source = eighth(bench)
    ours, ours_cpu = cpu_per_gib(service, lambda: at_once(*urls(service), source, size), 16 * size)
    theirs, nginx_cpu = cpu_per_gib(nginx, lambda: at_once(*urls(nginx, True), source, size), 16 * size)
    return {"ours": ours, "nginx": theirs, "ours_cpu": ours_cpu, "nginx_cpu": nginx_cpu}


def rows(bench: Bench, m: dict[str, float], setting: str = "") -> list[Row]:
    """The rows of `measure`'s medians; `setting` says how the service ran, where that is not its default."""
    size = mib(eighth(bench)[0])
    return [
        compare(f"8 uploads + 8 downloads of {size}{setting} (MB/s)", m["ours"], m["nginx"], "{:.0f}",
                Target(">=", 0.8)),  # fmt: skip
        compare(f"8 + 8{setting}: server CPU per GiB moved (s)", m["ours_cpu"], m["nginx_cpu"], "{:.2f}"),
    ]


def run(bench: Bench) -> list[Row]:
    """3. Eight uploads and eight downloads at once (each an eighth of the big size): aggregate MB/s."""
    with bench.service() as service, bench.reference() as nginx:
        prepare(bench, service)
        prepare(bench, nginx, nginx=True)
        m = repeat(bench.options.runs, lambda: measure(bench, service, nginx))
    return rows(bench, m)
