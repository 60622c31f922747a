"""Audio to cut, and what a clip holds: a tone staircase (each second a pitch of its own, so that the pitch heard
says where in the record a clip starts) in MP3 and Ogg/Opus as ffmpeg writes them; and of a clip, its length as
ffmpeg decodes it, the staircase's step at its start (the strongest of the steps' pitches over its first 100 ms, by
the Goertzel algorithm in plain Python), its codec and bitrate (ffprobe)."""

from __future__ import annotations

import array
import dataclasses
import json
import math
import subprocess
from pathlib import Path

from support.components import require

BASE_HZ, STEP_HZ, STEPS = 300, 50, 30  # second k plays BASE_HZ + STEP_HZ * (k % STEPS): 300 to 1750 Hz
RATE = 8000  # the rate clips are decoded at to read their pitch
WINDOW = 0.1  # seconds of a clip's start whose pitch is read


@dataclasses.dataclass(frozen=True)
class Encoding:
    """How the staircase is written: its test id, file suffix, Content-Type, ffmpeg's output arguments, the codec
    ffprobe names."""

    name: str
    suffix: str
    type: str
    arguments: tuple[str, ...]
    codec: str


MP3 = Encoding("mp3", "mp3", "audio/mpeg", ("-c:a", "libmp3lame", "-b:a", "128k"), "mp3")
OPUS = Encoding("opus", "opus", "audio/ogg", ("-c:a", "libopus", "-b:a", "96k", "-f", "ogg"), "opus")
ENCODINGS = (MP3, OPUS)
WAV = Encoding("wav", "wav", "audio/wav", ("-c:a", "pcm_s16le"), "pcm_s16le")  # what other programs read it from


def staircase(path: Path, encoding: Encoding, seconds: float, rate: int = 48000) -> Path:
    """`seconds` of the staircase (stereo, at `rate` Hz), written to `path` by ffmpeg with its default settings for
    the codec (Ogg: pages of about a second)."""
    tone = f"0.3*sin(2*PI*({BASE_HZ}+{STEP_HZ}*mod(floor(t)\\,{STEPS}))*t)"
    subprocess.run(
        [require("ffmpeg"), "-v", "error", "-y", "-f", "lavfi", "-i", f"aevalsrc={tone}|{tone}:s={rate}:d={seconds}",
         *encoding.arguments, str(path)],
        check=True,
    )  # fmt: skip
    return path


def step_at(seconds: float) -> int:
    """The staircase's step playing at `seconds`."""
    return math.floor(seconds) % STEPS


def decode(data: bytes) -> array.array:
    """The audio of a file's bytes as ffmpeg decodes it: mono 16-bit samples at RATE."""
    out = subprocess.run(
        [require("ffmpeg"), "-v", "error", "-i", "pipe:0", "-map", "0:a:0", "-ac", "1", "-ar", str(RATE), "-f", "s16le",
         "pipe:1"],
        input=data, check=True, capture_output=True,
    ).stdout  # fmt: skip
    return array.array("h", out)


def seconds_of(data: bytes) -> float:
    """How long a file's audio lasts, decoded."""
    return len(decode(data)) / RATE


def first_step(data: bytes) -> int:
    """The step of the staircase heard in the first WINDOW seconds of a file's audio."""
    samples = decode(data)[: int(RATE * WINDOW)]
    return max(range(STEPS), key=lambda k: _power(samples, BASE_HZ + STEP_HZ * k))


def _power(samples: array.array, frequency: float) -> float:
    """The power of one frequency in the samples (Goertzel)."""
    coefficient = 2 * math.cos(2 * math.pi * frequency / RATE)
    before = earlier = 0.0
    for sample in samples:
        before, earlier = sample + coefficient * before - earlier, before
    return before * before + earlier * earlier - coefficient * before * earlier


def probed(path: Path) -> dict:
    """ffprobe's facts of a file: its audio stream's codec_name, sample_rate, channels, bit_rate, and the format's
    format_name, duration and bit_rate (strings, as ffprobe gives them)."""
    out = subprocess.run(
        [require("ffprobe"), "-v", "error", "-select_streams", "a:0", "-show_entries",
         "stream=codec_name,sample_rate,channels,bit_rate:format=format_name,duration,bit_rate", "-of", "json",
         str(path)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    facts = json.loads(out)
    return {**facts["streams"][0], **{f"format_{k}": v for k, v in facts["format"].items()}}


def bitrate(facts: dict) -> int:
    """The bitrate ffprobe gives a file: its stream's, else its format's."""
    return int(facts.get("bit_rate") or facts["format_bit_rate"])


def packets(path: Path) -> bytes:
    """The bytes of a file's audio packets one after the other, as its demuxer reads them (nothing decoded)."""
    return subprocess.run(
        [require("ffmpeg"), "-v", "error", "-i", str(path), "-map", "0:a:0", "-c", "copy", "-f", "data", "pipe:1"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip


def step_heard(path: Path, seconds: float) -> int:
    """The staircase's step that a file plays at `seconds`, decoded from its start (a file whose steps do not follow
    its clock, such as a minute repeated)."""
    out = subprocess.run(
        [require("ffmpeg"), "-v", "error", "-i", str(path), "-ss", f"{seconds:.3f}", "-t", f"{WINDOW}", "-f", "wav",
         "pipe:1"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    return first_step(out)


def assert_clip_of(body: bytes, source: Path, start: float, length: float, tmp_path: Path,
                   step: int | None = None) -> None:  # fmt: skip
    """The clip decodes, lasts `length` within 0.1 s, begins with the staircase's step at `start` (or `step`), holds
    the source's packets copied (no re-encoding), and has the source's codec, sample rate and channels, and its
    bitrate where that is constant (MP3; Opus's varies from second to second)."""
    expected = step_at(start) if step is None else step
    seconds, heard = seconds_of(body), first_step(body)
    assert abs(seconds - length) <= 0.1, f"the clip from {start} s lasts {seconds} s, not {length} s"
    assert heard == expected, f"the clip from {start} s begins with the step of {heard}, not {expected}"
    cut = tmp_path / f"clip{source.suffix}"
    cut.write_bytes(body)
    ours, theirs = probed(cut), probed(source)
    assert {k: ours[k] for k in ("codec_name", "sample_rate", "channels", "format_format_name")} == {
        k: theirs[k] for k in ("codec_name", "sample_rate", "channels", "format_format_name")
    }
    copied = packets(cut)
    assert copied and copied in packets(source), "the clip's packets are not a run of the source's"
    if ours["codec_name"] == "mp3":
        assert abs(bitrate(ours) - bitrate(theirs)) <= 0.1 * bitrate(theirs), (ours, theirs)
