"""3. Eight uploads and eight downloads at once."""

from __future__ import annotations

from harness import Bench, cpu_per_gib, record_path
from table import Row, Target, compare, mib, repeat
from transfers import at_once, upload


def run(bench: Bench) -> list[Row]:
    """3. Eight uploads and eight downloads at once (each an eighth of the big size): aggregate MB/s."""
    size = bench.options.size // 8
    source = bench.source(size)

    with bench.service() as service, bench.reference() as nginx:
        ours_down = [service.url(record_path(i)) for i in range(8)]
        ours_up = [service.url(record_path(8 + i)) for i in range(8)]
        nginx_down = [nginx.url(f"/files/down-{i}") for i in range(8)]
        nginx_up = [nginx.url(f"/files/up-{i}") for i in range(8)]
        for url in ours_down + nginx_down:
            upload(url, source)

        def measure() -> dict[str, float]:
            ours, ours_cpu = cpu_per_gib(service, lambda: at_once(ours_up, ours_down, source, size), 16 * size)
            theirs, nginx_cpu = cpu_per_gib(nginx, lambda: at_once(nginx_up, nginx_down, source, size), 16 * size)
            return {"ours": ours, "nginx": theirs, "ours_cpu": ours_cpu, "nginx_cpu": nginx_cpu}

        m = repeat(bench.options.runs, measure)
    return [
        compare(f"8 uploads + 8 downloads of {mib(size)} (MB/s)", m["ours"], m["nginx"], "{:.0f}", Target(">=", 0.8)),
        compare("8 + 8: server CPU per GiB moved (s)", m["ours_cpu"], m["nginx_cpu"], "{:.2f}"),
    ]
