"""15. A clip: 10 minutes from the middle of a three-hour MP3, cut without re-encoding (issue 26)."""

from __future__ import annotations

import http.client
import json
import statistics
import sys
import time
import urllib.parse

from audiofiles import BY_NAME, generate
from harness import Bench, BenchError, Server, record_path
from table import Row, Target, compare
from transfers import upload

HOURS = 3
CLIP = 600.0  # seconds
REQUESTS = 9  # clips asked for in each run, one after the other; each run's figure is their median


def timed_get(server: Server, path: str, headers: dict[str, str] | None = None) -> tuple[float, int]:
    """Seconds from sending a GET to having read its whole answer, on a new connection; and the body's size."""
    began = time.monotonic()
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        body = response.read()
        if response.status not in (200, 206):
            raise BenchError(f"GET {path}: {response.status} {body[:300]!r}")
    finally:
        connection.close()
    return time.monotonic() - began, len(body)


def run(bench: Bench) -> list[Row]:
    """15. The latency of a clip of 10 minutes from the middle of a three-hour MP3 (128 kbit/s): from the request to
    the last byte, the median of 9 clips a run (ms; target < 200 ms). Twice: with the record's analysis pending
    (the service asks ffprobe for its format and duration first: `--analysis-workers 0`) and done. As reference,
    nginx serving the same bytes of the file as a Range (what the clip's bytes cost to send, without the cut). With
    --quick: 1 minute from the middle of 10 minutes."""
    if not bench.supports("--clip-workers"):
        return [Row("clip of 10 min from a 3 h MP3 (ms)", "n/a (no clips yet)")]
    seconds, clip = (600.0, 60.0) if bench.options.quick else (HOURS * 3600.0, CLIP)
    directory = bench.fresh_dir("clip-audio")
    source = generate(directory, BY_NAME["mp3"], seconds)
    size = source.stat().st_size
    start = (seconds - clip) / 2
    query = urllib.parse.urlencode({"from": f"{start:g}", "to": f"{start + clip:g}"})
    path = f"{record_path()}/clip?{query}"
    span = f"bytes={int(size * start / seconds)}-{int(size * (start + clip) / seconds) - 1}"  # by the bitrate
    data_dir = bench.fresh_dir("data")
    label = f"clip of {clip / 60:g} min from the middle of a {seconds / 3600:g} h MP3"
    samples: dict[str, list[float]] = {"pending": [], "done": [], "nginx": []}
    with bench.reference() as nginx:
        upload(nginx.url("/files/clip.mp3"), source)
        for state in ("pending", "done"):
            workers = "0" if state == "pending" else "1"
            with bench.service(data_dir, "--analysis-workers", workers) as service:
                if state == "pending":
                    upload(service.url(record_path()), source)
                else:
                    wait_analysed(service, timeout=600)
                for _ in range(bench.options.runs):
                    ours = [timed_get(service, path) for _ in range(REQUESTS)]
                    theirs = [timed_get(nginx, "/files/clip.mp3", {"Range": span}) for _ in range(REQUESTS)]
                    samples[state].append(statistics.median(t for t, _ in ours))
                    samples["nginx"].append(statistics.median(t for t, _ in theirs))
                print(f"  {label}, analysis {state}: {ours[-1][1] / 1e6:.1f} MB in "
                      f"{1000 * samples[state][-1]:.0f} ms", file=sys.stderr, flush=True)  # fmt: skip
    reference = 1000 * statistics.median(samples["nginx"])
    return [
        compare(f"{label}, analysis {state}: latency (ms)", 1000 * statistics.median(samples[state]), reference,
                "{:.0f}", Target("<", 200, " ms"), judge_ratio=False)
        for state in ("pending", "done")
    ]  # fmt: skip


def wait_analysed(service: Server, timeout: float) -> None:
    """Until the record's analysis is no longer pending."""
    deadline = time.monotonic() + timeout
    event = record_path().split("/")[2]
    while time.monotonic() < deadline:
        connection = http.client.HTTPConnection("127.0.0.1", service.port, timeout=30)
        connection.request("GET", f"/records/{event}")
        listed = json.loads(connection.getresponse().read())
        connection.close()
        if listed["records"][0]["analysis"] != "pending":
            return
        time.sleep(0.5)
    raise BenchError(f"the analysis of the {HOURS} h MP3 was still pending after {timeout:.0f} s")
