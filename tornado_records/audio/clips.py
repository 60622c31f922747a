"""Clips: the audio of a record between two times, as a file of the record's own format, cut by ffmpeg with a stream
copy (no decoding, no encoding: the source's codec, bitrate and quality) at packet boundaries, the nearest that keep
the asked range (the packet holding its start to the packet holding its end).

ffmpeg seeks by the container's own means (a seek an second before the start: MP3 by its bitrate or by a scan of its
frame headers, Ogg by a bisection on its pages' granule positions, FLAC by its seek table, MP4 by its sample table,
WAV by arithmetic) and reads only from there; the packets before the start are then dropped one by one (an output
`-ss`), so that a clip starts at a packet even in Ogg, whose pages hold about a second each. The clip is written to a
nameless file in the data directory's tmp/ (its muxer can then seek back to write its header: MP3's Xing frame count,
WAV's sizes, MP4's index), then sent whole, with its Content-Length.

Where the content has a file of its own (the files engine), ffmpeg reads it (or its runs, for an appended record)
through a descriptor; otherwise (an object store) it reads it through a pipe fed from the store's reader, without a
copy on the disk: an Ogg stream from its header pages and a page before the clip (audio/ogg.py), anything else from
the start of the content, demuxing what comes before the clip without decoding it.

At most `workers` cuts run at once (each in a thread, its ffmpeg bounded in time); one more is refused (`TooMany`).
Knows no HTTP: what a handler answers follows from the exceptions below.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from tornado_records.audio import ogg
from tornado_records.audio.facts import format_name, probe
from tornado_records.audio.spans import Span
from tornado_records.audio.programs import ProgramFailed, Programs, Stopper
from tornado_records.storage.model import Blob

SEEK_MARGIN = 1.0  # seconds before the clip where ffmpeg's seek aims: the packets from there are read, not decoded
CUT_BASE_SECONDS = 60.0  # a cut's time bound: this, plus a tenth of the clip's length
FEED_BLOCK = 1 << 20


class ClipError(Exception):
    """A clip that cannot be made; the message says why, for the client."""


class PastTheEnd(ClipError):
    """The range starts at or after the end of the audio."""


class NotCuttable(ClipError):
    """The record's content is not audio, or not in a format the service cuts without encoding."""


class TooMany(ClipError):
    """As many cuts as allowed are running."""


# -- formats -----------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Container:
    """How a clip of a container's audio is written: ffmpeg's muxer, its options, the file's extension."""

    muxer: str
    extension: str
    options: tuple[str, ...] = ()


# By the container's name as the analysis gives it (facts.FORMAT_NAMES). Others (AIFF, CAF, WavPack, ...) are not cut.
CONTAINERS = {
    "mp3": Container("mp3", "mp3"),
    "ogg": Container("ogg", "ogg"),
    "flac": Container("flac", "flac"),
    "wav": Container("wav", "wav"),
    "aac": Container("adts", "aac"),
    "mp4": Container("mp4", "m4a", ("-movflags", "+faststart")),
    "matroska": Container("matroska", "mka"),
}
EXTENSION_OF_CODEC = {("ogg", "opus"): "opus", ("matroska", "opus"): "webm", ("matroska", "vorbis"): "webm"}
# Samples in one packet of a codec (the most it usually holds), to start a clip at the packet holding its start;
# MP3's is two frames: the first frame of a cut decodes as silence where it borrows bits from the frame before (the
# bit reservoir); Opus's is 20 ms, and its decoder's pre-skip (6.5 ms at most for libopus) is taken too.
PACKET_SAMPLES = {"mp3": 2 * 1152, "aac": 1024, "vorbis": 1024, "flac": 4608}
OPUS_PACKET = 0.03


@dataclasses.dataclass(frozen=True)
class Audio:
    """What a cut needs to know of the record's audio (from its analysis, or from ffprobe where it has none)."""

    format: str
    codec: str
    sample_rate: int
    duration: float | None  # None: not known (a pipe's content that ffprobe could not measure)
    bitrate: int | None = None  # as the analysis measured it, with the duration decoded (None: ffprobe's guesses)

    @classmethod
    def of(cls, facts: dict[str, Any]) -> Audio:
        """From the analysis's `audio` facts."""
        return cls(facts["format"], facts["codec"] or "", facts["sample_rate"] or 0, facts["duration"],
                   facts.get("bitrate"))  # fmt: skip

    @property
    def packet(self) -> float:
        """The seconds of a packet of its codec (at most, as encoders write them)."""
        if self.codec == "opus":
            return OPUS_PACKET
        return PACKET_SAMPLES.get(self.codec, 1024) / (self.sample_rate or 8000)

    def container(self, record_type: str) -> Container:
        """How its clips are written; NotCuttable if they are not."""
        container = CONTAINERS.get(self.format)
        if container is None:
            raise NotCuttable(f"its audio is in a format ({self.format}) that the service does not cut without "
                              f"re-encoding; it cuts MP3, Ogg, FLAC, WAV, AAC (ADTS), MP4/M4A and Matroska/WebM")  # fmt: skip
        extension = EXTENSION_OF_CODEC.get((self.format, self.codec), container.extension)
        if self.format == "matroska" and ("webm" in record_type.lower()) != (extension == "webm"):
            extension = "webm" if "webm" in record_type.lower() else "mka"
        muxer = "webm" if extension == "webm" else container.muxer
        return Container(muxer, extension, container.options)


# -- the content as ffmpeg reads it ------------------------------------------------------------------------------


@dataclasses.dataclass
class Source:
    """The content as ffmpeg's input: `url` (a descriptor's path, several descriptors' runs, or the standard
    input), the descriptors it needs open, what feeds its standard input (None: nothing), and where its first bytes
    are (a descriptor and an offset) where it has files."""

    url: str
    fds: tuple[int, ...] = ()
    feed: Callable[[BinaryIO], None] | None = None
    first: tuple[int, int] | None = None
    blob: Blob | None = None  # the content that feeds it, where it has no file
    size: int = 0  # the content's bytes
    absolute: bool = False  # fed from the middle of the content: ffmpeg is to keep its timestamps (-copyts)

    @property
    def seekable(self) -> bool:
        return self.feed is None

    def read(self, at: int, size: int) -> bytes:
        """Up to `size` bytes from `at` in its first file (b"" where it has none)."""
        return b"" if self.first is None else os.pread(self.first[0], size, self.first[1] + at)


@contextlib.contextmanager
def source_of(blob: Blob) -> Iterator[Source]:
    """The blob's content as ffmpeg reads it, for the block: its files' descriptors where it has files (one file, or
    its runs joined by ffmpeg's concat and subfile protocols), else its reader feeding a pipe. Blocks."""
    if not blob.file.local:
        yield Source("pipe:0", feed=lambda pipe: _copy(blob, pipe), blob=blob, size=blob.record.size)
        return
    runs: list[tuple[int, int, int]] = []
    try:
        for fd, offset, length in blob.file.runs(0, blob.record.size):  # type: ignore[attr-defined]
            runs.append((os.dup(fd), offset, length))  # a run's descriptor is the reader's until the next run
        fds = tuple(fd for fd, _, _ in runs)
        first = (runs[0][0], runs[0][1]) if runs else None
        if len(runs) == 1 and runs[0][1] == 0 and os.fstat(runs[0][0]).st_size == runs[0][2]:
            yield Source(f"file:/dev/fd/{runs[0][0]}", fds, first=first, size=blob.record.size)
        else:
            parts = (f"subfile,,start,{offset},end,{offset + length},,:/dev/fd/{fd}" for fd, offset, length in runs)
            yield Source("concat:" + "|".join(parts), fds, first=first, size=blob.record.size)
    finally:
        for fd, _, _ in runs:
            os.close(fd)


def _copy(blob: Blob, pipe: BinaryIO, start: int = 0, head: bytes = b"") -> None:
    """`head`, then the content from `start` into `pipe`, until its end or until the program reading it stops."""
    pipe.write(head)
    blob.file.seek(start)
    while data := blob.file.read(FEED_BLOCK):
        pipe.write(data)


def _reader(blob: Blob) -> Callable[[int, int], bytes]:
    """Reads of `size` bytes (fewer at the end) from any offset of the content."""

    def read(at: int, size: int) -> bytes:
        blob.file.seek(at)
        data = bytearray()
        while len(data) < size and (more := blob.file.read(size - len(data))):
            data += more
        return bytes(data)

    return read


def nearer(source: Source, audio: Audio, seconds: float) -> Source:
    """A piped Ogg source fed from a page before `seconds` (after its header pages) instead of from its start, where
    its audio's duration is known and it is one bitstream (audio/ogg.py); else the source as it is. Blocks."""
    if source.blob is None or audio.format != "ogg" or audio.duration is None or seconds <= 0:
        return source
    read = _reader(source.blob)
    found = ogg.headers(read)
    if found is None:
        return source
    head, serial = found
    rate = 48000 if audio.codec == "opus" else audio.sample_rate  # Opus's granule positions count at 48 kHz
    at = ogg.page_before(read, source.blob.record.size, serial, len(head), seconds, rate or 48000)
    if at is None or at <= len(head):
        return source
    blob = source.blob
    return dataclasses.replace(source, feed=lambda pipe: _copy(blob, pipe, at, head), absolute=True)


# -- cutting -----------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Clip:
    """A cut clip: its `file` (nameless; the caller closes it), its `size`, the range it was cut for (its end no later
    than the audio's), and its file's extension."""

    file: BinaryIO
    size: int
    span: Span
    extension: str


def _tag_size(source: Source) -> int:
    """The bytes of the ID3v2 tag that begins an MP3 (0: none)."""
    head = source.read(0, 10)
    if head[:3] == b"ID3" and len(head) == 10:  # its size is 4 bytes of 7 bits, and a footer if it says so
        return 10 + int.from_bytes(bytes(b & 0x7F for b in head[6:10]), "big") + (10 if head[5] & 0x10 else 0)
    return 0


def constant_bitrate_mp3(source: Source) -> bool:
    """Whether the source is an MP3 whose first frame says it is of a constant bitrate (LAME's and ffmpeg's `Info`
    frame), so that a time's position is a matter of arithmetic: ffmpeg's fast seek is then exact to a frame (of a
    VBR file it would follow the Xing table, to within a hundredth of the file)."""
    at = _tag_size(source)
    frame = source.read(at, 4 + 32 + 4)
    if len(frame) < 40 or frame[0] != 0xFF or frame[1] & 0xE0 != 0xE0:
        return False
    mpeg1, mono = (frame[1] >> 3) & 3 == 3, frame[3] >> 6 == 3
    side = (17 if mono else 32) if mpeg1 else (9 if mono else 17)
    return frame[4 + side : 8 + side] == b"Info"


def frames_at(source: Source, audio: Audio, seconds: float) -> int | None:
    """The byte where an MP3 without an `Info` frame (as live recorders stream it: they cannot go back to write
    one) reaches `seconds`, by its bitrate, where its analysis shows that bitrate constant: its frames, at the
    bitrate, last the duration decoded to within a frame (so each time is where the bitrate puts it). None where it
    is not so, or not known (the analysis pending: ffprobe's duration of such a file is the bitrate's guess)."""
    if audio.format != "mp3" or not audio.bitrate or audio.duration is None or not source.size:
        return None
    tag = _tag_size(source)
    if abs((source.size - tag) * 8 / audio.bitrate - audio.duration) > audio.packet / 2:  # packet: two frames
        return None
    return tag + int(seconds * audio.bitrate / 8)  # ffmpeg finds the next frame's header from there


def arguments(source: Source, audio: Audio, container: Container, span: Span, output: str) -> list[str]:
    """ffmpeg's arguments for a clip: a seek a little before the start (where the input can seek; by the bitrate for
    an MP3 of a constant one: by ffmpeg's fast seek where an `Info` frame says so, else from the byte the bitrate
    gives where the analysis shows it constant), then the packets from the one holding the start to the one holding
    the end, copied."""
    seek = max(0.0, span.start - SEEK_MARGIN) if source.seekable else 0.0
    first = max(0.0, span.start - audio.packet - seek)  # the packets starting before it are dropped
    fast = seek > 0 and audio.format == "mp3" and constant_bitrate_mp3(source)
    skip = frames_at(source, audio, seek) if seek > 0 and not fast else None
    where = ("-f", "mp3", "-skip_initial_bytes", str(skip)) if skip is not None else ("-ss", f"{seek:.6f}")
    return [
        "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "warning", *(("-fflags", "+fastseek") if fast else ()),
        *(("-copyts",) if source.absolute else ()),
        *(where if seek > 0 else ()), "-i", source.url,
        "-map", "0:a:0", "-c", "copy", "-map_chapters", "-1",
        "-ss", f"{first:.6f}", "-to", f"{span.end - seek:.6f}",
        "-f", container.muxer, *container.options, "-y", output,
    ]  # fmt: skip


def fix_flac_header(file: BinaryIO) -> None:
    """Mark a FLAC clip's total samples and MD5 as unknown: a stream copy keeps the source's, which are the whole
    record's (ffmpeg's muxer writes them anew only after encoding)."""
    header = os.pread(file.fileno(), 42, 0)
    if len(header) < 42 or header[:4] != b"fLaC" or header[4] & 0x7F != 0:
        return
    fields = int.from_bytes(header[18:26], "big") & ~((1 << 36) - 1)  # sample rate, channels, bits: kept
    os.pwrite(file.fileno(), fields.to_bytes(8, "big") + bytes(16), 18)


def cut(source: Source, audio: Audio, record_type: str, span: Span, tmp: Path, programs: Programs,
        stopper: Stopper) -> Clip:  # fmt: skip
    """The clip of the source's audio for `span`, written to a nameless file in `tmp`. PastTheEnd if it starts at or
    after the end of the audio, NotCuttable if its format is not cut, ProgramFailed if ffmpeg fails or is stopped.
    Blocks."""
    container = audio.container(record_type)
    if audio.duration is not None:
        if span.start >= audio.duration:
            raise PastTheEnd(f"the range starts at {span.start:g} s, at or after the end of the audio "
                             f"({audio.duration:g} s)")  # fmt: skip
        span = Span(span.start, min(span.end, audio.duration))
    source = nearer(source, audio, span.start - SEEK_MARGIN)
    file = tempfile.TemporaryFile(dir=tmp)
    try:
        log = programs.run(
            arguments(source, audio, container, span, f"file:/dev/fd/{file.fileno()}"),
            CUT_BASE_SECONDS + span.length / 10, fds=(*source.fds, file.fileno()), stopper=stopper, feed=source.feed,
        )  # fmt: skip
        if "Output file is empty" in log or (audio.duration is None and not _has_audio(file, programs)):
            raise PastTheEnd(f"the range starts at {span.start:g} s, at or after the end of the audio")
        if container.muxer == "flac":
            fix_flac_header(file)
        return Clip(file, os.fstat(file.fileno()).st_size, span, container.extension)
    except BaseException:
        file.close()
        raise


def _has_audio(file: BinaryIO, programs: Programs) -> bool:
    """Whether a clip holds an audio packet (ffmpeg says so of an empty MP3, not of an Ogg file of headers alone)."""
    found = probe(f"file:/dev/fd/{file.fileno()}", programs, (file.fileno(),), count=True)
    return found is not None and int(found[0].get("nb_read_packets") or 0) > 0


def probed(source: Source, programs: Programs) -> Audio:
    """The source's audio as ffprobe finds it (for a record whose analysis is not done); NotCuttable if it holds
    none. Blocks."""
    try:
        found = probe(source.url, programs, source.fds, source.feed)
    except ProgramFailed as exc:
        raise NotCuttable(f"its content could not be read as audio ({exc})") from None
    if found is None:
        raise NotCuttable("its content is not audio that the service can read")
    stream, container = found
    if not stream.get("sample_rate"):
        raise NotCuttable("its content is not audio that the service can read (no sample rate)")
    duration = container.get("duration") or stream.get("duration")
    return Audio(format_name(container.get("format_name", "")), stream.get("codec_name") or "",
                 int(stream.get("sample_rate") or 0), float(duration) if duration not in (None, "N/A") else None)  # fmt: skip


class Clips:
    """The clips being cut: at most `workers` at once, each in a thread, its ffmpeg at normal priority (someone
    waits for it, and a stream copy costs little CPU); `stop()` ends them all."""

    def __init__(self, tmp: Path, workers: int) -> None:
        self.tmp = tmp
        self.workers = workers
        self.running = 0
        self.programs = Programs(niceness=0)
        self._threads = concurrent.futures.ThreadPoolExecutor(max(1, workers), thread_name_prefix="records-clip")

    async def cut(self, blob: Blob, audio: dict[str, Any] | None, span: Span, stopper: Stopper) -> Clip:
        """The clip of the blob's audio (whose analysed `audio` facts are given where its analysis is done). TooMany if
        `workers` cuts run already; see `cut` for the rest."""
        if self.programs.stopped:
            raise TooMany("The service is stopping: it cuts no more clips")
        if self.running >= self.workers:
            raise TooMany(f"{self.workers} clips are being cut already: ask again in a moment")
        self.running += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._threads, self._cut, blob, audio, span,
                                                                    stopper)  # fmt: skip
        finally:
            self.running -= 1

    def _cut(self, blob: Blob, audio: dict[str, Any] | None, span: Span, stopper: Stopper) -> Clip:
        with source_of(blob) as source:
            known = Audio.of(audio) if audio is not None else probed(source, self.programs)
            return cut(source, known, blob.record.type, span, self.tmp, self.programs, stopper)

    def stop(self) -> None:
        """End the cuts running, and start no more."""
        self.programs.stop()
        self._threads.shutdown(wait=False)
