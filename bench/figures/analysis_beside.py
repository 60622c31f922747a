"""13. The upload and the 8 + 8 figures with the service analysing audio beside them, and with no analysis."""

from __future__ import annotations

import contextlib
import dataclasses
import json
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


def run(bench: Bench) -> list[Row]:
    """13. The upload figure (1) and the 8 + 8 figure (3), measured by their own code, against a service that
    analyses audio during the whole measurement (`--analysis-workers 1`, the default, with long MP3 records pending)
    and against one with `--analysis-workers 0`, each beside nginx measured in the same minute; and the ratio of the
    two (issue 24: uploads while analysing at least 0.9x of uploads without).

    The analysing service runs on one data directory that holds BACKLOG records of the long MP3 (`--audio-minutes`)
    pending; it is started for each run, so that its analyzer takes up the first of them again (a stop ends the
    running ffmpeg and leaves its record pending), and each measurement begins once its ffmpeg decodes. A thread
    watches that ffmpeg meanwhile (the share of the time one ran, and its CPU), and at the end the listing must
    still show long records pending, or the run fails. The two settings take turns in each run (which one goes
    first alternates), so that the machine's other load weighs on both alike."""
    if not bench.supports("--analysis-workers"):
        return [Row("uploads while analysing", "n/a (no --analysis-workers)")]
    long_audio = audio(bench, "mp3")
    bench.source(bench.options.size), concurrent.eighth(bench)  # made before any server starts
    busy_dir = bench.fresh_dir("data")
    with bench.reference() as nginx, bench.service(None, *OFF) as idle:
        concurrent.prepare(bench, idle)
        concurrent.prepare(bench, nginx, nginx=True)
        with bench.service(busy_dir, *OFF) as filling:
            concurrent.prepare(bench, filling)
            for index in range(BACKLOG):
                store_long(filling, index, long_audio)
        stored, turn = [BACKLOG], [0]

        def without() -> dict[str, float]:
            return both(bench, idle, nginx)

        def analysing() -> dict[str, float]:
            with bench.service(busy_dir, *ON) as busy:
                while len(pending(busy)) < BACKLOG:  # one was analysed to its end in an earlier run
                    store_long(busy, stored[0], long_audio)
                    stored[0] += 1
                with watching(busy) as watch:
                    m = both(bench, busy, nginx)
                left = pending(busy)
            if not left:
                raise BenchError("the long records were all analysed before the measurement ended: store more")
            return {**m, "share": watch.share, "cores": watch.cores, "left": len(left)}

        def one_run() -> dict[str, float]:
            turn[0] += 1
            first, second = (without, analysing) if turn[0] % 2 else (analysing, without)
            a, b = first(), second()
            off, on = (a, b) if first is without else (b, a)
            ratios = {f"ratio_{key}": on[key] / off[key] for key in ("ours", "tus", "8_ours")}
            return {**{f"off_{k}": v for k, v in off.items()}, **{f"on_{k}": v for k, v in on.items()}, **ratios}

        m = repeat(bench.options.runs, one_run)

    def setting(prefix: str) -> dict[str, float]:
        return {key.removeprefix(prefix): value for key, value in m.items() if key.startswith(prefix)}

    def eights(values: dict[str, float]) -> dict[str, float]:
        return {key.removeprefix("8_"): value for key, value in values.items() if key.startswith("8_")}

    off, on = setting("off_"), setting("on_")
    minutes = f"{bench.options.audio_seconds / 60:g} min"
    rows = [
        *upload.rows(bench, off, ", analysis off"),
        *upload.rows(bench, on, ", analysing"),
        ratio_row(f"upload {mib(bench.options.size)}, chunked: analysing / analysis off (MB/s)", on["ours"], off["ours"],
                  m["ratio_ours"], Target(">=", 0.9)),
        ratio_row(f"resumable upload {mib(bench.options.size)}: analysing / analysis off (MB/s)", on["tus"], off["tus"],
                  m["ratio_tus"]),
        *concurrent.rows(bench, eights(off), ", analysis off"),
        *concurrent.rows(bench, eights(on), ", analysing"),
        ratio_row("8 + 8: analysing / analysis off (MB/s)", on["8_ours"], off["8_ours"], m["ratio_8_ours"]),
        Row(f"analysing: time an ffmpeg decoded (of {minutes} MP3s) / its CPU (cores) / MP3s left pending",
            f"{100 * on['share']:.0f} % / {on['cores']:.2f} / {on['left']:.0f}"),
    ]  # fmt: skip
    return rows


def ratio_row(figure: str, on: float, off: float, ratio: float, target: Target | None = None) -> Row:
    """A row of the service analysing beside it with analysis off: both (medians) and the median of the runs' ratios."""
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
def watching(service: Server, timeout: float = 60.0) -> Iterator[Watch]:
    """Once the service runs an ffmpeg (BenchError if none within `timeout`), watch it until the block ends."""
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
