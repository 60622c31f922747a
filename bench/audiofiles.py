"""The audio of the analysis figures: stereo pink noise at about -20 dBFS with 3 s of silence at the start of each
minute, in each format a station keeps, made with ffmpeg. The bench's own formats, at a broadcast's settings
(44.1 kHz stereo, Opus at 48 kHz), not the tests' (tests/support/audio.py varies rates and channels to test the
facts); noise, not a tone, so that the lossless formats are as large as real programme audio makes them.

A long file is made from one encoded segment of SEGMENT seconds, repeated by ffmpeg's concat demuxer with a stream
copy (an hour takes about a second instead of a minute of encoding); FLAC is encoded again while joined, because
the copy keeps the first segment's length in its STREAMINFO and the analysis would take the file for 5 minutes long.
Decoding costs the same whether the audio repeats or not.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from harness import Bench, BenchError

SEGMENT = 300.0  # seconds encoded; longer files repeat it


@dataclasses.dataclass(frozen=True)
class AudioFormat:
    """One format the figures analyse and upload."""

    name: str
    label: str  # as the table names it
    suffix: str
    content_type: str
    encode: tuple[str, ...]  # ffmpeg's output options
    copy_joins: bool = True  # whether the segments can be joined by a stream copy


FORMATS = (
    AudioFormat("mp3", "MP3 128 kbit/s", "mp3", "audio/mpeg", ("-c:a", "libmp3lame", "-b:a", "128k")),
    AudioFormat("opus", "Ogg/Opus 96 kbit/s", "opus", "audio/ogg", ("-c:a", "libopus", "-b:a", "96k", "-ar", "48000")),
    AudioFormat("vorbis", "Ogg/Vorbis q4", "ogg", "audio/ogg", ("-c:a", "libvorbis", "-q:a", "4")),
    AudioFormat("flac", "FLAC 16 bit", "flac", "audio/flac", ("-c:a", "flac", "-sample_fmt", "s16"), copy_joins=False),
    AudioFormat("wav", "WAV 16 bit", "wav", "audio/wav", ("-c:a", "pcm_s16le")),
    AudioFormat("aac", "AAC 128 kbit/s in MP4", "m4a", "audio/mp4", ("-c:a", "aac", "-b:a", "128k")),
)
BY_NAME = {fmt.name: fmt for fmt in FORMATS}


def _noise(seconds: float) -> str:
    channel = "anoisesrc=c=pink:a=0.2:r=44100:d={d:g}:s={seed}[{pad}]"
    silences = "volume='if(lt(mod(t\\,60)\\,3)\\,0\\,1)':eval=frame"
    return (
        f"{channel.format(d=seconds, seed=1, pad='l')};{channel.format(d=seconds, seed=2, pad='r')};"
        f"[l][r]amerge=inputs=2,{silences}[out]"
    )


def _ffmpeg(*arguments: str) -> None:
    program = shutil.which("ffmpeg")
    if program is None:
        raise BenchError("ffmpeg is not installed (apt-get install ffmpeg)")
    done = subprocess.run([program, "-v", "error", "-nostdin", "-y", *arguments], capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError(f"ffmpeg {' '.join(arguments[-3:])} failed: {done.stderr.strip()[-500:]}")


def duration(path: Path) -> float:
    """The length of the audio in the file, as ffprobe reads it from the container."""
    probed = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "json", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return float(json.loads(probed)["format"]["duration"])


def generate(directory: Path, fmt: AudioFormat, seconds: float) -> Path:
    """A file of `seconds` of the noise in `fmt`, made in `directory` (the segment is kept there beside it)."""
    began = time.monotonic()
    segment = directory / f"segment-{fmt.name}.{fmt.suffix}"
    _ffmpeg("-filter_complex", _noise(min(seconds, SEGMENT)), "-map", "[out]", *fmt.encode, str(segment))
    if seconds <= SEGMENT:
        path = segment
    else:
        path = directory / f"audio-{fmt.name}-{seconds:g}s.{fmt.suffix}"
        joins = directory / f"segments-{fmt.name}.txt"
        joins.write_text(f"file '{segment.name}'\n" * round(seconds / SEGMENT))
        _ffmpeg("-f", "concat", "-safe", "0", "-i", str(joins), *(("-c", "copy") if fmt.copy_joins else fmt.encode),
                str(path))  # fmt: skip
    made = duration(path)
    if abs(made - seconds) > 1.0 + 0.05 * round(seconds / SEGMENT):  # a copied join keeps its padding (MP3: ~40 ms)
        raise BenchError(f"{path.name} holds {made:.1f} s of audio, not {seconds:g} s")
    print(f"  {fmt.label}: {seconds / 60:g} min of audio made in {time.monotonic() - began:.1f} s "
          f"({path.stat().st_size / 1e6:.0f} MB)", file=sys.stderr, flush=True)  # fmt: skip
    return path


_made: dict[tuple[Path, str], Path] = {}


def audio(bench: Bench, name: str) -> Path:
    """The noise in the format `name` (a key of BY_NAME), as long as the options say (`--audio-minutes`), made once
    per invocation in its temporary directory."""
    key = (bench.root, name)
    if key not in _made:
        directory = bench.root / "audio"
        directory.mkdir(exist_ok=True)
        _made[key] = generate(directory, BY_NAME[name], bench.options.audio_seconds)
    return _made[key]
