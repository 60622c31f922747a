"""15. A clip: 10 minutes from the middle of a three-hour MP3, cut without re-encoding (issue 26)."""

from __future__ import annotations

import http.client
import json
import statistics
import subprocess
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
    the last byte, the median of 9 clips a run (ms; target < 200 ms). Of the MP3 as ffmpeg writes a file (its first
    frame says `Info`: a constant bitrate, sought by arithmetic) and as a live recorder streams it (no such frame: its
    frame headers are read up to the clip); each with the record's analysis pending (the service asks ffprobe for
    its format and duration first: `--analysis-workers 0`) and done. As reference, nginx serving the same bytes of the
    file as a Range (what the clip's bytes cost to send, without the cut). With --quick: 1 minute from the middle of
    10 minutes."""
    if not bench.supports("--clip-workers"):
        return [Row("clip of 10 min from a 3 h MP3 (ms)", "n/a (no clips yet)")]
    seconds, clip = (600.0, 60.0) if bench.options.quick else (HOURS * 3600.0, CLIP)
    directory = bench.fresh_dir("clip-audio")
    sources = {"file": generate(directory, BY_NAME["mp3"], seconds), "live": directory / "live.mp3"}
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", "-i", str(sources["file"]), "-c", "copy", "-write_xing",
                    "0", str(sources["live"])], check=True)  # fmt: skip
    size = sources["file"].stat().st_size
    start = (seconds - clip) / 2
    query = urllib.parse.urlencode({"from": f"{start:g}", "to": f"{start + clip:g}"})
    paths = {name: f"{record_path(index)}/clip?{query}" for index, name in enumerate(sources)}
    span = f"bytes={int(size * start / seconds)}-{int(size * (start + clip) / seconds) - 1}"  # by the bitrate
    data_dir = bench.fresh_dir("data")
    label = f"clip of {clip / 60:g} min from the middle of a {seconds / 3600:g} h MP3"
    states = [(name, state) for state in ("pending", "done") for name in sources]
    samples: dict[tuple[str, str], list[float]] = {key: [] for key in states}
    reference: list[float] = []
    with bench.reference() as nginx:
        upload(nginx.url("/files/clip.mp3"), sources["file"])
        for state in ("pending", "done"):
            workers = "0" if state == "pending" else "1"
            with bench.service(data_dir, "--analysis-workers", workers) as service:
                for index, (name, source) in enumerate(sources.items()):
                    if state == "pending":
                        upload(service.url(record_path(index)), source)
                    else:
                        wait_analysed(service, record_path(index), timeout=900)
                for _ in range(bench.options.runs):
                    for name in sources:
                        ours = [timed_get(service, paths[name]) for _ in range(REQUESTS)]
                        samples[(name, state)].append(statistics.median(t for t, _ in ours))
                    theirs = [timed_get(nginx, "/files/clip.mp3", {"Range": span}) for _ in range(REQUESTS)]
                    reference.append(statistics.median(t for t, _ in theirs))
                for name in sources:
                    print(f"  {label} ({name}), analysis {state}: {1000 * samples[(name, state)][-1]:.0f} ms",
                          file=sys.stderr, flush=True)  # fmt: skip
    nginx_ms = 1000 * statistics.median(reference)
    return [
        compare(f"{label}, {'a file (Info frame)' if name == 'file' else 'live-recorded (no Info frame)'}, "
                f"analysis {state}: latency (ms)", 1000 * statistics.median(samples[(name, state)]), nginx_ms,
                "{:.0f}", Target("<", 200, " ms"), judge_ratio=False)
        for name, state in states
    ]  # fmt: skip


def wait_analysed(service: Server, path: str, timeout: float) -> None:
    """Until the analysis of the record at `path` is no longer pending."""
    deadline = time.monotonic() + timeout
    event, start = path.split("/")[2:4]
    while time.monotonic() < deadline:
        connection = http.client.HTTPConnection("127.0.0.1", service.port, timeout=30)
        connection.request("GET", f"/records/{event}")
        listed = json.loads(connection.getresponse().read())
        connection.close()
        if next(r for r in listed["records"] if r["start"] == start)["analysis"] != "pending":
            return
        time.sleep(0.5)
    raise BenchError(f"the analysis of the {HOURS} h MP3 was still pending after {timeout:.0f} s")
