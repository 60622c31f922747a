"""2. A download of the big file, direct and through deploy/nginx.conf with X-Accel-Redirect."""

from __future__ import annotations

import shutil

from harness import Bench, record_path
from table import Row, Target, compare, mib, repeat
from transfers import fetch, upload


def run(bench: Bench) -> list[Row]:
    """2. A download of the big file: MB/s direct, and through nginx with X-Accel-Redirect; beside nginx static."""
    size = bench.options.size
    source = bench.source(size)
    data_dir = bench.fresh_dir("data")
    rows = []
    with bench.reference() as nginx:
        upload(nginx.url("/files/download"), source)
        with bench.service(data_dir) as service:
            upload(service.url(record_path()), source)

            def measure() -> dict[str, float]:
                return {
                    "ours": fetch(service.url(record_path()), size).mb_per_s,
                    "nginx": fetch(nginx.url("/files/download"), size).mb_per_s,
                }

            m = repeat(bench.options.runs, measure)
        rows.append(compare(f"download {mib(size)}, direct (MB/s)", m["ours"], m["nginx"], "{:.0f}", Target(">=", 1.0)))
        figure = f"download {mib(size)}, nginx X-Accel-Redirect (MB/s)"
        if not bench.supports("--accel-redirect"):
            rows.append(Row(figure, "n/a (no --accel-redirect yet)"))
        else:
            with (
                bench.service(data_dir, "--accel-redirect", "/_blobs/") as service,
                bench.accel(service, data_dir) as front,
            ):
                accel = repeat(bench.options.runs, lambda: {"ours": fetch(front.url(record_path()), size).mb_per_s})
            rows.append(compare(figure, accel["ours"], m["nginx"], "{:.0f}", Target(">=", 0.9)))
    shutil.rmtree(data_dir, ignore_errors=True)
    return rows
