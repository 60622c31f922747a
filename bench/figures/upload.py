"""1. A chunked upload of the big file, and a resumable (tus) one."""

from __future__ import annotations

from harness import Bench, Server, cpu_per_gib, record_path
from table import Row, Target, alone, compare, each_run, medians, mib
from transfers import tus_upload, upload


def measure(bench: Bench, service: Server, nginx: Server) -> dict[str, float]:
    """One run: the big chunked upload to each server (MB/s, and the server's CPU per GiB), and a tus upload of it
    to the service."""
    source, size = bench.source(bench.options.size), bench.options.size
    ours, ours_cpu = cpu_per_gib(service, lambda: upload(service.url(record_path()), source).mb_per_s, size)
    theirs, nginx_cpu = cpu_per_gib(nginx, lambda: upload(nginx.url("/files/upload"), source).mb_per_s, size)
    resumable = tus_upload(service.url(record_path(1)), source).mb_per_s
    return {"ours": ours, "nginx": theirs, "ours_cpu": ours_cpu, "nginx_cpu": nginx_cpu, "tus": resumable}


def rows(bench: Bench, m: dict[str, float], setting: str = "") -> list[Row]:
    """The rows of `measure`'s medians; `setting` says how the service ran, where that is not its default."""
    size = mib(bench.options.size)
    lowest = [alone(f"upload {size}: the lowest run's ratio", m["lowest"], "{:.2f}x", Target(">=", 1.0))] if (
        "lowest" in m
    ) else []  # fmt: skip
    return [
        compare(f"upload {size}, chunked{setting} (MB/s)", m["ours"], m["nginx"], "{:.0f}", Target(">=", 1.0)),
        *lowest,
        compare(f"upload{setting}: server CPU per GiB (s)", m["ours_cpu"], m["nginx_cpu"], "{:.2f}",
                Target("<=", 1.5)),  # issue 27: at most nginx's + 50 %
        compare(f"resumable upload {size}{setting}: one tus PATCH (MB/s)", m["tus"], m["nginx"], "{:.0f}",
                Target(">=", 0.9)),  # issue 27: against nginx's plain PUT
    ]  # fmt: skip


def run(bench: Bench) -> list[Row]:
    """1. A chunked upload of the big file: MB/s, the service (which fsyncs) beside nginx WebDAV (which does not)."""
    bench.source(bench.options.size)  # made before the servers start
    with bench.service() as service, bench.reference() as nginx:
        runs = each_run(bench.options.runs, lambda: measure(bench, service, nginx))
    return rows(bench, {**medians(runs), "lowest": min(run["ours"] / run["nginx"] for run in runs)})
