"""8. Peak memory of the service through an upload and a download, at two sizes."""

from __future__ import annotations

from harness import Bench, nginx_workers_hwm, proc_status, record_path
from table import MB, Row, Target, alone, compare, mib, repeat
from transfers import fetch, upload


def run(bench: Bench) -> list[Row]:
    """8. Peak RSS of a fresh process per size during an upload and a download: below 100 MB, and flat with size."""
    sizes = (bench.options.size // 4, bench.options.size * 4)

    def peaks(size: int) -> dict[str, float]:
        source = bench.source(size)
        with bench.service() as service:
            upload(service.url(record_path()), source)
            fetch(service.url(record_path()), size)
            ours = proc_status(service.pid, "VmHWM")
        with bench.reference() as nginx:
            upload(nginx.url("/files/rss"), source)
            fetch(nginx.url("/files/rss"), size)
            theirs = nginx_workers_hwm(nginx)
        return {f"ours{size}": ours / MB, f"nginx{size}": theirs / MB}

    m = repeat(bench.options.runs, lambda: {k: v for size in sizes for k, v in peaks(size).items()})
    small, large = sizes
    rows = [
        compare(
            f"peak RSS, {mib(size)} up + down (MB)",
            m[f"ours{size}"],
            m[f"nginx{size}"],
            "{:.1f}",
            Target("<", 100, " MB"),
            judge_ratio=False,
        )
        for size in sizes
    ]
    growth = m[f"ours{large}"] / m[f"ours{small}"]
    rows.append(alone(f"peak RSS, {mib(large)} vs {mib(small)}", growth, "{:.2f}x", Target("<=", 1.1)))
    return rows
