"""What a file's audio holds, as ffprobe and one decode by ffmpeg find it: the container and codec, the sample rate
and channels, the bitrate (ffprobe); the duration, the integrated loudness and true peak (the `ebur128` filter, EBU
R128 / ITU-R BS.1770), the silences (`silencedetect`) and the waveform's peaks (`astats` over windows of samples),
all from that one decode. A pure function of a file and the settings; it blocks (run it in a thread).

Content that holds no audio stream that ffmpeg can decode is `unsupported`; a program that fails, or outlasts its
time bound, makes the analysis `failed`.
"""

from __future__ import annotations

import array
import dataclasses
import json
import math
import os
import re
from pathlib import Path
from typing import Any, BinaryIO, Callable

from tornado_records.audio.programs import ProgramFailed, Programs

PIXELS_PER_SECOND = 20  # the waveform's resolution where the record is short enough...
MAX_PIXELS = 30_000  # ...and its bound: a three-hour show gets one pixel per 0.36 s (about 250 kB of JSON)
PROBE_SECONDS = 30.0  # ffprobe's time bound
DECODE_BASE_SECONDS = 120.0  # ffmpeg's time bound: this, plus the audio's own duration (it decodes far faster)

# ffprobe's container names, where its first name is not what a person calls the format
FORMAT_NAMES = {"mov": "mp4", "matroska": "matroska", "wav": "wav", "ogg": "ogg", "flac": "flac", "mp3": "mp3"}


@dataclasses.dataclass(frozen=True)
class Analysis:
    """The outcome for one version: `state` done, unsupported or failed; where done, the `audio` facts (as the API
    shows them) and the waveform (`peaks`: min/max pairs of signed bytes, each of `samples_per_pixel` samples at
    `sample_rate`)."""

    state: str
    audio: dict[str, Any] | None = None
    peaks: bytes = b""
    samples_per_pixel: int = 0
    sample_rate: int = 0
    reason: str = ""  # why it is unsupported or failed, for the log

    @property
    def duration(self) -> float | None:
        return None if self.audio is None else self.audio["duration"]


def analyze(
    source: Path | int | str,
    programs: Programs,
    silence_threshold: float,
    silence_min: float,
    size: int | None = None,
    environment: dict[str, str] | None = None,
) -> Analysis:
    """The facts of the audio in the file at a path, or open as a file descriptor (which the programs are given: a
    file removed meanwhile is read all the same), or at a URL that ffmpeg reads itself (a str; the content's `size`
    given, and the programs' `environment` where it is not the service's); blocks for as long as ffprobe and ffmpeg
    take."""
    fds = (source,) if isinstance(source, int) else ()
    path = Path(f"/dev/fd/{source}") if isinstance(source, int) else source
    try:
        probed = probe(path, programs, fds, environment=environment)
    except ProgramFailed as exc:
        return Analysis("failed", reason=str(exc))
    if probed is None:
        return Analysis("unsupported", reason="no audio stream that ffmpeg can read")
    stream, container = probed
    sample_rate = _int(stream.get("sample_rate"))
    if not sample_rate:
        return Analysis("unsupported", reason="an audio stream without a sample rate")
    known = _float(container.get("duration")) or _float(stream.get("duration"))
    pixel = max(sample_rate // PIXELS_PER_SECOND, math.ceil(sample_rate * (known or 0) / MAX_PIXELS))
    try:
        log = programs.run(_decode_arguments(path, pixel, silence_threshold, silence_min),
                           DECODE_BASE_SECONDS + (known or 0), fds=fds, environment=environment)  # fmt: skip
    except ProgramFailed as exc:
        return Analysis("failed", reason=str(exc))
    decoded = _decoded(log, pixel, sample_rate)
    if decoded is None:
        return Analysis("unsupported", reason="no audio could be decoded")
    peaks, pixel, samples = decoded
    duration = samples / sample_rate
    loudness, true_peak = _loudness(log)
    if size is None:
        size = os.fstat(source).st_size if isinstance(source, int) else Path(path).stat().st_size
    bitrate = _int(stream.get("bit_rate")) or _int(container.get("bit_rate")) or round(size * 8 / duration)
    audio = {
        "format": format_name(container.get("format_name", "")),
        "codec": stream.get("codec_name"),
        "duration": round(duration, 3),
        "bitrate": bitrate,
        "sample_rate": sample_rate,
        "channels": _int(stream.get("channels")),
        "loudness": loudness,
        "true_peak": true_peak,
        "silences": _silences(log, duration),
    }
    return Analysis("done", audio, peaks, pixel, sample_rate)


def probe(
    path: Path | str,
    programs: Programs,
    fds: tuple[int, ...],
    feed: Callable[[BinaryIO], None] | None = None,
    count: bool = False,
    environment: dict[str, str] | None = None,
) -> tuple[dict, dict] | None:
    """The first audio stream's facts and the container's, or None if there is no audio stream: of the file at `path`
    (or ffmpeg's input URL, read with `environment`), with `fds` open, and `feed` writing its standard input
    if given; with `count`, the stream's packets counted too (`nb_read_packets`: the file is read to its end)."""
    arguments = [
        "ffprobe", "-v", "error", "-select_streams", "a:0", *(("-count_packets",) if count else ()),
        "-show_entries",
        "format=format_name,duration,bit_rate:stream=codec_name,sample_rate,channels,bit_rate,duration"
        + (",nb_read_packets" if count else ""),
        "-of", "json", str(path),
    ]  # fmt: skip
    try:
        output = programs.run(arguments, PROBE_SECONDS, output=True, fds=fds, feed=feed, environment=environment)
    except ProgramFailed as exc:
        if exc.returncode is not None and exc.returncode > 0:  # ffprobe found nothing it can read
            return None
        raise
    facts = json.loads(output or "{}")
    streams = facts.get("streams") or []
    return (streams[0], facts.get("format") or {}) if streams else None


def _decode_arguments(path: Path | str, pixel: int, threshold: float, minimum: float) -> list[str]:
    """One decode of the first audio stream into three filters: loudness, silences, and peaks of `pixel`-sample
    windows (printed for each window)."""
    graph = (
        f"[0:a:0]asplit=2[a][b];"
        f"[a]ebur128=peak=true:framelog=verbose,silencedetect=n={threshold:.3f}dB:d={minimum:.3f},anullsink;"
        f"[b]aformat=sample_fmts=flt,asetnsamples=n={pixel}:p=0,astats=metadata=1:reset=1:measure_perchannel=none"
        f":measure_overall=Min_level+Max_level+Number_of_samples,ametadata=mode=print[out]"
    )
    return [
        "ffmpeg", "-nostdin", "-hide_banner", "-nostats", "-loglevel", "info",
        "-threads", "1", "-filter_complex_threads", "1",  # one core: the service's requests keep the other
        "-i", str(path), "-filter_complex", graph, "-map", "[out]", "-f", "null", "-",
    ]  # fmt: skip


_WINDOW = re.compile(
    r"Overall\.Min_level=(\S+)\n.*?Overall\.Max_level=(\S+)\n.*?Overall\.Number_of_samples=(\S+)", re.DOTALL
)  # fmt: skip


def _decoded(log: str, pixel: int, sample_rate: int) -> tuple[bytes, int, int] | None:
    """The peaks (min/max pairs of signed bytes, windows merged until there are at most MAX_PIXELS), the samples per
    pixel, and how many samples were decoded; None if none were."""
    lows, highs, samples = [], [], 0
    for low, high, count in _WINDOW.findall(log):
        lows.append(_level(low))
        highs.append(_level(high))
        samples += int(float(count))
    if not samples:
        return None
    merge = max(1, math.ceil(len(lows) / MAX_PIXELS))
    peaks = array.array("b")
    for i in range(0, len(lows), merge):
        peaks.append(min(lows[i : i + merge]))
        peaks.append(max(highs[i : i + merge]))
    return peaks.tobytes(), pixel * merge, samples


def _level(text: str) -> int:
    """A sample level (-1 to 1) as a signed byte."""
    value = _float(text) or 0.0
    return max(-128, min(127, round(value * 127)))


def _loudness(log: str) -> tuple[float | None, float | None]:
    """The integrated loudness (LUFS) and true peak (dBTP) of the last ebur128 summary (ffmpeg prints one for the
    graph it only configured, first); None where the audio is silent (-70 LUFS is the gate's floor, -inf no peak)."""
    integrated = re.findall(r"^\s+I:\s+(\S+) LUFS", log, re.MULTILINE)
    peak = re.findall(r"^\s+Peak:\s+(\S+) dBFS", log, re.MULTILINE)
    loudness = _float(integrated[-1]) if integrated else None
    true_peak = _float(peak[-1]) if peak else None
    return (None if loudness is None or loudness <= -70.0 else loudness), true_peak


def _silences(log: str, duration: float) -> list[dict[str, float]]:
    """The silences silencedetect found: [{start, end}] in seconds; one still going at the end ends with the audio."""
    silences: list[dict[str, float]] = []
    for kind, value in re.findall(r"silence_(start|end): (\S+)", log):
        seconds = max(0.0, _float(value) or 0.0)
        if kind == "start":
            silences.append({"start": round(seconds, 3), "end": round(duration, 3)})
        elif silences:
            silences[-1]["end"] = round(min(seconds, duration), 3)
    return silences


def format_name(names: str) -> str:
    """What a person calls a container that ffprobe names `names` (mp3, ogg, mp4, matroska, ...)."""
    first = names.split(",")[0]
    return FORMAT_NAMES.get(first, first)


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
