"""12. The audio analysis's cost per hour of audio, in each format."""

from __future__ import annotations

import resource
import sys
import time

from audiofiles import FORMATS, audio
from harness import Bench, BenchError
from table import Row, repeat

HOUR = 3600.0


def run(bench: Bench) -> list[Row]:
    """12. What the service's analysis of one record costs (issue 24), per format: `facts.analyze` called as the
    analyzer calls it (a Programs(): ffprobe, then one ffmpeg decode at nice 19 with ebur128, silencedetect and
    astats), on an hour of audio (with --quick, 5 minutes, scaled to the hour); in this process, that is with the
    bench's Python's tornado_records, whatever --service says.

    Per hour of audio: the CPU time (user + system) of ffprobe and ffmpeg (the deltas of RUSAGE_CHILDREN), the CPU
    time of the calling thread (what the service's thread spends reading and parsing ffmpeg's log, in Python, under
    the service's GIL), the wall time, and the speed (seconds of audio per second of wall time). The wall time is
    nice 19's: on a busy machine it is what is left to the analysis."""
    try:
        from tornado_records.audio.facts import analyze
        from tornado_records.audio.programs import Programs
    except ImportError:
        return [Row("analysis of 1 h of audio", "n/a (no tornado_records.audio)")]
    seconds = bench.options.audio_seconds
    scaled = "" if seconds == HOUR else f" ({seconds / 60:g} min measured, scaled)"
    rows = []
    for fmt in FORMATS:
        path = audio(bench, fmt.name)

        def measure() -> dict[str, float]:
            before, thread = resource.getrusage(resource.RUSAGE_CHILDREN), time.thread_time()
            began = time.monotonic()
            analysis = analyze(path, Programs(), -50.0, 2.0)
            wall, python = time.monotonic() - began, time.thread_time() - thread
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if analysis.state != "done" or abs(analysis.duration - seconds) > 1.0:
                raise BenchError(f"the analysis of {path.name}: {analysis.state} {analysis.reason} {analysis.duration}")
            programs = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
            per_hour = HOUR / analysis.duration
            return {"cpu": programs * per_hour, "python": python * per_hour, "wall": wall * per_hour,
                    "speed": analysis.duration / wall}  # fmt: skip

        m = repeat(bench.options.runs, measure)
        print(f"  analysis of {fmt.label}: {m['cpu']:.1f} s CPU per hour of audio", file=sys.stderr, flush=True)
        rows.append(Row(
            f"analysis of 1 h of {fmt.label}: CPU s, ffmpeg + service thread / wall s / speed{scaled}",
            f"{m['cpu']:.1f} + {m['python']:.1f} / {m['wall']:.0f} / {m['speed']:.0f}x",
        ))  # fmt: skip
    return rows
