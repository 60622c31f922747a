"""The benchmark of issue 8: tornado-records beside nginx on loopback, one table of medians over several runs.

Run it with `bash bench/run` (which installs nginx, wrk, curl and the service where missing); `--help` lists the
options. Everything runs in a fresh temporary directory on 127.0.0.1: the service (`tornado-records`, one process per
figure), a reference nginx generated here (WebDAV PUT and static GET on the same files, `return 204` for /ping), and
deploy/nginx.conf in front of the service for the X-Accel-Redirect figure. Each figure is printed beside nginx's and
as a ratio; the table is also written to bench/results.md.

Each figure is a module of bench/figures/; what they share is in bench/harness.py (options, table, servers, engines),
bench/transfers.py (curl, wrk), bench/subscribers.py (/sse clients) and bench/audiofiles.py (the audio the
analysis figures analyse).
"""

from __future__ import annotations

import sys
import time
import traceback
from typing import Callable

import figures.analysis
import figures.analysis_beside
import figures.append
import figures.clip
import figures.concurrent
import figures.download
import figures.list
import figures.ping
import figures.ping_busy
import figures.ping_storm
import figures.rss
import figures.scale_out
import figures.sse
import figures.upload
import figures.webhooks
from harness import Bench, describe, parse_options, raise_open_files_limit
from table import Row, Table, error_row

FIGURES: dict[str, Callable[[Bench], list[Row]]] = {
    "upload": figures.upload.run,
    "download": figures.download.run,
    "concurrent": figures.concurrent.run,
    "ping": figures.ping.run,
    "ping-busy": figures.ping_busy.run,
    "list": figures.list.run,
    "sse": figures.sse.run,
    "rss": figures.rss.run,
    "append": figures.append.run,
    "ping-storm": figures.ping_storm.run,
    "scale-out": figures.scale_out.run,
    "scale-out-s3": figures.scale_out.run_s3,  # its S3 half alone (bench/objects.py: raw botocore beside it)
    "webhooks": figures.webhooks.run,
    "analysis": figures.analysis.run,
    "analysis-beside": figures.analysis_beside.run,
    "clip": figures.clip.run,
}


def main(argv: list[str] | None = None) -> int:
    """Run the chosen figures, print the table, write it to the results file; 1 if a figure failed to run."""
    options = parse_options(tuple(FIGURES), __doc__.split("\n\n")[0], argv, parts=("scale-out-s3",))
    raise_open_files_limit()
    table, failed = Table(), False
    began = time.monotonic()
    bench = Bench(options)
    try:
        for name in options.only:
            print(f"{name} ...", file=sys.stderr, flush=True)
            started = time.monotonic()
            try:
                table.rows.extend(FIGURES[name](bench))
            except Exception as exc:  # one broken figure must not hide the others
                traceback.print_exc()
                table.rows.append(error_row(name, exc))
                failed = True
            print(f"{name}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    finally:
        bench.close()
    summary = describe(options) + f"; took {time.monotonic() - began:.0f} s"
    print(f"\n{summary}\n\n{table.text()}")
    options.results.write_text(f"{summary}\n\n{table.markdown()}\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
