"""9. Append mode's cost beside a whole upload."""

from __future__ import annotations

import shutil

from harness import Bench, record_path
from table import MiB, Row, Target, alone, mib, repeat
from transfers import upload


def run(bench: Bench) -> list[Row]:
    """9. Append mode's cost: appending 1 MiB to a record of the big size, beside uploading the big size. The record
    is not rewritten: the append writes its own file and hashes what it adds (after a restart, it first reads the
    record once, to find the SHA-256 state that the ETag continues from)."""
    big, piece = bench.source(bench.options.size), bench.source(MiB)
    data_dir = bench.fresh_dir("data")
    path = record_path()
    try:

        def measure() -> dict[str, float]:
            with bench.service(data_dir) as service:
                whole = upload(service.url(path), big).seconds
                warm = upload(service.url(path + "?append=true"), piece).seconds
            with bench.service(data_dir) as service:
                cold = upload(service.url(path + "?append=true"), piece).seconds
            return {"upload": whole, "warm": warm, "cold": cold}

        m = repeat(bench.options.runs, measure)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    size = mib(bench.options.size)
    return [
        alone(f"upload {size} (s)", m["upload"], "{:.2f}"),
        alone(f"append 1 MiB to {size} (ms)", 1000 * m["warm"], "{:.1f}", Target("<=", 0.05), m["warm"] / m["upload"]),
        alone(
            f"append 1 MiB to {size}, first after a restart (ms)",
            1000 * m["cold"],
            "{:.1f}",
            ratio=m["cold"] / m["upload"],
        ),  # fmt: skip
    ]
