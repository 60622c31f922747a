"""1. A chunked upload of the big file, and a resumable (tus) one."""

from __future__ import annotations

from harness import Bench, cpu_per_gib, record_path
from table import Row, Target, compare, mib, repeat
from transfers import tus_upload, upload


def run(bench: Bench) -> list[Row]:
    """1. A chunked upload of the big file: MB/s, the service (which fsyncs) beside nginx WebDAV (which does not)."""
    source = bench.source(bench.options.size)
    with bench.service() as service, bench.reference() as nginx:

        def measure() -> dict[str, float]:
            size = bench.options.size
            ours, ours_cpu = cpu_per_gib(service, lambda: upload(service.url(record_path()), source).mb_per_s, size)
            theirs, nginx_cpu = cpu_per_gib(nginx, lambda: upload(nginx.url("/files/upload"), source).mb_per_s, size)
            resumable = tus_upload(service.url(record_path(1)), source).mb_per_s
            return {"ours": ours, "nginx": theirs, "ours_cpu": ours_cpu, "nginx_cpu": nginx_cpu, "tus": resumable}

        m = repeat(bench.options.runs, measure)
    size = mib(bench.options.size)
    return [
        compare(f"upload {size}, chunked (MB/s)", m["ours"], m["nginx"], "{:.0f}", Target(">=", 1.0)),
        compare("upload: server CPU per GiB (s)", m["ours_cpu"], m["nginx_cpu"], "{:.2f}"),
        compare(f"resumable upload {size}: one tus PATCH (MB/s)", m["tus"], m["nginx"], "{:.0f}", Target(">=", 1.0)),
    ]
