"""13. The upload and the 8 + 8 figures with the service analysing audio beside them, and with no analysis."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import figures.concurrent as concurrent
import figures.upload as upload
from audiofiles import BY_NAME, audio
from harness import AUDIO_PROGRAMS, Bench, BenchError, Server, children, process_cpu, program_name, record_path
from table import Row, Target, mib, repeat
from transfers import curl, finished

BUSY_EVENT = "a7d3c1e2-5b4f-4e8a-9c6d-2f1e0b9a8c7d"  # the long records that keep the analyzer busy
BACKLOG = 3  # long records whose analysis is pending at the start of each measurement
OFF, ON = ("--analysis-workers", "0"), ("--analysis-workers", "1")
SAMPLE = 0.25  # seconds between two looks at the service's ffmpeg
SETTLE = 1.0  # seconds between a service's start (its ffmpeg's, where it analyses) and the measurement


def settle() -> None:
    """Before a setting's measurement: write back what the other left dirty in the page cache, so that neither pays
    for the other's writes, then wait SETTLE."""
    os.sync()
    time.sleep(SETTLE)


def run(bench: Bench) -> list[Row]:
    """13. The upload figure (1) and the 8 + 8 figure (3), measured by their own code, against a service that
    analyses audio during the whole measurement (`--analysis-workers 1`, the default, with long MP3 records pending)
    and against one with `--analysis-workers 0`, each beside nginx measured in the same minute; and the ratio of the
    two (issue 24: uploads while analysing at least 0.9x of uploads without).

    Each setting has a data directory of its own holding the same records: the 8 + 8's downloads and BACKLOG records
    of the long MP3 (`--audio-minutes`), pending. For each run, a fresh service is started on each directory in
    turn (which goes first alternates, so that the machine's other load weighs on both alike) and stopped after its
    measurement. The analysing one takes the first long record up again at each start (a stop ends the running
    ffmpeg and leaves its record pending), and its measurement begins once its ffmpeg decodes (each setting's after
    a sync and a second's pause: see `settle`); a thread watches that ffmpeg meanwhile (the share of the time one
    ran, and its CPU), and at the end the listing must still show long records pending, or the run fails. A first
    pass of both settings is not counted: in it every upload makes a new file, which the kernel must write back in
    full (a first run measured so was two to three times slower, nginx too, for the setting that came second),
    where later runs replace the files and their records."""
    if not bench.supports("--analysis-workers"):
        return [Row("uploads while analysing", "n/a (no --analysis-workers)")]
    long_audio = audio(bench, "mp3")
    bench.source(bench.options.size), concurrent.eighth(bench)  # made before any server starts
    dirs = {OFF: bench.fresh_dir("data"), ON: bench.fresh_dir("data")}
    stored = {OFF: BACKLOG, ON: BACKLOG}
    for data_dir in dirs.values():
        with bench.service(data_dir, *OFF) as filling:
            concurrent.prepare(bench, filling)
            for index in range(BACKLOG):
                store_long(filling, index, long_audio)
    with bench.reference() as nginx:
        concurrent.prepare(bench, nginx, nginx=True)

        def measure(flags: tuple[str, ...]) -> dict[str, float]:
            with bench.service(dirs[flags], *flags) as service:
                if flags == OFF:
                    settle()
                    return both(bench, service, nginx)
                while len(pending(service)) < BACKLOG:  # one was analysed to its end in an earlier run
                    store_long(service, stored[flags], long_audio)
                    stored[flags] += 1
                with watching(service) as watch:
                    settle()
                    m = both(bench, service, nginx)
                left = pending(service)
            if not left:
                raise BenchError("the long records were all analysed before the measurement ended: store more")
            return {**m, "share": watch.share, "cores": watch.cores, "left": len(left)}

        for flags in (OFF, ON):  # a first pass, not counted: from now on each upload replaces a record or file
            measure(flags)
        turn = [0]

        def one_run() -> dict[str, float]:
            turn[0] += 1
            order = (OFF, ON) if turn[0] % 2 else (ON, OFF)
            measured = {flags: measure(flags) for flags in order}
            off, on = measured[OFF], measured[ON]
            ratios = {f"ratio_{key}": on[key] / off[key] for key in ("ours", "nginx", "tus", "8_ours", "8_nginx")}
            print(f"  run {turn[0]} ({'off' if order[0] == OFF else 'analysing'} first): upload analysing / off "
                  f"{on['ours']:.0f} / {off['ours']:.0f} MB/s ({ratios['ratio_ours']:.2f}x), nginx {on['nginx']:.0f}"
                  f" / {off['nginx']:.0f}; 8 + 8 {on['8_ours']:.0f} / {off['8_ours']:.0f} MB/s"
                  f" ({ratios['ratio_8_ours']:.2f}x); ffmpeg {on['cores']:.2f} cores",
                  file=sys.stderr, flush=True)  # fmt: skip
            return {**{f"off_{k}": v for k, v in off.items()}, **{f"on_{k}": v for k, v in on.items()}, **ratios}

        m = repeat(bench.options.runs, one_run)

    def setting(prefix: str) -> dict[str, float]:
        return {key.removeprefix(prefix): value for key, value in m.items() if key.startswith(prefix)}

    def eights(values: dict[str, float]) -> dict[str, float]:
        return {key.removeprefix("8_"): value for key, value in values.items() if key.startswith("8_")}

    off, on = setting("off_"), setting("on_")
    minutes, size, per_run = f"{bench.options.audio_seconds / 60:g} min", mib(bench.options.size), "ratio per run"

    def ratio(figure: str, key: str, target: Target | None = None) -> Row:
        return ratio_row(f"{figure} (MB/s), {per_run}", on[key], off[key], m[f"ratio_{key}"], target)

    rows = [
        *upload.rows(bench, off, ", analysis off"),
        *upload.rows(bench, on, ", analysing"),
        ratio(f"upload {size}, chunked: analysing / analysis off", "ours", Target(">=", 0.9)),
        ratio(f"nginx's upload {size} while the service analyses / not", "nginx"),
        ratio(f"resumable upload {size}: analysing / analysis off", "tus"),
        *concurrent.rows(bench, eights(off), ", analysis off"),
        *concurrent.rows(bench, eights(on), ", analysing"),
        ratio("8 + 8: analysing / analysis off", "8_ours"),
        ratio("nginx's 8 + 8 while the service analyses / not", "8_nginx"),
        Row(f"analysing: time an ffmpeg decoded (of {minutes} MP3s) / its CPU (cores) / MP3s left pending",
            f"{100 * on['share']:.0f} % / {on['cores']:.2f} / {on['left']:.0f}"),
    ]  # fmt: skip
    return rows


def ratio_row(figure: str, on: float, off: float, ratio: float, target: Target | None = None) -> Row:
    """A row of the service analysing beside it with analysis off: both (medians), and the median of each run's
    ratio (the two measured in the same minute)."""
    return Row(figure, f"{on:.0f} / {off:.0f}", ratio=f"{ratio:.2f}x", target=str(target) if target else "—",
               verdict=target.verdict(ratio) if target else "—")  # fmt: skip


def both(bench: Bench, service: Server, nginx: Server) -> dict[str, float]:
    """One run of the upload figure and one of the 8 + 8 figure (its keys prefixed 8_)."""
    single = upload.measure(bench, service, nginx)
    eight = concurrent.measure(bench, service, nginx)
    return {**single, **{f"8_{key}": value for key, value in eight.items()}}


def store_long(server: Server, index: int, path: Path) -> None:
    """Store the long audio as the record `index` of BUSY_EVENT."""
    fmt = BY_NAME["mp3"]
    url = server.url(record_path(index, BUSY_EVENT))
    finished(curl(path.stat().st_size, False, "-T", str(path), "-H", f"Content-Type: {fmt.content_type}", url))


def pending(server: Server) -> list[str]:
    """The starts of BUSY_EVENT's records whose analysis is pending, as the listing shows them."""
    with urllib.request.urlopen(server.url(f"/records/{BUSY_EVENT}?limit=1000"), timeout=30) as answer:
        listing = json.load(answer)
    return [record["start"] for record in listing["records"] if record.get("analysis") == "pending"]


@dataclasses.dataclass
class Watch:
    """What the thread watching the service's ffmpeg saw: the share of its looks that found one running, and the
    CPU the audio programs used per second of the watch (cores)."""

    share: float = 0.0
    cores: float = 0.0


@contextlib.contextmanager
def watching(service: Server, timeout: float = 600.0) -> Iterator[Watch]:
    """Once the service runs an ffmpeg (BenchError if none within `timeout`), watch it until the block ends. The
    bound is wide: the service first probes the other records pending (the 8 + 8's), and at nice 19 beside busy cores
    its programs get a sliver of CPU (60 s was too short with two `yes` beside the bench)."""
    deadline = time.monotonic() + timeout
    found = programs(service)
    while not any(program_name(pid) == "ffmpeg" for pid in found):
        if time.monotonic() > deadline:
            raise BenchError(f"the service ran no ffmpeg within {timeout:.0f} s of its start")
        time.sleep(0.05)
        found = programs(service)
    cpu = {pid: (process_cpu(pid), process_cpu(pid)) for pid in found}  # pid: (at the start, last seen)
    looks, running, done = [0], [0], threading.Event()

    def watch() -> None:
        known = list(found)
        while not done.wait(SAMPLE):
            alive = [pid for pid in known if program_name(pid) in AUDIO_PROGRAMS]
            if not alive:
                alive = known = programs(service)
            looks[0] += 1
            running[0] += any(program_name(pid) == "ffmpeg" for pid in alive)
            for pid in alive:
                used = process_cpu(pid)
                cpu[pid] = (cpu.get(pid, (0.0, 0.0))[0], used)

    thread = threading.Thread(target=watch, daemon=True)
    began = time.monotonic()
    thread.start()
    result = Watch()
    try:
        yield result
    finally:
        done.set()
        thread.join()
    result.share = running[0] / max(1, looks[0])
    result.cores = sum(last - first for first, last in cpu.values()) / (time.monotonic() - began)


def programs(service: Server) -> list[int]:
    """The service's ffmpeg and ffprobe processes."""
    return [pid for pid in children(service.pid) if program_name(pid) in AUDIO_PROGRAMS]
